"""Split a block of *plain* CSV records into cells in C (pyarrow), or say it cannot.

`reader.read_batches` reads most files through here and falls back to the `csv` module, which
stays the definition of how a record is parsed, from the first block that is not plain. A block
is plain when it decodes as UTF-8, no record in it passes the line limit, and every physical line
in it is one whole record: a line with a `"` in it must be a complete record by itself (a quoted
value with a line break in it is not plain). Lines without a `"` are split at the delimiter by
pyarrow's CSV parser with quoting off, which is exactly what the `csv` module does with a line
that has no quote; the few lines with one are parsed by the `csv` module itself, one record
each. So the cells, the line numbers, and the sorting into good, malformed and blank records are
the `csv` path's, which a differential test holds against random files
(`tests/unit/test_reader_plain.py`); only the speed differs (about four times faster).
"""

from __future__ import annotations

import codecs
import csv
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

# The characters `str.strip()` removes (`str.isspace`): a record of only these is blank. A unit
# test holds the list against Python's own. Written as RE2 escapes for pyarrow's regex kernel.
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_ONLY_WHITESPACE = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in PYTHON_WHITESPACE) + "]*$"
_PLACEHOLDER = ord("x")  # overwrites a quoted line for pyarrow: one cell, so not a record
# Lines with a quote are parsed one by one; past an eighth of a block's lines (and this many),
# the `csv` module reading the whole block is faster (a file that quotes every cell: 2.9x).
_MANY_QUOTED = 64


@dataclass(frozen=True)
class PlainBlock:
    """A block's records sorted as `reader.Batch` sorts them, by index in the block (0-based)."""

    good: np.ndarray  # int64 indices of records with the header's width that are not blank
    columns: list[pa.Array]  # large_string, one per header cell, the `good` records in order
    malformed: list[tuple[int, list[str]]]  # (index, cells as parsed): cell count != width
    blank: int  # records with no cells or only empty/whitespace cells


def line_ends(data: bytes, start: int, at_end: bool) -> np.ndarray:
    """The index of the last byte of each physical line that ends in `data[start:]`.

    Lines end at `\\n`, `\\r\\n` or a lone `\\r`, as `readline` with ``newline=""`` splits them.
    A `\\r` as the very last byte ends a line only `at_end`: otherwise the next read may bring
    its `\\n`. A last line without a line end is the caller's to add.
    """
    view = np.frombuffer(data, np.uint8)[start:]
    if data.find(b"\r", start) < 0:
        return np.flatnonzero(view == 10) + start
    newline, carriage = view == 10, view == 13
    alone = carriage.copy()
    alone[:-1] &= ~newline[1:]
    if not at_end:
        alone[-1] = False
    return np.flatnonzero(newline | alone) + start


def split(
    block: bytes,
    ends: np.ndarray,
    *,
    delimiter: str,
    width: int,
    limit: int,
    single_record: Callable[[str], bool],
) -> PlainBlock | None:
    """The records of `block`, whose lines end at `ends` (its last byte is the last line's end).

    None when the block is not plain (see the module docstring): the caller reads it with the
    `csv` module instead, which also finds what is wrong with it, if anything. `single_record`
    says whether a line with a quote in it is one complete record.
    """
    n = len(ends)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if n == 0 or width < 2 or int((ends - starts).max()) + 1 > limit:
        return None  # a 1-cell header makes every line a record of the right width
    if block.startswith(codecs.BOM_UTF8):
        return None  # pyarrow would drop it; the `csv` path keeps it as the cell's text
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
    quoted, quoted_cells, parsed = _quoted_lines(block, starts, ends, delimiter, single_record)
    if quoted_cells is None:
        return None
    table, invalid = _parse(parsed, delimiter, width)
    if table is None:
        return None
    if len(invalid) and (np.any(np.diff(invalid) <= 0) or invalid[0] < 0 or invalid[-1] >= n):
        return None
    is_invalid = np.zeros(n, bool)
    is_invalid[invalid] = True
    valid = np.flatnonzero(~is_invalid)
    if len(valid) != table.num_rows:
        return None
    columns = [table.column(i).combine_chunks() for i in range(width)]
    blank_valid = _blank_rows(columns)
    keep = valid
    if len(blank_valid):
        mask = np.ones(len(valid), bool)
        mask[blank_valid] = False
        keep = valid[mask]
        chosen = pa.array(mask)
        columns = [column.filter(chosen) for column in columns]

    # Lines pyarrow refused (a cell count not the header's) and quoted lines, row by row: few.
    blank = len(blank_valid)
    malformed: list[tuple[int, list[str]]] = []
    is_quoted = set(quoted.tolist())
    for index in invalid.tolist():
        if index in is_quoted:
            continue
        cells = block[starts[index] : ends[index] + 1].decode("utf-8").rstrip("\r\n")
        row = cells.split(delimiter)
        if "".join(row).strip():
            malformed.append((index, row))
        else:
            blank += 1
    good_quoted: list[tuple[int, list[str]]] = []
    for index, row in zip(quoted.tolist(), quoted_cells, strict=True):
        if not "".join(row).strip():
            blank += 1
        elif len(row) == width:
            good_quoted.append((index, row))
        else:
            malformed.append((index, row))
    malformed.sort(key=lambda item: item[0])
    if good_quoted:
        indices = np.concatenate((keep, np.array([i for i, _ in good_quoted], np.int64)))
        order = pa.array(np.argsort(indices, kind="stable"))
        keep = np.sort(indices)
        columns = [
            pa.concat_arrays(
                [column, pa.array([row[j] for _, row in good_quoted], pa.large_string())]
            ).take(order)
            for j, column in enumerate(columns)
        ]
    return PlainBlock(keep.astype(np.int64), columns, malformed, blank)


