"""Tests for pipeline.core.timezones.

Expected instants are worked out by hand (comments give the offsets) or, in the property test,
by a small reference built on `zoneinfo`/`datetime` alone, never by the code under test.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.timezones import (
    REASONS,
    fixed_offset,
    format_local,
    format_utc,
    to_utc,
    zone,
)

NY = "America/New_York"


def one(value, **kw):
    """Convert a single cell: (utc Timestamp or NaT, reason or None)."""
    result = to_utc(pd.Series([value]), **{"zone": NY, "file_times": "account", **kw})
    reason = result.reason.iloc[0]
    return result.utc.iloc[0], None if pd.isna(reason) else reason


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)  # the expected strings below all end in Z


def instants(*texts: str | None, index=None) -> pd.Series:
    """A datetime64[us, UTC] Series, as `to_utc` returns, from ISO strings (None -> NaT)."""
    parsed = pd.to_datetime(list(texts), utc=True, format="ISO8601").as_unit("us")
    return pd.Series(parsed, index=index)


# --- the seed's worked example -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "zone", "file_times", "expected"),
    [
        ("2026-07-01 14:00:00", NY, "account", "2026-07-01T18:00:00Z"),  # EDT, UTC-4
        ("2026-07-01 18:00:00", NY, "utc", "2026-07-01T18:00:00Z"),
        ("2026-07-01 14:00:00", "Asia/Dubai", "account", "2026-07-01T10:00:00Z"),  # UTC+4
        ("2026-01-15 14:00:00", NY, "account", "2026-01-15T19:00:00Z"),  # EST, UTC-5
    ],
)
def test_worked_examples(value, zone, file_times, expected):
    assert one(value, zone=zone, file_times=file_times) == (ts(expected), None)


# --- DST edges under each policy ---------------------------------------------------------------

GAP, OVERLAP = "nonexistent_local_time", "ambiguous_local_time"
SHIFT = {"nonexistent": "shift_forward"}
EARLIEST, LATEST = {"ambiguous": "earliest"}, {"ambiguous": "latest"}
BERLIN, SYDNEY, LORD_HOWE = "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe"


@pytest.mark.parametrize(
    ("zone", "wall", "policy", "expected"),
    [
        # New York, 2026-03-08: 02:00 EST -> 03:00 EDT, so 02:30 does not exist.
        (NY, "2026-03-08 02:30:00", {}, GAP),
        (NY, "2026-03-08 02:30:00", SHIFT, "2026-03-08T07:00:00Z"),
        (NY, "2026-03-08 02:00:00", SHIFT, "2026-03-08T07:00:00Z"),
        (NY, "2026-03-08 02:59:59.5", SHIFT, "2026-03-08T07:00:00Z"),
        (NY, "2026-03-08 01:59:59.999999", {}, "2026-03-08T06:59:59.999999Z"),  # still EST
        (NY, "2026-03-08 03:00:00", {}, "2026-03-08T07:00:00Z"),  # EDT
        # New York, 2026-11-01: 02:00 EDT -> 01:00 EST, so 01:00-01:59 happen twice.
        (NY, "2026-11-01 01:30:00", {}, OVERLAP),
        (NY, "2026-11-01 01:30:00", EARLIEST, "2026-11-01T05:30:00Z"),
        (NY, "2026-11-01 01:30:00", LATEST, "2026-11-01T06:30:00Z"),
        (NY, "2026-11-01 01:00:00", {}, OVERLAP),
        (NY, "2026-11-01 00:59:59", {}, "2026-11-01T04:59:59Z"),  # EDT only
        (NY, "2026-11-01 02:00:00", {}, "2026-11-01T07:00:00Z"),  # EST only
        # Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST; 2026-10-25: 03:00 CEST -> 02:00 CET.
        (BERLIN, "2026-03-29 02:30:00", {}, GAP),
        (BERLIN, "2026-03-29 02:30:00", SHIFT, "2026-03-29T01:00:00Z"),
        (BERLIN, "2026-10-25 02:30:00", {}, OVERLAP),
        (BERLIN, "2026-10-25 02:30:00", EARLIEST, "2026-10-25T00:30:00Z"),
        (BERLIN, "2026-10-25 02:30:00", LATEST, "2026-10-25T01:30:00Z"),
        # Sydney (southern hemisphere), 2026-04-05: 03:00 AEDT(+11) -> 02:00 AEST(+10);
        # 2026-10-04: 02:00 AEST -> 03:00 AEDT.
        (SYDNEY, "2026-04-05 02:30:00", {}, OVERLAP),
        (SYDNEY, "2026-04-05 02:30:00", EARLIEST, "2026-04-04T15:30:00Z"),
        (SYDNEY, "2026-04-05 02:30:00", LATEST, "2026-04-04T16:30:00Z"),
        (SYDNEY, "2026-10-04 02:30:00", {}, GAP),
        (SYDNEY, "2026-10-04 02:30:00", SHIFT, "2026-10-03T16:00:00Z"),
        # Lord Howe shifts by 30 minutes: 2026-04-05 02:00 +11 -> 01:30 +10:30;
        # 2026-10-04 02:00 +10:30 -> 02:30 +11 (pandas' own shift_forward says 03:00 here).
        (LORD_HOWE, "2026-04-05 01:45:00", {}, OVERLAP),
        (LORD_HOWE, "2026-04-05 01:45:00", EARLIEST, "2026-04-04T14:45:00Z"),
        (LORD_HOWE, "2026-04-05 01:45:00", LATEST, "2026-04-04T15:15:00Z"),
        (LORD_HOWE, "2026-10-04 02:15:00", {}, GAP),
        (LORD_HOWE, "2026-10-04 02:15:00", SHIFT, "2026-10-03T15:30:00Z"),
        (LORD_HOWE, "2026-10-04 02:30:00", {}, "2026-10-03T15:30:00Z"),
    ],
)
def test_dst_edges(zone, wall, policy, expected):
    utc, reason = one(wall, zone=zone, **policy)
    if expected in REASONS:
        assert (utc is pd.NaT, reason) == (True, expected)
    else:
        assert (utc, reason) == (ts(expected), None)


def test_policies_do_not_touch_ordinary_times_or_utc_files():
    """file_times="utc" has no gaps or overlaps; an explicit offset is never a local time."""
    assert one("2026-03-08 02:30:00", file_times="utc") == (ts("2026-03-08T02:30:00Z"), None)
    assert one("2026-03-08 02:30:00-05:00") == (ts("2026-03-08T07:30:00Z"), None)
    assert one("2026-11-01 01:30:00-04:00") == (ts("2026-11-01T05:30:00Z"), None)


# --- explicit offsets and accepted shapes ------------------------------------------------------


TOKYO = "Asia/Tokyo"  # UTC+9: would visibly move any value wrongly read as local


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        ("2026-07-01T18:00:00Z", TOKYO, "2026-07-01T18:00:00Z"),
        ("2026-07-01 20:00:00+02:00", TOKYO, "2026-07-01T18:00:00Z"),
        ("2026-07-01 12:30:00-0530", TOKYO, "2026-07-01T18:00:00Z"),
        ("2026-07-01 23:00:00+05", TOKYO, "2026-07-01T18:00:00Z"),
        ("2026-07-01 18:00:00-00:00", TOKYO, "2026-07-01T18:00:00Z"),
        ("2026-07-02 03:00:00+09:00", TOKYO, "2026-07-01T18:00:00Z"),  # crosses midnight
        ("2026-07-01T18:00:00.5+00:00", TOKYO, "2026-07-01T18:00:00.500000Z"),
        ("2026-07-01T14:00:00", NY, "2026-07-01T18:00:00Z"),  # T separator, local
        ("  2026-07-01 14:00:00\t", NY, "2026-07-01T18:00:00Z"),  # trimmed
        ("2026-07-01 14:00:00.25", NY, "2026-07-01T18:00:00.250000Z"),
        ("2026-07-01 14:00:00.1", NY, "2026-07-01T18:00:00.100000Z"),
        ("2026-07-01 14:00:00.123456", NY, "2026-07-01T18:00:00.123456Z"),  # 6 digits: exact
        ("2026-07-01 14:00:00.999999", NY, "2026-07-01T18:00:00.999999Z"),
    ],
)
def test_accepted_shapes(value, zone, expected):
    assert one(value, zone=zone) == (ts(expected), None)


@pytest.mark.parametrize(
    "value",
    [
        "04/03/2026",  # day-first or month-first: never guessed (a date alone is no time)
        "2026-03-08 14",
        "2026-03-08 14:0",
        "2026-03-08 14:00.5",  # a fraction needs its seconds
        "2026-02-30 10:00:00",
        "2026-13-01 00:00:00",
        "2026-03-08 24:00:00",
        "2026-03-08 10:60:00",
        "2026-03-08 10:00:60",  # no leap seconds
        "2026-03-08",
        "2026-3-8 14:00:00",
        "2026-03-08  14:00:00",
        "2026-03-08t14:00:00",
        "2026-03-08 14:00:00z",
        "2026-03-08 14:00:00 Z",
        "2026-03-08 14:00:00 +02:00",
        "2026-03-08 14:00:00+2:00",
        "2026-03-08 14:00:00+24:00",
        "2026-03-08 14:00:00+02:60",
        "2026-03-08 14:00:00.",
        "2026-03-08 14:00:00.1234567890",
        "2026-03-08 14:00:00.1234567",  # a 7th digit is refused, never dropped
        "2026-03-08 14:00:00,5",
        "2026-03-08 14:00:00 EST",
        "0000-00-00 00:00:00",  # a database's zero date: no month 0, so not a date at all
        "0100-02-29 00:00:00",  # not a leap year (a date is checked before its range)
        "٢٠٢٦-03-08 14:00:00",  # Arabic-Indic digits
        "1e10",
        "177297840",  # 9 digits: not epoch seconds (exactly 10) nor milliseconds (exactly 13)
        "17729784000",
        "177297840000",
        "17729784000000",
        "-1772978400",
        "1772978400.5",
        " 1772978400 000",
        "yesterday",
        "NaT",
    ],
)
def test_invalid(value):
    utc, reason = one(value, nonexistent="shift_forward", ambiguous="earliest")
    assert (utc is pd.NaT, reason) == (True, "invalid_time")


def test_time_format_is_tried_only_where_the_standard_shapes_do_not_match():
    values = pd.Series(["03/04/2026 10:00", "2026-04-03 10:00:00", "31/04/2026 10:00", "x"])
    result = to_utc(
        values, zone="Europe/Berlin", file_times="account", time_format="%d/%m/%Y %H:%M"
    )
    # 3 April 10:00 CEST (+2) twice; 31 April does not exist.
    assert result.utc.tolist()[:2] == [ts("2026-04-03T08:00:00Z")] * 2
    assert result.reason.tolist() == [pd.NA, pd.NA, "invalid_time", "invalid_time"]


def test_time_format_local_times_follow_file_times_and_policies():
    values = pd.Series(["08/03/2026 02:30", "08/03/2026 10:00"])
    result = to_utc(values, zone=NY, file_times="account", time_format="%d/%m/%Y %H:%M")
    assert result.reason.tolist() == [GAP, pd.NA]
    assert result.utc.iloc[1] == ts("2026-03-08T14:00:00Z")
    result = to_utc(values, zone=NY, file_times="utc", time_format="%d/%m/%Y %H:%M")
    assert result.utc.tolist() == [ts("2026-03-08T02:30:00Z"), ts("2026-03-08T10:00:00Z")]


def test_time_format_with_offset_uses_the_offset():
    values = pd.Series(["03/04/2026 10:00 +0200", "03/04/2026 10:00 -0500", "2026-04-03 10:00:00"])
    result = to_utc(
        values, zone="Asia/Tokyo", file_times="account", time_format="%d/%m/%Y %H:%M %z"
    )
    assert result.utc.tolist() == [
        ts("2026-04-03T08:00:00Z"),
        ts("2026-04-03T15:00:00Z"),
        ts("2026-04-03T01:00:00Z"),  # standard shape, local Tokyo time (+9)
    ]
    assert result.reason.isna().all()


# --- the accepted range and sub-microsecond digits --------------------------------------------

FAR_AHEAD = pd.Timestamp("2250-01-01T00:00:00Z")  # a received time that cannot make anything future
OUT = "time_out_of_range"


@pytest.mark.parametrize(
    ("value", "zone", "file_times", "expected"),
    [
        # The first instant, 1970-01-01T00:00:00Z, however it is written.
        ("1970-01-01T00:00:00Z", TOKYO, "account", "1970-01-01T00:00:00Z"),
        ("1970-01-01 00:00:00", NY, "utc", "1970-01-01T00:00:00Z"),
        ("1969-12-31 19:00:00", NY, "account", "1970-01-01T00:00:00Z"),  # EST, UTC-5
        ("1970-01-01 09:00:00", TOKYO, "account", "1970-01-01T00:00:00Z"),  # JST, UTC+9
        ("1969-12-31T22:00:00-02:00", TOKYO, "account", "1970-01-01T00:00:00Z"),
        # One microsecond before it: out of range, judged on the UTC instant.
        ("1969-12-31T23:59:59.999999Z", TOKYO, "account", OUT),
        ("1969-12-31 23:59:59.999999", NY, "utc", OUT),
        ("1969-12-31 18:59:59.999999", NY, "account", OUT),  # 23:59:59.999999Z
        ("1970-01-01 08:59:59.999999", TOKYO, "account", OUT),  # 23:59:59.999999Z
        ("1970-01-01T00:59:59.999999+01:00", NY, "account", OUT),
        # The last accepted second, 2200-12-31T23:59:59Z, to its last microsecond.
        ("2200-12-31T23:59:59Z", TOKYO, "account", "2200-12-31T23:59:59Z"),
        ("2200-12-31T23:59:59.999999Z", TOKYO, "account", "2200-12-31T23:59:59.999999Z"),
        ("2200-12-31 18:59:59.999999", NY, "account", "2200-12-31T23:59:59.999999Z"),  # EST
        ("2201-01-01 08:59:59.999999", TOKYO, "account", "2200-12-31T23:59:59.999999Z"),
        # From 2201-01-01T00:00:00Z on: out of range.
        ("2201-01-01T00:00:00Z", TOKYO, "account", OUT),
        ("2200-12-31 19:00:00", NY, "account", OUT),  # 2201-01-01T00:00:00Z
        ("2201-01-01 09:00:00", TOKYO, "account", OUT),
        ("2200-12-31T23:59:59-00:01", TOKYO, "account", OUT),  # 2201-01-01T00:00:59Z
        # Placeholders and years pandas cannot localise: never an exception, never invalid_time.
        ("9999-12-31 23:59:59", NY, "account", OUT),
        ("9999-12-31 23:59:59", NY, "utc", OUT),
        ("9999-12-31T23:59:59-23:59", NY, "account", OUT),  # past year 9999 in UTC
        ("0001-01-01 00:00:00", NY, "account", OUT),
        ("0001-01-01T00:00:00+23:59", NY, "account", OUT),  # before year 1 in UTC
        ("0000-01-01 00:00:00", NY, "account", OUT),  # ISO 8601's year 0 (1 BC) is a date
        ("0000-02-29 00:00:00", NY, "utc", OUT),  # and a leap year, proleptically
        ("2263-01-01 00:00:00", NY, "account", OUT),  # past pandas' nanosecond range
        ("1600-06-15 12:00:00", NY, "account", OUT),
        ("2300-03-11 02:30:00", NY, "account", OUT),  # would be New York's DST gap: still OUT
        ("2300-11-04 01:30:00", NY, "account", OUT),  # would be the overlap
    ],
)
def test_range_is_1970_to_the_end_of_2200_in_utc(value, zone, file_times, expected):
    utc, reason = one(value, zone=zone, file_times=file_times, not_after=FAR_AHEAD)
    if expected == OUT:
        assert (utc is pd.NaT, reason) == (True, OUT)
    else:
        assert (utc, reason) == (ts(expected), None)


def test_out_of_range_is_not_in_the_future():
    """Received + tolerance up to 2200 is time_in_future; past 2200, out of range."""
    limit = pd.Timestamp("2026-07-01T18:05:00Z")
    values = pd.Series(
        [
            "2026-07-01T18:05:00Z",  # at the limit: fine
            "2100-01-01 00:00:00",  # in range, after the limit
            "2200-12-31T23:59:59.999999Z",  # the last instant in range
            "2201-01-01T00:00:00Z",  # the first out of range
            "9999-12-31 23:59:59",
            "1969-12-31T23:59:59Z",  # before the limit, but before 1970
        ]
    )
    result = to_utc(values, zone=NY, file_times="account", not_after=limit)
    assert result.reason.tolist() == [pd.NA] + ["time_in_future"] * 2 + [OUT] * 3
    assert result.utc.isna().tolist() == [False] + [True] * 5


def test_range_applies_to_time_format_times_too():
    days = pd.Series(["31/12/9999 23:59", "01/01/0001 00:00", "31/12/1969 19:00", "x"])
    result = to_utc(
        days, zone=NY, file_times="account", time_format="%d/%m/%Y %H:%M", not_after=FAR_AHEAD
    )
    assert result.reason.tolist() == [OUT, OUT, pd.NA, "invalid_time"]
    assert result.utc.iloc[2] == ts("1970-01-01T00:00:00Z")  # EST, UTC-5
    zoned = pd.Series(["31/12/9999 23:00 +0500", "31/12/1969 23:00 -0200"])
    result = to_utc(zoned, zone=TOKYO, time_format="%d/%m/%Y %H:%M %z")
    assert result.reason.tolist() == [OUT, pd.NA]
    assert result.utc.iloc[1] == ts("1970-01-01T01:00:00Z")


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01 10:00:00.1234567",
        "2026-01-01 10:00:00.1234560",  # even a zero 7th digit, as for a payout's 7th decimal
        "2026-01-01 10:00:00.0000001",
        "2026-01-01 10:00:00.123456789",
        "2026-01-01T10:00:00.9999999Z",  # would round into the next second
        "2026-01-01T10:00:00.1234567+02:00",
        "9999-12-31 23:59:59.1234567",  # malformed first: invalid_time, not out of range
    ],
)
def test_more_than_six_fractional_digits_are_invalid(value):
    assert one(value, file_times="utc", not_after=FAR_AHEAD) == (pd.NaT, "invalid_time")


def test_time_format_fraction_below_the_microsecond_is_invalid_not_cut():
    """pandas' `%f` reads nanoseconds; a non-zero part below the microsecond cannot be stored."""
    values = pd.Series(["01/01/2026 10:00:00.1234567", "01/01/2026 10:00:00.123456"])
    result = to_utc(values, zone="UTC", time_format="%d/%m/%Y %H:%M:%S.%f")
    assert result.reason.tolist() == ["invalid_time", pd.NA]
    assert result.utc.iloc[1] == ts("2026-01-01T10:00:00.123456Z")


