"""Turn a file's `conversion_time` cells into UTC instants (or a reason code), format UTC
instants for export, and read the zone names configs and files write (README "Times").

Everything is vectorised over one file's column: one file belongs to one offer source, so the
zones and the policies are scalars per call. The rules, in order:

1. trim; an empty cell is not an error (the caller substitutes the file's received time);
2. the standard shape `YYYY-MM-DD[ T]HH:MM[:SS[.f{1,6}]][Z|±HH:MM|±HHMM|±HH]` (Google's
   `yyyy-mm-dd hh:mm:ss+hhmm` included; no seconds means `:00`), checked by a regex and then for
   being a real calendar date/time; otherwise the offer source's one `time_format`; otherwise Unix
   epoch seconds (exactly 10 digits) or milliseconds (exactly 13), which are UTC instants;
3. anything else is `invalid_time`, so a day-first/month-first date is never guessed, and a 7th
   fractional digit is never dropped (as a 7th payout decimal is `invalid_payout`) — except that a
   cell shaped like a spreadsheet's rewrite of a time on save (`11/3/2026 8:30`, `3.11.2026
   8:30:00`, `11/3/2026 8:30 PM`: day and month cannot be told apart) is
   `time_reformatted_by_spreadsheet`, so the fix it needs is named (unless the offer source's
   own `time_format` writes that shape: then it is a bad time in that format);
4. an explicit offset (and an epoch value) is taken as written; a wall time without one is read
   in the file's own zone (its Google-style `Parameters:TimeZone=` line, `file_zone`) if it has
   one, else per `file_times`: `utc` (already UTC), `account` (the account's zone) or an IANA
   zone; a zone's real DST rules resolve it, with the offer source's gap/overlap policies (a fixed
   offset has neither);
5. a UTC instant (after step 4) before 1970-01-01T00:00:00Z or from 2201-01-01T00:00:00Z on (the
   last accepted second is 2200-12-31T23:59:59Z) is `time_out_of_range`: a placeholder such as
   9999-12-31 is a well-formed time, not a format mistake. A wall time more than a day outside is
   out of range without consulting the zone (no UTC offset reaches a day), which also keeps years
   pandas cannot localise (beyond 2262) away from it;
6. an in-range instant strictly after `not_after` is `time_in_future` (so a time after 2200 is out
   of range, never "in the future").

Zone names (`zone`) are IANA zones, `UTC`/`GMT`, fixed offsets as a person writes them (`GMT+4`
is four hours ahead of UTC, `UTC-04:00`, `UTC+5:30`) and, as Google's Parameters line writes them,
`+HHMM`/`-HHMM`/`+HH:MM`. An account's zone is checked more strictly (`check_account_zone`): the
POSIX-inverted `Etc/GMT+4` and bare abbreviations such as `EST` are refused with the zone to use.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np
import pandas as pd

from pipeline.core.vocabulary import AMBIGUOUS_POLICIES, FILE_TIMES, NONEXISTENT_POLICIES

# In the catalogue's order (pipeline.core.reasons), as the reports list them.
REASONS = (
    "invalid_time",
    "time_reformatted_by_spreadsheet",
    "nonexistent_local_time",
    "ambiguous_local_time",
    "time_in_future",
    "time_out_of_range",
)


# ASCII digits only ([0-9], not \d, which also matches e.g. Arabic-Indic digits). The time of
# day is range-checked here because pandas' parser accepts seconds 60 and 61 (rolling them into
# the next minute); the date is checked by pandas. Offsets must be under 24h, as offsets are.
# At most 6 fractional digits: storage is to the microsecond, and a 7th digit would have to be
# dropped or rounded, so it is refused instead (like a payout's 7th decimal). Seconds may be
# left out (`14:00`), and then no fraction may follow.
# Plain strings (not re.compile) so that pandas evaluates them in Arrow, not row by row.
_STANDARD = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r"(?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
)
_EPOCH_SECONDS, _EPOCH_MILLISECONDS = r"[0-9]{10}", r"[0-9]{13}"
# What a spreadsheet writes back for a time it recognised: the locale's short date (month/day or
# day/month with `/`, day.month with `.`, a 4- or 2-digit year), a space, an hour without its
# leading zero, minutes, maybe seconds and AM/PM. Only looked for in cells nothing else read.
_SPREADSHEET = (
    r"(?:[0-9]{1,2}/[0-9]{1,2}/|[0-9]{1,2}\.[0-9]{1,2}\.)(?:[0-9]{2}){1,2},? "
    r"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?(?: ?[AaPp]\.?[Mm]\.?)?"
)
# A time with a day over 12 and an afternoon hour, written in an offer source's time_format.
_FORMAT_SAMPLE = datetime(2024, 1, 31, 13, 45, 30)
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
    file_times: str = "utc",
    file_zone: str | None = None,
    time_format: str | None = None,
    nonexistent: str = "reject",
    ambiguous: str = "reject",
    not_after: pd.Timestamp | None = None,
) -> TimeResult:
    """Parse `conversion_time` cells into UTC instants, or say why a cell cannot be one.

    `zone` is the account's zone; `file_times` is "utc", "account" or a zone name; `file_zone`
    is the file's own `Parameters:TimeZone=` zone (a zone name or `+HHMM`), which wins over
    `file_times`; a cell's own offset wins over both. Index is preserved on every output. Raises
    ValueError for an unknown policy or zone, a naive `not_after` or an unusable `time_format`
    (configuration mistakes, not row problems).
    """
    _check(nonexistent, NONEXISTENT_POLICIES, "nonexistent")
    _check(ambiguous, AMBIGUOUS_POLICIES, "ambiguous")
    reading = _reading_zone(zone, file_times, file_zone)  # None: wall times are UTC
    limit = _utc_limit(not_after)

    # Work positionally (RangeIndex) so duplicate or odd index labels cannot misalign anything.
    text = values.astype("string").str.strip().reset_index(drop=True)
    n = len(text)
    empty = (text.isna() | (text == "")).fillna(True).to_numpy(bool)

    standard = _matches(text, _STANDARD)
    short = standard & (text.str.slice(16, 17) != ":").fillna(False).to_numpy(bool)
    if short.any():  # HH:MM -> HH:MM:00, so that every standard cell has its seconds at 17-18
        text = text.mask(short, text.str.slice(0, 16) + ":00" + text.str.slice(16))
    wall, offset = _split_standard(text.where(standard))
    explicit = ~np.isnat(offset)

    utc = np.full(n, _NAT)  # instants known to be UTC (naive datetime64[us])
    local = np.where(explicit, _NAT, wall)  # wall times that still need a zone
    utc[explicit] = wall[explicit] - offset[explicit]

    custom = ~standard & ~empty
    if time_format is not None and custom.any():
        parsed_utc, parsed_wall = _parse_custom(text[custom], time_format)
        utc[custom], local[custom] = parsed_utc, parsed_wall

    unread = ~empty & np.isnat(utc) & np.isnat(local)
    if unread.any():
        _epoch(text, unread, utc)
        unread &= np.isnat(utc)

    reason = np.full(n, None, dtype=object)
    reason[unread] = "invalid_time"
    if unread.any() and not _spreadsheet_like(time_format):
        reason[unread & _matches(text, _SPREADSHEET)] = "time_reformatted_by_spreadsheet"
    far = (local < _FIRST - _MARGIN) | (local >= _END + _MARGIN)  # out of range in any zone
    reason[far] = "time_out_of_range"
    local[far] = _NAT

    pending = ~np.isnat(local)
    if reading is None:
        utc[pending] = local[pending]
    elif isinstance(reading, timezone):  # a fixed offset: no gaps, no overlaps
        utc[pending] = local[pending] - np.timedelta64(reading.utcoffset(None), "us")
    elif pending.any():
        resolved, gap, overlap = _localize(local[pending], reading, nonexistent, ambiguous)
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
    logs show it; `zone` is any name `zone()` reads (a fixed offset such as GMT+4 included);
    same microsecond rule as `format_utc`; NaT -> <NA>."""
    instants = _as_utc_array(utc)
    wall = _to_wall(instants, _zone(zone))
    offset_s = (wall - instants).astype("timedelta64[s]").astype(np.int64)
    # Only a handful of distinct offsets per file: format those once, then index.
    distinct, which = np.unique(offset_s, return_inverse=True)
    labels = np.array([_format_offset(int(s)) for s in distinct], dtype=object)
    suffix = pd.Series(labels[which.reshape(-1)], index=utc.index, dtype="string")
    return pd.Series(_iso(wall), index=utc.index, dtype="string") + suffix


