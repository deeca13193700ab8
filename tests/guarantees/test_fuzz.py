"""Fuzzing the whole ingest: whatever bytes arrive, every data line ends in exactly one outcome.

The guarantees proved here (README "Guarantees", DOMAIN.md section 9) hold for *any* file:

- no unhandled exception: the result is a `FileResult` whose state is one of `LEDGER_STATES`; a
  file that cannot be read as a whole is `quarantined` with a file-scope reason code of the
  catalogue and a detail, and then nothing but the ledger changed (never half applied);
- the accounting invariant (`conftest.assert_accounted`): outcomes add up to the data lines;
- every data line is in exactly one outcome: the rejection report's and the `rejected_rows`
  table's line numbers, plus the lines of the conversion history (inserted, updated,
  incremented) and the ignored duplicates, cover each data line once, and no other line.

How. Hypothesis builds files three ways: (1) a *model* of a table -- header spellings, aliases,
unknown, report, empty, duplicated and missing columns; rows that are valid, or whose cells are
anything from odd Unicode in click ids (combining marks, RTL, zero-width, emoji, whitespace
variants) to every accepted time shape and broken ones (DST gaps and overlaps in New York, 24:00,
Feb 30, years 1 and 9999, epoch numbers), huge, tiny and odd payouts; blank and malformed rows;
sometimes few click ids, so every duplicate mode has work -- written with a random dialect:
delimiter, `sep=` line, quoting with doubled quotes, line breaks inside quoted cells, CR/LF/CRLF
mixes, very long cells, BOMs and encodings (UTF-8 with or without BOM, UTF-16 LE/BE with BOM,
latin-1/cp1252); (2) such a file with damaged bytes (unbalanced quotes, NULs, invalid UTF-8,
surrogates as bytes, truncation, pipe delimiters, no BOM); (3) random bytes. Each file goes
through the real `ingest.ingest_file` (or `runner.run_inbox`, which claims, archives and
quarantines) on a real warehouse, for an offer source with random options (duplicate mode,
negative payouts, `file_times`, DST policies, a `time_format`, a per-type mode), at random batch
sizes, sometimes as a dry run.

The expectations come from a second reader written here from the README's rules ("Files"), not
from the pipeline: its own BOM and decoding rules, `sep=` line, header delimiter sniffing, header
matching with the aliases, and a character-by-character CSV tokenizer (the excel dialect:
doubled quotes, line breaks inside quotes, CR, LF and CRLF). (conftest's `independent_data_lines`
guesses the delimiter from the whole first line, quotes included, and splits lines the way
`str.splitlines` does, so it is not used for these dialects.) The reader predicts whether a file
is quarantined (and with which codes), and which line numbers are data lines with which cells;
the report must show each rejected line's cells as written. For files written from a model, the
model is checked against that reader first (so the writer here cannot drift), and then, for
offer sources where every row inserts (`create_new`, `new_or_repeated`), each line's outcome is
predicted from the README's value rules: the exact reason codes of a rejected line, and the exact
click id, payout, UTC time, type, status, event id and currency stored for an accepted one. Where
the README leaves a value open (years 1 and 9999, non-ASCII case mapping, C1 controls) that line
is only accounted for, not predicted. Every stored payout must fit NUMERIC(18, 6), and none may be
negative where negatives are not allowed.

Each example gets an offer source of its own (`fz<n>`), so examples sharing the test's warehouse
never see each other's conversions; a file repeating an earlier example's bytes is therefore a
new upload, never a `duplicate_file`. CI runs a bounded number of examples; CONVERSIONS_SOAK=1
runs twenty times as many. atheris is not used (it is not installed in the venv). The bugs the
fuzzing found are pinned by plain regression tests at the end.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import string
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from sqlalchemy import Engine, func, select

from pipeline import datadir, ingest, runner, warehouse
from pipeline.core.model import Config
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import LEDGER_STATES, MODES
from tests.conftest import POSTGRES_URL, assert_accounted, make_config, soak_or

RECEIVED = datetime(2026, 7, 1, 18, 0, 0, tzinfo=UTC)  # 14:00 in New York (EDT, UTC-4)
FUTURE_TOLERANCE = timedelta(seconds=300)
NEW_YORK = ZoneInfo("America/New_York")
MAX_PAYOUT_MICROS = 10**18 - 1  # 999999999999.999999: 12 digits and 6 decimals (README "Files")
_OFFER_SOURCES = itertools.count(1)


# CONVERSIONS_FUZZ_NO_SHRINK=1 reports the first failing example as found: shrinking an example
# that runs a whole ingest can take minutes.
NO_SHRINK = os.environ.get("CONVERSIONS_FUZZ_NO_SHRINK", "") not in ("", "0")


def fuzz_settings(ci: int, soak: int) -> settings:
    return settings(
        max_examples=soak_or(ci, soak),
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate] if NO_SHRINK else list(Phase),
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# --- the second reader: README "Files", written independently of pipeline/reader.py -------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx and .xls saved instead of CSV
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_SPELLINGS = {  # README "Files": the columns and their aliases
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
_KIND_COLUMNS = {
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
_REQUIRED = {"conversions": ("click_id", "payout"), "status": ("click_id", "status")}
_REPORT_COLUMNS = ("line", "reason_code", "reason")


def _matched(cell: str) -> str:
    """Header text as README matches it: trimmed, any case, spaces, `_` and `-` alike."""
    return re.sub(r"[ _-]+", "_", cell.strip().lower())


_ALIASES = {_matched(s): column for column, spellings in _SPELLINGS.items() for s in spellings}


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
        return [n for n in self.names if _matched(n) not in _REPORT_COLUMNS]

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
        key = _matched(name)
        if _ALIASES.get(key) in _KIND_COLUMNS[kind]:
            key = _ALIASES[key]
            columns[key] = position
        if key in seen:
            return "duplicate_column", named, columns
        seen.add(key)
    if any(c not in columns for c in _REQUIRED[kind]):
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
_MANGLED = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+")  # 6.21E+23
_PAYOUT = re.compile(r"([+-]?)([0-9]{0,12})(?:\.([0-9]{0,6}))?")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
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
    if _MANGLED.fullmatch(value):
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
    try:
        wall = datetime(year, month, day, hour, minute, second, int(fraction[:6].ljust(6, "0")))
    except ValueError:
        return bad("invalid_time")  # Feb 30, 24:00, :60, month 13, year 0
    if year in (1, 9999):
        return UNKNOWN  # the edges of what a datetime can hold: README does not say
    if offset is not None:
        if offset == "Z":
            return Meaning(wall.replace(tzinfo=UTC))
        digits = offset[1:].replace(":", "").ljust(4, "0")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return bad("invalid_time")
        delta = timedelta(hours=hours, minutes=minutes) * (-1 if offset[0] == "-" else 1)
        return Meaning(wall.replace(tzinfo=timezone(delta)).astimezone(UTC))
    return wall_time_meaning(wall, source)


def wall_time_meaning(wall: datetime, source: Source) -> Meaning | object:
    """README "Times": a time without an offset, read per `file_times` and the DST policies."""
    if not datetime(1, 1, 3) <= wall <= datetime(9999, 12, 29):
        return UNKNOWN
    if source.file_times == "utc":
        return Meaning(wall.replace(tzinfo=UTC))
    early, late = wall.replace(tzinfo=NEW_YORK, fold=0), wall.replace(tzinfo=NEW_YORK, fold=1)
    if early.utcoffset() == late.utcoffset():
        return Meaning(early.astimezone(UTC))
    if early.astimezone(UTC).astimezone(NEW_YORK).replace(tzinfo=None) == wall:  # an overlap
        if source.ambiguous == "reject":
            return bad("ambiguous_local_time")
        return Meaning((early if source.ambiguous == "earliest" else late).astimezone(UTC))
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
    return Meaning(after.replace(microsecond=0))


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


# --- files from a model ------------------------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "._~-"
WHITESPACE = [" ", "\t", "\u00a0", "\u2003", "\u3000", "\u2028", "\x0b", "\x0c", "\x1c", "\x85"]
ODD = [
    "\u0301",  # combining acute accent
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # zero-width no-break space (a BOM inside a cell)
    "\U0001f600",
    "\U0001f44d\U0001f3fd",  # emoji with a skin-tone modifier
    "é",
    "\uff41",  # fullwidth a
    "\u0663",  # Arabic-Indic three
    " ",
    "\u00a0",
    "\t",
    ",",
    ";",
    '"',
    "\n",
    "\r\n",
    "\r",
    "\x00",
    "\x7f",
    "\\",
    "'",
]


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in `n` (`st.integers(0, n - 1) == 0` is far likelier: hypothesis favours
    boundary values); shrinks to False."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def click_id_cells(draw) -> str:
    valid = st.text(ID_CHARS, min_size=1, max_size=24)
    return draw(
        st.one_of(
            valid,
            valid,
            st.sampled_from(["c1", "c2", "C1", "c-1"]),  # repeated keys
            st.builds(
                lambda w, v, z: w + v + z,
                st.sampled_from(WHITESPACE),
                valid,
                st.sampled_from(WHITESPACE),
            ),
            st.builds(lambda a, o, b: a + o + b, valid, st.sampled_from(ODD), valid),
            st.sampled_from(
                [
                    "6.21E+23",
                    "1e5",
                    "-2.5e-3",
                    "7,1E+10",
                    "",
                    " ",
                    "'-x1",
                    "'=x1",
                    "''=x1",
                    '=HYPERLINK("http://x")',
                    "@SUM(A1)",
                    "x" * 128,
                    "y" * 129,
                    "a\x00b",
                    "\u05d0\u05d1",  # Hebrew
                ]
            ),
            st.text(max_size=12),
        )
    )


BIG_PAYOUTS = ["999999999999.999999", "500000000000.5", "-999999999999.999999", "0.000001"]


@st.composite
def payout_cells(draw) -> str:
    units = draw(st.text("0123456789", max_size=12))
    decimals = draw(st.text("0123456789", max_size=6))
    sign = draw(st.sampled_from(["", "", "+", "-"]))
    dot = draw(st.booleans()) or not units
    generated = sign + units + ("." + decimals if dot else "")
    return draw(
        st.one_of(
            st.just(generated),
            st.just(generated),
            st.sampled_from(BIG_PAYOUTS),
            st.sampled_from(
                [
                    "1e308",
                    "1e-30",
                    "99999999999999999999.99",
                    "999999999999.999999",
                    "-999999999999.999999",
                    "0.000001",
                    "-0",
                    "-0.0",
                    "NaN",
                    "nan",
                    "inf",
                    "-inf",
                    "Infinity",
                    "1,000.00",
                    "1 000.00",
                    "1.000,50",
                    "$5.00",
                    "5.00$",
                    "\u20ac5",
                    "5,50",
                    "1.0000001",
                    "1234567890123",
                    ".5",
                    "5.",
                    ".",
                    "+",
                    "-",
                    "0x1F",
                    "\u0661\u0662",
                    "\uff11\uff12",
                    "'-5.00",
                    "'+3",
                    "",
                    " 12.50 ",
                    "\u00a012.5\u3000",
                    "12.50\x00",
                ]
            ),
            st.text(max_size=8),
        )
    )


@st.composite
def standard_times(draw, moments: st.SearchStrategy[datetime]) -> str:
    """README "Times": `YYYY-MM-DD[ T]HH:MM:SS[.f][Z|+HH:MM|+HHMM|+HH]`, any fraction length."""
    when = draw(moments)
    digits = draw(st.integers(0, 9))
    fraction = (f"{when.microsecond:06d}" + draw(st.text("0123456789", min_size=3, max_size=3)))[
        :digits
    ]
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign, (hh, mm) = ("-" if minutes < 0 else "+"), divmod(abs(minutes), 60)
    offset = draw(
        st.sampled_from(
            ["", "", "Z", f"{sign}{hh:02d}:{mm:02d}", f"{sign}{hh:02d}{mm:02d}", f"{sign}{hh:02d}"]
        )
    )
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}{draw(st.sampled_from(' T'))}"
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
        + ("." + fraction if fraction else "")
        + offset
    )


PAST = st.datetimes(datetime(2000, 1, 1), datetime(2026, 6, 30))


@st.composite
def time_cells(draw) -> str:
    moments = st.one_of(
        PAST,
        st.datetimes(datetime(2026, 3, 8, 1, 30), datetime(2026, 3, 8, 3, 30)),  # the gap
        st.datetimes(datetime(2026, 11, 1, 0, 30), datetime(2026, 11, 1, 2, 30)),  # overlap
        st.datetimes(datetime(2026, 6, 30), datetime(2026, 7, 2)),  # around the future limit
        st.datetimes(),
    )
    shaped = draw(standard_times(moments))
    return draw(
        st.one_of(
            st.just(shaped),
            st.just(shaped),
            st.sampled_from(
                [
                    "",
                    "2026-03-08 02:30:00",  # New York's gap
                    "2026-11-01 01:30:00",  # New York's overlap
                    "2026-11-01 01:30:00-04:00",
                    "2026-03-08T02:30:00Z",
                    "2026-02-30 10:00:00",
                    "2026-02-29 10:00:00",
                    "2024-02-29 10:00:00",
                    "2026-07-01 24:00:00",
                    "2026-07-01 23:60:00",
                    "2026-06-30 23:59:60",
                    "2026-13-01 00:00:00",
                    "0000-01-01 00:00:00",
                    "0001-01-01 00:00:00",
                    "9999-12-31 23:59:59",
                    "01/07/2026 10:00",  # valid under time_format = "%d/%m/%Y %H:%M"
                    "1/7/2026 9:05",
                    "08/03/2026 02:30",  # the gap, day first
                    "01/11/2026 01:30",  # the overlap, day first
                    "31/06/2026 10:00",
                    "20260701100000",  # valid under time_format = "%Y%m%d%H%M%S"
                    "20260308023000",
                    "20261301000000",
                    "07/01/2026 10:00:00",
                    "2026-07-01",
                    "2026-07-01 10:00",
                    "1782900000",
                    "1782900000000",
                    "2026-07-01T10:00:00+24:00",
                    "2026-07-01T10:00:00+05:60",
                    "2026-07-01 10:00:00 +05:00",
                    "2026-07-01T10:00:00.Z",
                    "2026-07-01T10:00:00z",
                    "2026-07-01T10:00:00UTC",
                    "2026-07-01 14:05:00",  # exactly the future limit
                    "2026-07-01 14:05:01",
                    "2026-07-01T18:05:00.000001Z",
                    "2026-07-01T10:00:00.1234567891",
                    "\u0662\u0660\u0662\u0666-07-01 10:00:00",
                    " 2026-07-01T10:00:00Z ",
                    "'+2026",
                ]
            ),
            st.text(max_size=8),
        )
    )


def _text_cells(limit: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "",
                "Purchase",
                " Lead ",
                "a" * limit,
                "b" * (limit + 1),
                "x\ty",
                "\x7f",
                "Kauf\U0001f600",
                "x\u2028y",
                "\\N",
                "\\.",
                "x\x85y",
                "=1+1",
                '"quoted"',
                "line\nbreak",
                "\u202eabc",
            ]
        ),
        st.text(max_size=limit + 3),
    )


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda ups: "".join(c.upper() if u else c for c, u in zip(word, ups, strict=True))
    )


STATUS_CELLS = st.one_of(
    st.sampled_from(STATUSES).flatmap(_any_case),
    st.sampled_from(["", " Pending ", "approve", "ok", "Approved!", "\u0430pproved", "PENDİNG"]),
    st.text(max_size=6),
)
CURRENCY_CELLS = st.one_of(
    st.sampled_from(KNOWN_CURRENCIES).flatmap(_any_case),
    st.sampled_from(["", *NOT_CURRENCIES, " usd "]),
)
OTHER_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "=cmd|' /C calc'!A0", "a,b;c\td", 'say "hi"', "two\r\nlines", "\x00"]),
    st.integers(10_000, 200_000).map(lambda n: ("long," * (n // 5 + 1))[:n]),  # a very long cell
)
VALID_CELLS: dict[str | None, Callable[[], st.SearchStrategy[str]]] = {
    "click_id": lambda: st.one_of(
        st.text(ID_CHARS, min_size=1, max_size=24).filter(lambda v: not _MANGLED.fullmatch(v)),
        st.sampled_from(["c1", "c2"]),
    ),
    "payout": lambda: st.one_of(
        st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{1,6})?\Z"), st.sampled_from(BIG_PAYOUTS[:2])
    ),
    "conversion_time": lambda: st.one_of(standard_times(PAST), st.just("")),
    "conversion_type": lambda: st.sampled_from(["", "Purchase", "Lead", "Kauf \U0001f600"]),
    "status": lambda: st.one_of(st.just(""), st.sampled_from(STATUSES).flatmap(_any_case)),
    "event_id": lambda: st.one_of(st.just(""), st.text(ID_CHARS, max_size=12)),
    "currency": lambda: st.one_of(
        st.just(""), st.sampled_from(KNOWN_CURRENCIES).flatmap(_any_case)
    ),
    None: lambda: OTHER_CELLS,
}
CELLS: dict[str | None, Callable[[], st.SearchStrategy[str]]] = {
    "click_id": click_id_cells,
    "payout": payout_cells,
    "conversion_time": time_cells,
    "conversion_type": lambda: _text_cells(64),
    "status": lambda: STATUS_CELLS,
    "event_id": lambda: _text_cells(255),
    "currency": lambda: CURRENCY_CELLS,
    None: lambda: OTHER_CELLS,
}


@st.composite
def spellings(draw, column: str) -> str:
    """One way a sender may write a column's header: an alias, any case, `_`/`-`/space alike."""
    word = draw(st.sampled_from(_SPELLINGS[column]))
    word = re.sub(r"[ _]", lambda _: draw(st.sampled_from([" ", "_", "-", "__", " - "])), word)
    word = draw(_any_case(word))
    return draw(st.sampled_from(["", " ", "  "])) + word + draw(st.sampled_from(["", " "]))


