"""Signs of life while one file runs: rows done, rows per second, about how long is left.

`ingest` reports per batch, never per row: `file_started`, then `advance` after every batch it
read and validated (`READ`) and every chunk it merged (`MERGE`), then `file_finished`. What
listens is the run's `Context.progress`:

- `Progress` itself does nothing (a library call, the tests, anything that did not ask);
- `TerminalBar` draws a live rich bar (the CLI on a terminal), once a file has run for
  `SHOW_AFTER_SECONDS`;
- `PeriodicLines` writes one line every `PERIOD_SECONDS` to a callable (the CLI off a terminal,
  an Airflow task's log), the same figures as plain text.

While reading, the number of rows a file has is not known: it is estimated from the file's size
and about how many bytes the rows so far took (`BytesSeen`: the reader gives no byte offset),
and shown as "about". The merge knows its total: the rows that were staged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core.printable import printable

if TYPE_CHECKING:  # types only: rich and pandas are imported where they are used
    from pipeline.results import FileResult

READ, MERGE = "read/validate", "merge"
PERIOD_SECONDS = 10.0  # off a terminal: one line this often while a file runs
SHOW_AFTER_SECONDS = 1.0  # on a terminal: a file's bar appears once it has run this long
SAMPLE_ROWS = 64  # rows of each batch whose text length stands for the batch's


class Progress:
    """What `ingest` tells about the file it works on; this base class ignores all of it."""

    def file_started(self, name: str, size_bytes: int) -> None:
        """A file is about to be read; ``size_bytes`` is its size on disk."""

    def advance(
        self,
        phase: str,
        rows_done: int,
        *,
        bytes_done: int | None = None,
        rows_total: int | None = None,
    ) -> None:
        """``rows_done`` rows of ``phase`` are done so far. While reading, ``bytes_done`` is about
        how many bytes of the file they were; a phase that knows its total gives ``rows_total``."""

    def file_finished(self, result: FileResult | None) -> None:
        """The file is done (``None``: it raised). A file started without this said first
        replaces the one before."""


class BytesSeen:
    """About how many bytes of a file the batches read so far took: each batch's records times
    the average encoded length of its first `SAMPLE_ROWS` records (cells, delimiters, a line
    end). Quotes and CRLF line ends are not seen, so it runs a little short: an estimate."""

    def __init__(self, encoding: str, delimiter: str, names: tuple[str, ...] = ()):
        self.encoding, self.delimiter = encoding, delimiter
        self.total = self._size([names]) if names else 0  # the header line

    def add(self, cells: Any, records: int) -> int:
        """Count a batch: ``cells`` its frame of cell texts, ``records`` its records (malformed
        ones included). Returns the bytes so far."""
        rows = cells.iloc[:SAMPLE_ROWS].to_numpy(dtype=object).tolist() if records else []
        if rows:
            self.total += round(self._size(rows) * records / len(rows))
        return self.total

    def _size(self, rows: list[Any]) -> int:
        text = "".join(
            self.delimiter.join(c if isinstance(c, str) else "" for c in r) + "\n" for r in rows
        )
        return len(text.encode(self.encoding, "replace"))


@dataclass
class Figures:
    """Where a file's current phase stands, as both displays show it."""

    name: str
    phase: str
    done: int
    total: int | None  # None: not known yet
    about: bool  # the total is an estimate
    rate: float | None  # rows per second since the phase started
    eta: float | None  # seconds left, at that rate

    def rows_text(self) -> str:
        if self.total is None:
            return f"{self.done:,} rows"
        return f"{self.done:,} of {'about ' if self.about else ''}{self.total:,} rows"

    def rate_text(self) -> str:
        return "- rows/s" if self.rate is None else f"{self.rate:,.0f} rows/s"

    def eta_text(self) -> str:
        if self.eta is None:
            return "time left unknown"
        return "under a second left" if self.eta < 1 else f"about {duration(self.eta)} left"

    def line(self) -> str:
        """One line for a log: file, phase, rows done of about how many, rows/s, time left."""
        parts = (self.rows_text(), self.rate_text(), self.eta_text())
        return f"progress: {self.name}: {self.phase} {', '.join(parts)}"