# --- zone names --------------------------------------------------------------------------------

# `UTC`, `GMT`, and offsets from them as a person means them: GMT+4 is four hours ahead of UTC
# (the opposite of POSIX's Etc/GMT+4). Hours may have one digit (GMT+4, UTC+5:30).
_PERSON_OFFSET = re.compile(r"(?:UTC|GMT)(?:([+-])([0-9]{1,2})(?::?([0-9]{2}))?)?", re.IGNORECASE)
# An ISO 8601 offset as Google's Parameters:TimeZone= line writes it: +HHMM, -HHMM, +HH:MM, +HH.
_ISO_OFFSET = re.compile(r"([+-])([0-9]{2})(?::?([0-9]{2}))?")
# POSIX-style zone names, whose sign is the inverse of what a person means.
_POSIX_OFFSET = re.compile(r"Etc/GMT([+-])([0-9]{1,2})")
# The offsets an account may have: the world's clocks run from UTC-12 to UTC+14.
_ACCOUNT_OFFSETS = (timedelta(hours=-12), timedelta(hours=14))

# Abbreviations people write for a zone. None is a zone: it names no DST rules, several are
# shared by different places, and tzdata's EST, MST, HST, CET, EET, WET and MET are fixed
# offsets or European rules a person does not mean. Each maps to the IANA zone to write instead.
_ABBREVIATIONS = {
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "CST": "America/Chicago (US Central; Asia/Shanghai for China)",
    "CDT": "America/Chicago",
    "MST": "America/Denver (America/Phoenix keeps MST all year)",
    "MDT": "America/Denver",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "AKST": "America/Anchorage",
    "AKDT": "America/Anchorage",
    "HST": "Pacific/Honolulu",
    "AST": "America/Halifax (Atlantic; Asia/Riyadh for Arabia)",
    "ADT": "America/Halifax",
    "NST": "America/St_Johns",
    "NDT": "America/St_Johns",
    "BRT": "America/Sao_Paulo",
    "ART": "America/Argentina/Buenos_Aires",
    "WET": "Europe/Lisbon",
    "WEST": "Europe/Lisbon",
    "BST": "Europe/London",
    "CET": "Europe/Paris or Europe/Berlin",
    "CEST": "Europe/Paris or Europe/Berlin",
    "MET": "Europe/Paris or Europe/Berlin",
    "MEST": "Europe/Paris or Europe/Berlin",
    "EET": "Europe/Athens or Europe/Helsinki",
    "EEST": "Europe/Athens or Europe/Helsinki",
    "MSK": "Europe/Moscow",
    "SAST": "Africa/Johannesburg",
    "WAT": "Africa/Lagos",
    "CAT": "Africa/Maputo",
    "EAT": "Africa/Nairobi",
    "GST": "Asia/Dubai",
    "PKT": "Asia/Karachi",
    "IST": "Asia/Kolkata (India; Europe/Dublin for Ireland, Asia/Jerusalem for Israel)",
    "ICT": "Asia/Bangkok",
    "WIB": "Asia/Jakarta",
    "HKT": "Asia/Hong_Kong",
    "SGT": "Asia/Singapore",
    "JST": "Asia/Tokyo",
    "KST": "Asia/Seoul",
    "AWST": "Australia/Perth",
    "ACST": "Australia/Adelaide",
    "ACDT": "Australia/Adelaide",
    "AEST": "Australia/Sydney",
    "AEDT": "Australia/Sydney",
    "NZST": "Pacific/Auckland",
    "NZDT": "Pacific/Auckland",
}

