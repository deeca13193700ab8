"""The second reader: what the README's rules ("Files", "Times") say a file means.

The expectation of every fuzz test (`test_fuzz.py`), written from the README and not from the
pipeline: its own BOM and decoding rules, `sep=` line, header delimiter sniffing, header
matching with the aliases, and a character-by-character CSV tokenizer (the excel dialect:
doubled quotes, line breaks inside quotes, CR, LF and CRLF); then what each cell means, one
column at a time. It imports nothing from `pipeline`: an oracle that shared the reader's or
normalise's code would agree with their bugs.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

FUTURE_TOLERANCE = timedelta(seconds=300)
NEW_YORK = ZoneInfo("America/New_York")
MAX_PAYOUT_MICROS = 10**18 - 1  # 999999999999.999999: 12 digits and 6 decimals (README "Files")
# README "Times": instants from 1970-01-01T00:00:00Z up to the last second of 2200, in UTC.
FIRST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(2201, 1, 1, tzinfo=UTC)  # the first instant out of range


# --- the second reader: README "Files", written independently of pipeline/reader.py -------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx and .xls saved instead of CSV
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
SPELLINGS = {  # README "Files": the columns and their aliases
    "click_id": ("click_id", "clickid", "click id", "subid", "sub_id"),
    "payout": ("payout", "revenue", "sum", "amount"),
    "conversion_time": (
        "conversion_time",
        "time",
        "date",
        "datetime",
        "conversion_date",
        "timestamp",
    ),
    "conversion_type": ("conversion_type", "type", "event"),
    "status": ("status",),
    "event_id": ("event_id", "transaction_id", "order_id", "tid", "txid"),
    "currency": ("currency",),
}
KIND_COLUMNS = {
    "conversions": (
        "click_id",
        "payout",
        "conversion_time",
        "conversion_type",
        "status",
        "event_id",
        "currency",
    ),
    "status": ("click_id", "status", "conversion_type", "event_id"),
}
REQUIRED = {"conversions": ("click_id", "payout"), "status": ("click_id", "status")}
REPORT_COLUMNS = ("line", "reason_code", "reason")


def matched(cell: str) -> str:
    """Header text as README matches it: trimmed, any case, spaces, `_` and `-` alike."""
    return re.sub(r"[ _-]+", "_", cell.strip().lower())


_ALIASES = {matched(s): column for column, spellings in SPELLINGS.items() for s in spellings}


def tokenize(text: str, delimiter: str) -> list[list[str]]:
    """CSV records, character by character: the excel dialect as the README's files use it.

    A record ends at CR, LF or CRLF outside quotes; a quoted cell may hold delimiters, line
    breaks and doubled quotes; a quote inside an unquoted cell is text; text after a closing
    quote joins the cell; a quote still open at the end of the file closes there. A line with
    nothing on it is a record with no cells.
    """
    records: list[list[str]] = []
    cells: list[str] = []
    cell: list[str] = []
    state = "record"
    for physical in _PHYSICAL_LINE.findall(text):
        for c in itertools.chain(physical, [None]):  # None: the end of the physical line
            if state == "record":
                if c is None:
                    continue
                if c in "\r\n":
                    state = "line_break"
                    continue
                state = "cell_start"
            if state == "cell_start":
                if c is None or c in "\r\n":
                    cells.append("")
                    state = "record" if c is None else "line_break"
                elif c == '"':
                    state = "quoted"
                elif c == delimiter:
                    cells.append("")
                else:
                    cell.append(c)
                    state = "unquoted"
            elif state == "unquoted":
                if c is None or c in "\r\n":
                    cells.append("".join(cell))
                    cell.clear()
                    state = "record" if c is None else "line_break"
                elif c == delimiter:
                    cells.append("".join(cell))
                    cell.clear()
                    state = "cell_start"
                else:
                    cell.append(c)
            elif state == "quoted":
                if c == '"':
                    state = "quote_in_quoted"
                elif c is not None:
                    cell.append(c)
            elif state == "quote_in_quoted":
                if c == '"':
                    cell.append(c)
                    state = "quoted"
                elif c == delimiter:
                    cells.append("".join(cell))
                    cell.clear()
                    state = "cell_start"
                elif c is None or c in "\r\n":
                    cells.append("".join(cell))
                    cell.clear()
                    state = "record" if c is None else "line_break"
                else:
                    cell.append(c)
                    state = "unquoted"
            elif state == "line_break":
                assert c is None or c in "\r\n", "a physical line ends at its line break"
                if c is None:
                    state = "record"
        if state == "record":
            records.append(cells)
            cells = []
    if state == "quoted":  # an unbalanced quote runs to the end of the file
        cells.append("".join(cell))
        records.append(cells)
    return records


def sniff(line: str) -> str:
    """README: the delimiter is the most frequent of , ; tab in the header outside quotes."""
    outside = re.sub(r'"[^"]*"', "", line)
    counts = [outside.count(d) for d in (",", ";", "\t")]
    return (",", ";", "\t")[counts.index(max(counts))]


@dataclass
class Reading:
    """What the second reader makes of a file."""

    quarantine: frozenset[str] = frozenset()  # acceptable reason codes; empty: the file is read
    delimiter: str = ","
    names: tuple[str, ...] = ()  # header cells, an empty one named column_<n>
    columns: dict[str, int] = field(default_factory=dict)  # canonical column -> position
    data: dict[int, list[str]] = field(default_factory=dict)  # data line -> cells as parsed
    blank: int = 0

    @property
    def cell_names(self) -> list[str]:
        return [n for n in self.names if matched(n) not in REPORT_COLUMNS]

    def malformed(self, line: int) -> bool:
        return len(self.data[line]) != len(self.names)


def header_problem(names: list[str], kind: str) -> tuple[str | None, tuple[str, ...], dict]:
    """README "Files": (reason code or None, names with empty ones named, canonical -> position)."""
    if not any(n.strip() for n in names):
        return "empty_file", (), {}
    named = tuple(n if n.strip() else f"column_{i + 1}" for i, n in enumerate(names))
    seen: set[str] = set()
    columns: dict[str, int] = {}
    for position, name in enumerate(named):
        key = matched(name)
        if _ALIASES.get(key) in KIND_COLUMNS[kind]:
            key = _ALIASES[key]
            columns[key] = position
        if key in seen:
            return "duplicate_column", named, columns
        seen.add(key)
    if any(c not in columns for c in REQUIRED[kind]):
        return "missing_required_column", named, columns
    return None, named, columns


def read_independently(raw: bytes, kind: str) -> Reading:
    """Predict how the pipeline reads `raw`: quarantined (and why), or its data lines."""
    if not raw:
        return Reading(frozenset({"empty_file"}))
    if raw.startswith(_WORKBOOKS):
        return Reading(frozenset({"unreadable_file"}))
    encoding, body = next(
        ((e, raw[len(b) :]) for b, e in _BOMS if raw.startswith(b)), ("utf-8", raw)
    )
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    try:
        text, undecodable = body.decode(codec), False
    except UnicodeDecodeError:
        lenient = "surrogateescape" if codec == "utf-8" else "replace"
        text, undecodable = body.decode(codec, lenient), True
    if encoding == "utf-8-sig" and text.startswith("\ufeff"):
        text = text[1:]  # a BOM written twice (the UTF-8-with-BOM decoder takes both)
    first = _PHYSICAL_LINE.match(text)
    first_line = first.group(0) if first else ""
    sep = re.fullmatch(r"sep=([,;\t])(?:\r\n|\r|\n)?", first_line)
    rest = text[len(first_line) :] if sep else text
    header_line_number = 2 if sep else 1
    if rest.startswith("\ufeff"):  # a second BOM before the header
        rest = rest[1:]
    match = _PHYSICAL_LINE.match(rest)
    line = match.group(0) if match else ""

    problem: str | None = None
    names: tuple[str, ...] = ()
    columns: dict[str, int] = {}
    records: list[list[str]] = []
    delimiter = ","
    if not line.strip():
        problem = "empty_file"
    elif "\x00" in line:
        problem = "unreadable_file"  # UTF-16 without a BOM, most likely
    else:
        delimiter = sep.group(1) if sep else sniff(line)
        records = tokenize(rest, delimiter)
        if re.search("[\udc80-\udcff\x00]", "".join(records[0])):
            problem = "unreadable_file"  # the header is not UTF-8, or has NULs
        else:
            problem, names, columns = header_problem(records[0], kind)
    if undecodable:  # the header may be judged before the bad bytes are met
        codes = {"unreadable_file"} | ({problem} if problem else set())
        if codec == "utf-8" and problem:
            codes = {problem}
        return Reading(frozenset(codes))
    if problem:
        return Reading(frozenset({problem}))
    reading = Reading(frozenset(), delimiter, names, columns)
    for number, cells in enumerate(records[1:], start=header_line_number + 1):
        if "".join(cells).strip():
            reading.data[number] = cells
        else:
            reading.blank += 1
    return reading


# --- what a cell means: README "Files" and "Times", one column at a time ------------------------


@dataclass(frozen=True)
class Source:
    """The options of the offer source an example's file is ingested for."""

    mode: str = "create_new"
    allow_negative: bool = False
    file_times: str = "account"
    nonexistent: str = "reject"
    ambiguous: str = "reject"
    time_format: str | None = None
    purchase_increments: bool = False  # conversion type Purchase: increment_payout