def test_range_check_is_vectorised_over_a_large_column():
    """A whole column of placeholders and edge instants in one call (no per-row fallback)."""
    values = pd.Series(
        ["9999-12-31 23:59:59", "1970-01-01T00:00:00Z", "0001-01-01 00:00:00"] * 50_000
    )
    result = to_utc(values, zone=NY, file_times="account", not_after=FAR_AHEAD)
    assert result.reason.value_counts(dropna=False).to_dict() == {OUT: 100_000, pd.NA: 50_000}


# --- the future, empties, the contract of the result -------------------------------------------


def test_time_in_future_is_strictly_after_not_after():
    limit = pd.Timestamp("2026-07-01T14:05:00-04:00")  # 18:05Z, any zone will do
    values = pd.Series(
        [
            "2026-07-01 14:04:59.999999",  # just under
            "2026-07-01 14:05:00",  # exactly at: fine
            "2026-07-01 14:05:00.000001",  # just over
            "2026-07-01T18:05:00.000001Z",  # just over, written in UTC
        ]
    )
    result = to_utc(values, zone=NY, file_times="account", not_after=limit)
    assert result.reason.tolist() == [pd.NA, pd.NA, "time_in_future", "time_in_future"]
    assert result.utc.tolist()[:2] == [ts("2026-07-01T18:04:59.999999Z"), ts("2026-07-01T18:05Z")]
    assert result.utc.isna().tolist() == [False, False, True, True]