def _quoted_lines(
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    delimiter: str,
    single_record: Callable[[str], bool],
) -> tuple[np.ndarray, list[list[str]] | None, bytes | bytearray]:
    """The lines with a `"`, their cells by the `csv` module, and the block for pyarrow.

    In the block for pyarrow each such line is overwritten with one placeholder cell, so pyarrow
    refuses it as a record (the header has two cells or more) and its place stays known. The
    cells are None when a line with a quote is not a whole record by itself, or when so many
    lines have one that the `csv` path is faster.
    """
    if block.find(b'"') < 0:
        return np.empty(0, np.int64), [], block
    quotes = np.flatnonzero(np.frombuffer(block, np.uint8) == ord('"'))
    quoted = np.unique(np.searchsorted(ends, quotes))
    if len(quoted) > max(_MANY_QUOTED, len(ends) // 8):
        return quoted, None, block  # an export that quotes its cells: the `csv` path is faster
    texts = [block[starts[i] : ends[i] + 1].decode("utf-8") for i in quoted.tolist()]
    if not all(map(single_record, texts)):
        return quoted, None, block
    # Each text is one whole record (checked above), so the reader gives one row per text.
    rows = list(csv.reader(texts, delimiter=delimiter))
    parsed = bytearray(block)
    for i, text in zip(quoted.tolist(), texts, strict=True):
        start, size = int(starts[i]), len(text.rstrip("\r\n").encode("utf-8"))
        parsed[start : start + size] = bytes([_PLACEHOLDER]) * size
    return quoted, rows, parsed


def _parse(
    block: bytes | bytearray, delimiter: str, width: int
) -> tuple[pa.Table | None, np.ndarray]:
    """pyarrow's parse of quote-free lines: the records of `width` cells, and the indices of
    the lines it refused (another cell count). None when it does not say which lines."""
    refused: list[int | None] = []

    def handler(row: pcsv.InvalidRow) -> str:
        refused.append(row.number)
        return "skip"

    names = [f"c{i}" for i in range(width)]
    table = pcsv.read_csv(
        pa.py_buffer(block),
        read_options=pcsv.ReadOptions(
            column_names=names, use_threads=False, block_size=min(len(block), 1 << 26) + 1
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter,
            quote_char=False,
            double_quote=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
            invalid_row_handler=handler,
        ),
        convert_options=_convert_options(width),
    )
    if any(number is None for number in refused):
        return None, np.empty(0, np.int64)
    invalid = np.array(refused, np.int64) - 1  # pyarrow counts lines from 1
    return table, invalid


@functools.cache
def _convert_options(width: int) -> pcsv.ConvertOptions:
    """Every cell as text, exactly as written: no type inference, no nulls, no booleans."""
    return pcsv.ConvertOptions(
        column_types={f"c{i}": pa.large_string() for i in range(width)},
        null_values=[],
        true_values=[],
        false_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        check_utf8=False,  # `split` has decoded the block already
    )


def _blank_rows(columns: list[pa.Array]) -> np.ndarray:
    """Positions of the rows whose every cell is empty or whitespace: tested column by column on
    the rows still in question, so a file with click ids costs one pass over one column."""
    candidates = np.flatnonzero(
        pc.match_substring_regex(columns[0], _ONLY_WHITESPACE).to_numpy(zero_copy_only=False)
    )
    for column in columns[1:]:
        if not len(candidates):
            break
        still = pc.match_substring_regex(column.take(pa.array(candidates)), _ONLY_WHITESPACE)
        candidates = candidates[still.to_numpy(zero_copy_only=False)]
    return candidates
