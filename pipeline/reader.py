"""Read an upload file: a validated header, then batches of raw string cells with line numbers.

This is the only module that touches the bytes of an input file. It settles everything that is
about the *file* (encoding, delimiter, which column is which, CSV quoting, line numbers) so the
rest of the pipeline sees plain string cells, and it refuses a file as a whole (`FileRejected`,
with a reason code from `pipeline.core.reasons`) when it cannot be read at all. It never interprets
values: no trimming, no type parsing. The one exception is undoing our own report writer's
formula neutralisation (`'=...` back to `=...`), so a fixed rejection report can be dropped back
into the inbox as it is.

Line numbers are record numbers as a spreadsheet shows them (the header is line 1, or line 2
after an Excel ``sep=;`` line or a Google Ads ``Parameters:TimeZone=<zone>`` line, line 3 after
both), because that is what users see when they open the file and what the rejection report must
point at. A record with a newline inside quotes is still one line. The Parameters line may be
quoted as a whole or carry trailing delimiters, as spreadsheets save it; its zone (an IANA name,
or an offset like ``-0500`` or ``+05:30``) is kept as written in `Header.time_zone` for the time
rules, and any other zone or parameter is `invalid_parameters_line`.

Encoding: a byte order mark decides (UTF-8 or UTF-16); without one the file is the offer
source's `encoding` (e.g. ``cp1252``) if it sets one, else UTF-8, and a file that is not valid
in it is `unreadable_file` with a detail naming that setting.

Which header cell is which (`read_header`), in this order: the report columns our rejection
reports add (``line``, ``reason_code``, ``reason``) are skipped; a header the offer source's
`columns` maps to a field of this kind (matched after trimming, ignoring case) is that field; a
header in its `ignore_columns` (matched the same way) is left out on purpose (`Header.ignored`);
a canonical name or built-in alias (`ALIASES`, matched by `_normalise`) is its column; anything
else is unknown. Two cells naming one column, however each was matched, are `duplicate_column`.

Nothing is silently defaulted: an unknown header whose words name a field of ours (a status,
currency, payout, time or click id, see `_FIELD_WORDS`; for status files only the status and the
click id) stops the file with `unmapped_column`, because its values would otherwise be dropped
and the row would take a default (`default_status`, the account currency, the time the file was
received) or another column's value. This holds even when another header is mapped to that
field: beside a mapped ``Conversion Date``, a ``Click Date`` is `unmapped_column` too, since the
reader never picks one of two times (or statuses, or payouts); the user maps one and lists the
other in `ignore_columns`. Headers that name nothing of ours (``sub2``, ``Sub ID 2``, ``IP``,
``Country``, ``Offer Name``, ``User Agent``) stay unknown: ignored, and listed by the caller. A
file missing a required column is `missing_required_column` first, its detail naming a header
that looks like the missing field.

Files can have millions of rows, so they are streamed and parsed in batches. The C `csv` module
defines how a record is parsed; while a UTF-8 file's lines are whole records (the common case,
a quoted value without a line break included), blocks of them are parsed by pyarrow instead,
about five times faster on the benchmark's file, to the same cells, lines and malformed
records (`pipeline.plain_block` says when a block is plain; a differential test holds the two
paths together). Per batch, rows
are split into good, malformed and blank ones with numpy masks, and columns are built with
C-level iteration only (no Python statement per row).

Every resource is bounded whatever the file holds: each physical line is read with a limit, and
the bytes of each record (its quoted line breaks included) are counted against
`max_line_bytes`, so a file with no line end, or a quote left open, is refused in bounded memory
(`line_too_long`, naming the line and, for an open quote, where it opened); a header wider than
`max_columns` is refused before any row is read; frames are built column-wise in one step, so
work is linear in the header's width.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gc
import io
import itertools
import json
import os
import re
import string
import zoneinfo
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import plain_block
from pipeline.core.model import DEFAULT_MAX_COLUMNS, DEFAULT_MAX_LINE_BYTES, OfferSource
from pipeline.core.vocabulary import (
    KIND_COLUMNS,
    REPORT_COLUMNS,
    REQUIRED_COLUMNS,
)

# One batch's bounds besides `settings.batch_size` records: cells (each a Python string while
# parsed: a 1,000-column file gets batches of 500 records) and text.
BATCH_CELLS = 500_000
BATCH_BYTES = 64 * 1024 * 1024
_READ_BYTES = 8 * 1024 * 1024  # what the plain path reads at a time, at most
_MIN_READ_BYTES = 64 * 1024

_ALIAS_SPELLINGS = {
    "click_id": (
        "clickid",
        "click_id",
        "click id",
        "subid",
        "sub_id",
        "gclid",
        "google click id",  # Google Ads' offline-conversion template
    ),
    "payout": ("revenue", "sum", "amount", "commission", "conversion value", "payout amount"),
    "conversion_time": (
        "time",
        "date",
        "datetime",
        "conversion_date",
        "timestamp",
        "conversion time",
    ),
    "conversion_type": ("type", "event", "conversion_type", "conversion name"),
    "status": ("conversion status",),
    "event_id": ("transaction_id", "order_id", "tid", "txid", "txn_id"),
    "currency": ("conversion currency", "currency code"),
}
_SEPARATORS = re.compile(r"[ _-]+")


def _normalise(cell: str) -> str:
    """Header text as matched: trimmed, lower-case, runs of space/underscore/hyphen -> `_`."""
    return _SEPARATORS.sub("_", cell.strip().lower())


def is_report_column(cell: str) -> bool:
    """A column our rejection reports add (`line`, `reason_code`, `reason`), in any spelling."""
    return _normalise(cell) in REPORT_COLUMNS


# Keyed by the normalised spelling, so `Click ID`, `click-id` and `CLICKID` all match.
ALIASES: dict[str, str] = {
    _normalise(spelling): column
    for column, spellings in _ALIAS_SPELLINGS.items()
    for spelling in spellings
}


def _words(*words: str) -> re.Pattern[str]:
    """Any of these words (each a regex) as a whole word of a normalised header."""
    return re.compile(rf"(?<![a-z0-9])(?:{'|'.join(words)})(?![a-z0-9])")


# Header words that name a field of ours, one line per field, searched in the normalised header
# (`Commission Amount (EUR)` has the words commission, amount, eur). Compound words count where
# they are unambiguous (`clickdate`, `conversiontime`, `orderstatus`, `currencycode`). A header
# takes the first field whose words it has (`Click Date` is a time, not a click id); when that
# field is one of its kind's columns and no column is mapped from the header, the file is
# `unmapped_column`. `click` names a click id before `id`, or alone, or with a ref, key, token,
# code or number (`Click ID 2`, `Sub Click ID`, `Click`, `Click Ref`), so `Click IP`, `Click
# URL` or `Days Since Click` name nothing of ours. Every pattern is linear in the header's length
# (a match starts only at a word's start, and nothing in it can be split two ways).
_FIELD_WORDS: dict[str, re.Pattern[str]] = {
    "status": _words("[a-z]*status", "state"),
    "currency": _words("[a-z]*currency", "currency[a-z]*", "curr", "ccy"),
    "payout": _words(
        "(?:payout|revenue|commission|amount|value|price|sum|payment|earning|profit)s?"
    ),
    "conversion_time": _words("[a-z]*(?:date|time)(?:stamp)?", "day"),
    "click_id": _words(
        "[a-z]*clickid",
        "click_id",
        "gclid",
        "gbraid",
        "wbraid",
        "^click(?:_(?:ref|key|token|code|[0-9]+))?$",
    ),
}
_WATCHED = {  # the fields each kind watches for: those of its columns
    kind: tuple(f for f in _FIELD_WORDS if f in columns) for kind, columns in KIND_COLUMNS.items()
}
# Where a row takes a field from when no column holds it (an unmapped header would hide that).
_DEFAULTED = {
    "conversions": {
        "status": "default_status",
        "currency": "the account's currency",
        "conversion_time": "the time the file was received",
    },
    "status": {},
}

_SEP_LINE = re.compile(r"sep=([,;\t])\r?\n?")
# Google Ads' first line, `Parameters:TimeZone=America/New_York`, any case, spaces around `=`.
# Greedy and unambiguous, so a hostile line of `max_line_bytes` costs linear time; the key and
# the value are trimmed after the match.
_PARAMETERS = re.compile(r"parameters\s*:(?P<key>[^=]*)(?:=(?P<value>.*))?", re.I | re.S)
_TRAILING = ",;\t "  # the empty cells a spreadsheet writes after a one-cell line
_OFFSET = re.compile(r"[+-](?P<h>[0-9]{2}):?(?P<m>[0-9]{2})")

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_BOM_NAMES = {"utf-8-sig": "UTF-8", "utf-16-le": "UTF-16 LE", "utf-16-be": "UTF-16 BE"}
# Binary formats people save by mistake instead of "CSV UTF-8".
_MAGIC = {
    b"PK\x03\x04": "an Excel workbook (.xlsx)",
    b"\xd0\xcf\x11\xe0": "an Excel 97-2003 workbook (.xls)",
}
_DELIMITERS = (",", ";", "\t")  # in order of preference when counts tie
_QUOTED = re.compile(r'"[^"]*"')
# Our report writer prefixes cells starting with these characters with `'` (formula injection).
_NEUTRALISED = re.compile(r"'[=+\-@\t\r]")
# Undecodable bytes become lone surrogates under "surrogateescape"; valid text never has them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# The csv module's default field limit (128 KiB) would reject a whole file for one long value.
# The setting is process-wide; we only ever raise it.
csv.field_size_limit(max(csv.field_size_limit(), 16 * 1024 * 1024))
_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # the dtype `pd.Series(..., dtype="str")` has


class FileRejected(Exception):
    """The whole file cannot be processed; it is quarantined with this reason."""

    def __init__(self, code: str, detail: str):
        self.code, self.detail = code, detail
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True)
class Header:
    """What the header line says: how to decode and split the file, and which cell is which."""

    # python codec: "utf-8", "utf-8-sig", "utf-16-le" or "utf-16-be" (from the BOM), or the offer
    # source's `encoding` as configured for a file without one ("utf-16"/"utf-32" become "-le")
    encoding: str
    delimiter: str  # ",", ";" or "\t"
    names: tuple[str, ...]  # header cells as written (BOM removed; an empty one is "column_<n>")
    columns: dict[str, int]  # canonical column -> 0-based position, in the kind's column order
    unknown: tuple[str, ...]  # cells that name nothing of ours (the caller warns)
    # 1; 2 after an Excel "sep=;" line or a Google Ads "Parameters:TimeZone=" line; 3 after both
    header_line: int
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES  # the record limit `read_batches` applies
    ignored: tuple[str, ...] = ()  # cells the offer source's `ignore_columns` leaves out
    time_zone: str | None = None  # the Parameters:TimeZone= zone as written, e.g. "-0500"

    @functools.cached_property  # read per batch; a wide header makes it width work each time
    def cell_names(self) -> tuple[str, ...]:
        """The header cells that carry data: all but report columns of a re-dropped report."""
        return tuple(n for n in self.names if not is_report_column(n))

    @functools.cached_property
    def origin(self) -> str | None:
        """In a re-dropped rejection report, the header cell that holds each row's line in the
        first file: its `original_line` (a report of a report), else its `line`."""
        by_name = {_normalise(n): n for n in self.names}
        return by_name.get("original_line") or by_name.get("line")

    def canonical(self, cells: pd.DataFrame) -> pd.DataFrame:
        """The canonical columns of a `Batch.cells` frame, renamed to their canonical names."""
        picked = cells[[self.names[i] for i in self.columns.values()]]
        return picked.set_axis(list(self.columns), axis=1)


@dataclass
class Batch:
    """Up to `batch_size` consecutive records of a file, sorted into good, malformed and blank."""

    lines: np.ndarray  # int64 line numbers of the rows in `cells`, ascending
    cells: pd.DataFrame  # one str column per header cell (labels = Header.names), RangeIndex
    malformed: list[tuple[int, list[str]]]  # (line, cells as parsed): cell count != header's
    blank_lines: int  # records with no cells or only empty/whitespace cells (not yielded)


def read_header(
    path: str | os.PathLike[str],
    kind: str,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    source: OfferSource | None = None,
) -> Header:
    """Detect encoding and delimiter and map the header cells to columns; raise `FileRejected`.

    Only the first lines are read, each with the `max_line_bytes` limit (a file with no line end
    is refused after that many bytes, not read whole), and a header of more than `max_columns`
    cells is refused before anything else is done with it. Bytes that cannot be decoded further
    down the file are found by `read_batches`, so an error there is reported by the pass that
    reads it, with its line.

    With an offer `source`, its `encoding` decodes a file without a byte order mark, its
    `columns` map headers before the built-in aliases do, and its `ignore_columns` are headers
    left out on purpose (see the module docstring for the order and `unmapped_column`).
    """
    if kind not in KIND_COLUMNS:
        raise ValueError(f"kind must be one of {sorted(KIND_COLUMNS)}, got {kind!r}")
    with open(path, "rb") as raw:
        encoding = _detect_encoding(raw, source.encoding if source else None)
        text = io.TextIOWrapper(raw, encoding, errors="surrogateescape", newline="")
        bounded = _BoundedLines(text, encoding, max_line_bytes)
        lines = iter(bounded)
        header_line = 1
        try:
            sep, time_zone, line = _preamble(lines)
            header_line += (sep is not None) + (time_zone is not None)
            if line.startswith("\ufeff"):  # a second BOM, e.g. a UTF-8 file re-saved with BOM
                line = line[1:]
            _check_header_text(line, header_line, encoding, sep is not None, time_zone is not None)
            delimiter = sep or _sniff_delimiter(line)
            bounded.delimiter = delimiter  # before the header's own line end is judged
            reader = csv.reader(itertools.chain([line], lines), delimiter=delimiter)
            names = tuple(next(reader))
            if len(names) > max_columns:
                raise FileRejected(
                    "too_many_columns",
                    f"the header (line {header_line}) has {len(names):,} columns; the limit"
                    f" (settings.max_columns) is {max_columns:,}",
                )
            if _ESCAPED_BYTE.search("".join(names)):
                detail = f"the header (line {header_line}) is not valid {encoding}"
                raise FileRejected("unreadable_file", f"{detail}; {_encoding_advice(encoding)}")
            if "\x00" in "".join(names):  # a quoted header cell reaching past the first line
                detail = f"the header (line {header_line}) contains NUL bytes"
                raise FileRejected("unreadable_file", f"{detail}; save it as CSV UTF-8")
        except UnicodeDecodeError as e:  # UTF-16 errors are not escaped (they can be ASCII bytes)
            detail = _decode_error_detail(e, raw, bounded.line - 1, encoding)
            raise FileRejected("unreadable_file", detail) from e
        except csv.Error as e:
            raise FileRejected("unreadable_file", f"line {header_line}: {e}") from e
    if not any(name.strip() for name in names):
        raise FileRejected("empty_file", f"the header (line {header_line}) has only empty cells")
    # Spreadsheets export formatted-but-empty columns as empty header cells ("a,b,,"). They carry
    # no column, so they get a name of their position instead of colliding with each other.
    names = tuple(n if n.strip() else f"column_{i + 1}" for i, n in enumerate(names))
    columns, unknown, ignored = _map_header(names, kind, source)
    # Cells mapped to nothing that look like a field of ours (see `_FIELD_WORDS`).
    unmapped = [(p, f) for p in unknown if (f := _looks_like(names[p], kind)) is not None]

    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in columns]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        detail = f"missing required column{plural} {', '.join(map(repr, missing))}"
        detail += f" (header: {delimiter.join(names)})"
        if len(names) == 1 and any(d in names[0] for d in ",;"):
            detail += (
                "; the whole header is one cell: is it quoted as a whole, or separated by"
                " something other than ',', ';' or tab?"
            )
        else:
            for position, field in unmapped:
                if field in missing:
                    setting = f"{field} = {_toml(names[position])}"
                    detail += (
                        f"; the header {names[position]!r} (column {position + 1}) looks like"
                        f" {field}: map it in columns ({setting})"
                    )
        raise FileRejected("missing_required_column", detail)
    if unmapped:
        raise FileRejected("unmapped_column", _unmapped_detail(names, unmapped, columns, kind))

    return Header(
        encoding=encoding,
        delimiter=delimiter,
        names=names,
        columns={c: columns[c] for c in KIND_COLUMNS[kind] if c in columns},
        unknown=tuple(names[i] for i in unknown),
        header_line=header_line,
        max_line_bytes=max_line_bytes,
        ignored=tuple(names[i] for i in ignored),
        time_zone=time_zone,
    )


def _map_header(
    names: tuple[str, ...], kind: str, source: OfferSource | None
) -> tuple[dict[str, int], list[int], list[int]]:
    """Which cell is which: (canonical column -> position, unknown positions, ignored positions).

    Each cell is, in this order: a report column (skipped), a header the source's `columns` maps
    to a field of this kind, one of its `ignore_columns`, a canonical name or alias of a column of
    this kind, or unknown. Two cells of one column (or of one spelling) are `duplicate_column`.
    """
    columns_of_kind = KIND_COLUMNS[kind]
    mapped: dict[str, str] = {}  # folded header -> field, from the source's `columns`
    ignore: set[str] = set()
    if source is not None:
        mapped = {_folded(h): f for f, h in source.columns.items() if f in columns_of_kind}
        ignore = {_folded(h) for h in source.ignore_columns}
    columns: dict[str, int] = {}
    unknown: list[int] = []
    ignored: list[int] = []
    by_columns: set[int] = set()  # positions mapped by the source's `columns`
    seen: dict[str, int] = {}  # canonical column or normalised other text -> position
    for position, name in enumerate(names):
        normalised, folded = _normalise(name), _folded(name)
        key = normalised
        if normalised in REPORT_COLUMNS:
            pass
        elif folded in mapped:
            key = mapped[folded]
            columns[key] = position
            by_columns.add(position)
        elif folded in ignore:
            ignored.append(position)
        elif normalised in columns_of_kind or ALIASES.get(normalised) in columns_of_kind:
            key = ALIASES.get(normalised, normalised)
            columns[key] = position
        else:
            unknown.append(position)
        if key in seen:
            detail = _duplicate_detail(names, seen[key], position, key, by_columns)
            raise FileRejected("duplicate_column", detail)
        seen[key] = position
    return columns, unknown, ignored


def read_batches(path: str | os.PathLike[str], header: Header, batch_size: int) -> Iterator[Batch]:
    """Stream the records after the header in batches of at most `batch_size` records.

    Always yields at least one (possibly empty) batch. Raises `FileRejected("unreadable_file")`
    when a byte cannot be decoded or the CSV cannot be parsed, and `FileRejected("line_too_long")`
    when a record passes `header.max_line_bytes`, wherever that happens in the file; the caller
    must therefore not commit anything before the last batch has been read.

    A UTF-8 file is read in plain blocks (`pipeline.plain_block`, pyarrow) while its lines are
    whole records, and by the `csv` module from the first block that is not plain; the result
    is the same either way (`read_batches_by_csv` is the other way, for the test that says so).
    """
    return _read_batches(path, header, batch_size, plain=True)


def read_batches_by_csv(
    path: str | os.PathLike[str], header: Header, batch_size: int
) -> Iterator[Batch]:
    """`read_batches` with the `csv` module only: the definition the plain blocks are held to."""
    return _read_batches(path, header, batch_size, plain=False)


def _read_batches(
    path: str | os.PathLike[str], header: Header, batch_size: int, *, plain: bool
) -> Iterator[Batch]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # Memory holds one batch: at most `batch_size` records, BATCH_CELLS cells and BATCH_BYTES of
    # text (or one record, if the line limit is larger), whatever the file's width and lines.
    count = max(1, min(batch_size, BATCH_CELLS // max(1, len(header.names))))
    budget = max(BATCH_BYTES, header.max_line_bytes)
    first_line = header.header_line + 1
    with open(path, "rb") as raw:
        _detect_encoding(raw)  # positions `raw` after the BOM
        after_bom = raw.tell()
        record, skip, physical = 1, header.header_line, 0  # the csv path from the file's start
        if plain and codecs.lookup(header.encoding).name in ("utf-8", "utf-8-sig"):
            after = _after_header(raw, header)
            if after is not None:
                offset, physical = after
                raw.seek(offset)
                resume = yield from _plain_batches(raw, header, first_line, count, budget)
                if resume is None:
                    return
                offset, record = resume
                raw.seek(offset)
                skip, physical = 0, physical + record - first_line
            else:
                raw.seek(after_bom)
        yield from _csv_batches(raw, header, first_line, record, skip, physical, count, budget)


def _after_header(raw: io.BufferedReader, header: Header) -> tuple[int, int] | None:
    """Where the first record after the header starts: (byte offset, physical lines before it).

    The header records are skipped by the `csv` module, as the `csv` path does, since a quoted
    header cell may hold a line break; their bytes are what `_BoundedLines` counted. None when
    that fails; the `csv` path then reports it.
    """
    start = raw.tell()
    # The utf-8-sig decoder drops a second BOM right after the first (`read_header` does too);
    # `_BoundedLines` counts the text it hands out, so those bytes are added back.
    dropped = (
        len(codecs.BOM_UTF8)
        if header.encoding == "utf-8-sig" and raw.read(3) == codecs.BOM_UTF8
        else 0
    )
    raw.seek(start)
    # Undecodable bytes are kept as escapes, as `read_header` reads: the text layer decodes
    # ahead of the header, and what is wrong further down is for the blocks to find.
    text = io.TextIOWrapper(raw, header.encoding, errors="surrogateescape", newline="")
    lines = _BoundedLines(text, header.encoding, header.max_line_bytes, header.delimiter)
    reader = csv.reader(lines, delimiter=header.delimiter)
    try:
        skipped = sum(1 for _ in itertools.islice(reader, header.header_line))
    except (UnicodeDecodeError, csv.Error, FileRejected):
        skipped = -1
    text.detach()
    if skipped != header.header_line:
        return None
    return start + dropped + lines.consumed, reader.line_num


def _plain_batches(
    raw: io.BufferedReader, header: Header, line: int, count: int, budget: int
) -> Generator[Batch, None, tuple[int, int] | None]:
    """Batches of plain blocks from where `raw` stands (record `line`), until the file ends
    (returns None) or a block is not plain: returns its byte offset and record number then,
    for the `csv` path to go on from. What was read past that offset is read again there."""
    complete = _record_patterns(header.delimiter).complete.fullmatch

    def single_record(text: str) -> bool:
        return complete(text) is not None

    offset, pending, at_end, yielded = raw.tell(), b"", False, False
    ends = np.empty(0, np.int64)
    # Reads of at most one record's limit: a line without an end is found past the limit with
    # that much in memory, not a batch's budget.
    read_size = min(_READ_BYTES, max(_MIN_READ_BYTES, header.max_line_bytes + 1))
    while True:
        if not at_end and len(ends) < count and len(pending) < budget:
            more = raw.read(read_size)
            at_end = not more
            scan = len(pending) - pending.endswith(b"\r")  # an undecided `\r`: look again
            pending += more
            known = ends[ends < scan]
            ends = np.concatenate((known, plain_block.line_ends(pending, scan, at_end)))
            unended = len(pending) - (int(ends[-1]) + 1 if len(ends) else 0)
            if unended > header.max_line_bytes:
                return offset, line  # a line past the limit: the `csv` path says which
            continue
        if at_end and pending and (not len(ends) or ends[-1] < len(pending) - 1):
            ends = np.append(ends, len(pending) - 1)  # a last line without a line end
        if not len(ends):
            if pending:  # no line end within the budget: longer than any limit allows
                return offset, line
            if not yielded:
                yield _make_batch([], line, header)
            return None
        take = min(count, len(ends), max(1, int(np.searchsorted(ends, budget, "left"))))
        size = int(ends[take - 1]) + 1
        block = plain_block.split(
            pending[:size],
            ends[:take],
            delimiter=header.delimiter,
            width=len(header.names),
            limit=header.max_line_bytes,
            single_record=single_record,
        )
        if block is None:
            return offset, line
        lines = np.arange(line, line + take, dtype=np.int64)
        malformed = [(int(lines[i]), cells) for i, cells in block.malformed]
        yield _batch(lines[block.good], block.columns, malformed, block.blank, header)
        yielded = True
        pending, ends = pending[size:], ends[take:] - size
        offset, line = offset + size, line + take
        if at_end and not pending:
            return None


def _csv_batches(
    raw: io.BufferedReader,
    header: Header,
    first_line: int,
    record: int,
    skip: int,
    physical: int,
    count: int,
    budget: int,
) -> Iterator[Batch]:
    """Batches parsed by the `csv` module from where `raw` stands: record number `record`, the
    first `skip` records (the header's) not data, `physical` lines of the file before it."""
    # A file with a BOM is read on from its middle here: a second BOM there is data, not a BOM.
    encoding = "utf-8" if header.encoding == "utf-8-sig" and record > 1 else header.encoding
    text = io.TextIOWrapper(raw, encoding, newline="")
    lines = _BoundedLines(text, header.encoding, header.max_line_bytes, header.delimiter, record)
    reader = csv.reader(lines, delimiter=header.delimiter)  # excel dialect: "" escapes
    try:
        for _ in itertools.islice(reader, skip):  # sep line and header
            pass
        line = record + skip
        while True:
            with _gc_paused():
                rows, at_end = _take(reader, lines, count, budget)
                batch = _make_batch(rows, line, header) if rows or line == first_line else None
            if batch is not None:
                yield batch
            if at_end:
                return
            line += len(rows)
    except UnicodeDecodeError as e:
        detail = _decode_error_detail(e, raw, physical + reader.line_num, header.encoding)
        raise FileRejected("unreadable_file", detail) from e
    except csv.Error as e:
        raise FileRejected("unreadable_file", f"near line {physical + reader.line_num}: {e}") from e


def _take(
    reader: Iterator[list[str]], lines: _BoundedLines, count: int, budget: int
) -> tuple[list[list[str]], bool]:
    """Up to ``count`` records, fewer once they hold ``budget`` bytes; and whether the file ended.

    Records are taken in steps that cannot pass the budget even if every line is as long as the
    limit allows, so the check costs a C-level `islice` per step, not a Python test per record.
    """
    rows: list[list[str]] = []
    start = lines.consumed
    while len(rows) < count:
        room = budget - (lines.consumed - start)
        step = min(count - len(rows), room // lines.limit)
        if step < 1:  # the next record might not fit (a batch holds at least one)
            if rows:
                return rows, False
            step = 1
        got = list(itertools.islice(reader, step))
        rows += got
        if len(got) < step:
            return rows, True
    return rows, False


def _make_batch(rows: list[list[str]], first_line: int, header: Header) -> Batch:
    """Sort one chunk of parsed records into good rows (as a frame), malformed and blank ones."""
    n, width = len(rows), len(header.names)
    lines = np.arange(first_line, first_line + n, dtype=np.int64)
    lengths = np.fromiter(map(len, rows), np.int64, n)
    # A record is blank when its cells joined together are empty or whitespace.
    blank = np.fromiter(map(len, map(str.strip, map("".join, rows))), np.int64, n) == 0
    good = (lengths == width) & ~blank
    malformed = [(int(lines[i]), rows[i]) for i in np.flatnonzero(~good & ~blank)]
    if not good.all():
        rows = list(itertools.compress(rows, good))
    columns = zip(*rows, strict=True) if rows else [()] * width
    arrays = [pa.array(values, pa.large_string()) for values in columns]
    return _batch(lines[good], arrays, malformed, int(blank.sum()), header)


def _batch(
    lines: np.ndarray,
    arrays: list[pa.Array],
    malformed: list[tuple[int, list[str]]],
    blank_lines: int,
    header: Header,
) -> Batch:
    """The batch of good rows given as one text array per header cell."""
    # One frame from one table: a DataFrame built (or assigned to) column by column costs time
    # quadratic in the header's width, and a Series per column is slow for wide files.
    cells = pa.Table.from_arrays(arrays, names=list(header.names)).to_pandas(
        types_mapper={pa.large_string(): _STR}.get
    )
    for position, array in enumerate(arrays):  # rare: only columns with a leading `'`
        if pc.any(pc.starts_with(array, "'")).as_py():
            cells.isetitem(position, _undo_neutralisation(cells.iloc[:, position]))
    return Batch(lines, cells, malformed, blank_lines)


_LINE_ENDS = ("\r", "\n")
_QUOTED_RUN = re.compile(r'(?:[^"]|"")*+')  # inside a quoted field, up to its next lone `"`


@dataclass(frozen=True)
class _RecordPatterns:
    """How a physical line leaves a record, for one delimiter (see `_BoundedLines`)."""

    complete: re.Pattern[str]  # a line that starts a record and ends it
    closing: re.Pattern[str]  # a line that starts inside a quoted field and ends the record
    opening: re.Pattern[str]  # matches up to the opening quote of a field left open


@functools.cache
def _record_patterns(delimiter: str | None) -> _RecordPatterns:
    d = re.escape(delimiter or ",")
    field = rf'(?>"(?:[^"]|"")*+"[^{d}\r\n]*+|[^{d}"\r\n][^{d}\r\n]*+|)'
    end = r"(?:\r\n|\r|\n)?"
    return _RecordPatterns(
        complete=re.compile(rf"(?:{field}{d})*+{field}{end}"),
        closing=re.compile(rf'(?:[^"]|"")*+"[^{d}\r\n]*+(?:{d}{field})*+{end}'),
        opening=re.compile(rf'(?:{field}{d})*+"'),
    )


@functools.cache
def _byte_counting(encoding: str) -> tuple[str, str, int]:
    """How `_BoundedLines` counts a line's bytes in `encoding`: (codec, errors, ASCII width).

    The width is the bytes of one ASCII character when every ASCII character has that width (a
    pure ASCII line is then counted without encoding it), else 0. UTF-16/32 are counted without
    a byte order mark; undecodable bytes kept as surrogates count as the one byte they were.
    """
    name = codecs.lookup(encoding).name
    for family, codec, width in (("utf-16", "utf-16-le", 2), ("utf-32", "utf-32-le", 4)):
        if name.startswith(family):
            return codec, "surrogatepass", width
    if name.startswith("utf-8"):
        return "utf-8", "surrogateescape", 1
    try:
        same = string.printable.encode(name) == string.printable.encode("ascii")
    except UnicodeError:
        same = False
    return name, "surrogateescape", 1 if same else 0


class _BoundedLines:
    """The physical lines of a text stream for the csv module, each record held to a byte limit.

    Every line is read with `readline(limit + 1)`, so memory never holds more than the limit of
    one line, and the bytes of the current record are counted: a record continues past a line
    end only inside a quoted field, which a regex following the csv module's excel dialect
    decides (a quote opens a field only at its start, `""` is a quote, text after the closing
    quote joins the field). A record past the limit raises `FileRejected("line_too_long")` with
    its spreadsheet line number. The common line (no quote) costs a few C-level checks.
    """

    def __init__(
        self,
        text: io.TextIOWrapper,
        encoding: str,
        limit: int,
        delimiter: str | None = None,
        line: int = 1,
    ):
        self.text, self.limit, self.delimiter = text, limit, delimiter
        self.codec, self.errors, self.ascii_width = _byte_counting(encoding)
        self.line = line  # the spreadsheet line (record) the next line belongs to or starts
        self.consumed = 0  # bytes of the lines read so far
        csv.field_size_limit(max(csv.field_size_limit(), limit + 1))  # only ever raised

    def __iter__(self) -> Iterator[str]:
        readline = functools.partial(self.text.readline, self.limit + 1)
        ascii_width = self.ascii_width
        limit, in_quote, record_bytes = self.limit, False, 0
        while line := readline():
            size = len(line) * ascii_width if ascii_width and line.isascii() else self._bytes(line)
            record_bytes = record_bytes + size if in_quote else size
            if record_bytes > limit:
                raise FileRejected("line_too_long", self._too_long(line, in_quote))
            self.consumed += size
            yield line
            # Judged after the yield: the header's delimiter is known only once it is sniffed.
            # A line that starts a record can leave it open only with an odd number of quotes
            # (quotes inside quoted fields come in pairs), unless a quote stands as text inside
            # an unquoted field; that rare case is not worth a regex on every quoted line.
            if in_quote:
                closing = _record_patterns(self.delimiter).closing
                in_quote = '"' not in line or closing.fullmatch(line) is None
            elif line.count('"') % 2:
                complete = _record_patterns(self.delimiter).complete
                in_quote = complete.fullmatch(line) is None
            if not in_quote:
                self.line += 1

    def _bytes(self, line: str) -> int:
        try:
            return len(line.encode(self.codec, self.errors))
        except UnicodeError:  # not expected for decoded text; 4 bytes a character bounds it
            return 4 * len(line)

    def _too_long(self, line: str, in_quote: bool) -> str:
        """The detail for the record at `self.line`: where it is, and why when that is known."""
        limit = f"settings.max_line_bytes ({self.limit:,} bytes)"
        if self.delimiter is None:  # the header, or the sep= line before it
            detail = f"the header (line {self.line}) is longer than {limit}"
        else:
            detail = f"line {self.line} is longer than {limit}"
        start = 0  # where the open quoted field's text begins in `line`
        if not in_quote and self.delimiter is not None:
            patterns = _record_patterns(self.delimiter)
            in_quote = patterns.complete.fullmatch(line) is None  # a quote opened on it
            start = patterns.opening.match(line).end() if in_quote else 0
        if in_quote:
            if self._quote_never_closes(line, start):
                return (
                    f"unbalanced quote: the quoted field opened at line {self.line} never closes"
                    f" (it runs to the end of the file, past {limit})"
                )
            return f"{detail}: a quoted value in it holds line breaks past the limit"
        if not line.endswith(_LINE_ENDS):
            detail += "; it has no line end within the limit"
        return detail

    def _quote_never_closes(self, piece: str, start: int) -> bool:
        """Whether the quoted field open at `piece[start]` runs to the end of the file.

        Reads on in pieces of the limit and keeps none of them (bounded memory, one linear pass).
        """
        pending = False  # the last piece ended in a `"`: closing, unless the next starts a `""`
        while piece:
            if pending:
                if not piece.startswith('"'):
                    return False
                start = 1
            end = _QUOTED_RUN.match(piece, start).end()
            if end + 1 < len(piece):
                return False  # a lone `"` followed by something else: the field closes
            pending = end < len(piece)
            piece, start = self.text.readline(self.limit + 1), 0
        return not pending  # a `"` as the very last character closes the field


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is parsed and split into columns.

    A batch allocates hundreds of thousands of row lists; each allocation burst triggers
    collections that rescan every row still alive, which made reading ~25% slower. Rows never
    form reference cycles, so nothing is lost by collecting after the batch instead.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _undo_neutralisation(column: pd.Series) -> pd.Series:
    """Remove the `'` our report writer put before `= + - @ TAB CR`; leave any other `'`."""
    if not column.str.startswith("'").any():
        return column
    neutralised = column.str.match(_NEUTRALISED.pattern)
    return column.mask(neutralised, column.str.slice(1))


def _detect_encoding(raw: io.BufferedReader, configured: str | None = None) -> str:
    """Pick the codec and leave `raw` positioned just after the byte order mark.

    A BOM says what the file is; without one it is the offer source's `encoding` if it sets one,
    else UTF-8. A setting of plain "utf-16" or "utf-32" (whose decoders need a BOM) reads a file
    without one as little-endian, as Windows writes it.
    """
    start = raw.read(4)
    for magic, what in _MAGIC.items():
        if start.startswith(magic):
            raise FileRejected("unreadable_file", f"looks like {what}; save it as CSV UTF-8")
    default = configured or "utf-8"
    if codecs.lookup(default).name in ("utf-16", "utf-32"):
        default = f"{codecs.lookup(default).name}-le"
    bom, encoding = next(((b, e) for b, e in _BOMS if start.startswith(b)), (b"", default))
    raw.seek(len(bom))
    return encoding


def _encoding_advice(encoding: str) -> str:
    """What to do about a file that is not valid in `encoding` (the one `read_header` chose)."""
    if encoding == "utf-8":  # no BOM and no `encoding` setting (or the setting says UTF-8)
        return (
            'save it as CSV UTF-8, or, if the file is from Excel, set encoding = "cp1252" for'
            " this offer source"
        )
    if encoding in _BOM_NAMES:  # what the file's byte order mark says
        return (
            f"the file starts with a {_BOM_NAMES[encoding]} byte order mark; save it as CSV UTF-8"
        )
    return (
        f'check encoding = "{encoding}" for this offer source against the file, or save it as'
        " CSV UTF-8 and remove the setting"
    )


def _check_header_text(
    line: str, header_line: int, encoding: str, after_sep: bool, after_parameters: bool
) -> None:
    """Reject a missing or binary-looking header line with a helpful detail."""
    if not line.strip():
        before = " and ".join(
            w for w, there in (("'sep='", after_sep), ("'Parameters:'", after_parameters)) if there
        )
        before += " lines" if header_line > 2 else " line"
        if line:
            problem = f"the header line (line {header_line}) is blank"
        elif header_line > 1:
            problem = f"the file has only the {before}"
        else:
            problem = "the file is empty"
        where = f"the line after the {before}" if header_line > 1 else "the first line"
        raise FileRejected("empty_file", f"{problem}; {where} must be the header")
    if "\x00" in line:
        raise FileRejected(
            "unreadable_file",
            f"the header (line {header_line}) contains NUL bytes: the file is probably UTF-16"
            f" without a byte order mark (it was read as {encoding}); save it as CSV UTF-8, or"
            ' set encoding = "utf-16-le" for this offer source',
        )


def _preamble(lines: Iterator[str]) -> tuple[str | None, str | None, str]:
    """Skip an Excel `sep=` line and a Google Ads `Parameters:` line (either order, each once).

    Returns the `sep=` delimiter, the Parameters time zone as written, and the header line.
    """
    sep: str | None = None
    time_zone: str | None = None
    line = next(lines, "")
    for number in (1, 2):
        if sep is None and (match := _SEP_LINE.fullmatch(line)):
            sep = match.group(1)
        elif time_zone is None and (zone := _parameters_zone(line, number)) is not None:
            time_zone = zone
        else:
            break
        line = next(lines, "")
    return sep, time_zone, line


def _parameters_zone(line: str, number: int) -> str | None:
    """The zone of a Google Ads `Parameters:TimeZone=<zone>` line; None for any other line.

    Spreadsheets save the line quoted as a whole, or with the delimiters of the columns below
    it (`Parameters:TimeZone=-0500,,,,`); both are the same line. A line that starts with
    `Parameters:` but says anything else is `invalid_parameters_line`.
    """
    text = line.strip().rstrip(_TRAILING)
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip().rstrip(_TRAILING)
    match = _PARAMETERS.fullmatch(text)
    if match is None:
        return None
    key, value = match["key"].strip(), match["value"]
    value = None if value is None else value.strip()
    if '"' in text or value is None:
        problem = "is not a Parameters line like Parameters:TimeZone=America/New_York"
        raise FileRejected("invalid_parameters_line", f"line {number}: {text!r} {problem}")
    if key.casefold() != "timezone":
        raise FileRejected(
            "invalid_parameters_line",
            f"line {number}: {f'Parameters:{key}='!r} is not a parameter this pipeline reads (only"
            " Parameters:TimeZone=<zone>, e.g. America/New_York or -0500)",
        )
    offset = _OFFSET.fullmatch(value)
    if (offset and int(offset["h"]) <= 14 and int(offset["m"]) < 60) or (
        not offset and value in _zones()
    ):
        return value
    raise FileRejected(
        "invalid_parameters_line",
        f"line {number}: Parameters:TimeZone={value!r} is neither an IANA time zone nor an"
        " offset like -0500",
    )


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _folded(header: str) -> str:
    """A header as the offer source's `columns` and `ignore_columns` match it."""
    return header.strip().casefold()


def _toml(header: str) -> str:
    """A header as a TOML string, for a `columns` line to copy."""
    return json.dumps(header.strip(), ensure_ascii=False)


def _looks_like(name: str, kind: str) -> str | None:
    """The field of `kind` an unmapped header names by its words (`_FIELD_WORDS`), if any."""
    normalised = _normalise(name)
    field = next((f for f, words in _FIELD_WORDS.items() if words.search(normalised)), None)
    return field if field in _WATCHED[kind] else None


def _unmapped_detail(
    names: tuple[str, ...], unmapped: list[tuple[int, str]], columns: dict[str, int], kind: str
) -> str:
    position, field = unmapped[0]
    name = names[position]
    detail = f"the header {name!r} (column {position + 1}) looks like {field}"
    setting = f"{field} = {_toml(name)}"
    if field in columns:
        other = columns[field]
        detail += (
            f", which this file takes from {names[other]!r} (column {other + 1}); the reader"
            f" never picks one of two: list it in ignore_columns, or map it in columns"
            f" ({setting}) and list {names[other]!r} in ignore_columns"
        )
    else:
        default = _DEFAULTED[kind].get(field)
        source = f"take from {default}" if default else "have no column for"
        detail += (
            f", which this file would otherwise {source}; map it in columns ({setting}), or"
            " list it in ignore_columns"
        )
    if len(unmapped) > 1:
        others = ", ".join(f"{names[p]!r} ({f})" for p, f in unmapped[1:])
        detail += f"; the same holds for {others}"
    return detail


def _duplicate_detail(
    names: tuple[str, ...], first: int, second: int, column: str, by_columns: set[int]
) -> str:
    cells = f"header cells {first + 1} ({names[first]!r}) and {second + 1} ({names[second]!r})"
    if not names[first].strip():
        return f"{cells} are both empty; remove the empty columns or give them names"
    how = [f"{names[p]!r} is mapped to it in columns" for p in (first, second) if p in by_columns]
    how.append("matching ignores case, spaces, '_' and '-'")
    return f"{cells} both name column {column!r} ({'; '.join(how)})"


def _sniff_delimiter(line: str) -> str:
    """The most frequent of `,` `;` tab outside double quotes; ties and none prefer `,`."""
    unquoted = _QUOTED.sub("", line)
    return max(_DELIMITERS, key=unquoted.count)  # max keeps the first of equal counts


def _decode_error_detail(
    e: UnicodeDecodeError, raw: io.BufferedReader, lines_read: int, encoding: str
) -> str:
    """Say where decoding failed: the byte offset and (approximately) the physical line.

    `e.object` is the chunk the text layer was decoding, which ends where `raw` now stands.
    The text layer only reads a new chunk once the decoded text has no complete line left, so
    the failing line is the one after the `lines_read` lines already handed out, plus the line
    ends inside the chunk before the bad byte.
    """
    offset = raw.tell() - len(e.object) + e.start
    before = e.object[: e.start].decode(_byte_counting(encoding)[0], "replace")
    line = lines_read + 1 + before.count("\n") + before.count("\r") - before.count("\r\n")
    bad = " ".join(f"0x{b:02x}" for b in e.object[e.start : e.end])
    return (
        f"the file is not valid {encoding}: cannot decode byte(s) {bad} at byte offset {offset}"
        f" (near line {line}); {_encoding_advice(encoding)}"
    )