_FORMULA_NEUTRALISED = re.compile(r"'[=+\-@\t\r]")
_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
MANGLED = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+")  # 6.21E+23
_PAYOUT = re.compile(r"([+-]?)([0-9]{0,12})(?:\.([0-9]{0,6}))?")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"  # README: at most 6 digits
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_C1_CONTROL = re.compile(r"[\x80-\x9f]")  # "control characters" too, but the code checks C0 only
STATUSES = ("approved", "pending", "declined", "other")
KNOWN_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "AED", "CHF", "CAD")
NOT_CURRENCIES = ("ZZZ", "US", "USDD", "EURO", "123", "€", "U$D", "$")
UNKNOWN = object()  # the README does not settle it: any outcome, as long as it is accounted


@dataclass(frozen=True)
class Meaning:
    """What one cell does to its row: a stored value, or reason codes, or UNKNOWN."""

    value: Any = None
    codes: frozenset[str] = frozenset()


def undo_neutralisation(cell: str) -> str:
    """README: the reader removes the `'` a report put before = + - @ tab CR."""
    return cell[1:] if _FORMULA_NEUTRALISED.match(cell) else cell


def neutralise(cell: str) -> str:
    """README: cells a spreadsheet would run as a formula get a leading `'`, plain numbers not."""
    risky = cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    return "'" + cell if risky and not re.fullmatch(r"[+-]?[0-9]+(?:\.[0-9]+)?", cell) else cell