def test_naive_not_after_is_refused():
    with pytest.raises(ValueError, match="not_after"):
        to_utc(pd.Series(["2026-07-01 14:00:00"]), zone=NY, not_after=pd.Timestamp("2026-07-02"))


@pytest.mark.parametrize(
    "kw",
    [
        {"zone": "Mars/Olympus_Mons"},
        {"zone": NY, "file_times": "local"},
        {"zone": NY, "nonexistent": "shift_backward"},
        {"zone": NY, "ambiguous": "raise"},
        {"zone": NY, "time_format": "%Q"},
    ],
)
def test_configuration_mistakes_raise(kw):
    with pytest.raises(ValueError):
        to_utc(pd.Series(["03/04/2026 10:00:00"]), **kw)


def test_empty_cells_and_index_and_dtypes():
    values = pd.Series(
        ["", "   ", None, np.nan, "2026-07-01 14:00:00", "bad"], index=[7, 7, 3, 9, 1, 0]
    )
    result = to_utc(values, zone=NY)
    for series in (result.utc, result.reason, result.empty):
        assert series.index.equals(values.index)
    assert result.utc.dtype == "datetime64[us, UTC]"
    assert result.reason.dtype == "string"
    assert result.empty.dtype == bool
    assert result.empty.tolist() == [True, True, True, True, False, False]
    assert result.reason.tolist() == [pd.NA] * 5 + ["invalid_time"]
    assert result.utc.isna().tolist() == [True] * 4 + [False, True]


