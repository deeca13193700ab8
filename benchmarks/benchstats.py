"""The benchmark's pure arithmetic: step order, medians, target verdicts, CPU accounting, tables.

Kept apart from bench_ingest.py (which starts processes and talks to PostgreSQL) so that it can
be unit-tested without either, and so that a reader can check how a printed figure was derived.
Nothing here imports the project or anything outside the standard library.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def rotated(steps: Sequence[str], round_no: int) -> list[str]:
    """The order of the steps in round `round_no` (0-based): each round starts one step later.

    Interleaving the steps and rotating their order spreads slow phases of a shared machine (a
    neighbour's test run, a checkpoint) over all steps instead of charging them to one.
    """
    if not steps:
        return []
    k = round_no % len(steps)
    return [*steps[k:], *steps[:k]]


def median(values: Iterable[float]) -> float | None:
    """The median of the values, or None when there are none (every repetition failed)."""
    values = list(values)
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Verdict:
    """A measured value against an upper limit ("at most limit")."""

    value: float
    limit: float

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def text(self, unit: str = "x") -> str:
        """'met, 23% to spare' or 'NOT met: 2.90x the target, needs 66% less'."""
        if self.met:
            spare = (1 - self.value / self.limit) * 100 if self.limit else 0.0
            return f"met, {spare:.0f}% to spare"
        over = self.value / self.limit if self.limit else float("inf")
        less = (1 - self.limit / self.value) * 100
        return f"NOT met: {over:.2f}x the target, needs {less:.0f}% less"


@dataclass(frozen=True)
class CpuTimes:
    """The machine-wide counters of /proc/stat's `cpu` line, in clock ticks."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def total(self) -> int:
        # guest and guest_nice are already counted in user and nice, so they are left out.
        return (
            self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
        )

    @property
    def busy(self) -> int:
        """Ticks some process (or the kernel for it) ran on a CPU of this machine."""
        return self.user + self.nice + self.system + self.irq + self.softirq

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate `cpu` line of /proc/stat (all cores summed)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            numbers = [int(v) for v in fields[1:9]]
            numbers += [0] * (8 - len(numbers))  # old kernels have no steal column
            return CpuTimes(*numbers)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


_STAT_TAIL = re.compile(r"\)\s+(.*)$", re.S)


def parse_pid_stat(text: str) -> tuple[int, int]:
    """(start time, utime + stime) of a /proc/PID/stat line, in clock ticks.

    The command name (field 2) is in parentheses and may itself hold spaces or parentheses, so
    the fields are counted from the last ')'.
    """
    m = _STAT_TAIL.search(text[text.rindex(")") :])
    if not m:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    rest = m.group(1).split()
    # rest[0] is field 3 (state): utime and stime are fields 14 and 15, starttime field 22.
    return int(rest[19]), int(rest[11]) + int(rest[12])


def backend_kind(cmdline: str, database: str) -> str | None:
    """Who a PostgreSQL process (its command name is `postgres`) works for, from its title.

    'ours' for a backend connected to `database` (titles read 'postgres: [cluster: ]user
    database host(port) activity'), 'server' for the postmaster and the server's own processes
    (checkpointer, WAL writer, autovacuum, ...: they serve every database), None for another
    database's backend.
    """
    if not cmdline.startswith("postgres:"):
        return "server"  # the postmaster keeps its real command line
    title = cmdline.split(":", 1)[1]
    parts = title.split()
    # PostgreSQL 13+ may prefix the cluster name ('15/main:').
    if parts and parts[0].endswith(":"):
        parts = parts[1:]
    if len(parts) >= 3 and re.fullmatch(r"\S+\(\d+\)|\[local\]", parts[2]):
        return "ours" if parts[1] == database else None
    return "server"


@dataclass(frozen=True)
class CpuShare:
    """How the machine's CPU time was spent while the benchmark ran, as shares of all of it."""

    seconds: float  # wall-clock time the run took
    steal: float
    idle: float
    bench: float  # this benchmark's processes (parent and every finished child)
    backends: float  # PostgreSQL backends connected to the benchmark's database
    server: float  # PostgreSQL's own processes (shared with other databases)
    others: float  # everything else: other people's processes

    def text(self) -> str:
        return (
            f"during the run ({self.seconds:,.0f} s): CPU steal {self.steal:.1%}, "
            f"CPU used by other processes {self.others:.1%} of the machine "
            f"(this benchmark {self.bench:.1%}, its PostgreSQL backends {self.backends:.1%}, "
            f"PostgreSQL's shared background processes {self.server:.1%}, idle {self.idle:.1%})"
        )


def cpu_share(
    delta: CpuTimes,
    wall_s: float,
    clock_ticks: int,
    bench_s: float,
    backends_ticks: int,
    server_ticks: int,
) -> CpuShare:
    """Split the machine's CPU time during the run into ours, PostgreSQL's and other people's.

    `delta` is /proc/stat after minus before (every core's ticks: 2 cores count 2 ticks of CPU
    per tick of the clock), `wall_s` how long that was; `bench_s` the CPU seconds of the
    benchmark's own process tree (os.times(), children included); `backends_ticks` and
    `server_ticks` the CPU of the PostgreSQL processes. 'others' is what remains of the busy
    time; it is clamped at zero because the samples of short-lived backends can overlap the
    tree's own accounting slightly.
    """
    total = delta.total
    if total <= 0:
        return CpuShare(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    bench = bench_s * clock_ticks
    others = max(0.0, delta.busy - bench - backends_ticks - server_ticks)
    return CpuShare(
        seconds=wall_s,
        steal=delta.steal / total,
        idle=(delta.idle + delta.iowait) / total,
        bench=bench / total,
        backends=backends_ticks / total,
        server=server_ticks / total,
        others=others / total,
    )


def cpu_seconds_by_kind(
    before: Mapping[tuple[int, int], tuple[str, int]],
    after: Mapping[tuple[int, int], tuple[str, int]],
) -> dict[str, int]:
    """Ticks spent by each kind of process between two samples keyed by (pid, start time).

    A process only in `after` started during the run and counts whole; one only in `before`
    ended before the last sample and its last interval is lost (it is sampled often, so little).
    """
    spent: dict[str, int] = {}
    for key, (kind, ticks) in after.items():
        base = before.get(key, (kind, 0))[1]
        spent[kind] = spent.get(kind, 0) + max(0, ticks - base)
    return spent


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A GitHub Markdown table, padded so that it also reads as plain text.

    `align` has one character per column: '<' left, '>' right.
    """
    if len(align) != len(head):
        raise ValueError("one alignment character per column")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True))
            + " |"
        )

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":" if a == ">" else "-" * (w + 2))
        for a, w in zip(align, widths, strict=True)
    )
    return "\n".join([line(head), sep + "|", *(line(r) for r in rows)])


@dataclass(frozen=True)
class StepSummary:
    """The repetitions of one step: the median wall time, the highest peak RSS, the failures."""

    walls: tuple[float | None, ...]  # in round order; None where that repetition failed
    rss_peak_mb: float | None
    errors: tuple[str, ...]

    @property
    def wall(self) -> float | None:
        return median(w for w in self.walls if w is not None)

    @property
    def spread(self) -> str:
        """Each repetition's wall time, in round order ('failed' for a failed one)."""
        return " / ".join("failed" if w is None else f"{w:.2f}" for w in self.walls)


def summarize(reps: Sequence[Mapping]) -> StepSummary:
    """The summary of a step's repetitions (each a child's result: 'wall' or 'error')."""
    walls = tuple(r.get("wall") if "error" not in r else None for r in reps)
    rss = [r["rss_peak_mb"] for r in reps if "error" not in r and "rss_peak_mb" in r]
    return StepSummary(
        walls=walls,
        rss_peak_mb=max(rss) if rss else None,
        errors=tuple(r["error"] for r in reps if "error" in r),
    )