UNKNOWN_HEADERS = [
    "notes",
    "Offer Name",
    "campaign",
    "",
    "line",
    "Reason Code",
    "reason",
    "payout 2",
]


@dataclass
class Model:
    """A table as intended, before it is written with some dialect."""

    kind: str
    names: list[str]
    rows: list[list[str]]  # data rows, blank rows ([] or empty cells) and malformed rows


@st.composite
def models(draw, kind: str) -> Model:
    columns = list(_KIND_COLUMNS[kind])
    chosen = draw(st.lists(st.sampled_from(columns), unique=True, max_size=len(columns)))
    required = [c for c in _REQUIRED[kind] if not draw(rarely(20))]  # 1 in 20 missing
    header: list[tuple[str, str | None]] = [
        (draw(spellings(c)), c) for c in dict.fromkeys(required + chosen)
    ]
    others = st.lists(st.sampled_from(UNKNOWN_HEADERS), max_size=2, unique_by=_matched)
    header += [(name, None) for name in draw(others)]
    if draw(rarely(15)):  # a column named twice (aliases count)
        twice = draw(st.sampled_from(columns))
        header.append((draw(spellings(twice)), twice))
    header = draw(st.permutations(header))
    width = len(header)
    crowded = {}
    if draw(rarely(3)):  # few keys: duplicates for every mode to resolve
        crowded = {
            "click_id": lambda: st.sampled_from(["c1", "c2", "c3"]),
            "payout": lambda: st.one_of(payout_cells(), st.sampled_from(BIG_PAYOUTS)),
            "conversion_type": lambda: st.sampled_from(["", "Purchase"]),
            "event_id": lambda: st.sampled_from(["", "e1", "e2"]),
        }
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        shape = draw(st.sampled_from(["data"] * 17 + ["empty", "blank", "malformed"]))
        if shape == "empty":
            rows.append([])  # an empty line
        elif shape == "blank":
            rows.append([draw(st.sampled_from(["", " ", "\t"])) for _ in range(width)])
        else:
            cells = VALID_CELLS if draw(st.booleans()) else CELLS  # a valid row, or anything
            row = [draw((crowded.get(c) or cells[c])()) for _, c in header]
            if shape == "malformed":  # a missing or an extra cell
                row = (
                    row[:-1]
                    if row and draw(st.booleans())
                    else row + draw(st.lists(OTHER_CELLS, min_size=1, max_size=3))
                )
            rows.append(row)
    return Model(kind, [name for name, _ in header], rows)


