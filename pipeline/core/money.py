"""Payouts as exact integers of micro-units (1.25 -> 1_250_000), never binary floats.

Six decimals cover every currency and sub-cent CPC payouts; twelve integer digits cover any
realistic payout. Parsing is vectorised string work, so 0.10 + 0.20 is exactly 0.30 from the
CSV cell to the warehouse and back out of `conversions export`.

An offer source writes its decimals with `.` (the default) or `,` (`decimal_separator`). With `,`,
a `.` may group the integer digits in threes (`1.234,56`); with `.`, no grouping separator is
accepted at all, because `1,234` would then be a thousand times `1,234` read with a decimal comma:
such a cell is refused, and `decimal_commas` tells the one written with a decimal comma apart
(its own reason, naming the setting, rather than a generic refusal).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

from pipeline.core.vocabulary import DECIMAL_SEPARATORS

SCALE = 1_000_000
# RE2 patterns, run by pyarrow: a sign, at most 12 integer digits and at most 6 decimals. With a
# decimal comma the integer digits may be grouped by `.` in threes (still at most 12 digits), the
# first group without a leading zero.
_PATTERNS = {
    ".": r"^[+-]?[0-9]{0,12}(?:\.[0-9]{0,6})?$",
    ",": r"^[+-]?(?:[1-9][0-9]{0,2}(?:\.[0-9]{3}){1,3}|[0-9]{0,12})(?:,[0-9]{0,6})?$",
}


def parse_payouts(
    values: pd.Series, *, decimal_separator: str = "."
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Trimmed cells -> (micros as Int64, invalid mask, empty mask), index preserved.

    Accepted with ".": `12`, `12.5`, `-3.25`, `+0.000001`, `.5`. With ",": `12,5`, `-3,25`,
    `,5`, `1.234,56`, `1.234` (grouped in threes). Refused (invalid): the other separator as the
    decimal mark, grouping with ".", grouping not in threes, currency signs, exponents, more than
    6 decimals or 12 digits. Raises ValueError for another separator.
    """
    if decimal_separator not in DECIMAL_SEPARATORS:
        raise ValueError(
            f"decimal_separator must be one of {', '.join(DECIMAL_SEPARATORS)}; "
            f"got {decimal_separator!r}"
        )
    text = _trimmed(values)
    empty = (text == "").to_numpy(dtype=bool)
    # One RE2 pass (pyarrow, in C) decides validity; the value is then plain integer work on
    # the digits with the separators removed, scaled by the number of decimals written.
    valid = _valid(text, decimal_separator) & ~empty
    body = text.where(valid, "0").str.lstrip("+-")
    if decimal_separator == ",":
        body = body.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    point = body.str.find(".").to_numpy()
    decimals = np.where(point < 0, 0, body.str.len().to_numpy() - point - 1)
    digits = body.str.replace(".", "", regex=False).replace("", "0")
    micros = digits.astype("int64").to_numpy() * 10 ** (6 - decimals)
    negative = text.str.startswith("-").to_numpy(dtype=bool)
    micros = np.where(negative, -micros, micros)
    result = pd.Series(micros, index=values.index, dtype="Int64").where(valid, pd.NA)
    invalid = pd.Series(~valid & ~empty, index=values.index)
    return result, invalid, pd.Series(empty, index=values.index)


def decimal_commas(values: pd.Series) -> pd.Series:
    """Cells written with a decimal comma (`12,50`, `0,5`, `1.234,56`): a payout with
    `decimal_separator = ","`, and one with a comma, so never a payout with ".". Index kept."""
    text = _trimmed(values)
    found = _valid(text, ",") & text.str.contains(",", regex=False).to_numpy(dtype=bool)
    return pd.Series(found, index=values.index)


def _trimmed(values: pd.Series) -> pd.Series:
    return values.fillna("").astype("str").str.strip()


def _valid(text: pd.Series, decimal_separator: str) -> np.ndarray:
    """Cells shaped like a payout written with this separator, with at least one digit."""
    shaped = text.str.fullmatch(_PATTERNS[decimal_separator]).to_numpy(dtype=bool)
    return shaped & text.str.contains("[0-9]").to_numpy(dtype=bool)


def parse_decimal(text: str) -> int:
    """One decimal string (from the database) -> micros; refuses anything inexact."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {text!r}") from None
    scaled = value.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"more than 6 decimals: {text!r}")
    return int(scaled)


def format_micros(micros: int) -> str:
    """Canonical text: at least two decimals, no trailing zeros beyond them (1.5 -> '1.50')."""
    sign = "-" if micros < 0 else ""
    units, frac = divmod(abs(int(micros)), SCALE)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{units}.{digits}"


def format_series(micros: pd.Series) -> pd.Series:
    """Vectorised `format_micros`; <NA> stays <NA>."""
    present = micros.notna()
    m = micros.fillna(0).astype("int64")
    units = (m.abs() // SCALE).astype("str")
    frac = (m.abs() % SCALE).astype("str").str.zfill(6).str.rstrip("0").str.pad(2, "right", "0")
    sign = pd.Series(np.where(m < 0, "-", ""), index=m.index, dtype="str")
    out = sign + units + "." + frac
    return out.where(present, pd.NA)