@pytest.mark.parametrize("dtype", [object, "string", "str"])
def test_empty_and_all_empty_input(dtype):
    result = to_utc(pd.Series([], dtype=dtype), zone=NY, not_after=pd.Timestamp.now(tz="UTC"))
    assert (len(result.utc), len(result.reason), len(result.empty)) == (0, 0, 0)
    assert result.utc.dtype == "datetime64[us, UTC]"
    assert format_utc(result.utc).tolist() == format_local(result.utc, NY).tolist() == []
    result = to_utc(pd.Series(["", None], dtype=dtype), zone=NY)
    assert result.empty.all() and result.utc.isna().all() and result.reason.isna().all()


# --- property test against a zoneinfo reference ------------------------------------------------

ZONES = [
    NY,
    "Europe/Berlin",
    "Europe/London",  # transitions at UTC+0
    "Europe/Dublin",  # "negative DST" in tzdata: winter is the daylight-saving time
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute shift
    "America/Santiago",  # changes at midnight
    "Antarctica/Troll",  # 2-hour shift
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Asia/Kolkata",  # no DST
]


def reference(wall: datetime, zone: str, nonexistent: str, ambiguous: str):
    """What a wall time means in `zone`, from zoneinfo alone: a UTC datetime or a reason."""
    tz = ZoneInfo(zone)

    def exists(w: datetime) -> bool:  # a real wall time survives a round trip through UTC
        return w.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == w

    first, second = (wall.replace(tzinfo=tz, fold=fold) for fold in (0, 1))
    if not exists(wall):
        if nonexistent == "reject":
            return "nonexistent_local_time"
        probe = wall.replace(second=0, microsecond=0)  # transitions fall on whole minutes
        while not exists(probe := probe + timedelta(minutes=1)):
            pass
        return probe.replace(tzinfo=tz).astimezone(UTC)
    if first.utcoffset() != second.utcoffset():
        if ambiguous == "reject":
            return "ambiguous_local_time"
        return (first if ambiguous == "earliest" else second).astimezone(UTC)
    return first.astimezone(UTC)