@dataclass
class Upload:
    """A generated file: its bytes, and the model it was written from if it is a faithful copy."""

    raw: bytes
    kind: str
    model: Model | None
    how: str

    def __repr__(self) -> str:  # a failing example may hold 200 kB cells: show its shape
        raw = self.raw if len(self.raw) <= 600 else self.raw[:400] + b"..." + self.raw[-150:]
        return f"Upload({len(self.raw)} bytes {raw!r}, kind={self.kind!r}, {self.how})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' failure report
        printer.text(repr(self))


def _needs_quotes(cell: str, delimiter: str) -> bool:
    return any(c in cell for c in (delimiter, '"', "\r", "\n"))


@st.composite
def written(draw, model: Model) -> Upload:
    """Write a model with a random dialect; `model` stays set only if the bytes are faithful."""
    faithful = True
    delimiter = draw(st.sampled_from([",", ";", "\t", ",", ";", "\t", ",", "|"]))
    if delimiter == "|":
        faithful = False  # not a delimiter the README accepts: the header is one cell
    sep_line = draw(rarely(5))
    quoting = draw(st.sampled_from(["minimal", "all", "random"]))
    out: list[str] = []
    if sep_line:
        out.append(f"sep={delimiter}" + draw(st.sampled_from(["\n", "\r\n", "\r"])))
        if delimiter == "|":
            faithful = False
    previous = "\n"
    for row in [model.names, *model.rows]:
        cells = []
        for cell in row:
            quote = (
                _needs_quotes(cell, delimiter)
                or quoting == "all"
                or (quoting == "random" and draw(st.booleans()))
            )
            cells.append('"' + cell.replace('"', '""') + '"' if quote else cell)
        body = delimiter.join(cells)
        ends = ["\n", "\r\n", "\r"] if body or previous != "\r" else ["\r", "\r\n"]
        previous = draw(st.sampled_from(ends))  # CR then an empty LF line would be one CRLF
        out.append(body + previous)
    if draw(st.booleans()) and out:
        out[-1] = out[-1].rstrip("\r\n") if model.rows and model.rows[-1] else out[-1]
    text = "".join(out)
    encoding = draw(
        st.sampled_from(
            [
                "utf-8",
                "utf-8",
                "utf-8",
                "utf-8-sig",
                "utf-8-sig",
                "utf-16-le",
                "utf-16-be",
                "cp1252",
                "latin-1",
                "utf-16-nobom",
            ]
        )
    )
    if draw(rarely(20)):  # a BOM written twice
        text = "\ufeff" + text
        faithful = faithful and not sep_line
    if encoding in ("cp1252", "latin-1"):
        raw = text.encode(encoding, errors="replace")
        faithful = faithful and text.isascii()  # non-ASCII bytes are not UTF-8 (or other text)
    elif encoding == "utf-16-nobom":
        raw = text.encode("utf-16-le", errors="surrogatepass")
        faithful = False
    else:
        boms = {
            "utf-8": b"",
            "utf-8-sig": b"\xef\xbb\xbf",
            "utf-16-le": b"\xff\xfe",
            "utf-16-be": b"\xfe\xff",
        }
        codec = "utf-8" if encoding.startswith("utf-8") else encoding
        raw = boms[encoding] + text.encode(codec, errors="surrogatepass")
    how = f"{encoding} delimiter={delimiter!r} sep_line={sep_line} quoting={quoting}"
    return Upload(raw, model.kind, model if faithful else None, how)