# City zones a fixed offset is most likely meant for, most likely first: a fixed-offset warning
# names the first two whose clock shows that offset in January or July.
_CITIES = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Phoenix", "America/Anchorage", "Pacific/Honolulu", "America/Mexico_City",
    "America/Bogota", "America/Sao_Paulo", "America/Argentina/Buenos_Aires", "America/Halifax",
    "America/St_Johns", "Europe/London", "Europe/Paris", "Europe/Berlin", "Africa/Lagos",
    "Europe/Athens", "Europe/Kyiv", "Africa/Cairo", "Africa/Johannesburg", "Europe/Istanbul",
    "Europe/Moscow", "Asia/Riyadh", "Africa/Nairobi", "Asia/Tehran", "Asia/Dubai", "Asia/Kabul",
    "Asia/Karachi", "Asia/Tashkent", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Dhaka",
    "Asia/Yangon", "Asia/Bangkok", "Asia/Jakarta", "Asia/Shanghai", "Asia/Singapore",
    "Australia/Perth", "Asia/Tokyo", "Asia/Seoul", "Australia/Adelaide", "Australia/Darwin",
    "Australia/Brisbane", "Australia/Sydney", "Pacific/Noumea", "Pacific/Auckland",
    "Pacific/Fiji", "Pacific/Chatham", "Pacific/Tongatapu", "Pacific/Kiritimati",
    "Atlantic/Azores", "Atlantic/Cape_Verde", "Pacific/Pago_Pago",
)  # fmt: skip
_SEASONS = (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC))


