"""The second reader: what the README's rules ("Files", "Times") say a file means.

The expectation of every fuzz test (`test_fuzz.py`), written from the README and not from the
pipeline: its own BOM and decoding rules, `sep=` line, header delimiter sniffing, header
matching with the aliases, and a character-by-character CSV tokenizer (the excel dialect:
doubled quotes, line breaks inside quotes, CR, LF and CRLF); then what each cell means, one
column at a time. It imports nothing from `pipeline`: an oracle that shared the reader's or
normalise's code would agree with their bugs.

Where the README leaves a boundary open (which compound header words name a field, for
`unmapped_column`), the reader says so (`Reading.undecided`) instead of guessing, and the
strategies generate only headers the rules settle.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

FUTURE_TOLERANCE = timedelta(seconds=300)
MAX_COLUMNS = 1000  # README: settings.max_columns, by default
NEW_YORK = ZoneInfo("America/New_York")
MAX_PAYOUT_MICROS = 10**18 - 1  # 999999999999.999999: 12 digits and 6 decimals (README "Files")
# README "Times": instants from 1970-01-01T00:00:00Z up to the last second of 2200, in UTC.
FIRST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(2201, 1, 1, tzinfo=UTC)  # the first instant out of range


# --- the second reader: README "Files", written independently of pipeline/reader.py -------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx and .xls saved instead of CSV
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
SPELLINGS = {  # README "Files": the columns and their aliases (Google Ads' names included)
    "click_id": ("click_id", "clickid", "click id", "subid", "sub_id", "gclid", "google click id"),
    "payout": (
        "payout",
        "revenue",
        "sum",
        "amount",
        "commission",
        "conversion value",
        "payout amount",
    ),
    "conversion_time": (
        "conversion_time",
        "time",
        "date",
        "datetime",
        "conversion_date",
        "timestamp",
        "conversion time",
    ),
    "conversion_type": ("conversion_type", "type", "event", "conversion name"),
    "status": ("status", "conversion status"),
    "event_id": ("event_id", "transaction_id", "order_id", "tid", "txid", "txn_id"),
    "currency": ("currency", "conversion currency", "currency code"),
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
REPORT_COLUMNS = ("line", "original_line", "reason_code", "reason")


def matched(cell: str) -> str:
    """Header text as README matches it: trimmed, any case, spaces, `_` and `-` alike."""
    return re.sub(r"[ _-]+", "_", cell.strip().lower())


_ALIASES = {matched(s): column for column, spellings in SPELLINGS.items() for s in spellings}

# README `unmapped_column`: an unknown header that names a field of ours (a status, currency,
# payout, time or click id; for status files a status or click id) stops the file. A header's
# words are the parts of its matched text between `_`s; these words name a field outright.
_PAYOUT_WORDS = (
    "payout",
    "revenue",
    "commission",
    "amount",
    "value",
    "price",
    "sum",
    "payment",
    "earning",
    "profit",
)
FIELD_WORDS = {
    "status": {"status", "state"},
    "currency": {"currency", "curr", "ccy"},
    "payout": {word + plural for word in _PAYOUT_WORDS for plural in ("", "s")},
    "conversion_time": {"date", "time", "datetime", "timestamp", "day"},
    "click_id": {"clickid", "gclid", "gbraid", "wbraid"},
}
WATCHED = {
    "conversions": frozenset(FIELD_WORDS),
    "status": frozenset({"status", "click_id"}),
}
# `click` names a click id before `id` (`Sub Click ID`), or alone, or with a ref/key/token/code
# or number (`Click Ref`, `Click 2`); elsewhere (`Click IP`) it is not settled.
_CLICK_QUALIFIERS = re.compile(r"ref|key|token|code|[0-9]+")
# A word holding one of these without being a field word above (`orderstatus`, `update`,
# `payout2`, `current`) is a compound the README does not settle: such a header is undecided.
_STEMS = (
    "status",
    "state",
    "curr",
    "ccy",
    *_PAYOUT_WORDS,
    "date",
    "time",
    "day",
    "click",
    "gclid",
    "gbraid",
    "wbraid",
)


def named_fields(name: str) -> tuple[frozenset[str], bool]:
    """The fields an unknown header names by its words, and whether some word is unsettled."""
    words = matched(name).split("_")
    fields: set[str] = set()
    unsettled = False
    for i, word in enumerate(words):
        field = next((f for f, known in FIELD_WORDS.items() if word in known), None)
        if field is not None:
            fields.add(field)
        elif word == "click":
            after = words[i + 1] if i + 1 < len(words) else None
            alone = len(words) == 1 or (
                len(words) == 2 and i == 0 and _CLICK_QUALIFIERS.fullmatch(words[1])
            )
            if after == "id" or alone:
                fields.add("click_id")
            else:
                unsettled = True
        elif any(stem in word for stem in _STEMS):
            unsettled = True
    return frozenset(fields), unsettled


def unmapped_verdict(name: str, kind: str) -> bool | None:
    """True: the header stops the file (`unmapped_column`); False: it is ignored; None: the
    README does not settle it."""
    fields, unsettled = named_fields(name)
    watched = WATCHED[kind]
    if kind == "conversions" and fields:  # every field is watched: whichever it names, it stops
        return True
    if unsettled:
        return None
    if fields and fields <= watched:
        return True
    return False if not fields & watched else None


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
    time_zone: str | None = None  # the Parameters:TimeZone= zone as written
    undecided: frozenset[str] = frozenset()  # whole-file codes the README leaves open

    @property
    def cell_names(self) -> list[str]:
        return [n for n in self.names if matched(n) not in REPORT_COLUMNS]

    @property
    def origin(self) -> int | None:
        """A re-dropped report's column of each row's line in the first file (its
        `original_line`, else its `line`): the report repeats it as `original_line`."""
        keys = [matched(n) for n in self.names]
        for key in ("original_line", "line"):
            if key in keys:
                return len(keys) - 1 - keys[::-1].index(key)
        return None

    def malformed(self, line: int) -> bool:
        return len(self.data[line]) != len(self.names)

    def unquoted_decimal_comma(self, line: int) -> bool:
        """README `unquoted_decimal_comma`: a comma-separated row one cell too long because its
        payout `12,50` was not quoted: the payout cell and the next read as the two parts of a
        decimal-comma amount (digits, maybe `.`-grouped and negative; then 1 to 6 digits)."""
        cells, payout = self.data[line], self.columns.get("payout")
        return (
            payout is not None
            and self.delimiter == ","
            and len(cells) == len(self.names) + 1
            and _INTEGER_PART.fullmatch(cells[payout].strip()) is not None
            and re.fullmatch("[0-9]{1,6}", cells[payout + 1].strip()) is not None
        )

    def malformed_code(self, line: int) -> str:
        return "unquoted_decimal_comma" if self.unquoted_decimal_comma(line) else "malformed_row"

    def report_cells(self, line: int) -> list[str]:
        """README: a rejected row's cells as written; a malformed row's by position, extra cells
        joined into the last column, an unquoted decimal comma's payout joined back."""
        cells, width = self.data[line], len(self.names)
        if self.unquoted_decimal_comma(line):
            p = self.columns["payout"]
            return [*cells[:p], f"{cells[p]},{cells[p + 1]}", *cells[p + 2 :]]
        if len(cells) == width:
            return [undo_neutralisation(c) for c in cells]
        cells = cells + [""] * (width - len(cells))
        if len(cells) > width:
            cells = [*cells[: width - 1], self.delimiter.join(cells[width - 1 :])]
        return cells


