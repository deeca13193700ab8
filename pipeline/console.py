"""What a person sees on a terminal: a progress line while files run, then a summary.

The summary is one short block per file in plain words (`block`): what was applied, ignored as a
duplicate or rejected and why (the catalogue's fix hint, example lines), its warnings, and where
its reports are; then a total line. The Airflow task log tells each file with the same block.
Every line fits in `WIDTH` columns. rich draws the progress line when stderr is a terminal;
otherwise (CI, cron, Airflow logs) the same facts are printed as plain text, so logs stay
greppable and free of escape codes. File names and details are the sender's text: control,
line-separator and bidi characters are shown escaped (`printable`), so a name cannot forge a
line, move the cursor or reorder what is shown.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rich.cells import cell_len

from pipeline.core import file_outcome
from pipeline.core.printable import printable
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import (
    APPLIED,
    DRY_RUN,
    DUPLICATE_FILE,
    FAILED,
    FILE_STATES,
    QUARANTINED,
    TAKEN_OVER,
)
from pipeline.results import FileResult


class Console:
    def __init__(self, err: TextIO = sys.stderr, out: TextIO | None = None):
        self.err, self.out = err, out or sys.stdout
        self.fancy = hasattr(err, "isatty") and err.isatty()

    def error(self, message: str) -> None:
        print(f"error: {message}", file=self.err)

    def info(self, message: str) -> None:
        print(message, file=self.err)

    @contextmanager
    def progress(
        self, total: int | None
    ) -> Iterator[tuple[Callable[[FileResult], None], Any]]:  # Any: a progress.Progress
        """While files run: ``(on_file, rows)``. ``on_file`` takes each file's result as it is
        done; ``rows`` goes in the run's `Context.progress` and shows the rows of the file in
        work (`pipeline.progress`). On a terminal both are one live rich display: the file's bar
        (rows of about how many, rows/s, time left) and, for several files, how many are done.
        Otherwise a line per file done, and a progress line every `PERIOD_SECONDS` of a file."""
        from pipeline import progress as rows_progress

        if not self.fancy:
            yield (
                lambda r: print(
                    f"{r.state:>14}  {r.offer_source or '-'}/{printable(r.name)}", file=self.err
                ),
                rows_progress.PeriodicLines(lambda line: print(line, file=self.err, flush=True)),
            )
            return
        from rich.console import Console as RichConsole
        from rich.progress import Progress

        with Progress(
            *rows_progress.columns(), console=RichConsole(file=self.err), transient=True
        ) as bar:
            of = "" if total is None else f" of {total}"
            files = bar.add_task(f"0{of} file(s) done", total=total, visible=total != 1, figures="")
            done = 0

            def on_file(r: FileResult) -> None:
                nonlocal done
                done += 1
                last = f"last: {printable(r.name)} {r.state}"
                bar.update(files, advance=1, description=f"{done}{of} file(s) done", figures=last)

            yield on_file, rows_progress.TerminalBar(bar)

    def summary(
        self,
        results: Sequence[FileResult],
        *,
        home: str | Path | None = None,
        as_json: bool = False,
    ) -> None:
        """The run's summary on stdout: a block per file and a total line (`summary_lines`;
        report paths relative to the data directory ``home``), or with ``as_json`` the
        machine-readable summary instead: a JSON list of each result's ``to_dict()``."""
        if as_json:
            print(json.dumps([r.to_dict() for r in results], indent=2), file=self.out)
            return
        for line in summary_lines(results, home):
            print(line, file=self.out)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.err)


# --- the summary: one block per file, then a total line -----------------------------------------

WIDTH = 100  # every line of a summary fits in this many columns
TOP_REASONS = 3  # rejection reasons told per file; the report has them all
EXAMPLES = 3  # example lines per reason
LONGEST = 400  # characters of a detail shown (the summary JSON has it whole)
COLUMNS_SHOWN = 8  # ignored column names listed per warning
ALL_ROWS_REJECTED = "all_rows_rejected"  # the summary warning's word, its text's first
APPLIED_WORDS = {
    "inserted": "inserted",
    "updated": "updated",
    "incremented": "incremented",
    "status_updated": "status changed",
}
OUTCOME_WORDS = APPLIED_WORDS | {
    "ignored_duplicate": "ignored as duplicates",
    "rejected": "rejected",
}
STATE_WORDS = {
    APPLIED: "applied",
    DRY_RUN: "dry run, nothing was changed",
    QUARANTINED: "quarantined, nothing was applied",
    DUPLICATE_FILE: "duplicate file, nothing was applied",
    FAILED: "failed, nothing was applied",
    TAKEN_OVER: "taken over by another run",
}
# The ignored columns of each kind, one line for all of them: (pattern, words for one column,
# words for several, words after the names).
_COLUMN_WARNINGS = (
    (
        re.compile(r"ignored unknown column (.+)"),
        "ignored unknown column",
        "ignored unknown columns",
        "",
    ),
    (
        re.compile(r"ignored column (.+) \(ignore_columns\)"),
        "ignored column",
        "ignored columns",
        " (ignore_columns)",
    ),
)

