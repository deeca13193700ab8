"""Turn a file's `conversion_time` cells into UTC instants (or a reason code), and format UTC
instants for export (README "Times").

Everything is vectorised over one file's column: one file belongs to one offer source, so the zone
and the policies are scalars per call. The rules, in order:

1. trim; an empty cell is not an error (the caller substitutes the file's received time);
2. the standard shape `YYYY-MM-DD[ T]HH:MM:SS[.f{1,6}][Z|±HH:MM|±HHMM|±HH]`, checked by a regex
   and then for being a real calendar date/time; otherwise the offer source's one `time_format`;
   anything else is `invalid_time`, so a day-first/month-first date is never guessed, and a 7th
   fractional digit is never dropped (as a 7th payout decimal is `invalid_payout`);
3. an explicit offset is taken as written; otherwise `file_times` says whether the wall time is
   UTC or the account's local time, resolved with the zone's real DST rules and the offer source's
   gap/overlap policies;
4. a UTC instant (after step 3) before 1970-01-01T00:00:00Z or from 2201-01-01T00:00:00Z on (the
   last accepted second is 2200-12-31T23:59:59Z) is `time_out_of_range`: a placeholder such as
   9999-12-31 is a well-formed time, not a format mistake. A wall time more than a day outside is
   out of range without consulting the zone (no UTC offset reaches a day), which also keeps years
   pandas cannot localise (beyond 2262) away from it;
5. an in-range instant strictly after `not_after` is `time_in_future` (so a time after 2200 is out
   of range, never "in the future").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from pipeline.core.vocabulary import AMBIGUOUS_POLICIES, FILE_TIMES, NONEXISTENT_POLICIES

REASONS = (
    "invalid_time",
    "time_out_of_range",
    "nonexistent_local_time",
    "ambiguous_local_time",
    "time_in_future",
)


# ASCII digits only ([0-9], not \d, which also matches e.g. Arabic-Indic digits). The time of
# day is range-checked here because pandas' parser accepts seconds 60 and 61 (rolling them into
# the next minute); the date is checked by pandas. Offsets must be under 24h, as offsets are.
# At most 6 fractional digits: storage is to the microsecond, and a 7th digit would have to be
# dropped or rounded, so it is refused instead (like a payout's 7th decimal).
# A plain string (not re.compile) so that pandas evaluates it in Arrow, not row by row.
_STANDARD = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
)
_US = "datetime64[us]"
_NAT = np.datetime64("NaT", "us")
_SECOND_US = 1_000_000
_DAY_S = 86_400
# The accepted instants, [_FIRST, _END): README "Times". Wall times without an offset are
# compared with a day's margin first (every UTC offset, historical ones too, is under a day), so
# only wall times that may be in range are localised: pandas' tz_localize cannot take every year
# a datetime64[us] holds, and 1969-12-31..2201-01-02 it can.
_FIRST = np.datetime64("1970-01-01T00:00:00", "us")
_END = np.datetime64("2201-01-01T00:00:00", "us")
_MARGIN = np.timedelta64(_DAY_S, "s")


@dataclass(frozen=True)
class TimeResult:
    """One file's times, aligned with the input's index. An empty cell is neither a time nor an
    error: the caller decides what it stands for (the file's received time)."""

    utc: pd.Series  # datetime64[us, UTC]; NaT where the cell was empty or rejected
    reason: pd.Series  # string; <NA> where fine or empty, else one of REASONS
    empty: pd.Series  # bool: the cell was empty after trimming


def to_utc(
    values: pd.Series,
    *,
    zone: str,
    file_times: str = "account",
    time_format: str | None = None,
    nonexistent: str = "reject",
    ambiguous: str = "reject",
    not_after: pd.Timestamp | None = None,
) -> TimeResult:
    """Parse `conversion_time` cells into UTC instants, or say why a cell cannot be one.

    Index is preserved on every output. Raises ValueError for an unknown policy, zone, a naive
    `not_after` or an unusable `time_format` (configuration mistakes, not row problems).
    """
    _check(file_times, FILE_TIMES, "file_times")
    _check(nonexistent, NONEXISTENT_POLICIES, "nonexistent")
    _check(ambiguous, AMBIGUOUS_POLICIES, "ambiguous")
    try:
        ZoneInfo(zone)  # fail on an unknown zone even when no cell needs it
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {zone!r}") from None
    limit = _utc_limit(not_after)

    # Work positionally (RangeIndex) so duplicate or odd index labels cannot misalign anything.
    text = values.astype("string").str.strip().reset_index(drop=True)
    n = len(text)
    empty = (text.isna() | (text == "")).fillna(True).to_numpy(bool)

    standard = text.str.fullmatch(_STANDARD).fillna(False).to_numpy(bool)
    wall, offset = _split_standard(text.where(standard))
    explicit = ~np.isnat(offset)

    utc = np.full(n, _NAT)  # instants known to be UTC (naive datetime64[us])
    local = np.where(explicit, _NAT, wall)  # wall times that still need file_times
    utc[explicit] = wall[explicit] - offset[explicit]

    custom = ~standard & ~empty
    if time_format is not None and custom.any():
        parsed_utc, parsed_wall = _parse_custom(text[custom], time_format)
        utc[custom], local[custom] = parsed_utc, parsed_wall

    reason = np.full(n, None, dtype=object)
    reason[~empty & np.isnat(utc) & np.isnat(local)] = "invalid_time"
    far = (local < _FIRST - _MARGIN) | (local >= _END + _MARGIN)  # out of range in any zone
    reason[far] = "time_out_of_range"
    local[far] = _NAT

    pending = ~np.isnat(local)
    if file_times == "utc":
        utc[pending] = local[pending]
    elif pending.any():
        resolved, gap, overlap = _localize(local[pending], zone, nonexistent, ambiguous)
        utc[pending] = resolved
        rows = np.flatnonzero(pending)
        if nonexistent == "reject":
            reason[rows[gap]] = "nonexistent_local_time"
        if ambiguous == "reject":
            reason[rows[overlap]] = "ambiguous_local_time"

    # On the UTC instant, so after the zone: a rejected DST gap or overlap names no instant and
    # keeps its own reason (no zone changes its offset within a day of either end).
    outside = (utc < _FIRST) | (utc >= _END)  # NaT compares False
    reason[outside] = "time_out_of_range"
    utc[outside] = _NAT

    if limit is not None:
        future = ~np.isnat(utc) & (utc > limit)
        reason[future] = "time_in_future"
        utc[future] = _NAT

    index = values.index
    return TimeResult(
        utc=pd.Series(utc, index=index).dt.tz_localize("UTC"),
        reason=pd.Series(reason, index=index, dtype="string"),
        empty=pd.Series(empty, index=index, dtype=bool),
    )


def format_utc(utc: pd.Series) -> pd.Series:
    """ISO 8601 with `Z` ("2026-07-01T18:00:00Z"); microseconds only when non-zero; NaT -> <NA>."""
    instants = _as_utc_array(utc)
    return pd.Series(_iso(instants), index=utc.index, dtype="string") + "Z"


def format_local(utc: pd.Series, zone: str) -> pd.Series:
    """The account-local view with its offset ("2026-07-01T14:00:00-04:00"), as the tracker's
    logs show it; same microsecond rule as `format_utc`; NaT -> <NA>."""
    instants = _as_utc_array(utc)
    wall = _to_wall(instants, zone)
    offset_s = (wall - instants).astype("timedelta64[s]").astype(np.int64)
    # Only a handful of distinct offsets per file: format those once, then index.
    distinct, which = np.unique(offset_s, return_inverse=True)
    labels = np.array([_format_offset(int(s)) for s in distinct], dtype=object)
    suffix = pd.Series(labels[which.reshape(-1)], index=utc.index, dtype="string")
    return pd.Series(_iso(wall), index=utc.index, dtype="string") + suffix


# --- parsing -----------------------------------------------------------------------------------


def _check(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _utc_limit(not_after: pd.Timestamp | None) -> np.datetime64 | None:
    if not_after is None:
        return None
    limit = pd.Timestamp(not_after)
    if limit.tzinfo is None:
        raise ValueError("not_after must be time-zone aware; a naive limit would be a guess")
    return limit.tz_convert("UTC").tz_localize(None).as_unit("us").to_datetime64()


def _split_standard(cells: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Cells already matching `_STANDARD` (<NA> elsewhere) -> (wall time, written offset).

    The wall time is naive datetime64[us], NaT unless it is a real calendar date; the offset is
    timedelta64[us], NaT where none was written. Fractions have at most 6 digits (the regex), so
    they are exact: nothing is cut or rounded. Fixed positions and simple regexes only, because
    pandas runs `str.extract` row by row in Python while these run in Arrow.
    """
    tail = cells.str.slice(19)  # "", ".25", "Z", ".25+02:00", "-0530", ...
    frac = tail.str.replace(r"[Z+-].*", "", regex=True).str.slice(1, 7)
    frac = frac.str.pad(6, side="right", fillchar="0")
    canonical = cells.str.slice(0, 10) + " " + cells.str.slice(11, 19) + "." + frac
    wall = pd.to_datetime(canonical, format="%Y-%m-%d %H:%M:%S.%f", errors="coerce")
    wall = wall.to_numpy(_US)

    written = tail.str.replace(r"^\.[0-9]+", "", regex=True)  # "", "Z", "+02:00", "+0200", "+02"
    offset = np.full(len(cells), np.timedelta64("NaT", "us"))
    offset[(written == "Z").fillna(False).to_numpy(bool)] = np.timedelta64(0, "us")
    signed = written.str.len().fillna(0).to_numpy(bool) & (written != "Z").fillna(False).to_numpy()
    if signed.any():  # rare: most files have no offsets at all
        found = written[signed]
        digits = found.str.slice(1).str.replace(":", "").str.pad(4, side="right", fillchar="0")
        hhmm = pd.to_numeric(digits).to_numpy(np.int64)
        minutes = np.where(found.str.startswith("-"), -1, 1) * (hhmm // 100 * 60 + hhmm % 100)
        offset[signed] = minutes.astype("timedelta64[m]")
    return wall, offset


def _parse_custom(cells: pd.Series, time_format: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse with the offer source's strptime format: (UTC instants, wall times), NaT-filled.

    With `%z` (or `%Z`) the parsed offset is used, so the result is an instant; otherwise it is a
    wall time that `file_times` decides about, exactly like a standard cell without an offset.
    pandas' `%f` reads up to nanoseconds; a time with a non-zero part below the microsecond is
    NaT (`invalid_time`) rather than truncated when it is stored in microseconds.
    """
    zoned = re.search(r"(?<!%)(?:%%)*%[zZ]", time_format) is not None
    try:
        parsed = pd.to_datetime(cells, format=time_format, errors="coerce", utc=zoned)
    except ValueError as exc:
        raise ValueError(f"time_format {time_format!r} is not usable: {exc}") from None
    parsed = parsed.mask(parsed.dt.nanosecond.fillna(0) != 0)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        instants = parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(_US)
        return instants, np.full(len(cells), _NAT)
    return np.full(len(cells), _NAT), parsed.to_numpy(_US)


# --- local wall times --------------------------------------------------------------------------


def _localize(
    wall: np.ndarray, zone: str, nonexistent: str, ambiguous: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resolve local wall times in `zone`: (UTC instants with NaT where rejected, gap, overlap).

    Localising twice, once choosing the first occurrence of every repeated wall time and once the
    second, finds both edge cases: a gap is NaT both times, an overlap gives two instants.
    """
    series = pd.Series(wall)
    n = len(series)
    first, second = (
        np.array(
            series.dt.tz_localize(zone, ambiguous=np.full(n, pick), nonexistent="NaT")
            .dt.tz_convert("UTC")
            .dt.tz_localize(None),
            dtype=_US,
        )  # a writable copy
        for pick in (True, False)
    )
    gap = np.isnat(first) & ~np.isnat(wall)
    overlap = ~np.isnat(first) & (first != second)
    utc = second if ambiguous == "latest" else first
    if ambiguous == "reject":
        utc[overlap] = _NAT
    if nonexistent == "shift_forward" and gap.any():
        utc[gap] = _gap_end(wall[gap], zone)
    return utc, gap, overlap


def _gap_end(wall: np.ndarray, zone: str) -> np.ndarray:
    """The first valid instant after the gap each wall time falls in: the transition instant.

    Not `tz_localize(nonexistent="shift_forward")`: pandas rounds up to the next whole hour, which
    is 30 minutes late for Australia/Lord_Howe's 02:00 -> 02:30 gap. Instead, bisect (in whole
    seconds, as tzdata transitions are) for where the UTC offset changes, which UTC -> local
    conversion answers exactly. Any transition is within a day of its gap's wall times.
    """
    seconds = wall.astype("datetime64[s]").astype(np.int64)  # floors
    lo, hi = seconds - _DAY_S, seconds + _DAY_S
    after = _offset_at(hi, zone)
    while (open_ := hi - lo > 1).any():
        mid = np.where(open_, (lo + hi) // 2, lo)
        moved = _offset_at(mid, zone) == after
        hi, lo = np.where(moved, mid, hi), np.where(moved, lo, mid)
    return hi.astype("datetime64[s]").astype(_US)


def _offset_at(utc_seconds: np.ndarray, zone: str) -> np.ndarray:
    """The zone's UTC offset (seconds) at each instant (int64 seconds since the epoch)."""
    instants = utc_seconds.astype("datetime64[s]").astype(_US)
    return (_to_wall(instants, zone) - instants).astype("timedelta64[s]").astype(np.int64)


def _to_wall(instants: np.ndarray, zone: str) -> np.ndarray:
    """UTC instants (naive datetime64[us]) -> the zone's wall times (naive datetime64[us])."""
    index = pd.DatetimeIndex(instants).tz_localize("UTC").tz_convert(zone)
    return index.tz_localize(None).to_numpy(_US)


# --- formatting --------------------------------------------------------------------------------


def _as_utc_array(utc: pd.Series) -> np.ndarray:
    """Tz-aware datetimes -> naive UTC datetime64[us]. Naive input is refused: which zone it is
    in would be a guess. An all-missing Series of another dtype (e.g. empty) is all NaT."""
    if isinstance(utc.dtype, pd.DatetimeTZDtype):
        return utc.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(_US)
    if utc.isna().all():
        return np.full(len(utc), _NAT)
    raise TypeError(f"expected tz-aware datetimes (datetime64[us, UTC]); got {utc.dtype}")


def _iso(wall: np.ndarray) -> np.ndarray:
    """ISO 8601 without offset (object array), microseconds only when non-zero; None for NaT."""
    text = np.datetime_as_string(wall, unit="s").astype(object)
    fraction = ~np.isnat(wall) & (wall.astype(np.int64) % _SECOND_US != 0)
    text[fraction] = np.datetime_as_string(wall[fraction], unit="us")
    text[np.isnat(wall)] = None
    return text


def _format_offset(seconds: int) -> str:
    """+HH:MM (or +HH:MM:SS for the odd historical offset, as `datetime.isoformat` does)."""
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")