@functools.cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """Offset changes between 1990 and 2045 (UTC, naive), found by probing zoneinfo."""
    tz, found = ZoneInfo(zone), []
    offset = lambda t: t.replace(tzinfo=UTC).astimezone(tz).utcoffset()  # noqa: E731
    day = datetime(1990, 1, 1)
    while day < datetime(2045, 1, 1):
        lo, hi = day, day + timedelta(days=1)
        if offset(lo) != offset(hi):
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (lo, mid) if offset(mid) != offset(lo) else (mid, hi)
            found.append(hi.replace(microsecond=0))
        day += timedelta(days=1)
    return tuple(found)


@st.composite
def wall_times(draw, zone: str):
    """Mostly wall times within two hours of a transition, where the edge cases are."""
    tz, near = ZoneInfo(zone), transitions(zone)
    if near and draw(st.booleans()):
        instant = draw(st.sampled_from(near)).replace(tzinfo=UTC)
        before = (instant - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
        return before + draw(st.timedeltas(timedelta(hours=-2), timedelta(hours=3)))
    return draw(st.datetimes(datetime(1990, 1, 1), datetime(2045, 1, 1)))


@st.composite
def cases(draw):
    zone = draw(st.sampled_from(ZONES))
    walls = draw(st.lists(wall_times(zone), max_size=12))
    return zone, walls


@settings(max_examples=300, deadline=None)
@given(
    case=cases(),
    nonexistent=st.sampled_from(["reject", "shift_forward"]),
    ambiguous=st.sampled_from(["reject", "earliest", "latest"]),
)
def test_local_times_match_zoneinfo(case, nonexistent, ambiguous):
    zone, walls = case
    values = pd.Series([w.isoformat(sep=" ") for w in walls], dtype=object)
    result = to_utc(
        values, zone=zone, file_times="account", nonexistent=nonexistent, ambiguous=ambiguous
    )
    for wall, utc, reason in zip(walls, result.utc, result.reason, strict=True):
        expected = reference(wall, zone, nonexistent, ambiguous)
        if isinstance(expected, str):
            assert utc is pd.NaT and reason == expected, wall
        else:
            assert utc == pd.Timestamp(expected) and reason is pd.NA, wall


# --- formatting --------------------------------------------------------------------------------


def test_format_utc():
    utc = instants(
        "2026-07-01T18:00:00Z",
        "2026-07-01T18:00:00.25Z",
        "2026-07-01T18:00:00.000001Z",
        None,
        index=list("abcd"),
    )
    expected = ["2026-07-01T18:00:00Z", "2026-07-01T18:00:00.250000Z",
                "2026-07-01T18:00:00.000001Z", pd.NA]  # fmt: skip
    formatted = format_utc(utc)
    assert formatted.tolist() == expected
    assert formatted.dtype == "string" and formatted.index.equals(utc.index)
    # Any time zone in, UTC out.
    assert format_utc(utc.dt.tz_convert("Asia/Tokyo")).tolist() == expected


def test_format_local_across_a_dst_change():
    # 2026-11-01 05:30Z and 06:30Z are both 01:30 in New York: the offset tells them apart.
    utc = instants("2026-11-01T05:30:00Z", "2026-11-01T06:30:00.5Z", "2026-07-01T18:00:00Z", None)
    assert format_local(utc, NY).tolist() == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00.500000-05:00",
        "2026-07-01T14:00:00-04:00",
        pd.NA,
    ]
    assert format_local(utc, "Asia/Kolkata").tolist()[2] == "2026-07-01T23:30:00+05:30"
    assert format_local(utc, "UTC").tolist()[2] == "2026-07-01T18:00:00+00:00"