_INTEGER_PART = re.compile(r"-?(?:[0-9]+|[0-9]{1,3}(?:\.[0-9]{3})+)")


def header_problem(names: list[str], kind: str) -> tuple[str | None, tuple[str, ...], dict, bool]:
    """README "Files": (reason code or None, names with empty ones named, canonical -> position,
    whether `unmapped_column` is left open by a header the README does not settle)."""
    if not any(n.strip() for n in names):
        return "empty_file", (), {}, False
    named = tuple(n if n.strip() else f"column_{i + 1}" for i, n in enumerate(names))
    seen: set[str] = set()
    columns: dict[str, int] = {}
    unknown: list[str] = []
    for position, name in enumerate(named):
        key = matched(name)
        if _ALIASES.get(key) in KIND_COLUMNS[kind]:
            key = _ALIASES[key]
            columns[key] = position
        elif key not in REPORT_COLUMNS:
            unknown.append(name)
        if key in seen:
            return "duplicate_column", named, columns, False
        seen.add(key)
    if any(c not in columns for c in REQUIRED[kind]):  # README: reported before unmapped ones
        return "missing_required_column", named, columns, False
    verdicts = {unmapped_verdict(name, kind) for name in unknown}
    if True in verdicts:
        return "unmapped_column", named, columns, False
    return None, named, columns, None in verdicts


