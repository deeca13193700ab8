"""`pipeline.progress`: the figures, the periodic lines (exact text, on a fake clock), the
terminal bar's task, and the byte estimate behind "about N rows"."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console as RichConsole
from rich.progress import Progress as RichProgress

from pipeline import progress
from pipeline.console import printable
from pipeline.context import Context
from pipeline.progress import MERGE, READ, BytesSeen, PeriodicLines, Progress, TerminalBar
from pipeline.results import FileResult


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_periodic_lines_say_rows_of_about_how_many_rows_per_second_and_time_left() -> None:
    clock, lines = Clock(), []
    shown = PeriodicLines(lines.append, period=10, clock=clock)
    shown.file_started("big.csv", 8_200_000)
    for at, rows in [(5, 50_000), (10, 100_000), (15, 150_000), (21, 210_000)]:
        clock.now = 1000 + at
        shown.advance(READ, rows, bytes_done=rows * 82 // 10)  # 8.2 bytes a row: 1M rows
    clock.now = 1100  # the read ended at 1021 (its last batch): the merge starts there
    shown.advance(MERGE, 40_000, rows_total=990_000)
    clock.now = 1105  # under 10 s since the last line
    shown.advance(MERGE, 60_000, rows_total=990_000)
    clock.now = 1111
    shown.advance(MERGE, 990_000, rows_total=990_000)
    shown.file_finished(
        FileResult("big.csv", "maxbounty", "conversions", "applied", data_lines=10**6)
    )
    assert lines == [
        "progress: big.csv: read/validate 100,000 of about 1,000,000 rows, 10,000 rows/s, "
        "about 1 min 30 s left",
        "progress: big.csv: read/validate 210,000 of about 1,000,000 rows, 10,000 rows/s, "
        "about 1 min 19 s left",
        "progress: big.csv: merge 40,000 of 990,000 rows, 506 rows/s, about 31 min 16 s left",
        "progress: big.csv: merge 990,000 of 990,000 rows, 11,000 rows/s, under a second left",
        "progress: big.csv: applied after 1 min 51 s, 1,000,000 data lines",
    ]


def test_a_file_shorter_than_the_period_prints_nothing() -> None:
    clock, lines = Clock(), []
    shown = PeriodicLines(lines.append, period=10, clock=clock)
    shown.file_started("small.csv", 1_000)
    clock.now += 2
    shown.advance(READ, 10, bytes_done=1_000)
    shown.advance(MERGE, 10, rows_total=10)
    shown.file_finished(None)
    assert lines == []


def test_each_file_counts_its_own_period_and_a_file_that_raised_says_stopped() -> None:
    clock, lines = Clock(), []
    shown = PeriodicLines(lines.append, period=10, clock=clock)
    shown.file_started("one.csv", 100)
    clock.now += 30
    shown.advance(READ, 0)  # nothing read yet: no rate, no total
    shown.file_finished(None)
    shown.file_started("two.csv", 100)
    clock.now += 9
    shown.advance(READ, 5, bytes_done=50)
    assert lines == [
        "progress: one.csv: read/validate 0 rows, - rows/s, time left unknown",
        "progress: one.csv: stopped after 30 s",
    ]


def test_the_period_is_the_module_constant_unless_given(monkeypatch) -> None:
    assert progress.PERIOD_SECONDS == 10
    monkeypatch.setattr(progress, "PERIOD_SECONDS", 0.5)
    assert PeriodicLines(print).period == 0.5
    assert PeriodicLines(print, period=3).period == 3


def test_a_total_is_never_below_the_rows_done_and_is_exact_when_given() -> None:
    clock, lines = Clock(), []
    shown = PeriodicLines(lines.append, period=0, clock=clock)
    shown.file_started("f.csv", 1_000)
    clock.now += 1
    shown.advance(READ, 500, bytes_done=2_000)  # the estimate ran long: total = rows done
    shown.advance(MERGE, 3, rows_total=7)
    assert lines == [
        "progress: f.csv: read/validate 500 of 500 rows, 500 rows/s, under a second left",
        "progress: f.csv: merge 3 of 7 rows, - rows/s, time left unknown",  # no time passed
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a\x1b[2Jb\nc.csv", "a\\x1b[2Jb\\nc.csv"),
        ("evil\u202egnp.csv", "evil\\u202egnp.csv"),
        ("caf\udce9.csv", "caf\\xe9.csv"),  # a byte that was not UTF-8
        ("plain name.csv", "plain name.csv"),
    ],
)
def test_a_senders_file_name_cannot_forge_a_line_or_move_the_cursor(name, expected) -> None:
    clock, lines = Clock(), []
    shown = PeriodicLines(lines.append, period=0, clock=clock)
    shown.file_started(name, 10)
    clock.now += 1
    shown.advance(READ, 1, bytes_done=10)
    assert lines[0].startswith(f"progress: {expected}: read/validate 1 of 1 rows")
    assert printable(name) == expected  # the one rule, shared with the summary


def test_the_terminal_bar_appears_after_a_second_and_goes_with_the_file() -> None:
    clock = Clock()
    rich = RichProgress(
        *progress.columns(),
        console=RichConsole(file=io.StringIO(), force_terminal=True, width=150),
        auto_refresh=False,
    )
    bar = TerminalBar(rich, clock=clock)
    bar.file_started("big.csv", 8_200_000)
    [task] = rich.tasks
    clock.now += 0.5
    bar.advance(READ, 5_000, bytes_done=41_000)
    assert not task.visible  # a quick file never shows a bar
    clock.now += 0.5
    bar.advance(READ, 10_000, bytes_done=82_000)
    assert task.visible and (task.completed, task.total) == (10_000, 1_000_000)
    assert task.description == "big.csv  read/validate"
    assert task.fields["figures"] == (
        "10,000 of about 1,000,000 rows  10,000 rows/s  about 1 min 39 s left"
    )
    bar.advance(MERGE, 1, rows_total=990_000)  # a new phase: still shown, its own total
    assert task.visible and task.total == 990_000
    with rich:  # drawn as the CLI draws it
        rich.refresh()
    assert "big.csv  merge" in rich.console.file.getvalue()
    bar.file_finished(None)
    assert rich.tasks == []


def test_bytes_seen_estimates_a_files_size_from_a_sample_of_each_batch() -> None:
    header = ("click_id", "payout", "status")
    rows = [(f"click-{i:06d}" + "x" * (i % 7), f"{i % 90}.50", "é" * (i % 3)) for i in range(5_000)]
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    seen = BytesSeen("utf-8", ",", header)
    for start in range(0, len(rows), 1_000):
        frame = pd.DataFrame(rows[start : start + 1_000], columns=list(header), dtype="str")
        done = seen.add(frame, len(frame))
    assert done == pytest.approx(len(text.encode("utf-8")), rel=0.02)
    assert seen.add(pd.DataFrame(columns=list(header)), 0) == done  # an empty batch


def test_bytes_seen_counts_the_encodings_bytes() -> None:
    frame = pd.DataFrame({"a": ["abc"] * 10, "b": ["de"] * 10})
    assert BytesSeen("utf-8", ",").add(frame, 10) == 70  # "abc,de\n"
    assert BytesSeen("utf-16-le", ",").add(frame, 10) == 140


def test_the_context_tells_nobody_unless_given_a_progress() -> None:
    ctx = Context(config=None, engine=None, datadir=None)  # type: ignore[arg-type]
    assert type(ctx.progress) is Progress
    ctx.progress.file_started("f.csv", 1)  # the no-op takes every call
    ctx.progress.advance(READ, 1, bytes_done=1)
    ctx.progress.file_finished(None)
    lines = PeriodicLines(print)
    told = ctx.with_progress(lines)
    assert told.progress is lines and told.stop is ctx.stop


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0 s"), (59, "59 s"), (61, "1 min 01 s"), (7384, "2 h 03 min")]
)
def test_durations_read_as_a_person_says_them(seconds, text) -> None:
    assert progress.duration(seconds) == text


@pytest.mark.parametrize(
    ("n", "rounded"), [(7, 7), (999, 999), (29_874, 29_900), (1_234_567, 1_230_000)]
)
def test_an_estimate_is_shown_to_three_significant_figures(n, rounded) -> None:
    assert progress.about(n) == rounded