def test_format_round_trips_through_to_utc():
    values = pd.Series(["2026-11-01 01:30:00", "2026-03-08 03:00:00.123456", "2026-01-15 14:00:00"])
    utc = to_utc(values, zone=NY, file_times="account", ambiguous="latest").utc
    assert to_utc(format_local(utc, "Europe/Berlin"), zone=NY).utc.equals(utc)
    assert to_utc(format_utc(utc), zone="Asia/Tokyo").utc.equals(utc)


def test_format_refuses_naive_datetimes():
    with pytest.raises(TypeError):
        format_utc(pd.Series(pd.to_datetime(["2026-07-01 18:00:00"])))


# --- the seed's example both ways, file zones, more shapes -------------------------------------
# Expectations by hand: New York is UTC-4 in July 2026 (EDT, 2026-03-08 to 2026-11-01) and UTC-5
# in January; Berlin is UTC+1 in January (CET) and UTC+2 in July (CEST); GMT+4 is UTC+4 all year.


@pytest.mark.parametrize(
    ("zone", "file_times", "written", "expected"),
    [
        # To see 14:00:00 in a New York account's logs in summer, the file says 18:00:00 (the
        # seed's words, file_times = "utc") or 14:00:00 (file_times = "account").
        (NY, "utc", "2026-07-01 18:00:00", "2026-07-01T18:00:00Z"),
        (NY, "account", "2026-07-01 14:00:00", "2026-07-01T18:00:00Z"),
        # An account at GMT+4, written as a fixed offset: 14:00:00 local is 10:00:00 UTC.
        ("GMT+4", "utc", "2026-07-01 10:00:00", "2026-07-01T10:00:00Z"),
        ("GMT+4", "account", "2026-07-01 14:00:00", "2026-07-01T10:00:00Z"),
        ("GMT+4", "account", "2026-01-15 14:00:00", "2026-01-15T10:00:00Z"),  # no DST, ever
        ("UTC-04:00", "account", "2026-01-15 14:00:00", "2026-01-15T18:00:00Z"),
        ("UTC+5:30", "account", "2026-07-01 14:00:00", "2026-07-01T08:30:00Z"),
        ("GMT-3", "account", "2026-07-01 14:00:00", "2026-07-01T17:00:00Z"),
        ("UTC", "account", "2026-07-01 14:00:00", "2026-07-01T14:00:00Z"),
        ("GMT", "account", "2026-07-01 14:00:00", "2026-07-01T14:00:00Z"),
        # file_times = an IANA zone: the network's own wall clock, whatever the account's zone.
        (NY, "Europe/Berlin", "2026-01-15 14:00:00", "2026-01-15T13:00:00Z"),  # CET, UTC+1
        (NY, "Europe/Berlin", "2026-07-15 14:00:00", "2026-07-15T12:00:00Z"),  # CEST, UTC+2
        ("GMT+4", "Europe/Berlin", "2026-07-15 14:00:00", "2026-07-15T12:00:00Z"),
    ],
)
def test_seed_example_both_ways_and_file_time_zones(zone, file_times, written, expected):
    assert one(written, zone=zone, file_times=file_times) == (ts(expected), None)


def test_both_settings_land_the_same_instant():
    """The seed: whichever file_times a source uses, the same conversion is the same instant."""
    as_utc = one("2026-07-01 18:00:00", file_times="utc")
    as_account = one("2026-07-01 14:00:00", file_times="account")
    assert as_utc == as_account == (ts("2026-07-01T18:00:00Z"), None)


@pytest.mark.parametrize(
    ("written", "file_times", "file_zone", "expected"),
    [
        # Parameters:TimeZone beats file_times...
        ("2026-07-01 14:00:00", "utc", NY, "2026-07-01T18:00:00Z"),
        ("2026-07-01 14:00:00", "account", "-0500", "2026-07-01T19:00:00Z"),  # fixed -5, not EDT
        ("2026-07-01 14:00:00", "Europe/Berlin", "+0100", "2026-07-01T13:00:00Z"),
        ("2026-07-01 14:00:00", "account", "+05:30", "2026-07-01T08:30:00Z"),
        ("2026-07-01 14:00:00", "account", "Asia/Tokyo", "2026-07-01T05:00:00Z"),  # JST, +9
        ("2026-07-01 14:00:00", "account", "UTC", "2026-07-01T14:00:00Z"),
        # ...and the row's own offset beats Parameters:TimeZone.
        ("2026-07-01 14:00:00+02:00", "account", "-0500", "2026-07-01T12:00:00Z"),
        ("2026-07-01 14:00:00Z", "account", NY, "2026-07-01T14:00:00Z"),
        ("2026-07-01 14:00-0100", "utc", "Asia/Tokyo", "2026-07-01T15:00:00Z"),
    ],
)
def test_precedence_row_offset_then_file_zone_then_file_times(
    written, file_times, file_zone, expected
):
    # The account is Dubai (UTC+4), so reading in the account's zone would show as 10:00Z.
    kw = {"zone": "Asia/Dubai", "file_times": file_times, "file_zone": file_zone}
    assert one(written, **kw) == (ts(expected), None)


