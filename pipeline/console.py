"""What a person sees on a terminal: a progress line while files run, then one table.

rich draws both when stderr is a terminal; otherwise (CI, cron, Airflow logs) the same facts are
printed as plain text, so logs stay greppable and free of escape codes. File names and details
are the sender's text: control and bidi characters are shown escaped (`printable`), so a name
cannot forge a line, move the cursor or reorder what is shown.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from pipeline.core.vocabulary import DUPLICATE_FILE, FAILED, QUARANTINED
from pipeline.results import FileResult

# C0/C1 controls (newline, ESC...), bidi marks/overrides/isolates, and lone surrogates (bytes
# of a name that were not UTF-8).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with the characters above as escapes: ``\\n``, ``\\x1b``, ``\\u202e``, and an
    undecodable byte of a file name as ``\\xNN``."""
    return _UNPRINTABLE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


SHORT = {
    "inserted": "ins",
    "updated": "upd",
    "incremented": "inc",
    "status_updated": "status",
    "ignored_duplicate": "ignored",
    "rejected": "rejected",
}


class Console:
    def __init__(self, err: TextIO = sys.stderr, out: TextIO | None = None):
        self.err, self.out = err, out or sys.stdout
        self.fancy = hasattr(err, "isatty") and err.isatty()

    def error(self, message: str) -> None:
        print(f"error: {message}", file=self.err)

    def info(self, message: str) -> None:
        print(message, file=self.err)

    @contextmanager
    def progress(self, total: int | None) -> Iterator[Callable[[FileResult], None]]:
        if not self.fancy:
            yield lambda r: print(
                f"{r.state:>14}  {r.offer_source or '-'}/{printable(r.name)}", file=self.err
            )
            return
        from rich.console import Console as RichConsole
        from rich.markup import escape
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed} file(s)"),
            console=RichConsole(file=self.err),
            transient=True,
        ) as bar:
            task = bar.add_task("processing", total=total)
            yield lambda r: bar.update(
                task, advance=1, description=f"{escape(printable(r.name))}: {r.state}"
            )

    def summary(self, results: Sequence[FileResult]) -> None:
        print(render(results), file=self.out)
        said = notes(results)
        if said:
            print(file=self.out)
        for line in said:
            print(line, file=self.out)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.err)


def notes(results: Sequence[FileResult]) -> list[str]:
    """Below the table, per file: how its times were read, then its warnings (an
    all-rows-rejected file first, loudly), so nothing the run noticed stays in a JSON file."""
    lines = []
    for r in results:
        said = [f"  {printable(r.times)}"] if r.times else []
        said += [f"  warning: {printable(w)}" for w in r.warnings]
        if said:
            lines += [f"{r.offer_source or '-'}/{printable(r.name)}:", *said]
    return lines


def rows(results: Sequence[FileResult]) -> list[list[str]]:
    out = []
    for r in results:
        detail = r.report_path or r.summary_path or ""
        if r.state in (QUARANTINED, FAILED, DUPLICATE_FILE):
            detail = f"{r.reason_code or r.state}: {r.detail or ''}"
        out.append(
            [
                f"{r.offer_source or '-'}/{printable(r.name)}",
                r.kind,
                r.state,
                str(r.data_lines),
                *[str(r.outcomes.get(k, 0)) for k in SHORT],
                printable(detail),
            ]
        )
    return out


def render(results: Sequence[FileResult]) -> str:
    """A plain-text table: one line per file, then totals."""
    header = ["file", "kind", "state", "lines", *SHORT.values(), "report / reason"]
    body = rows(results)
    totals = [
        "total",
        "",
        f"{len(results)} file(s)",
        str(sum(r.data_lines for r in results)),
        *[str(sum(r.outcomes.get(k, 0) for r in results)) for k in SHORT],
        "",
    ]
    table = [header, *body, totals]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n == 0 or n == len(table) - 2:
            lines.append("-" * min(120, sum(widths) + 2 * len(widths) + 16))
    return "\n".join(lines)
