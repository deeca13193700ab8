"""Values networks write that the pipeline reads: status words and decimal-comma payouts.

Expectations are written out by hand from the aliases the reason catalogue documents and from
the decimal-separator rules, never read back from the code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import normalise
from pipeline.core.model import Account, OfferSource
from pipeline.core.statuses import STATUS_ALIASES, canonical

ACCOUNT = Account("main", "America/New_York")
RECEIVED = pd.Timestamp("2026-07-02T00:00:00Z")


def source(**options) -> OfferSource:
    return OfferSource(name="net", account=ACCOUNT, **options)


def upload(rows: list[dict[str, str]], src: OfferSource) -> normalise.Normalised:
    cells = pd.DataFrame(rows, dtype="str")
    lines = np.arange(2, len(rows) + 2)
    return normalise.conversions(
        cells, lines, src, received_at=RECEIVED, future_tolerance_seconds=300
    )


def codes(result: normalise.Normalised) -> dict[int, str]:
    return dict(zip(result.rejected["line"], result.rejected["reason_code"], strict=True))


# --- status words ------------------------------------------------------------------------------


BUILT_IN = {
    "approve": "approved",
    "accepted": "approved",
    "confirmed": "approved",
    "hold": "pending",
    "on hold": "pending",
    "waiting": "pending",
    "decline": "declined",
    "rejected": "declined",
    "reject": "declined",
    "denied": "declined",
    "chargeback": "declined",
    "reversed": "declined",
}


def test_the_built_in_aliases_are_the_documented_ones():
    assert dict(STATUS_ALIASES) == BUILT_IN


@pytest.mark.parametrize(
    ("written", "status"),
    [
        *BUILT_IN.items(),
        ("approved", "approved"),
        ("APPROVED", "approved"),
        ("Pending", "pending"),
        ("declined", "declined"),
        ("other", "other"),
        ("ON HOLD", "pending"),
        ("On Hold", "pending"),
        ("  on   hold\t", "pending"),
        (" Accepted ", "approved"),
        ("CHARGEBACK", "declined"),
        ("refunded", "refunded"),  # unknown: left for invalid_status, casefolded
        ("Paid", "paid"),
        ("", ""),
    ],
)
def test_built_in_aliases(written: str, status: str):
    assert canonical(pd.Series([written], dtype="str")).tolist() == [status]


def test_a_source_alias_adds_a_word_and_wins_over_a_built_in():
    aliases = {
        "refunded": "declined",
        "paid": "approved",
        "reversed": "other",
        "sale ok": "approved",
    }
    cells = pd.Series(
        ["Refunded", "PAID", "reversed", "Sale  OK", "rejected", "nope"], index=[5, 3, 9, 1, 0, 2]
    )
    result = canonical(cells.astype("str"), aliases)
    assert result.index.equals(cells.index)
    assert result.tolist() == ["declined", "approved", "other", "approved", "declined", "nope"]


def test_status_aliases_in_an_upload():
    src = source(status_aliases={"refunded": "declined"})
    rows = [
        {"click_id": "c1", "payout": "1", "status": "Refunded"},
        {"click_id": "c2", "payout": "1", "status": "ON HOLD"},
        {"click_id": "c3", "payout": "1", "status": "confirmed"},
        {"click_id": "c4", "payout": "1", "status": "paid"},
        {"click_id": "c5", "payout": "1", "status": ""},
    ]
    result = upload(rows, src)
    status = result.accepted["status"]
    assert status.tolist()[:3] == ["declined", "pending", "approved"]
    assert status.isna().tolist() == [False, False, False, True]  # empty: the source's default
    assert codes(result) == {5: "invalid_status"}
    # Without the source's alias, "refunded" is not a status.
    assert codes(upload(rows[:1], source())) == {2: "invalid_status"}


def test_status_aliases_in_a_status_update():
    src = source(status_aliases={"refunded": "declined"})
    cells = pd.DataFrame(
        {
            "click_id": ["c1", "c2", "c3", "c4", "c5"],
            "status": ["Refunded", "ON HOLD", " Denied ", "nope", ""],
        },
        dtype="str",
    )
    result = normalise.statuses(cells, np.arange(2, 7), src)
    assert result.accepted["status"].tolist() == ["declined", "pending", "declined"]
    assert codes(result) == {5: "invalid_status", 6: "missing_status"}


# --- decimal commas ----------------------------------------------------------------------------


def test_a_decimal_comma_with_the_default_separator_names_the_setting():
    rows = [
        {"click_id": "c1", "payout": "12,50"},
        {"click_id": "c2", "payout": "1.234,56"},
        {"click_id": "c3", "payout": "0,5"},
        {"click_id": "c4", "payout": "12.50"},
        {"click_id": "c5", "payout": "1,234.56"},  # no grouping with '.': not a decimal comma
        {"click_id": "c6", "payout": "12,5 EUR"},
        {"click_id": "c7", "payout": "1.23,4"},
    ]
    result = upload(rows, source())
    assert result.accepted["payout"].tolist() == [12_500_000]
    assert codes(result) == {
        2: "payout_decimal_comma",
        3: "payout_decimal_comma",
        4: "payout_decimal_comma",
        6: "invalid_payout",
        7: "invalid_payout",
        8: "invalid_payout",
    }


def test_decimal_separator_comma():
    rows = [
        {"click_id": "c1", "payout": "12,50"},
        {"click_id": "c2", "payout": "1.234,56"},
        {"click_id": "c3", "payout": "-3,5"},
        {"click_id": "c4", "payout": "1.234"},  # grouped: one thousand two hundred thirty-four
        {"click_id": "c5", "payout": "1.23,4"},
        {"click_id": "c6", "payout": "12.34,56"},
        {"click_id": "c7", "payout": "12.50"},
    ]
    result = upload(rows, source(decimal_separator=",", allow_negative_payout=True))
    assert result.accepted["payout"].tolist() == [
        12_500_000,
        1_234_560_000,
        -3_500_000,
        1_234_000_000,
    ]
    assert codes(result) == {6: "invalid_payout", 7: "invalid_payout", 8: "invalid_payout"}


def test_a_row_lists_every_reason_in_catalogue_order():
    rows = [{"click_id": "", "payout": "12,50", "conversion_time": "11/3/2026 8:30", "status": "x"}]
    assert codes(upload(rows, source())) == {
        2: "missing_click_id|payout_decimal_comma|time_reformatted_by_spreadsheet|invalid_status"
    }