Result = FileResult | Mapping[str, Any]
"""A `FileResult`, or its ``to_dict()`` (an Airflow XCom, which may also carry its ``file``)."""


def block(result: Result, home: str | Path | None = None) -> list[str]:
    """One file's summary in plain words, a line each, every one within `WIDTH` columns.

    Its first line names the file (``offer_source/name``, or the inbox-relative ``file`` of an
    Airflow result) and what became of it; the lines under it are indented. A file whose every
    data line was rejected says so first (told from its counts when the result carries no
    ``all_rows_rejected`` warning). Then what was applied, ignored as a duplicate and rejected
    (the top reasons: code, count, example lines, the catalogue's fix hint), why a file was not
    applied, how its times were read, its other warnings, and its reports: the rejection report
    only when it has rows. Paths inside the data directory ``home`` are shown relative to it.
    """
    r = _as_dict(result)
    state = str(r.get("state"))
    read = state in (APPLIED, DRY_RUN)
    kind = "status updates" if r.get("kind") == "status" else "conversions"
    head = f"{_name(r)} ({kind}): {STATE_WORDS.get(state, printable(state))}"
    if read:
        head += f", {_count(int(r.get('data_lines') or 0), 'data line')}"
    lines = _wrap(head, "", "    ")

    warnings = [str(w) for w in r.get("warnings") or []]
    loud = [w for w in warnings if w.startswith(ALL_ROWS_REJECTED)]
    if not loud and _all_rows_rejected(r):
        loud = [
            f"{ALL_ROWS_REJECTED}: all {r.get('data_lines')} data line(s) were rejected; nothing "
            "of the file was applied (see the rejection report)"
        ]
    for warning in loud:
        lines += _wrap(f"WARNING: {printable(warning)}", "  ", "    ")

    outcomes = r.get("outcomes") or {}
    if read:
        applied = [f"{outcomes[k]} {word}" for k, word in APPLIED_WORDS.items() if outcomes.get(k)]
        verb = "applied" if state == APPLIED else "would apply"
        lines += _wrap(f"{verb}: {', '.join(applied) or 'nothing'}", "  ", "    ")
        if outcomes.get("ignored_duplicate"):
            verb = "ignored" if state == APPLIED else "would ignore"
            lines.append(f"  {verb} as duplicates: {_count(outcomes['ignored_duplicate'], 'line')}")
        if outcomes.get("rejected"):
            verb = "rejected" if state == APPLIED else "would reject"
            lines.append(f"  {verb}: {_count(outcomes['rejected'], 'line')}")
            lines += _reasons(r)

    code, detail = r.get("reason_code"), r.get("detail")
    if code or detail:
        said = ": ".join(printable(_shorten(str(t))) for t in (code, detail) if t)
        lines += _wrap(said, "  ", "    ")
        if code in CATALOGUE:
            lines += _wrap(f"fix: {CATALOGUE[code].hint}", "    ", "      ")
    if r.get("times"):
        lines += _wrap(printable(str(r["times"])), "  ", "    ")
    for warning in _grouped([w for w in warnings if w not in loud]):
        lines += _wrap(f"warning: {warning}", "  ", "    ")

    for label, key in (
        ("rejection report", "report_path"),
        ("duplicates list", "duplicates_path"),
        ("summary", "summary_path"),
    ):
        if r.get(key) and (key != "report_path" or outcomes.get("rejected")):
            lines += _wrap(f"{label}: {printable(_shown(r[key], home))}", "  ", "    ")
    return lines


def summary_lines(results: Iterable[Result], home: str | Path | None = None) -> list[str]:
    """A run's summary: each file's `block`, a blank line after each, then the `total` line(s),
    and (when a path was shown relative to it) which data directory the paths are in."""
    results = [_as_dict(r) for r in results]
    lines: list[str] = []
    for r in results:
        lines += [*block(r, home), ""]
    lines += total(results)
    paths = [r.get(k) for r in results for k in ("report_path", "duplicates_path", "summary_path")]
    if home is not None and any(p and _inside(p, home) for p in paths):
        where = f"paths are relative to the data directory {printable(str(home))}"
        lines += _wrap(where, "", "    ")
    return lines


