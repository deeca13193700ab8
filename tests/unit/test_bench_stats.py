"""The benchmark's arithmetic (benchmarks/benchstats.py), against hand-worked figures.

The benchmark itself is a script, not a test (nothing timed is asserted); these check that what
it prints is derived correctly: the step order of each round, medians over failed repetitions,
the target verdicts, how /proc's counters are read and the machine's CPU split, the table.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

BENCH = REPO / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bs = _load("benchstats")


def test_each_round_starts_one_step_later_and_every_step_takes_every_place():
    steps = ["a", "b", "c"]
    assert bs.rotated(steps, 0) == ["a", "b", "c"]
    assert bs.rotated(steps, 1) == ["b", "c", "a"]
    assert bs.rotated(steps, 2) == ["c", "a", "b"]
    assert bs.rotated(steps, 3) == ["a", "b", "c"]
    for place in range(3):
        assert sorted(bs.rotated(steps, r)[place] for r in range(3)) == steps
    assert bs.rotated([], 5) == []


def test_median_and_ratio():
    assert bs.median([3.0, 1.0, 2.0]) == 2.0
    assert bs.median([4.0, 1.0]) == 2.5
    assert bs.median([]) is None
    assert bs.ratio(94.5, 32.3) == pytest.approx(2.9257, abs=1e-4)
    assert bs.ratio(None, 2.0) is None
    assert bs.ratio(1.0, None) is None
    assert bs.ratio(1.0, 0.0) is None


def test_a_failed_repetition_is_left_out_of_the_median_and_shown():
    s = bs.summarize(
        [
            {"wall": 10.0, "rss_peak_mb": 400.0},
            {"error": "exit code 1"},
            {"wall": 14.0, "rss_peak_mb": 420.5},
        ]
    )
    assert s.wall == 12.0
    assert s.rss_peak_mb == 420.5
    assert s.errors == ("exit code 1",)
    assert s.spread == "10.00 / failed / 14.00"
    none = bs.summarize([{"error": "dlt unavailable: no network"}])
    assert none.wall is None and none.rss_peak_mb is None


def test_verdicts_say_met_or_by_how_much_not():
    over = bs.Verdict(2.9, 1.0)
    assert not over.met
    # 2.9 / 1.0 = 2.90x; reaching 1.0 from 2.9 takes 1 - 1/2.9 = 65.5% less.
    assert over.text() == "NOT met: 2.90x the target, needs 66% less"
    under = bs.Verdict(0.8, 1.0)
    assert under.met and under.text() == "met, 20% to spare"
    assert bs.Verdict(2.5, 2.5).met
    assert bs.Verdict(428, 500).text() == "met, 14% to spare"


PROC_STAT = """\
cpu  104664 7 17767 46896 1391 3 840 2354 11 0
cpu0 51258 0 8064 25819 429 0 173 1159 0 0
intr 1 2 3
"""


def test_proc_stat_aggregate_line():
    t = bs.parse_proc_stat(PROC_STAT)
    assert (t.user, t.nice, t.system, t.idle, t.iowait, t.irq, t.softirq, t.steal) == (
        104664,
        7,
        17767,
        46896,
        1391,
        3,
        840,
        2354,
    )
    # guest (11) is inside user already and must not be counted twice.
    assert t.total == 104664 + 7 + 17767 + 46896 + 1391 + 3 + 840 + 2354
    assert t.busy == 104664 + 7 + 17767 + 3 + 840
    with pytest.raises(ValueError, match="no aggregate"):
        bs.parse_proc_stat("cpu0 1 2 3 4 5 6 7 8\n")


def _pid_stat(comm: str, utime: int, stime: int, start: int) -> str:
    # Fields 3.. of /proc/PID/stat: state, ppid, pgrp, session, tty, tpgid, flags, minflt,
    # cminflt, majflt, cmajflt (3-13), utime (14), stime (15), cutime, cstime, priority, nice,
    # num_threads, itrealvalue (16-21), starttime (22), vsize ...
    rest = ["S", "1", "1", "1", "0", "-1", "0", "10", "0", "0", "0", str(utime), str(stime)]
    rest += ["5", "6", "20", "0", "1", "0", str(start), "123456"]
    return f"4242 ({comm}) " + " ".join(rest) + "\n"


@pytest.mark.parametrize("comm", ["postgres", "odd name", "a) b (c"])
def test_pid_stat_counts_fields_after_the_last_parenthesis(comm):
    assert bs.parse_pid_stat(_pid_stat(comm, utime=300, stime=45, start=987654)) == (987654, 345)


@pytest.mark.parametrize(
    ("title", "kind"),
    [
        ("postgres: 15/main: postgres test_bench 127.0.0.1(54321) idle", "ours"),
        ("postgres: 15/main: postgres test_bench 127.0.0.1(54321) COPY", "ours"),
        ("postgres: alice test_bench [local] idle in transaction", "ours"),
        ("postgres: 15/main: postgres test_other 127.0.0.1(54322) idle", None),
        ("postgres: 15/main: checkpointer", "server"),
        ("postgres: 15/main: autovacuum worker test_bench", "server"),
        ("postgres: walwriter", "server"),
        ("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main", "server"),
    ],
)
def test_backend_kind_from_the_process_title(title, kind):
    assert bs.backend_kind(title, "test_bench") == kind


def test_cpu_seconds_by_kind_counts_new_processes_whole_and_reused_pids_apart():
    before = {(10, 1): ("server", 500), (20, 2): ("ours", 40), (30, 3): ("ours", 7)}
    after = {
        (10, 1): ("server", 530),  # +30
        (20, 2): ("ours", 100),  # +60
        (20, 99): ("ours", 25),  # pid 20 reused by a new backend: whole 25
        (40, 4): ("ours", 15),  # new: whole 15
        # (30, 3) ended: its last interval is lost, it adds nothing
    }
    assert bs.cpu_seconds_by_kind(before, after) == {"server": 30, "ours": 100}


def test_cpu_share_splits_the_machine_into_steal_ours_postgres_and_others():
    # 2 cores x 5 s x 100 ticks/s = 1000 ticks: user 500, system 100, idle 280, iowait 20,
    # steal 100. Busy 600 = the benchmark's 2.0 s (200 ticks) + its backends 100 + the server's
    # background 50 + others 250.
    delta = bs.CpuTimes(500, 0, 100, 280, 20, 0, 0, 100)
    share = bs.cpu_share(delta, 5.0, 100, bench_s=2.0, backends_ticks=100, server_ticks=50)
    assert share.seconds == 5.0
    assert share.steal == pytest.approx(0.10)
    assert share.idle == pytest.approx(0.30)
    assert share.bench == pytest.approx(0.20)
    assert share.backends == pytest.approx(0.10)
    assert share.server == pytest.approx(0.05)
    assert share.others == pytest.approx(0.25)
    assert "CPU steal 10.0%" in share.text()
    assert "CPU used by other processes 25.0%" in share.text()
    # Overlapping samples never make "others" negative.
    assert bs.cpu_share(delta, 5.0, 100, 6.0, 100, 50).others == 0.0


def test_cpu_times_subtract_field_by_field():
    a = bs.CpuTimes(10, 1, 5, 100, 2, 0, 1, 3)
    b = bs.CpuTimes(4, 1, 2, 60, 1, 0, 0, 1)
    assert a - b == bs.CpuTimes(6, 0, 3, 40, 1, 0, 1, 2)


def test_markdown_table_is_padded_and_aligned():
    table = bs.markdown_table(["step", "wall s"], [["(a) copy", "2.00"], ["(b)", "94.50"]], "<>")
    assert table.splitlines() == [
        "| step     | wall s |",
        "|----------|-------:|",
        "| (a) copy |   2.00 |",
        "| (b)      |  94.50 |",
    ]
    with pytest.raises(ValueError):
        bs.markdown_table(["a", "b"], [], "<")


def test_dlt_is_pinned_exactly_and_kept_out_of_git():
    lines = [
        ln.strip()
        for ln in (BENCH / "dlt-requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert lines[0].startswith("dlt[") and "postgres" in lines[0]
    assert re.fullmatch(r"dlt\[[a-z,]+\]==1\.31\.\d+", lines[0])
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[0-9][0-9A-Za-z.+]*", line), line
    names = {re.split(r"[\[=]", ln)[0].lower() for ln in lines}
    assert {"dlt", "psycopg2-binary", "pyarrow"} <= names
    assert ".dlt-venv/" in (BENCH / ".gitignore").read_text().split()


def test_the_script_offers_its_options():
    out = subprocess.run(
        [sys.executable, str(BENCH / "bench_ingest.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in ("--reps", "--scale-check", "--only", "--dlt-python", "--big-warehouse"):
        assert option in out
    for step in ("copy", "durable", "dlt", "pandas", "ingest", "sqlite", "dry", "big", "scale"):
        assert step in out


@pytest.mark.parametrize(
    "script", ["bench_ingest", "bench_objectstore", "bench_celery", "page_check_first", "generate"]
)
def test_every_benchmark_script_starts(script):
    """Each script imports what it needs from the others (a renamed helper once broke
    `bench_objectstore` unseen, as nothing ran it): `--help` loads it without running anything."""
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
