"""Rejection reports and file summaries: what a user reads to learn why rows were not applied.

A rejection report is opened in a spreadsheet by a person, fixed there, and dropped back into the
inbox. That shapes every choice here:

* UTF-8 with BOM and ``\\r\\n`` line ends, in the input file's own delimiter, so Excel opens it
  as the user's file did, and the reader takes it back unchanged.
* Cells a spreadsheet would run as a formula get a leading ``'`` (OWASP "CSV injection"), except
  plain numbers such as ``-5.00``, which must stay numbers. The reader strips that apostrophe.
* Files appear complete or not at all (``datadir.layout.AtomicFile``), so a crash never leaves
  half a report that looks whole. Where reports go and what they are called is the data
  directory's business (``datadir.layout.report_paths``), not this module's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from pipeline.datadir.layout import AtomicFile, as_path, json_bytes, write_atomic
from pipeline.reader import is_report_column

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# A number a spreadsheet shows as a number. ASCII digits only: `\d` would also accept e.g.
# Arabic-Indic digits, which a spreadsheet treats as text.
_PLAIN_NUMBER = r"[+-]?[0-9]+(?:\.[0-9]+)?"


def neutralise(values: pd.Series) -> pd.Series:
    """Prefix ``'`` to text cells a spreadsheet would evaluate as a formula.

    Plain numbers (``-5.00``, ``+3``) are left alone: they are shown as numbers, and rewriting
    them would make a fixed report fail to re-ingest. Missing cells and non-text columns (the
    ``line`` numbers) are returned as they are.
    """
    if not _has_text(values):
        return values
    risky = values.str.startswith(FORMULA_PREFIXES, na=False) & ~values.str.fullmatch(
        _PLAIN_NUMBER, na=False
    )
    if not risky.any():
        return values
    out = values.copy()
    out[risky] = "'" + values[risky]
    return out


def _has_text(values: pd.Series) -> bool:
    if isinstance(values.dtype, pd.StringDtype):
        return True
    # An object column may hold only numbers (line numbers after a merge): `.str` refuses those.
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "mixed",
        "mixed-integer",
    )


class RejectionReport:
    """Streaming writer for one input file's rejection report CSV.

    Rows can arrive in batches (one ``write`` per batch); nothing is visible under ``path`` until
    ``commit``. Used as a context manager, a report that was not committed is discarded::

        with RejectionReport(path, header, ";") as report:
            for batch in batches:
                report.write(batch)
            report.commit()
    """

    def __init__(
        self, path: Path, header_names: Sequence[str], delimiter: str, origin: bool = False
    ):
        self.path = as_path(path)
        self.columns: tuple[str, ...] = (
            "line",
            *(("original_line",) if origin else ()),  # a re-dropped report: the first file's
            *(name for name in header_names if not is_report_column(name)),
            "reason_code",
            "reason",
        )
        self.rows_written = 0
        self._delimiter = delimiter
        self._out = AtomicFile(self.path, encoding="utf-8-sig")
        try:
            # Header names are user input too: `=HYPERLINK(...)` as a column name is a formula.
            header = neutralise(pd.Series(self.columns, dtype=object)).tolist()
            csv.writer(self._out.file, delimiter=delimiter, lineterminator="\r\n").writerow(header)
        except BaseException:
            self.discard()
            raise

    def write(self, rows: pd.DataFrame) -> None:
        """Append rows: columns ``line``, the kept header names, ``reason_code``, ``reason``.

        Columns are picked by name; a frame already in report column order is taken as it is
        (which is also how a file with two identically named columns is written).
        """
        file = self._out.file  # raises once committed or discarded
        if rows.empty:
            return
        frame = rows if list(rows.columns) == list(self.columns) else rows[list(self.columns)]
        cells = pd.concat(
            [neutralise(frame.iloc[:, i]) for i in range(frame.shape[1])],
            axis=1,
            ignore_index=True,
        )
        cells.to_csv(
            file,
            sep=self._delimiter,
            header=False,
            index=False,
            quoting=csv.QUOTE_MINIMAL,
            lineterminator="\r\n",
        )
        self.rows_written += len(cells)

    def commit(self, path: Path | None = None) -> Path:
        """Make the report visible under its final name (or ``path``, in the same folder),
        complete, and return that path."""
        self.path = self._out.commit(path)
        return self.path

    def discard(self) -> None:
        """Drop the unfinished report (processing failed). Safe to call more than once."""
        self._out.discard()

    def __enter__(self) -> RejectionReport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()  # after commit() there is no partial file left, so this is a no-op


DUPLICATES_COLUMNS = (
    "line",
    "click_id",
    "conversion_type",
    "event_id",
    "payout",
    "mode",
    "duplicate_of",
    "duplicate_of_file",
    "duplicate_of_line",
)


def write_duplicates(path: Path, rows: pd.DataFrame, delimiter: str) -> Path:
    """The list of a file's ignored duplicates: each line that was not applied because the
    conversion it duplicates exists (``DUPLICATES_COLUMNS``: its key and payout as read, the
    duplicate mode that ignored it, and the conversion kept: its id, the file and line that
    created it). Written whole, like a report, for a person to open in a spreadsheet."""
    frame = rows[list(DUPLICATES_COLUMNS)]
    cells = pd.concat(
        [neutralise(frame.iloc[:, i]) for i in range(frame.shape[1])], axis=1, ignore_index=True
    )
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(DUPLICATES_COLUMNS)
    cells.to_csv(out, sep=delimiter, header=False, index=False, lineterminator="\r\n")
    write_atomic(as_path(path), out.getvalue().encode("utf-8-sig"))
    return as_path(path)


def write_summary(path: Path, summary: Mapping[str, Any]) -> Path:
    """Write a file's summary as pretty JSON, atomically.

    Datetimes become ISO 8601 strings and Decimals strings (exact money, never a float);
    numpy scalars (pandas counts) become plain numbers.
    """
    path = as_path(path)
    write_atomic(path, json_bytes(summary, default=_to_json))
    return path


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")