def test_file_zone_follows_its_own_dst_rules_and_a_fixed_offset_has_none():
    # Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST, so 02:30 does not exist there.
    kw = {"zone": "Asia/Dubai", "file_times": "utc"}
    assert one("2026-03-29 02:30:00", file_zone=BERLIN, **kw) == (pd.NaT, GAP)
    shifted = one("2026-03-29 02:30:00", file_zone=BERLIN, nonexistent="shift_forward", **kw)
    assert shifted == (ts("2026-03-29T01:00:00Z"), None)
    assert one("2026-03-29 02:30:00", file_zone="+0100", **kw) == (ts("2026-03-29T01:30:00Z"), None)
    # The same wall time read per file_times = "Europe/Berlin" is the same gap.
    assert one("2026-03-29 02:30:00", zone=NY, file_times=BERLIN) == (pd.NaT, GAP)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # No seconds: HH:MM means HH:MM:00, with a space or T, with or without an offset.
        ("2026-03-08 14:00", "2026-03-08T14:00:00Z"),
        ("2026-03-08T14:00", "2026-03-08T14:00:00Z"),
        ("2026-03-08 14:00Z", "2026-03-08T14:00:00Z"),
        ("2026-03-08 14:00+0100", "2026-03-08T13:00:00Z"),
        ("2026-03-08T14:00-05:00", "2026-03-08T19:00:00Z"),
        ("2026-03-08 23:59+02", "2026-03-08T21:59:00Z"),
        # Google's yyyy-mm-dd hh:mm:ss+hhmm.
        ("2026-03-08 14:00:00+0100", "2026-03-08T13:00:00Z"),
        ("2026-03-08 14:00:00-0500", "2026-03-08T19:00:00Z"),
        # Unix epoch: 2026-03-08 is day 20520 (56 years of 365 days, 14 leap days, 31+28+7),
        # so 20520 * 86400 + 14 * 3600 = 1772978400 is 2026-03-08T14:00:00Z.
        ("1772978400", "2026-03-08T14:00:00Z"),
        ("1772978400000", "2026-03-08T14:00:00Z"),
        ("1772978400123", "2026-03-08T14:00:00.123000Z"),
        ("1772978399999", "2026-03-08T13:59:59.999000Z"),
        (" 1772978400 ", "2026-03-08T14:00:00Z"),
        ("1000000000", "2001-09-09T01:46:40Z"),
        ("0000000000", "1970-01-01T00:00:00Z"),
        ("0000000000000", "1970-01-01T00:00:00Z"),
    ],
)
def test_minutes_google_offsets_and_epochs(value, expected):
    # A UTC file and a Tokyo (UTC+9) one agree: each value is either UTC or has its own offset.
    assert one(value, file_times="utc") == (ts(expected), None)
    assert one(value, zone=TOKYO, file_times="utc") == (ts(expected), None)


def test_an_epoch_ignores_file_times_and_file_zone():
    for kw in ({"file_times": "account"}, {"file_times": BERLIN}, {"file_zone": "-0500"}):
        assert one("1772978400", zone=TOKYO, **kw) == (ts("2026-03-08T14:00:00Z"), None)
        assert one("1772978400000", zone=TOKYO, **kw) == (ts("2026-03-08T14:00:00Z"), None)


def test_epochs_are_range_checked_and_can_be_in_the_future():
    # 9999999999 s is in 2286; 4102444800 s is 2100-01-01T00:00:00Z (47482 days after 1970).
    assert one("9999999999", not_after=FAR_AHEAD) == (pd.NaT, OUT)
    assert one("9999999999999", not_after=FAR_AHEAD) == (pd.NaT, OUT)
    limit = pd.Timestamp("2026-03-08T14:05:00Z")
    assert one("4102444800", not_after=limit) == (pd.NaT, "time_in_future")
    assert one("1772978700", not_after=limit) == (ts("2026-03-08T14:05:00Z"), None)  # at it
    assert one("1772978700001", not_after=limit) == (pd.NaT, "time_in_future")


def test_time_format_wins_over_an_epoch_it_reads():
    """An offer source that writes %Y%m%d%H (10 digits) means its format, not epoch seconds."""
    values = pd.Series(["2026030814", "1772978400000", "1772978400"])
    result = to_utc(values, zone=NY, time_format="%Y%m%d%H")
    # Read as %Y%m%d%H, 1772978400 would be month 97 of 1772: no date, so it is epoch seconds.
    assert result.utc.tolist() == [ts("2026-03-08T14:00:00Z")] * 3
    assert result.reason.isna().all()


SPREADSHEET = "time_reformatted_by_spreadsheet"


@pytest.mark.parametrize(
    "value",
    [
        "11/3/2026 8:30",  # 11 March or 3 November: never guessed
        "3/11/2026 8:30",
        "03/11/2026 08:30",
        "11/3/2026 8:30:15",
        "11/3/2026 8:30 PM",
        "11/3/2026 8:30:15 am",
        "11/3/2026 8:30PM",
        "11.3.2026 8:30",  # day.month.year, as German or Russian spreadsheets write it
        "11.03.2026 08:30:00",
        "11/3/26 8:30",  # a two-digit year too
        "12/31/2026 23:59",  # a day over 12 is still a spreadsheet's rewrite
    ],
)
def test_times_a_spreadsheet_reformatted(value):
    assert one(value) == (pd.NaT, SPREADSHEET)
    assert one(value, time_format="%Y%m%d%H%M%S") == (pd.NaT, SPREADSHEET)