def duration(seconds: float) -> str:
    """``7 s``, ``4 min 05 s``, ``2 h 03 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def about(n: float) -> int:
    """``n`` to three significant figures: an estimate shown as no more precise than it is."""
    n = round(n)
    digits = len(str(abs(n)))
    return n if digits <= 3 else round(n, 3 - digits)


class _Tracking(Progress):
    """The state both displays share: the file, its phase, when it started, the figures."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, label: Callable[[str], str] = printable
    ):
        self.clock, self.label = clock, label
        self.name, self.size, self.phase = "", 0, ""
        self.started = self.phase_started = self.last = 0.0
        self.figures: Figures | None = None

    def file_started(self, name: str, size_bytes: int) -> None:
        self.name, self.size, self.phase = self.label(name), size_bytes, ""
        self.started = self.phase_started = self.last = self.clock()
        self.figures = None

    def advance(
        self,
        phase: str,
        rows_done: int,
        *,
        bytes_done: int | None = None,
        rows_total: int | None = None,
    ) -> None:
        now = self.clock()
        if phase != self.phase:  # a phase starts where the one before ended
            self.phase, self.phase_started = phase, self.last
        self.last = now
        total, estimated = rows_total, False
        if total is None and bytes_done and self.size:
            total = max(rows_done, about(rows_done * self.size / bytes_done))
            estimated = total > rows_done
        elapsed = now - self.phase_started
        rate = rows_done / elapsed if elapsed > 0 and rows_done else None
        eta = None if rate is None or total is None else max(0, total - rows_done) / rate
        self.figures = Figures(self.name, phase, rows_done, total, estimated, rate, eta)
        self.show(now, self.figures)

    def show(self, now: float, figures: Figures) -> None:
        raise NotImplementedError


class PeriodicLines(_Tracking):
    """One line every ``period`` seconds (default `PERIOD_SECONDS`) while a file runs, written
    to ``write`` (``print`` to stderr, a logger's ``info``); a last line when a file that had
    any finishes. Lines come from `advance`, so at most one per batch."""

    def __init__(
        self,
        write: Callable[[str], None],
        period: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: Callable[[str], str] = printable,
    ):
        super().__init__(clock, label)
        self.write = write
        self.period = PERIOD_SECONDS if period is None else period
        self.next_line = 0.0
        self.said = False

    def file_started(self, name: str, size_bytes: int) -> None:
        super().file_started(name, size_bytes)
        self.next_line, self.said = self.started + self.period, False

    def show(self, now: float, figures: Figures) -> None:
        if now >= self.next_line:
            self.write(figures.line())
            self.next_line, self.said = now + self.period, True

    def file_finished(self, result: FileResult | None) -> None:
        if self.said:
            took = duration(self.clock() - self.started)
            how = "stopped" if result is None else result.state
            rows = "" if result is None else f", {result.data_lines:,} data lines"
            self.write(f"progress: {self.name}: {how} after {took}{rows}")
        self.said = False


class TerminalBar(_Tracking):
    """A row of a live rich ``Progress`` display (the caller owns the display): the file and
    its phase, a bar, rows of about how many, rows/s and time left. Hidden until the file has
    run `SHOW_AFTER_SECONDS`, so quick files do not flicker."""

    def __init__(
        self,
        bar: Any,  # rich.progress.Progress with `columns()`
        clock: Callable[[], float] = time.monotonic,
        label: Callable[[str], str] = printable,
    ):
        super().__init__(clock, label)
        self.bar, self.task, self.visible = bar, None, False

    def file_started(self, name: str, size_bytes: int) -> None:
        super().file_started(name, size_bytes)
        self.file_finished(None)
        # A task of its own per file: rich cannot set a task's total back to "unknown".
        self.task = self.bar.add_task(self.name, total=None, visible=False, figures="")
        self.visible = False

    def show(self, now: float, figures: Figures) -> None:
        if self.task is None:
            return
        parts = (figures.rows_text(), figures.rate_text(), figures.eta_text())
        # Shown once the file has run a second, then until it is done (no flicker).
        self.visible = self.visible or now - self.started >= SHOW_AFTER_SECONDS
        self.bar.update(
            self.task,
            description=f"{figures.name}  {figures.phase}",
            completed=figures.done,
            total=figures.total,
            visible=self.visible,
            figures="  ".join(parts),
        )

    def file_finished(self, result: FileResult | None) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


def columns() -> tuple[Any, ...]:
    """The rich columns a display with `TerminalBar` rows needs (no markup: names are the
    sender's text)."""
    from rich.progress import BarColumn, SpinnerColumn, TextColumn

    return (
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[figures]}", markup=False),
    )