def bad(*codes: str) -> Meaning:
    return Meaning(codes=frozenset(codes))


def click_id_meaning(cell: str) -> Meaning:
    value = undo_neutralisation(cell).strip()
    if not value:
        return bad("missing_click_id")
    if MANGLED.fullmatch(value):
        return bad("click_id_mangled_by_spreadsheet")
    return Meaning(value) if _ID.fullmatch(value) else bad("invalid_click_id")


def payout_meaning(cell: str, allow_negative: bool) -> Meaning:
    value = undo_neutralisation(cell).strip()
    if not value:
        return bad("missing_payout")  # for offer sources where every row inserts
    match = _PAYOUT.fullmatch(value)
    if not match or not re.search("[0-9]", value):
        return bad("invalid_payout")
    sign, units, decimals = match.group(1), match.group(2) or "0", match.group(3) or ""
    micros = int(units) * 1_000_000 + int(decimals.ljust(6, "0"))
    micros = -micros if sign == "-" else micros
    return Meaning(micros) if micros >= 0 or allow_negative else bad("negative_payout")


def time_meaning(cell: str, source: Source) -> Meaning | object:
    """UTC instant, or None for an empty cell (the received time); future is judged later."""
    value = undo_neutralisation(cell).strip()
    if not value:
        return Meaning(None)
    match = _TIME.fullmatch(value)
    if not match:
        if source.time_format is None:
            return bad("invalid_time")
        try:  # README: "An offer source may add one explicit time_format" (strptime's)
            return wall_time_meaning(datetime.strptime(value, source.time_format), source)
        except ValueError:
            return bad("invalid_time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    try:  # year 0 is ISO 8601's 1 BC, a date Python cannot hold; its calendar is 2000's
        wall = datetime(year or 2000, month, day, hour, minute, second, int(fraction.ljust(6, "0")))
    except ValueError:
        return bad("invalid_time")  # Feb 30, 24:00, :60, month 13
    delta = timedelta(0)
    if offset not in (None, "Z"):
        digits = offset[1:].replace(":", "").ljust(4, "0")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return bad("invalid_time")
        delta = timedelta(hours=hours, minutes=minutes) * (-1 if offset[0] == "-" else 1)
    if year == 0:
        return bad("time_out_of_range")
    if offset is not None:
        try:
            return in_range(wall.replace(tzinfo=timezone(delta)).astimezone(UTC))
        except OverflowError:  # past year 9999 or before year 1 in UTC
            return bad("time_out_of_range")
    return wall_time_meaning(wall, source)


def in_range(instant: datetime) -> Meaning:
    """README "Times": a well-formed time outside 1970..2200 (UTC) is time_out_of_range."""
    if FIRST_INSTANT <= instant < END_INSTANT:
        return Meaning(instant)
    return bad("time_out_of_range")


def wall_time_meaning(wall: datetime, source: Source) -> Meaning | object:
    """README "Times": a time without an offset, read per `file_times` and the DST policies."""
    if source.file_times == "utc":
        return in_range(wall.replace(tzinfo=UTC))
    # README: more than a day outside the range is out of range whatever the zone.
    if not datetime(1969, 12, 31) <= wall < datetime(2201, 1, 2):
        return bad("time_out_of_range")
    early, late = wall.replace(tzinfo=NEW_YORK, fold=0), wall.replace(tzinfo=NEW_YORK, fold=1)
    if early.utcoffset() == late.utcoffset():
        return in_range(early.astimezone(UTC))
    if early.astimezone(UTC).astimezone(NEW_YORK).replace(tzinfo=None) == wall:  # an overlap
        if source.ambiguous == "reject":
            return bad("ambiguous_local_time")
        return in_range((early if source.ambiguous == "earliest" else late).astimezone(UTC))
    if source.nonexistent == "reject":
        return bad("nonexistent_local_time")
    # "the first instant after the gap": where the offset changes, between the two readings.
    before, after = late.astimezone(UTC), early.astimezone(UTC)
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(NEW_YORK).utcoffset() == early.utcoffset():
            before = middle
        else:
            after = middle
    return in_range(after.replace(microsecond=0))


def text_meaning(cell: str, limit: int, code: str, empty: Any) -> Meaning | object:
    value = undo_neutralisation(cell).strip()
    if not value:
        return Meaning(empty)
    if len(value) > limit or _CONTROL.search(value):
        return bad(code)
    return UNKNOWN if _C1_CONTROL.search(value) else Meaning(value)


def status_meaning(cell: str) -> Meaning | object:
    value = undo_neutralisation(cell).strip()
    if not value:
        return Meaning("approved")  # the offer source's default_status
    if not value.isascii():
        return UNKNOWN  # "any case" of U+0130 or U+212A: simple or full case mapping?
    return Meaning(value.lower()) if value.lower() in STATUSES else bad("invalid_status")


def currency_meaning(cell: str) -> Meaning | object:
    value = undo_neutralisation(cell).strip()
    if not value:
        return Meaning("USD")  # the New York account's currency
    if value in NOT_CURRENCIES:
        return bad("invalid_currency")
    if not value.isascii():
        return UNKNOWN  # "any case": U+017F upper-cases to S
    if value.upper() in KNOWN_CURRENCIES:
        return Meaning(value.upper())
    return bad("invalid_currency") if len(value) != 3 or not value.isalpha() else UNKNOWN


def row_expectation(
    reading: Reading, cells: list[str], source: Source, received: datetime
) -> dict | None:
    """For an offer source where every row inserts: {"codes": ...} or {"values": ...}; None when
    some cell's meaning is not settled by the README."""

    def cell(column: str) -> str:
        position = reading.columns.get(column)
        return "" if position is None else cells[position]

    meanings = {
        "click_id": click_id_meaning(cell("click_id")),
        "payout": payout_meaning(cell("payout"), source.allow_negative),
        "converted_at": time_meaning(cell("conversion_time"), source),
        "conversion_type": text_meaning(cell("conversion_type"), 64, "invalid_conversion_type", ""),
        "status": status_meaning(cell("status")),
        "event_id": text_meaning(cell("event_id"), 255, "invalid_event_id", None),
        "currency": currency_meaning(cell("currency")),
    }
    if any(m is UNKNOWN for m in meanings.values()):
        return None
    if source.purchase_increments and meanings["conversion_type"].value == "Purchase":
        return None  # another duplicate mode: its rows need not insert
    codes = frozenset().union(*(m.codes for m in meanings.values()))
    when = meanings["converted_at"].value
    if (
        not meanings["converted_at"].codes
        and when is not None
        and when > received + FUTURE_TOLERANCE
    ):
        codes |= {"time_in_future"}
    if codes:
        return {"codes": codes}
    values = {name: m.value for name, m in meanings.items()}
    values["converted_at"] = when or received
    return {"values": values}