@st.composite
def damaged(draw, upload: Upload) -> Upload:
    """The same file with a few bytes damaged: the model no longer describes it."""
    raw = bytearray(upload.raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        damage = draw(
            st.sampled_from(
                [
                    b'"',  # an unbalanced quote
                    b"\x00",
                    b"\xff",
                    b"\xc3",  # a truncated UTF-8 sequence
                    b"\xed\xa0\x80",  # a surrogate written as UTF-8 bytes
                    b"\r",
                    b"\n",
                    b",",
                    b";",
                    b"truncate",
                    b"cut",
                ]
            )
        )
        if damage == b"truncate":
            del raw[at:]
        elif damage == b"cut":
            del raw[at : at + draw(st.integers(1, 20))]
        else:
            raw[at:at] = damage
    return Upload(bytes(raw), upload.kind, None, upload.how + " damaged")


def _random_bytes(kind: str) -> st.SearchStrategy[Upload]:
    header = {"conversions": b"click_id,payout,conversion_time\n", "status": b"click_id,status\n"}
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: header[kind] + b),
        st.lists(
            st.sampled_from([b'"', b",", b";", b"\t", b"\r", b"\n", b"a", b"1", b"\x00", b" "]),
            max_size=80,
        ).map(lambda parts: header[kind] + b"".join(parts)),
        st.sampled_from(
            [
                b"",
                b"\xef\xbb\xbf",
                b"\xff\xfe",
                b"\xff\xfea",
                b"sep=;",
                b"sep=;\n",
                b"PK\x03\x04rest",
            ]
        ),
    ).map(lambda raw: Upload(raw, kind, None, "random bytes"))