_OFFSET_ZONE = re.compile(r"([+-])([0-9]{2}):?([0-9]{2})")


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def parameters_line(line: str) -> tuple[str, str | None]:
    """README "Times": Google Ads' first line `Parameters:TimeZone=<zone>` (any case, spaces
    around `=`, quoted as a whole or with trailing delimiters as spreadsheets save it).

    ("none", None): not such a line (it is the header); ("zone", zone as written); ("invalid",
    None): a Parameters line that names no IANA zone and no +HHMM/+HH:MM offset.
    """
    text = line.strip().rstrip(",;\t ")
    if len(text) > 1 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1].strip().rstrip(",;\t ")
    head, colon, rest = text.partition(":")
    if not colon or head.rstrip().lower() != "parameters":
        return "none", None
    key, equals, value = rest.partition("=")
    if '"' in text or not equals or key.strip().lower() != "timezone":
        return "invalid", None
    value = value.strip()
    offset = _OFFSET_ZONE.fullmatch(value)
    if offset:  # the world's clocks run from UTC-12 to UTC+14
        valid = int(offset.group(2)) <= 14 and int(offset.group(3)) < 60
    else:
        valid = value in _iana_zones()
    return ("zone", value) if valid else ("invalid", None)


def zone_named(name: str) -> tzinfo:
    """A Parameters line's or a `file_times` zone: an offset as written, or an IANA zone."""
    offset = _OFFSET_ZONE.fullmatch(name)
    if offset:
        sign = -1 if offset.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3))))
    return ZoneInfo(name)


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
    # README: an Excel `sep=` line and a Google Ads `Parameters:` line, each at most once, in
    # either order, come before the header.
    rest, sep, zone, parameters = text, None, None, "none"
    for _ in range(2):
        match = _PHYSICAL_LINE.match(rest)
        line = match.group(0) if match else ""
        if sep is None and (found := re.fullmatch(r"sep=([,;\t])(?:\r\n|\r|\n)?", line)):
            sep = found
        elif parameters == "none" and (said := parameters_line(line))[0] != "none":
            parameters, zone = said
            if parameters == "invalid":
                break
        else:
            break
        rest = rest[len(line) :]
    header_line_number = 1 + (sep is not None) + (parameters != "none")
    if rest.startswith("\ufeff"):  # a second BOM before the header
        rest = rest[1:]
    match = _PHYSICAL_LINE.match(rest)
    line = match.group(0) if match else ""

    problem: str | None = None
    undecided = False
    names: tuple[str, ...] = ()
    columns: dict[str, int] = {}
    records: list[list[str]] = []
    delimiter = ","
    if parameters == "invalid":
        problem = "invalid_parameters_line"
    elif not line.strip():
        problem = "empty_file"
    elif "\x00" in line:
        problem = "unreadable_file"  # UTF-16 without a BOM, most likely
    else:
        delimiter = sep.group(1) if sep else sniff(line)
        records = tokenize(rest, delimiter)
        if len(records[0]) > MAX_COLUMNS:  # README: before anything else is done with it
            problem = "too_many_columns"
        elif re.search("[\udc80-\udcff\x00]", "".join(records[0])):
            problem = "unreadable_file"  # the header is not UTF-8, or has NULs
        else:
            problem, names, columns, undecided = header_problem(records[0], kind)
    maybe = frozenset({"unmapped_column"} if undecided else ())
    if undecodable:  # the header may be judged before the bad bytes are met
        codes = {"unreadable_file"} | ({problem} if problem else set()) | maybe
        if codec == "utf-8" and problem:
            codes = {problem}
        return Reading(frozenset(codes))
    if problem:
        return Reading(frozenset({problem}))
    reading = Reading(frozenset(), delimiter, names, columns, time_zone=zone, undecided=maybe)
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
    file_times: str = "utc"  # README: the default, as the tracker reads file times
    nonexistent: str = "reject"
    ambiguous: str = "reject"
    time_format: str | None = None
    purchase_increments: bool = False  # conversion type Purchase: increment_payout
    decimal_separator: str = "."