@pytest.mark.parametrize(
    "value",
    ["11/3/2026", "11-3-2026 8:30", "2026/03/11 08:30", "11/3/2026 8", "11/3/2026  8:30", "11/3"],
)
def test_other_odd_times_stay_invalid(value):
    assert one(value) == (pd.NaT, "invalid_time")


def test_a_time_format_that_reads_the_spreadsheet_shape_wins():
    values = pd.Series(["11/3/2026 8:30", "31/04/2026 10:00", "3/11/2026 8:30 PM"])
    result = to_utc(values, zone=NY, file_times="utc", time_format="%d/%m/%Y %H:%M")
    assert result.utc.iloc[0] == ts("2026-03-11T08:30:00Z")
    # The source's own shape: a cell it cannot read is a bad time, not a spreadsheet's rewrite.
    assert result.reason.tolist()[1:] == ["invalid_time", "invalid_time"]
    # New York, 11 March 2026: EDT (UTC-4).
    result = to_utc(values[:1], zone=NY, file_times="account", time_format="%d/%m/%Y %H:%M")
    assert result.utc.iloc[0] == ts("2026-03-11T12:30:00Z")


def test_reasons_are_in_catalogue_order():
    from pipeline.core.reasons import CATALOGUE

    codes = list(CATALOGUE)
    assert sorted(REASONS, key=codes.index) == list(REASONS)
    assert SPREADSHEET in REASONS and set(REASONS) <= set(CATALOGUE)


def test_every_shape_in_one_vectorised_call():
    """Mixed shapes over a large column in one call, each counted by hand."""
    block = [
        "2026-07-01 14:00:00",  # utc: 14:00Z
        "2026-07-01 14:00",  # 14:00Z
        "2026-07-01T16:00:00+02:00",  # 14:00Z
        "1782914400",  # 2026-07-01 is day 20635 (20520 + 23 + 30 + 31 + 30 + 1): 14:00Z
        "1782914400000",  # 14:00Z
        "7/1/2026 14:00",
        "junk",
        "",
    ]
    values = pd.Series(block * 20_000)
    result = to_utc(values, zone=NY, not_after=FAR_AHEAD)
    assert result.reason.value_counts(dropna=False).to_dict() == {
        pd.NA: 120_000,
        SPREADSHEET: 20_000,
        "invalid_time": 20_000,
    }
    assert result.utc.value_counts().to_dict() == {ts("2026-07-01T14:00:00Z"): 100_000}
    assert int(result.empty.sum()) == 20_000


@pytest.mark.parametrize(
    "kw",
    [
        {"zone": NY, "file_times": "Mars/Olympus_Mons"},
        {"zone": NY, "file_zone": "Mars/Olympus_Mons"},
        {"zone": NY, "file_zone": "+2500"},
        {"zone": "GMT+24"},
    ],
)
def test_unknown_zones_raise_even_when_no_cell_needs_them(kw):
    with pytest.raises(ValueError):
        to_utc(pd.Series(["2026-07-01T14:00:00Z"]), **kw)


# --- zone names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hours", "minutes"),
    [
        ("GMT+4", 4, 0),  # four hours ahead of UTC, as a person means it
        ("GMT-3", -3, 0),
        ("UTC-04:00", -4, 0),
        ("UTC+5:30", 5, 30),
        ("UTC+0530", 5, 30),
        ("UTC+14", 14, 0),
        ("UTC-12:00", -12, 0),
        ("UTC", 0, 0),
        ("GMT", 0, 0),
        ("GMT+0", 0, 0),
        ("+0100", 1, 0),  # Parameters:TimeZone offsets
        ("-0500", -5, 0),
        ("+05:45", 5, 45),
        ("-03:30", -3, -30),
    ],
)
def test_fixed_offsets(name, hours, minutes):
    tz = zone(name)
    assert tz.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=hours, minutes=minutes)
    assert tz.utcoffset(datetime(2026, 1, 1)) == timedelta(hours=hours, minutes=minutes)
    assert fixed_offset(name) == timedelta(hours=hours, minutes=minutes)


def test_iana_zones_keep_their_rules():
    tz = zone(NY)
    assert tz.utcoffset(datetime(2026, 7, 1, 12)) == timedelta(hours=-4)
    assert tz.utcoffset(datetime(2026, 1, 15, 12)) == timedelta(hours=-5)
    assert fixed_offset(NY) is None
    # Etc/GMT+4 is tzdata's POSIX name for UTC-4: as a zone it reads as tzdata says.
    assert zone("Etc/GMT+4").utcoffset(datetime(2026, 7, 1)) == timedelta(hours=-4)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "GMT+24", "UTC+4:60", "+5", "America"])
def test_unknown_zone_names_raise(name):
    with pytest.raises(ValueError):
        zone(name)


def test_format_local_with_fixed_offsets():
    utc = instants("2026-07-01T18:00:00Z", "2026-01-15T18:00:00Z", None)
    assert format_local(utc, "GMT+4").tolist() == [
        "2026-07-01T22:00:00+04:00",
        "2026-01-15T22:00:00+04:00",
        pd.NA,
    ]
    assert format_local(utc, "UTC-04:00").tolist()[:2] == [
        "2026-07-01T14:00:00-04:00",
        "2026-01-15T14:00:00-04:00",  # no DST: New York would say 13:00:00-05:00
    ]
    assert format_local(utc, "UTC+5:30").tolist()[0] == "2026-07-01T23:30:00+05:30"
    assert format_local(utc, "GMT").tolist()[0] == "2026-07-01T18:00:00+00:00"