def uploads(
    kinds: tuple[str, ...] = ("conversions", "conversions", "conversions", "status"),
) -> st.SearchStrategy[Upload]:
    def of_kind(kind: str) -> st.SearchStrategy[Upload]:
        clean = models(kind).flatmap(written)
        ways = {"clean": clean, "damaged": clean.flatmap(damaged), "random": _random_bytes(kind)}
        return st.sampled_from(["clean"] * 6 + ["damaged"] * 2 + ["random"]).flatmap(ways.get)

    return st.sampled_from(kinds).flatmap(of_kind)


# --- checking one result -----------------------------------------------------------------------

_TABLES = (
    warehouse.ingested_files,
    warehouse.conversions,
    warehouse.conversion_history,
    warehouse.rejected_rows,
)


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in _TABLES
        }


def offer_source_config(source: Source) -> tuple[str, Config]:
    """A config with a new offer source of these options (New York account, USD, approved)."""
    name = f"fz{next(_OFFER_SOURCES)}"
    options = {
        "duplicate_mode": source.mode,
        "allow_negative_payout": source.allow_negative,
        "file_times": source.file_times,
        "nonexistent_times": source.nonexistent,
        "ambiguous_times": source.ambiguous,
    }
    if source.time_format is not None:
        options["time_format"] = source.time_format
    if source.purchase_increments:
        options["conversion_types"] = {"Purchase": {"duplicate_mode": "increment_payout"}}
    return name, make_config(**{name: options})


def expected_report_cells(reading: Reading, line: int) -> dict[str, str]:
    """README: a rejected row's original cells as written (the report then neutralises formulas);
    a malformed row's by position, extra cells joined into the last column."""
    cells = reading.data[line]
    width = len(reading.names)
    if len(cells) == width:
        cells = [undo_neutralisation(c) for c in cells]
    else:
        cells = cells + [""] * (width - len(cells))
        if len(cells) > width:
            cells = [*cells[: width - 1], reading.delimiter.join(cells[width - 1 :])]
    return {
        n: c
        for n, c in zip(reading.names, cells, strict=True)
        if _matched(n) not in _REPORT_COLUMNS
    }