def zone(name: str) -> tzinfo:
    """A zone name as a config or a file writes it -> its tzinfo: the one place a zone name
    becomes rules. `UTC`/`GMT` and fixed offsets (`GMT+4`, `UTC-04:00`, `UTC+5:30`, `+0100`,
    `-05:00`) are `datetime.timezone`s (GMT+4 is four hours ahead of UTC); anything else must be
    an IANA zone (`ZoneInfo`). Raises ValueError for anything else."""
    return _zone(name)


def fixed_offset(name: str) -> timedelta | None:
    """The UTC offset `name` writes, if it is written as one (`UTC`, `GMT+4`, `UTC-04:00`,
    `+0530`); None for any other name (an IANA zone, or not a zone at all). Syntax only: the
    minutes must be under 60, and `zone` refuses a day or more."""
    person, iso = _PERSON_OFFSET.fullmatch(name), _ISO_OFFSET.fullmatch(name)
    found = person or iso
    if found is None:
        return None
    sign, hours, minutes = found.groups()
    if sign is None:  # plain UTC or GMT
        return timedelta(0)
    if minutes is not None and int(minutes) >= 60:
        return None
    size = timedelta(hours=int(hours), minutes=int(minutes or 0))
    return -size if sign == "-" else size


def check_account_zone(name: str) -> None:
    """Refuse an account time zone a person is likely to mean differently than it reads, with
    the name to write instead: the POSIX `Etc/GMT+4` (which is UTC-4), bare abbreviations (`EST`,
    `CET`...), an offset no place has, and any name `zone` does not know. Raises ValueError."""
    posix = _POSIX_OFFSET.fullmatch(name)
    if posix is not None and int(posix.group(2)) != 0:
        sign = "-" if posix.group(1) == "+" else "+"
        hours = int(posix.group(2))
        cities = _cities_text(timedelta(hours=-hours if sign == "-" else hours))
        raise ValueError(
            f"{name!r} means UTC{sign}{hours} (POSIX zone names invert the sign: it is {hours} "
            f"hour{'s' if hours > 1 else ''} {'behind' if sign == '-' else 'ahead of'} UTC); "
            f"write GMT{sign}{hours} or "
            f"UTC{sign}{hours:02d}:00, or better the city's IANA zone{cities}"
        )
    hint = _ABBREVIATIONS.get(name.upper())
    if hint is not None:
        raise ValueError(
            f"{name!r} is a time-zone abbreviation, not a time zone: it does not say when "
            f"daylight saving time applies; use the IANA zone {hint}"
        )
    offset = fixed_offset(name)
    low, high = _ACCOUNT_OFFSETS
    if offset is not None and not low <= offset <= high:
        raise ValueError(
            f"{name!r} is not an offset any clock uses (they run from UTC-12:00 to UTC+14:00)"
        )
    try:
        _zone(name)
    except ValueError:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA time zone such as America/New_York, "
            "or a fixed offset such as UTC-04:00)"
        ) from None


def fixed_offset_warning(name: str) -> str | None:
    """What a person should know about an account zone written as an offset (`GMT+4`): it has
    no daylight saving time, and the city zones that may be meant. None for a plain `UTC` or
    `GMT` and for IANA zones."""
    offset = fixed_offset(name)
    if offset is None or not re.search("[+-]", name):
        return None
    return (
        f"{name} is a fixed offset with no daylight saving time; if the account follows a "
        f"city's clock, use its IANA zone{_cities_text(offset)}"
    )