def total(results: Iterable[Result]) -> list[str]:
    """The run's total in plain words: files per state, data lines per outcome."""
    results = [_as_dict(r) for r in results]
    if not results:
        return ["total: no files"]
    states = Counter(str(r.get("state")) for r in results)
    order = sorted(states, key=lambda s: FILE_STATES.index(s) if s in FILE_STATES else 99)
    said = ", ".join(f"{states[s]} {printable(s).replace('_', ' ')}" for s in order)
    text = f"total: {_count(len(results), 'file')} ({said})"
    lines = sum(int(r.get("data_lines") or 0) for r in results)
    outcomes: Counter[str] = Counter()
    for r in results:
        outcomes.update({k: int(v or 0) for k, v in (r.get("outcomes") or {}).items()})
    counts = [f"{outcomes[k]} {word}" for k, word in OUTCOME_WORDS.items() if outcomes.get(k)]
    text += f"; {_count(lines, 'data line')}" + (f": {', '.join(counts)}" if counts else "")
    return _wrap(text, "", "    ")


def _reasons(r: Mapping[str, Any]) -> list[str]:
    reasons = Counter({str(k): int(v) for k, v in (r.get("reasons") or {}).items() if v})
    examples = r.get("examples") or {}
    lines = []
    for code, count in reasons.most_common(TOP_REASONS):
        shown = [str(n) for n in (examples.get(code) or [])[:EXAMPLES]]
        where = ""
        if shown:
            word = "line" if len(shown) == 1 else "lines"
            where = f" ({'' if len(shown) == count else 'e.g. '}{word} {', '.join(shown)})"
        lines += _wrap(f"{printable(code)}: {_count(count, 'line')}{where}", "    ", "      ")
        if code in CATALOGUE:
            lines += _wrap(f"fix: {CATALOGUE[code].hint}", "      ", "        ")
    if len(reasons) > TOP_REASONS:
        more = len(reasons) - TOP_REASONS
        lines.append(f"    and {_count(more, 'more reason')}: see the rejection report")
    return lines


def _grouped(warnings: list[str]) -> list[str]:
    """Warnings as shown (escaped): first the ignored columns of each kind on one line, then
    the others as they are."""
    said, columns = [], {kind: [] for kind in _COLUMN_WARNINGS}
    for warning in warnings:
        kind = next((k for k in _COLUMN_WARNINGS if k[0].fullmatch(warning)), None)
        if kind is None:
            said.append(printable(_shorten(warning)))
        else:
            columns[kind].append(kind[0].fullmatch(warning).group(1))
    grouped = []
    for (_, one, several, after), names in columns.items():
        if names:
            listed = ", ".join(printable(_shorten(n, 80)) for n in names[:COLUMNS_SHOWN])
            if len(names) > COLUMNS_SHOWN:
                listed += f" and {len(names) - COLUMNS_SHOWN} more"
            grouped.append(f"{one if len(names) == 1 else several} {listed}{after}")
    return grouped + said


def _as_dict(result: Result) -> Mapping[str, Any]:
    return result.to_dict() if isinstance(result, FileResult) else result


def _name(r: Mapping[str, Any]) -> str:
    return printable(str(r.get("file") or f"{r.get('offer_source') or '-'}/{r.get('name')}"))


def _all_rows_rejected(r: Mapping[str, Any]) -> bool:
    outcomes = r.get("outcomes") or {}
    return file_outcome.all_rows_rejected(
        str(r.get("state")), int(r.get("data_lines") or 0), int(outcomes.get("rejected") or 0)
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _shorten(text: str, longest: int = LONGEST) -> str:
    return text if len(text) <= longest else f"{text[:longest]}... (cut short)"


def _inside(path: str | Path, home: str | Path) -> bool:
    return Path(path).is_relative_to(Path(home))


def _shown(path: str | Path, home: str | Path | None) -> str:
    """``path`` relative to the data directory ``home`` when it is inside it, else as it is."""
    if home is not None and _inside(path, home):
        return Path(path).relative_to(Path(home)).as_posix()
    return str(path)


def _wrap(text: str, first: str, rest: str, width: int = WIDTH) -> list[str]:
    """``text`` after the prefix ``first``, broken at spaces into lines of at most ``width``
    columns (as a terminal draws them: a wide character takes two), each next line after
    ``rest``; a word too long for a line is cut."""
    lines, line, empty = [], first, True
    for word in text.split(" "):
        joined = word if empty else f" {word}"
        if cell_len(line) + cell_len(joined) <= width:
            line, empty = line + joined, False
            continue
        if not empty:
            lines.append(line)
            line = rest
        while cell_len(line) + cell_len(word) > width:
            cut = _fitting(word, width - cell_len(line))
            lines.append(line + word[:cut])
            line, word = rest, word[cut:]
        line, empty = line + word, False
    lines.append(line)
    return [x.rstrip() for x in lines]


def _fitting(word: str, room: int) -> int:
    """How many of ``word``'s first characters fit in ``room`` columns (at least one)."""
    used = 0
    for n, char in enumerate(word):
        used += cell_len(char)
        if used > room:
            return max(n, 1)
    return len(word)
