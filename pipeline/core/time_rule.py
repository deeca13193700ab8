"""How one file's times were read, said in a person's words (README "Times").

A media buyer's most common silent mistake is a file read in the wrong zone: every time is off by
the same hours and nothing is rejected. So every run says, per file, which rule applied to times
without an offset and shows it on the file's first such row, in the account's own clock, e.g.

    times without an offset read as UTC (file_times = "utc"); line 2: 2026-07-01 18:00:00 ->
    2026-07-01 14:00:00 in the account's zone America/New_York

which is the seed's example: to see 14:00 in a New York account's logs, the file says 18:00.
Pure: the caller passes the facts (the rule's inputs and one row).
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

# A time that carries its own instant: a trailing Z or offset, or Unix epoch digits.
_OWN_INSTANT = re.compile(r".*(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)|[0-9]{10}|[0-9]{13}")


def rule(file_times: str, account_zone: str, file_zone: str | None) -> str:
    """Which rule reads a time without an offset, and where that rule comes from."""
    if file_zone is not None:
        return f"times without an offset read in {file_zone} (the file's Parameters:TimeZone line)"
    if file_times == "utc":
        return 'times without an offset read as UTC (file_times = "utc")'
    if file_times == "account":
        return (
            f"times without an offset read in the account's zone {account_zone} "
            '(file_times = "account")'
        )
    return f'times without an offset read in {file_times} (file_times = "{file_times}")'


def has_own_instant(written: str) -> bool:
    """A time no rule applies to (it says its own offset, or is epoch digits)."""
    return _OWN_INSTANT.fullmatch(written.strip()) is not None


def example(line: int, written: str, utc: datetime, account_zone: str, zone: tzinfo) -> str:
    """One row as written and as the account's logs show it."""
    local = utc.astimezone(zone)
    return (
        f"line {line}: {written} -> {local:%Y-%m-%d %H:%M:%S} in the account's zone {account_zone}"
    )


def advice(account_zone: str, wall: datetime, account: tzinfo, file_zone: tzinfo) -> str:
    """What to write in a file so that ``wall`` (naive) shows in the account's logs: the
    seed's example turned around (a New York account in summer, file_times "utc": to see
    14:00:00, write 18:00:00). ``file_zone`` is the zone file times are read in (UTC for
    "utc", the account's for "account")."""
    instant = wall.replace(tzinfo=account)
    written = instant.astimezone(file_zone).replace(tzinfo=None)
    offset = instant.strftime("%z")
    return (
        f"to see {wall:%Y-%m-%d %H:%M:%S} in the account's logs ({account_zone}), write "
        f"{written:%Y-%m-%d %H:%M:%S}, or {wall:%Y-%m-%d %H:%M:%S}{offset[:3]}:{offset[3:]} "
        "with its offset"
    )


def statement(rule_text: str, example_text: str | None) -> str:
    if example_text is None:
        return f"{rule_text}; no row had a time without an offset"
    return f"{rule_text}; {example_text}"