def _cities_text(offset: timedelta) -> str:
    """' (e.g. Asia/Dubai)' for the offset's likely cities, '' when none of them has it."""
    cities = [
        city
        for city in _CITIES
        if any(moment.astimezone(ZoneInfo(city)).utcoffset() == offset for moment in _SEASONS)
    ][:2]
    return f" (e.g. {' or '.join(cities)})" if cities else ""


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    offset = fixed_offset(name)
    if offset is not None:
        if abs(offset) >= timedelta(days=1):
            raise ValueError(f"the UTC offset {name!r} is a day or more")
        return UTC if not offset else timezone(offset, name)
    if name in _iana_zones():
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError(f"unknown time zone {name!r} (e.g. America/New_York, UTC-04:00)")


@functools.cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _reading_zone(zone: str, file_times: str, file_zone: str | None) -> tzinfo | None:
    """The zone wall times without an offset are read in (None: they are UTC). Every name is
    checked, even one no cell needs, so that a configuration mistake fails on every file."""
    account = _zone(zone)
    if file_times not in FILE_TIMES:
        try:
            _zone(file_times)
        except ValueError:
            raise ValueError(
                f"file_times must be one of {', '.join(FILE_TIMES)} or a time zone; "
                f"got {file_times!r}"
            ) from None
    if file_zone is not None:
        return _zone(file_zone)
    if file_times == "utc":
        return None
    return account if file_times == "account" else _zone(file_times)


# --- parsing -----------------------------------------------------------------------------------


def _check(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _matches(text: pd.Series, pattern: str) -> np.ndarray:
    """Where the whole (trimmed) cell matches `pattern`, as a bool array (<NA> -> False)."""
    return text.str.fullmatch(pattern).fillna(False).to_numpy(bool)


def _spreadsheet_like(time_format: str | None) -> bool:
    """Whether the offer source's own format writes times a spreadsheet's way (`%d/%m/%Y
    %H:%M`): then a cell of that shape it cannot read (31/04/2026) is a bad time in the file's
    own format, `invalid_time`, not a spreadsheet's rewrite."""
    if time_format is None:
        return False
    written = _FORMAT_SAMPLE.strftime(time_format)
    return re.fullmatch(_SPREADSHEET, written) is not None


def _utc_limit(not_after: pd.Timestamp | None) -> np.datetime64 | None:
    if not_after is None:
        return None
    limit = pd.Timestamp(not_after)
    if limit.tzinfo is None:
        raise ValueError("not_after must be time-zone aware; a naive limit would be a guess")
    return limit.tz_convert("UTC").tz_localize(None).as_unit("us").to_datetime64()


def _epoch(text: pd.Series, unread: np.ndarray, utc: np.ndarray) -> None:
    """Fill `utc` where an unread cell is Unix epoch seconds (10 digits) or milliseconds (13).
    Exact integers: milliseconds scale to microseconds without rounding."""
    for pattern, scale in ((_EPOCH_SECONDS, _SECOND_US), (_EPOCH_MILLISECONDS, 1_000)):
        found = unread & _matches(text, pattern)
        if found.any():
            count = pd.to_numeric(text[found]).to_numpy(np.int64)
            utc[found] = (count * scale).astype(_US)


def _split_standard(cells: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Cells already matching `_STANDARD` with their seconds written (<NA> elsewhere) -> (wall
    time, written offset).

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
    wall: np.ndarray, zone: tzinfo, nonexistent: str, ambiguous: str
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


def _gap_end(wall: np.ndarray, zone: tzinfo) -> np.ndarray:
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


def _offset_at(utc_seconds: np.ndarray, zone: tzinfo) -> np.ndarray:
    """The zone's UTC offset (seconds) at each instant (int64 seconds since the epoch)."""
    instants = utc_seconds.astype("datetime64[s]").astype(_US)
    return (_to_wall(instants, zone) - instants).astype("timedelta64[s]").astype(np.int64)


def _to_wall(instants: np.ndarray, zone: tzinfo) -> np.ndarray:
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
