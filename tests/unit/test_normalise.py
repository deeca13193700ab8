"""normalise.conversions: the times of a file under each rule, as the seed's example reads them.

Expected instants are worked out by hand: New York is UTC-4 in July 2026 (EDT) and UTC-5 in
January (EST); GMT+4 is UTC+4 all year; Tokyo is UTC+9.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import normalise
from pipeline.core.model import Account, OfferSource

NY = Account("ny", "America/New_York")
DUBAI = Account("dubai", "GMT+4")
RECEIVED = pd.Timestamp("2026-08-01T00:00:00Z")


def times(
    written: list[str], account: Account, file_zone: str | None = None, **options
) -> list[object]:
    """The UTC instants of accepted rows, or the reason of rejected ones, in line order."""
    source = OfferSource(name="net", account=account, **options)
    cells = pd.DataFrame(
        {
            "click_id": [f"c{i}" for i in range(len(written))],
            "payout": "1.00",
            "conversion_time": written,
        },
        dtype="str",
    )
    lines = np.arange(2, len(written) + 2)
    result = normalise.conversions(
        cells,
        lines,
        source,
        received_at=RECEIVED,
        future_tolerance_seconds=300,
        file_zone=file_zone,
    )
    out: dict[int, object] = dict(
        zip(result.accepted["line"], result.accepted["converted_at"], strict=True)
    )
    out |= dict(zip(result.rejected["line"], result.rejected["reason_code"], strict=True))
    return [out[line] for line in lines]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def test_file_times_default_is_utc():
    assert OfferSource(name="net", account=NY).file_times == "utc"


@pytest.mark.parametrize(
    ("account", "options", "written", "expected"),
    [
        # The seed: a New York account (GMT-4 in summer) sees 14:00:00 in its logs.
        (NY, {}, "2026-07-01 18:00:00", "2026-07-01T18:00:00Z"),  # default file_times "utc"
        (NY, {"file_times": "utc"}, "2026-07-01 18:00:00", "2026-07-01T18:00:00Z"),
        (NY, {"file_times": "account"}, "2026-07-01 14:00:00", "2026-07-01T18:00:00Z"),
        # The seed: an account at GMT+4 sees 14:00:00; the file says 10:00:00 (utc) or 14:00:00.
        (DUBAI, {}, "2026-07-01 10:00:00", "2026-07-01T10:00:00Z"),
        (DUBAI, {"file_times": "account"}, "2026-07-01 14:00:00", "2026-07-01T10:00:00Z"),
        # A network exporting in Berlin's clock, whatever the account.
        (NY, {"file_times": "Europe/Berlin"}, "2026-01-15 14:00:00", "2026-01-15T13:00:00Z"),
        (NY, {"file_times": "Europe/Berlin"}, "2026-07-15 14:00:00", "2026-07-15T12:00:00Z"),
    ],
)
def test_the_seed_example_both_ways(account, options, written, expected):
    assert times([written], account, **options) == [ts(expected)]


def test_parameters_time_zone_beats_file_times_and_a_row_offset_beats_both():
    written = ["2026-07-01 14:00:00", "2026-07-01 14:00:00+02:00", "1782914400", "2026-07-01 14:00"]
    # 1782914400 is 2026-07-01T14:00:00Z (day 20635 of the epoch, plus 14 hours).
    assert times(written, NY, file_zone="Asia/Tokyo", file_times="account") == [
        ts("2026-07-01T05:00:00Z"),  # 14:00 in Tokyo (+9), not New York
        ts("2026-07-01T12:00:00Z"),  # its own offset
        ts("2026-07-01T14:00:00Z"),  # an epoch is UTC
        ts("2026-07-01T05:00:00Z"),
    ]
    assert times(written[:2], DUBAI, file_zone="-0500") == [
        ts("2026-07-01T19:00:00Z"),
        ts("2026-07-01T12:00:00Z"),
    ]


def test_time_reasons():
    written = ["11/3/2026 8:30", "yesterday", "2026-08-01 00:05:01", "9999-12-31 23:59:59"]
    assert times(written, NY) == [
        "time_reformatted_by_spreadsheet",
        "invalid_time",
        "time_in_future",  # received 2026-08-01T00:00:00Z + 300 s is 00:05:00
        "time_out_of_range",
    ]
