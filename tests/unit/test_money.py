"""Payouts as int64 micro-units: parsing CSV cells, canonical formatting, exact sums.

Fixed cases are written out by hand; the property tests use Python's `decimal.Decimal` as an
independent implementation of the same arithmetic.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.money import (
    decimal_commas,
    format_micros,
    format_series,
    parse_decimal,
    parse_payouts,
)

PROPERTY = settings(max_examples=200, deadline=None)
MAX_MICROS = 999_999_999_999_999_999  # NUMERIC(18, 6): 12 integer digits, 6 decimals
MICRO = Decimal("0.000001")


def parse_one(text: object) -> tuple[object, bool, bool]:
    """(micros or <NA>, invalid, empty) for one cell."""
    micros, invalid, empty = parse_payouts(pd.Series([text], dtype=object))
    return micros.iloc[0], bool(invalid.iloc[0]), bool(empty.iloc[0])


def canonical(value: Decimal) -> str:
    """The canonical text, derived with Decimal alone: exact to 6 places, trailing zeros
    dropped but at least two decimals kept, no sign on zero."""
    exact = value.quantize(MICRO)
    assert exact == value, "more than 6 decimals cannot be canonical"
    if exact == 0:
        return "0.00"
    trimmed = exact.normalize()
    if trimmed.as_tuple().exponent > -2:
        trimmed = trimmed.quantize(Decimal("0.01"))
    return f"{trimmed:f}"


def to_micros(value: Decimal) -> int:
    scaled = value * 1_000_000
    assert scaled == scaled.to_integral_value()
    return int(scaled)


# --- parse_payouts: fixed cases -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("12.50", 12_500_000),
        ("0.1", 100_000),
        ("-1.00", -1_000_000),
        ("+3", 3_000_000),
        (".5", 500_000),
        ("-.5", -500_000),
        ("5.", 5_000_000),
        ("0", 0),
        ("-0.00", 0),
        ("0.000001", 1),
        ("-0.000001", -1),
        ("1000000.123456", 1_000_000_123_456),
        ("007.25", 7_250_000),
        ("999999999999.999999", MAX_MICROS),
        ("-999999999999.999999", -MAX_MICROS),
    ],
)
def test_valid_payouts(text: str, micros: int):
    assert parse_one(text) == (micros, False, False)


@pytest.mark.parametrize(
    "text",
    [
        "1,00",  # decimal comma
        "1,000.00",  # thousands separator
        "1 000",  # space as thousands separator
        "12.5.0",
        "1e3",
        "1E-2",
        "$5",
        "5$",
        "€5",
        "5 EUR",
        "abc",
        "1.1234567",  # 7 decimals: never rounded
        "1000000000000",  # 13 integer digits: beyond NUMERIC(18, 6)
        ".",
        "-",
        "+",
        "+-1",
        "--1",
        "- 5",
        "1_000",  # Python's int() and Decimal() would take this one
        "NaN",
        "inf",
        "0x10",
        "(5.00)",  # accounting negative
    ],
)
def test_invalid_payouts(text: str):
    micros, invalid, empty = parse_one(text)
    assert micros is pd.NA
    assert (invalid, empty) == (True, False)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        (" 12.50", 12_500_000),
        ("12.50 ", 12_500_000),
        ("\t-3.25\t", -3_250_000),
        ("\u00a012.50\u00a0", 12_500_000),  # no-break spaces, as spreadsheets pad cells
        ("12.50\r\n", 12_500_000),
    ],
)
def test_surrounding_whitespace_is_trimmed(text: str, micros: int):
    assert parse_one(text) == (micros, False, False)


@pytest.mark.parametrize("text", ["", " ", "\t", "\u00a0", None, np.nan])
def test_empty_cells_are_empty_not_invalid(text: object):
    micros, invalid, empty = parse_one(text)
    assert micros is pd.NA
    assert (invalid, empty) == (False, True)


def test_whole_column_keeps_index_and_masks():
    cells = pd.Series(
        ["1.5", "", "x", "-2", None, "0.30"], index=[10, 11, 12, 20, 7, 3], dtype="str"
    )
    micros, invalid, empty = parse_payouts(cells)
    assert list(micros.index) == [10, 11, 12, 20, 7, 3]
    assert list(invalid.index) == list(empty.index) == [10, 11, 12, 20, 7, 3]
    assert str(micros.dtype) == "Int64"
    assert micros.tolist() == [1_500_000, pd.NA, pd.NA, -2_000_000, pd.NA, 300_000]
    assert invalid.tolist() == [False, False, True, False, False, False]
    assert empty.tolist() == [False, True, False, False, True, False]


# --- format_micros / format_series --------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.00"),
        (300_000, "0.30"),
        (12_500_000, "12.50"),
        (1_123_456, "1.123456"),
        (1_000_000, "1.00"),
        (100_000_000, "100.00"),
        (1_100_000, "1.10"),
        (1_010_000, "1.01"),
        (1_001_000, "1.001"),
        (1, "0.000001"),
        (-1, "-0.000001"),
        (-300_000, "-0.30"),
        (-12_500_000, "-12.50"),
        (-1_123_456, "-1.123456"),
        (MAX_MICROS, "999999999999.999999"),
        (-MAX_MICROS, "-999999999999.999999"),
    ],
)
def test_format_micros_canonical_form(micros: int, text: str):
    assert format_micros(micros) == text
    assert format_micros(np.int64(micros)) == text  # as it comes out of a pandas column


def test_format_series_matches_and_keeps_missing():
    micros = pd.Series([300_000, None, -1, 12_500_000], index=[5, 6, 7, 8], dtype="Int64")
    out = format_series(micros)
    assert list(out.index) == [5, 6, 7, 8]
    assert out.isna().tolist() == [False, True, False, False]
    assert out[[5, 7, 8]].tolist() == ["0.30", "-0.000001", "12.50"]


# --- parse_decimal (values read back from the database) -----------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [("12.500000", 12_500_000), ("0.30", 300_000), ("-0.000001", -1), ("7", 7_000_000)],
)
def test_parse_decimal(text: str, micros: int):
    assert parse_decimal(text) == micros


@pytest.mark.parametrize("text", ["1.1234567", "abc", ""])
def test_parse_decimal_refuses_inexact_or_garbage(text: str):
    with pytest.raises(ValueError):
        parse_decimal(text)


# --- properties against decimal.Decimal ---------------------------------------------------------

# A payout cell as a network might write it: optional sign, 0-12 integer digits (leading zeros
# included), optional point with 0-6 decimals; at least one digit somewhere.
cells = st.builds(
    lambda sign, units, point, frac: sign + units + (("." + frac) if point else ""),
    st.sampled_from(["", "+", "-"]),
    st.text("0123456789", max_size=12),
    st.booleans(),
    st.text("0123456789", max_size=6),
).filter(lambda s: any(c.isdigit() for c in s))

decimals = st.decimals(
    min_value=-Decimal(MAX_MICROS) / 1_000_000,
    max_value=Decimal(MAX_MICROS) / 1_000_000,
    places=6,
    allow_nan=False,
    allow_infinity=False,
)


@PROPERTY
@given(cells)
def test_parse_then_format_agrees_with_decimal(text: str):
    expected = Decimal(text)
    micros, invalid, empty = parse_one(text)
    assert (invalid, empty) == (False, False)
    assert micros == to_micros(expected)
    assert format_micros(int(micros)) == canonical(expected)


@PROPERTY
@given(decimals)
def test_canonical_text_round_trips(value: Decimal):
    text = canonical(value)
    micros, invalid, _ = parse_one(text)
    assert not invalid
    assert micros == to_micros(value)
    assert format_micros(int(micros)) == text
    assert parse_decimal(text) == micros
    assert parse_decimal(f"{value:f}") == micros


@PROPERTY
@given(st.lists(decimals, min_size=1, max_size=30))
def test_vectorised_column_agrees_with_decimal(values: list[Decimal]):
    texts = [f"{v:f}" for v in values]
    micros, invalid, empty = parse_payouts(pd.Series(texts, dtype="str"))
    assert not invalid.any() and not empty.any()
    assert micros.tolist() == [to_micros(v) for v in values]
    assert format_series(micros).tolist() == [canonical(v) for v in values]


small = st.decimals(
    min_value=Decimal("-1000000"),
    max_value=Decimal("1000000"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)


@PROPERTY
@given(st.lists(small, min_size=1, max_size=50))
def test_sums_of_micros_equal_decimal_sums(values: list[Decimal]):
    micros, _, _ = parse_payouts(pd.Series([f"{v:f}" for v in values], dtype="str"))
    total = int(micros.sum())
    assert total == to_micros(sum(values, Decimal(0)))
    assert format_micros(total) == canonical(sum(values, Decimal(0)))


def test_point_one_plus_point_two_is_exactly_point_three():
    micros, _, _ = parse_payouts(pd.Series(["0.10", "0.20"], dtype="str"))
    assert int(micros.sum()) == 300_000
    assert format_micros(int(micros.sum())) == "0.30"
    assert 0.1 + 0.2 != 0.3  # what binary floats would have given


# --- decimal_separator -------------------------------------------------------------------------


def parse_with(text: str, decimal_separator: str) -> tuple[object, bool]:
    micros, invalid, _ = parse_payouts(
        pd.Series([text], dtype=object), decimal_separator=decimal_separator
    )
    return micros.iloc[0], bool(invalid.iloc[0])


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("12,50", 12_500_000),
        ("1.234,56", 1_234_560_000),
        ("-3,5", -3_500_000),
        ("+0,000001", 1),
        ("0,5", 500_000),
        (",5", 500_000),
        ("5,", 5_000_000),
        ("12", 12_000_000),
        ("1.234", 1_234_000_000),  # '.' groups thousands: one thousand two hundred thirty-four
        ("1.000.000", 1_000_000_000_000),
        ("1.234.567,89", 1_234_567_890_000),
        ("-12.345,678901", -12_345_678_901),
        ("999.999.999.999,999999", MAX_MICROS),
        ("999999999999,999999", MAX_MICROS),
        (" 12,50 ", 12_500_000),
    ],
)
def test_decimal_comma_payouts(text: str, micros: int):
    assert parse_with(text, ",") == (micros, False)


@pytest.mark.parametrize(
    "text",
    [
        "1.23,4",  # groups of three only
        "12.34,56",
        "1.2345,6",
        "1.23",
        "12.50",  # a decimal point where the source writes a decimal comma
        "1,234.56",
        "0.123,4",  # a leading zero is no group
        ".234,5",
        "1.234.567.890.123,00",  # 13 integer digits
        "1,1234567",  # 7 decimals
        "12,5,0",
        "1 234,56",
        "1.234.",
        ",",
        "-",
    ],
)
def test_invalid_decimal_comma_payouts(text: str):
    assert parse_with(text, ",") == (pd.NA, True)


@pytest.mark.parametrize("text", ["1,234.56", "1,234", "1,000,000.00", "12,50", "1.234,56"])
def test_no_grouping_separator_with_a_decimal_point(text: str):
    """With '.', "1,234" could be a thousand times "1,234" read with a decimal comma: refused."""
    assert parse_with(text, ".") == (pd.NA, True)


def test_decimal_commas_tells_which_refusals_are_decimal_commas():
    cells = pd.Series(
        ["12,50", "1.234,56", "0,5", "-3,5", "12.50", "1,234.56", "1.23,4", "abc", "", None],
        index=list("abcdefghij"),
    )
    found = decimal_commas(cells)
    assert found.index.equals(cells.index)
    assert found.tolist() == [True] * 4 + [False] * 6


def test_unknown_decimal_separator_is_refused():
    with pytest.raises(ValueError, match="decimal_separator"):
        parse_payouts(pd.Series(["1"]), decimal_separator=";")


@PROPERTY
@given(
    st.decimals(
        min_value=-Decimal("999999999999.999999"),
        max_value=Decimal("999999999999.999999"),
        places=6,
        allow_nan=False,
        allow_infinity=False,
    ),
    st.booleans(),
)
def test_decimal_comma_matches_decimal(value: Decimal, grouped: bool):
    """Python writes the number with ',' grouping and '.' decimals; swapping the two gives the
    same number as a decimal-comma source writes it."""
    written = f"{value:,f}" if grouped else f"{value:f}"
    swapped = written.translate(str.maketrans(",.", ".,"))
    micros, invalid, _ = parse_payouts(pd.Series([swapped]), decimal_separator=",")
    assert not invalid.iloc[0], swapped
    assert micros.iloc[0] == to_micros(value)