def check(
    result: ingest.FileResult,
    upload: Upload,
    engine: Engine,
    *,
    dry_run: bool,
    source: Source,
    changed_later: bool = False,
) -> dict[str, int]:
    """Every property of the module docstring for one ingested file; returns what the file
    added to each table (the caller checks that nothing else changed)."""
    reading = read_independently(upload.raw, upload.kind)
    if currently_in_test_context():  # the fuzz tests, not the regressions
        note(f"{upload.how}; expected quarantine={set(reading.quarantine)}; result={result}")
        event(f"state: {result.state} {result.reason_code or ''}")
        event(f"encoding: {upload.how.split(' ')[0]}")
        event(f"faithful to a model: {upload.model is not None}")
        for code in result.reasons:
            event(f"row reason: {code}")
        for outcome, count in result.outcomes.items():
            if count:
                event(f"outcome: {outcome}")
    if upload.model is not None:  # the writer here is faithful to its model
        names = upload.model.names
        problem, named, columns = (
            header_problem(names, upload.kind)
            if any(n.strip() for n in names)
            else ("empty_file", (), {})
        )
        assert reading.quarantine == (frozenset({problem}) if problem else frozenset())
        if not problem:
            assert (reading.names, reading.columns) == (named, columns)
            kept = [r for r in upload.model.rows if "".join(r).strip()]
            assert list(reading.data.values()) == kept
    assert result.state in LEDGER_STATES
    effects = effects_of(result, engine)
    received = datetime.fromisoformat(result.received_at)
    with engine.connect() as conn:
        ledger = (
            conn.execute(
                select(warehouse.ingested_files).where(
                    warehouse.ingested_files.c.file_id == result.file_id
                )
            )
            .mappings()
            .one()
        )
    assert ledger["state"] == result.state
    assert_accounted(replace(result, report_path=None), None, engine)  # report: checked below
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))
    assert (summary["state"], summary["data_lines"], summary["outcomes"]) == (
        result.state,
        result.data_lines,
        result.outcomes,
    )
    if reading.quarantine:
        assert result.state == "quarantined"
        assert result.reason_code in reading.quarantine
        assert CATALOGUE[result.reason_code].scope == "file"
        assert result.detail and ledger["detail"].startswith(f"{result.reason_code}: ")
        assert result.report_path is None and result.data_lines == 0
        assert effects == NOTHING_BUT_THE_LEDGER
        return effects
    assert result.state == ("dry_run" if dry_run else "applied"), (
        result.reason_code,
        result.detail,
    )
    assert result.data_lines == len(reading.data)
    if reading.blank:
        assert f"skipped {reading.blank} blank line(s)" in result.warnings

    # The rejection report: one row per rejected line, never twice, only data lines.
    with open(result.report_path, encoding="utf-8-sig", newline="") as fh:
        report = list(csv.reader(fh, delimiter=reading.delimiter))
    expected_header = ["line", *reading.cell_names, "reason_code", "reason"]
    assert [undo_neutralisation(c) for c in report[0]] == expected_header
    rejected: dict[int, frozenset[str]] = {}
    for row in report[1:]:
        assert len(row) == len(expected_header), row
        line = int(row[0])
        assert line in reading.data and line not in rejected, line
        rejected[line] = frozenset(row[-2].split("|"))
        assert all(CATALOGUE[c].scope == "row" for c in rejected[line]) and row[-1]
        want = expected_report_cells(reading, line)
        assert row[1:-2] == [neutralise(want[n]) for n in reading.cell_names], line
        if reading.malformed(line):
            assert rejected[line] == {"malformed_row"}
    for line in reading.data:
        if reading.malformed(line):
            assert line in rejected
    assert len(rejected) == result.outcomes["rejected"]

    with engine.connect() as conn:
        stored = {
            r.line: (r.reason_codes, json.loads(r.cells))
            for r in conn.execute(
                select(warehouse.rejected_rows).where(
                    warehouse.rejected_rows.c.file_id == result.file_id
                )
            )
        }
        history = [
            r.line
            for r in conn.execute(
                select(warehouse.conversion_history.c.line).where(
                    warehouse.conversion_history.c.file_id == result.file_id
                )
            )
        ]
        inserted = {
            r.line: r
            for r in conn.execute(
                select(warehouse.conversions).where(
                    warehouse.conversions.c.file_id == result.file_id
                )
            )
        }
        payouts = [
            r.payout
            for r in conn.execute(
                select(warehouse.conversions.c.payout).where(
                    warehouse.conversions.c.offer_source == result.offer_source
                )
            )
        ]
    # No payout outside NUMERIC(18, 6), none negative where negatives are not allowed.
    assert all(-MAX_PAYOUT_MICROS <= p <= MAX_PAYOUT_MICROS for p in payouts), payouts
    assert source.allow_negative or all(p >= 0 for p in payouts), payouts
    o = result.outcomes
    if dry_run:
        assert effects == NOTHING_BUT_THE_LEDGER
    else:
        assert {
            line: frozenset(codes.split("|")) for line, (codes, _) in stored.items()
        } == rejected
        for line, (_, cells) in stored.items():
            assert cells == expected_report_cells(reading, line), line
        assert len(history) == len(set(history)), "a line in the history twice"
        assert not set(history) & set(rejected), "a line both applied and rejected"
        assert set(history) <= set(reading.data)
        assert len(history) == o["inserted"] + o["updated"] + o["incremented"] + o["status_updated"]
        untracked = set(reading.data) - set(history) - set(rejected)
        assert len(untracked) == o["ignored_duplicate"]
        assert set(inserted) <= set(history) and len(inserted) == o["inserted"]
        assert effects == {
            "ingested_files": 1,
            "conversions": o["inserted"],
            "conversion_history": len(history),
            "rejected_rows": o["rejected"],
        }

    if upload.model is None or upload.kind != "conversions":
        return effects
    wants = {
        line: row_expectation(reading, cells, source, received)
        for line, cells in reading.data.items()
        if not reading.malformed(line)
    }
    if source.mode in ("create_new", "new_or_repeated"):  # every row inserts or is rejected
        for line, want in wants.items():
            if want is None:
                continue
            if "codes" in want:
                assert rejected.get(line) == want["codes"], (line, reading.data[line])
            else:
                assert line not in rejected, (line, reading.data[line], rejected[line])
                assert dry_run or line in inserted, line
    no_edits = ("create_new", "new_or_repeated", "ignore", "ignore_by_event_id")
    if source.mode in no_edits and not changed_later:
        for line, row in inserted.items():  # no later row of the file changes a conversion
            want = wants[line]
            if want is not None:
                got = {k: getattr(row, k) for k in want.get("values", {})}
                assert got == want.get("values"), (line, reading.data[line])
    return effects