_FORMULA_NEUTRALISED = re.compile(r"'[=+\-@\t\r]")
_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
MANGLED = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+")  # 6.21E+23
_PAYOUT = re.compile(r"([+-]?)([0-9]{0,12})(?:\.([0-9]{0,6}))?")
_TIME = re.compile(  # README: seconds may be left out; at most 6 fractional digits
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2})(?::([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?)?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
# README "Times": a spreadsheet's rewrite of a time on save, `11/3/2026 8:30`, `31.07.2026
# 10:00`: day and month (1-2 digits, both followed by `/`, or both by `.`), a 2- or 4-digit
# year, maybe a comma, one space, an hour (1-2 digits), `:` and minutes, maybe seconds, maybe
# AM/PM (any case, dots and a space optional).
_SPREADSHEET_TIME = re.compile(
    r"[0-9]{1,2}([/.])[0-9]{1,2}\1(?:[0-9]{4}|[0-9]{2}),? [0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?"
    r"(?: ?[ap]\.?m\.?)?",
    re.IGNORECASE,
)
_FORMAT_SAMPLE = datetime(2024, 1, 31, 13, 45, 30)  # a day over 12, an afternoon hour
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_C1_CONTROL = re.compile(r"[\x80-\x9f]")  # "control characters" too, but the code checks C0 only
STATUSES = ("approved", "pending", "declined", "other")
STATUS_WORDS = {  # README `invalid_status`: the built-in aliases
    **{status: status for status in STATUSES},
    **dict.fromkeys(("approve", "accepted", "confirmed"), "approved"),
    **dict.fromkeys(("hold", "on hold", "waiting"), "pending"),
    **dict.fromkeys(
        ("decline", "rejected", "reject", "denied", "chargeback", "reversed"), "declined"
    ),
}
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


def _point_payout(value: str) -> int | None:
    """README: `12.50`, `.` as the decimal point, at most 12 digits and 6 decimals."""
    match = _PAYOUT.fullmatch(value)
    if not match or not re.search("[0-9]", value):
        return None
    sign, units, decimals = match.group(1), match.group(2) or "0", match.group(3) or ""
    micros = int(units) * 1_000_000 + int(decimals.ljust(6, "0"))
    return -micros if sign == "-" else micros


def _comma_payout(value: str) -> int | None:
    """README `decimal_separator = ","`: `12,50` and `1.234,56`, the integer digits maybe grouped
    by `.` in threes (the first group 1-3 digits without a leading zero), at most 12 digits and
    6 decimals."""
    match = re.fullmatch(r"([+-]?)([0-9.]*)(?:,([0-9]{0,6}))?", value)
    if not match or not re.search("[0-9]", value):
        return None
    sign, units, decimals = match.group(1), match.group(2), match.group(3) or ""
    if "." in units:
        groups = units.split(".")
        if not (
            2 <= len(groups) <= 4
            and re.fullmatch("[1-9][0-9]{0,2}", groups[0])
            and all(re.fullmatch("[0-9]{3}", g) for g in groups[1:])
        ):
            return None
        units = "".join(groups)
    elif len(units) > 12:
        return None
    micros = int(units or "0") * 1_000_000 + int(decimals.ljust(6, "0"))
    return -micros if sign == "-" else micros


def payout_meaning(cell: str, allow_negative: bool, separator: str = ".") -> Meaning:
    value = undo_neutralisation(cell).strip()
    if not value:
        return bad("missing_payout")  # for offer sources where every row inserts
    micros = _point_payout(value) if separator == "." else _comma_payout(value)
    if micros is None:
        if separator == "." and "," in value and _comma_payout(value) is not None:
            return bad("payout_decimal_comma")  # README: 12,50 read with "."
        return bad("invalid_payout")
    return Meaning(micros) if micros >= 0 or allow_negative else bad("negative_payout")


def spreadsheet_shaped(value: str) -> bool:
    return _SPREADSHEET_TIME.fullmatch(value) is not None


def time_meaning(cell: str, source: Source, file_zone: str | None = None) -> Meaning | object:
    """UTC instant, or None for an empty cell (the received time); future is judged later.
    `file_zone`: the file's Parameters:TimeZone= zone, which reads times without an offset."""
    value = undo_neutralisation(cell).strip()
    if not value:
        return Meaning(None)
    match = _TIME.fullmatch(value)
    if not match:
        if source.time_format is not None:
            try:  # README: "An offer source may add one explicit time_format" (strptime's)
                wall = datetime.strptime(value, source.time_format)
            except ValueError:
                pass
            else:
                return wall_time_meaning(wall, source, file_zone)
        if re.fullmatch("[0-9]{10}", value):  # README: Unix epoch seconds, a UTC instant
            return in_range(FIRST_INSTANT + timedelta(seconds=int(value)))
        if re.fullmatch("[0-9]{13}", value):  # and milliseconds
            return in_range(FIRST_INSTANT + timedelta(milliseconds=int(value)))
        own_shape = source.time_format is not None and spreadsheet_shaped(
            _FORMAT_SAMPLE.strftime(source.time_format)
        )  # then it is a bad time in the offer source's own format
        if spreadsheet_shaped(value) and not own_shape:
            return bad("time_reformatted_by_spreadsheet")
        return bad("invalid_time")
    year, month, day, hour, minute = (int(g) for g in match.groups()[:5])
    second = int(match.group(6) or 0)
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
    return wall_time_meaning(wall, source, file_zone)


def in_range(instant: datetime) -> Meaning:
    """README "Times": a well-formed time outside 1970..2200 (UTC) is time_out_of_range."""
    if FIRST_INSTANT <= instant < END_INSTANT:
        return Meaning(instant)
    return bad("time_out_of_range")


def reading_zone(source: Source, file_zone: str | None) -> tzinfo | None:
    """README "Times" precedence for a time without an offset: the file's Parameters line, then
    the offer source's `file_times` (None: UTC)."""
    if file_zone is not None:
        return zone_named(file_zone)
    if source.file_times == "utc":
        return None
    return NEW_YORK if source.file_times == "account" else zone_named(source.file_times)


def wall_time_meaning(
    wall: datetime, source: Source, file_zone: str | None = None
) -> Meaning | object:
    """README "Times": a time without an offset, read in its zone with the DST policies."""
    zone = reading_zone(source, file_zone)
    if zone is None:
        return in_range(wall.replace(tzinfo=UTC))
    # README: more than a day outside the range is out of range whatever the zone.
    if not datetime(1969, 12, 31) <= wall < datetime(2201, 1, 2):
        return bad("time_out_of_range")
    early, late = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if early.utcoffset() == late.utcoffset():
        return in_range(early.astimezone(UTC))
    if early.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:  # an overlap
        if source.ambiguous == "reject":
            return bad("ambiguous_local_time")
        return in_range((early if source.ambiguous == "earliest" else late).astimezone(UTC))
    if source.nonexistent == "reject":
        return bad("nonexistent_local_time")
    # "the first instant after the gap": where the offset changes, between the two readings.
    before, after = late.astimezone(UTC), early.astimezone(UTC)
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(zone).utcoffset() == early.utcoffset():
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
    word = " ".join(value.lower().split())  # README: inner spaces read as one
    if word not in STATUS_WORDS:
        return bad("invalid_status")
    if re.search(r"[^\S ]", value):
        return UNKNOWN  # inner tabs, vertical tabs, separators: which count as spaces?
    return Meaning(STATUS_WORDS[word])


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
        "payout": payout_meaning(cell("payout"), source.allow_negative, source.decimal_separator),
        "converted_at": time_meaning(cell("conversion_time"), source, reading.time_zone),
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
