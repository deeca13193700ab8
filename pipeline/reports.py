"""Rejection reports and file summaries: what a user reads to learn why rows were not applied.

A rejection report is opened in a spreadsheet by a person, fixed there, and dropped back into the
inbox. That shapes every choice here:

* UTF-8 with BOM and ``\\r\\n`` line ends, in the input file's own delimiter, so Excel opens it
  as the user's file did, and the reader takes it back unchanged.
* Cells a spreadsheet would run as a formula get a leading ``'`` (OWASP "CSV injection"), except
  plain numbers such as ``-5.00``, which must stay numbers. The reader strips that apostrophe.
* Files appear complete or not at all: everything is written to a ``.partial`` file beside the
  final name, fsynced and renamed into place, so a crash never leaves half a report that looks
  whole.
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd

from pipeline.reader import is_report_column

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Our own columns in a report (`reader.REPORT_COLUMNS`, ignored on input so a report can be
# re-ingested). An input column the reader takes for one of ours ("Reason Code") is left out,
# or the report, dropped back in, would have it twice.

# A number a spreadsheet shows as a number. ASCII digits only: `\d` would also accept e.g.
# Arabic-Indic digits, which a spreadsheet treats as text.
_PLAIN_NUMBER = r"[+-]?[0-9]+(?:\.[0-9]+)?"
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_HEX = re.compile(r"[0-9a-fA-F]{12,}")
_MAX_STEM = 80


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

    def __init__(self, path: Path, header_names: Sequence[str], delimiter: str):
        self.path = Path(path)
        self.columns: tuple[str, ...] = (
            "line",
            *(name for name in header_names if not is_report_column(name)),
            "reason_code",
            "reason",
        )
        self.rows_written = 0
        self._delimiter = delimiter
        self._partial = _partial_path(self.path)
        self._file: IO[str] | None = _create(self._partial, encoding="utf-8-sig")
        try:
            # Header names are user input too: `=HYPERLINK(...)` as a column name is a formula.
            header = neutralise(pd.Series(self.columns, dtype=object)).tolist()
            csv.writer(self._file, delimiter=delimiter, lineterminator="\r\n").writerow(header)
        except BaseException:
            self.discard()
            raise

    def write(self, rows: pd.DataFrame) -> None:
        """Append rows: columns ``line``, the kept header names, ``reason_code``, ``reason``.

        Columns are picked by name; a frame already in report column order is taken as it is
        (which is also how a file with two identically named columns is written).
        """
        if self._file is None:
            raise ValueError(f"{self.path}: report is already committed or discarded")
        if rows.empty:
            return
        frame = rows if list(rows.columns) == list(self.columns) else rows[list(self.columns)]
        cells = pd.concat(
            [neutralise(frame.iloc[:, i]) for i in range(frame.shape[1])],
            axis=1,
            ignore_index=True,
        )
        cells.to_csv(
            self._file,
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
        if path is not None:
            if Path(path).parent != self.path.parent:
                raise ValueError(f"{path}: a report is committed in the folder it was written in")
            self.path = Path(path)
        file = self._take_file()
        with file:
            file.flush()
            os.fsync(file.fileno())
        os.replace(self._partial, self.path)
        return self.path

    def discard(self) -> None:
        """Drop the unfinished report (processing failed). Safe to call more than once."""
        if self._file is not None:
            self._take_file().close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> RejectionReport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()  # after commit() there is no partial file left, so this is a no-op

    def _take_file(self) -> IO[str]:
        if self._file is None:
            raise ValueError(f"{self.path}: report is already committed or discarded")
        file, self._file = self._file, None
        return file


def write_summary(path: Path, summary: Mapping[str, Any]) -> Path:
    """Write a file's summary as pretty JSON, atomically.

    Datetimes become ISO 8601 strings and Decimals strings (exact money, never a float);
    numpy scalars (pandas counts) become plain numbers.
    """
    path = Path(path)
    text = json.dumps(summary, indent=2, sort_keys=False, ensure_ascii=False, default=_to_json)
    try:
        data = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A file name that was not UTF-8 on disk (a lone surrogate): escape it to stay valid JSON.
        text = json.dumps(summary, indent=2, sort_keys=False, default=_to_json)
        data = (text + "\n").encode("ascii")
    write_atomic(path, data)
    return path


def report_paths(
    reports_dir: Path, received_at: datetime, original_name: str, content_hash: str
) -> tuple[Path, Path]:
    """Where one input file's rejection report and summary go; creates their date folder.

    The name carries the file's own stem, for people, and the content hash prefix, so two
    different files with the same name never overwrite each other's reports.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    if not _HEX.fullmatch(content_hash):
        raise ValueError(f"content_hash must be a hex digest, got {content_hash!r}")
    folder = Path(reports_dir) / received_at.astimezone(UTC).date().isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{_safe_stem(original_name)}.{content_hash[:12].lower()}"
    return folder / f"{base}.rejected.csv", folder / f"{base}.summary.json"


def own_paths(csv_path: Path, json_path: Path, tag: str) -> tuple[Path, Path]:
    """The report and summary names of one more result for the same day, name and bytes.

    ``report_paths`` gives the names of the file's application; a dry run, a quarantine, a
    duplicate drop or a forced re-apply of the same bytes received the same day under the same
    name gets ``<stem>.<hash12>.<tag>.rejected.csv`` / ``.summary.json`` beside them (``tag``
    names the result, e.g. ``dry-run-42``), so it never writes over the applied file's.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", tag):
        raise ValueError(f"not a report tag: {tag!r}")
    return (
        csv_path.with_name(csv_path.name.removesuffix(".rejected.csv") + f".{tag}.rejected.csv"),
        json_path.with_name(json_path.name.removesuffix(".summary.json") + f".{tag}.summary.json"),
    )


def _safe_stem(original_name: str) -> str:
    """A file-name stem safe on any file system and in any shell: never a path, never hidden."""
    name = original_name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem = Path(name).stem if name not in ("", ".", "..") else ""
    stem = _UNSAFE_NAME_CHARS.sub("_", stem).lstrip(".-")[:_MAX_STEM]
    return stem or "file"


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


def _partial_path(path: Path) -> Path:
    # A random part keeps two workers writing the same final file from sharing one partial file.
    return path.with_name(f"{path.name}.{secrets.token_hex(4)}.partial")


def _create(path: Path, encoding: str) -> IO[str]:
    """Open a new text file for writing; never through a symlink, never over an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return open(fd, "w", encoding=encoding, newline="")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a partial file beside it, fsync, rename over it."""
    partial = _partial_path(path)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