def ingest_one(
    upload: Upload,
    engine: Engine,
    folder: Path,
    *,
    source: Source,
    dry_run: bool,
    batch_size: int,
) -> ingest.FileResult:
    name, config = offer_source_config(source)
    path = folder / "upload.csv"
    path.write_bytes(upload.raw)
    before = table_counts(engine)
    result = ingest.ingest_file(
        path,
        config=config,
        engine=engine,
        reports_dir=folder / "reports",
        offer_source=name,
        kind=upload.kind,
        received_at=RECEIVED,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    effects = check(result, upload, engine, dry_run=dry_run, source=source)
    after = table_counts(engine)
    assert {t: after[t] - before[t] for t in after} == effects, "something else changed"
    return result


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture
def sqlite_engine(tmp_path: Path):
    """One SQLite warehouse for all examples of a test (each example has its own offer source)."""
    engine = warehouse.connect(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield engine
    engine.dispose()


SOURCES = st.builds(
    Source,
    mode=st.sampled_from(["create_new", "create_new", "new_or_repeated", *MODES]),
    allow_negative=st.booleans(),
    file_times=st.sampled_from(["account", "account", "utc"]),
    nonexistent=st.sampled_from(["reject", "shift_forward"]),
    ambiguous=st.sampled_from(["reject", "earliest", "latest"]),
    time_format=st.sampled_from([None, None, "%d/%m/%Y %H:%M", "%Y%m%d%H%M%S"]),
    purchase_increments=st.booleans(),
)
OPTIONS = st.fixed_dictionaries(
    {
        "source": SOURCES,
        "dry_run": rarely(6),
        "batch_size": st.sampled_from([1, 2, 3, 50_000, 50_000]),
    }
)


@pytest.mark.slow
@fuzz_settings(ci=100, soak=2000)
@given(upload=uploads(), options=OPTIONS)
def test_any_file_is_applied_with_every_line_accounted_for_or_quarantined_whole(
    sqlite_engine: Engine, upload: Upload, options: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ingest_one(upload, sqlite_engine, Path(folder), **options)


@fuzz_settings(ci=60, soak=1200)
@given(upload=_random_bytes("conversions") | _random_bytes("status"), options=OPTIONS)
def test_random_bytes_never_raise_and_are_applied_or_quarantined(
    sqlite_engine: Engine, upload: Upload, options: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ingest_one(upload, sqlite_engine, Path(folder), **options)


@pytest.mark.parametrize(
    "warehouse_url",
    [
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
            ),
        )
    ],
    indirect=True,
)
@fuzz_settings(ci=30, soak=600)
@given(upload=uploads(("conversions",)), options=OPTIONS)
def test_any_file_on_postgresql_is_applied_with_every_line_accounted_for_or_quarantined_whole(
    engine: Engine, upload: Upload, options: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ingest_one(upload, engine, Path(folder), **options)


@pytest.mark.slow
@fuzz_settings(ci=20, soak=400)
@given(
    files=st.lists(uploads(), min_size=1, max_size=3),
    source=SOURCES,
)
def test_inbox_runs_archive_applied_files_and_quarantine_unreadable_ones_every_line_counted(
    sqlite_engine: Engine, files: list[Upload], source: Source
) -> None:
    name, config = offer_source_config(source)
    with tempfile.TemporaryDirectory() as home:
        ctx = runner.Context(config, sqlite_engine, datadir.Layout(Path(home)))
        ctx.layout.ensure(config.offer_sources)
        dropped = {}
        for i, upload in enumerate(files):
            relative = f"{name}/{'status/' if upload.kind == 'status' else ''}f{i}.csv"
            path = ctx.layout.inbox / relative
            path.write_bytes(upload.raw)
            dropped[f"f{i}.csv"] = upload
        before = table_counts(sqlite_engine)
        results = runner.run_inbox(ctx)
        assert sorted(r.name for r in results) == sorted(dropped)
        # Conversion files before status files, as the runner promises.
        assert [r.kind for r in results] == sorted((r.kind for r in results), key="status".__eq__)
        applied: set[tuple[str | None, str]] = set()
        total = Counter({t: 0 for t in before})
        for result in results:
            upload = dropped[result.name]
            if result.state == "duplicate_file":  # the same bytes as an earlier file of the run
                assert (result.content_hash, upload.kind) in applied
                total.update(effects_of(result, sqlite_engine))
                where = ctx.layout.archive
            else:
                total.update(
                    check(
                        result,
                        upload,
                        sqlite_engine,
                        dry_run=False,
                        source=source,
                        changed_later=any(u.kind == "status" for u in files),
                    )
                )
                if result.state == "applied":
                    applied.add((result.content_hash, upload.kind))
                    where = ctx.layout.archive
                else:
                    where = ctx.layout.quarantine
                    (sidecar,) = where.rglob(f"*_{result.name}.reason.json")
                    reason = json.loads(sidecar.read_text(encoding="utf-8"))
                    assert (reason["code"], reason["content_hash"]) == (
                        result.reason_code,
                        result.content_hash,
                    )
            (filed,) = where.rglob(f"*_{result.name}")
            assert filed.read_bytes() == upload.raw
        after = table_counts(sqlite_engine)
        assert {t: after[t] - before[t] for t in after} == dict(total), "something else changed"
        leftovers = [p for p in ctx.layout.inbox.rglob("*") if p.is_file()]
        assert leftovers == [] and list(ctx.layout.processing.iterdir()) == []


NOTHING_BUT_THE_LEDGER = {
    "ingested_files": 1,
    "conversions": 0,
    "conversion_history": 0,
    "rejected_rows": 0,
}


def effects_of(result: ingest.FileResult, engine: Engine) -> dict[str, int]:
    """What one file added to each table: its ledger row, conversions, history, rejections."""
    fid = result.file_id
    with engine.connect() as conn:
        return {
            "ingested_files": 1,
            "conversions": conn.execute(
                select(func.count()).where(warehouse.conversions.c.file_id == fid)
            ).scalar_one(),
            "conversion_history": conn.execute(
                select(func.count()).where(warehouse.conversion_history.c.file_id == fid)
            ).scalar_one(),
            "rejected_rows": conn.execute(
                select(func.count()).where(warehouse.rejected_rows.c.file_id == fid)
            ).scalar_one(),
        }


# --- the reader's own self-check ---------------------------------------------------------------


def test_the_second_reader_agrees_with_the_csv_module_on_well_formed_text() -> None:
    """The tokenizer here is the expectation of every fuzz test: pin it on hand-made cases."""
    text = 'a,"b\r\nc",d\r\n\r\n"x""y",\r"z\n'
    assert tokenize(text, ",") == [["a", "b\r\nc", "d"], [], ['x"y', ""], ["z\n"]]
    assert tokenize('"ab"c,d"e\n', ",") == [["abc", 'd"e']]
    for sample in (text, '"ab"c,d"e\n', 'x;"y\r\n', "\n\r\n\r,\x00\n"):
        assert tokenize(sample, ",") == list(csv.reader(io.StringIO(sample, newline="")))
    assert sniff('"a,b";c\n') == ";" and sniff("a\tb,c\n") == "," and sniff("x") == ","
    reading = read_independently(
        b'\xef\xbb\xbfsep=;\r\nClick ID;Revenue;notes\r\n"c1";1.50;"two\nlines"\r\n;;\r\nx\r\n',
        "conversions",
    )
    assert reading.quarantine == frozenset() and reading.delimiter == ";"
    assert reading.columns == {"click_id": 0, "payout": 1}
    assert reading.data == {3: ["c1", "1.50", "two\nlines"], 5: ["x"]} and reading.blank == 1
    assert read_independently(b"clickid,sub_id,payout\n", "conversions").quarantine == {
        "duplicate_column"
    }
    assert read_independently(b"c\x00l\x00i\x00", "conversions").quarantine == {"unreadable_file"}
    assert read_independently(b"click_id,payout\nx,\xff\n", "conversions").quarantine == {
        "unreadable_file"
    }


# --- regressions the fuzzing found, written out so CI never depends on finding them again -------


def regression(raw: bytes, engine: Engine, **options: Any) -> ingest.FileResult:
    """Ingest one hand-written file with every check of the fuzz tests."""
    source = Source(options.pop("mode", "create_new"), options.pop("allow_negative", False))
    options = {"source": source, "dry_run": False, "batch_size": 50_000} | options
    with tempfile.TemporaryDirectory() as folder:
        return ingest_one(
            Upload(raw, "conversions", None, "regression"), engine, Path(folder), **options
        )


def test_a_file_quarantined_after_some_batches_were_read_reports_no_data_lines(
    sqlite_engine: Engine,
) -> None:
    """Found by fuzzing: a byte that is not UTF-8 beyond the first 8 KiB is met only after the
    first batches were counted; the quarantined result said `data_lines=1` with all outcomes 0,
    breaking the accounting invariant (and its summary said so too)."""
    rows = b"".join(b"c%d,1.00\n" % i for i in range(1000))  # 9.9 KB: decoded in two chunks
    result = regression(b"click_id,payout\n" + rows + b"\xff\n", sqlite_engine, batch_size=10)
    assert (result.state, result.reason_code, result.data_lines) == (
        "quarantined",
        "unreadable_file",
        0,
    )
    assert "byte offset 9906 (near line 1002)" in result.detail


def test_increments_past_twelve_digits_are_rejected_and_the_payout_stays_exact(
    engine: Engine,
) -> None:
    """Found by fuzzing: increments were summed without a limit. Past 12 digits PostgreSQL's
    NUMERIC(18, 6) refused the COPY (an unhandled DataError: the inbox would put the file back
    forever), SQLite stored the 13 digits, and ten maximal payouts wrapped the int64 sum to a
    negative payout. Now such a row is rejected `payout_out_of_range`, the conversion keeps its
    payout, and later rows of the key go on from there."""
    big = b"999999999999.000000"
    file = (
        b"click_id,payout\n"
        b"c1," + big + b"\n"  # line 2: inserted
        b"c1,0.999999\n"  # 3: incremented to exactly 999999999999.999999, the most there is
        b"c1,0.000001\n"  # 4: one micro too many: payout_out_of_range
        + b"c1,999999999999.999999\n" * 10  # 5-14: would wrap an int64 sum: each out of range
        + b"c2,"
        + big
        + b"\n"  # 15: inserted
        b"c2,0.5\n"  # 16: incremented
    )
    result = regression(file, engine, mode="increment_payout")
    assert result.outcomes == {
        "inserted": 2,
        "updated": 0,
        "incremented": 2,
        "status_updated": 0,
        "ignored_duplicate": 0,
        "rejected": 11,
    }
    assert result.reasons == {"payout_out_of_range": 11}
    with engine.connect() as conn:
        payouts = dict(
            conn.execute(
                select(warehouse.conversions.c.click_id, warehouse.conversions.c.payout).where(
                    warehouse.conversions.c.offer_source == result.offer_source
                )
            ).all()
        )
    assert payouts == {"c1": 999_999_999_999_999_999, "c2": 999_999_999_999_500_000}


def test_negative_increments_past_twelve_digits_are_rejected_too(engine: Engine) -> None:
    """The other side of the same limit, where negative payouts are allowed; a key whose first
    increment is refused still takes a later one that fits."""
    file = (
        b"click_id,payout\n"
        b"c1,-999999999999.5\n"  # line 2: inserted
        b"c1,-0.6\n"  # 3: payout_out_of_range
        b"c1,-0.4\n"  # 4: incremented to -999999999999.9
        b"c1,10\n"  # 5: incremented to -999999999989.9
    )
    result = regression(file, engine, mode="increment_payout", allow_negative=True)
    assert (result.outcomes["incremented"], result.reasons) == (2, {"payout_out_of_range": 1})
    with engine.connect() as conn:
        (payout,) = conn.execute(
            select(warehouse.conversions.c.payout).where(
                warehouse.conversions.c.offer_source == result.offer_source
            )
        ).one()
    assert payout == -999_999_999_989_900_000


def test_payouts_over_nine_billion_stay_exact_when_a_key_has_rows_without_payout(
    engine: Engine,
) -> None:
    """Found by fuzzing: staged rows came back through a float64 column whenever a merge chunk
    held a row without payout (a NULL), so payouts past 2**53 micro-units were rounded:
    12345678901.123457 was stored as ...456, and 999999999999.999999 as 1000000000000.00
    (on PostgreSQL a NUMERIC overflow: an unhandled error)."""
    file = (
        b"click_id,payout\n"
        b"c1,12345678901.123457\n"  # inserted
        b"c1,\n"  # ignored: a staged row without payout
        b"c2,999999999999.999999\n"  # inserted
        b"c2,\n"  # ignored
    )
    result = regression(file, engine, mode="ignore")
    assert (result.outcomes["inserted"], result.outcomes["ignored_duplicate"]) == (2, 2)
    with engine.connect() as conn:
        payouts = dict(
            conn.execute(
                select(warehouse.conversions.c.click_id, warehouse.conversions.c.payout).where(
                    warehouse.conversions.c.offer_source == result.offer_source
                )
            ).all()
        )
    assert payouts == {"c1": 12_345_678_901_123_457, "c2": 999_999_999_999_999_999}


def test_times_before_1685_keep_their_microseconds_when_another_row_has_no_time(
    engine: Engine,
) -> None:
    """The same rounding for times (microseconds since 1970 past 2**53): a row without a time
    made the year-1000 time lose its last microsecond."""
    file = b"click_id,payout,conversion_time\nc1,1,1000-01-01 00:00:00.000001Z\nc2,1,\n"
    result = regression(file, engine)
    with engine.connect() as conn:
        times = dict(
            conn.execute(
                select(
                    warehouse.conversions.c.click_id, warehouse.conversions.c.converted_at
                ).where(warehouse.conversions.c.offer_source == result.offer_source)
            ).all()
        )
    assert times == {
        "c1": datetime(1000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "c2": RECEIVED,
    }


def test_a_nul_byte_in_a_quoted_header_cell_past_the_first_line_quarantines_the_file(
    engine: Engine,
) -> None:
    """Found by fuzzing: the reader looked for NUL bytes in the header's first physical line
    only; a quoted header cell running onto the next line carried one into the quarantine
    detail, which PostgreSQL cannot store in a text column: an unhandled error (the inbox would
    have put the file back forever)."""
    result = regression(b'"\r\x00click id","payout"\n', engine)
    assert (result.state, result.reason_code) == ("quarantined", "unreadable_file")
    assert "NUL" in result.detail and "\x00" not in result.detail
