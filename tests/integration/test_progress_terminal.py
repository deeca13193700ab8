"""Progress as a person and a log see it: a live bar on a real pseudo-terminal, a line every
period off one (through `pipeline.cli.main`), and what `ingest_file` reports (per batch, never per
row) on both warehouses."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from pipeline import progress
from pipeline.cli import main
from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from pipeline.progress import MERGE, READ, PeriodicLines, Progress
from tests.helpers import REPO, SAMPLE_CONFIG, write_csv

RECEIVED = "2026-11-15T00:00:00+00:00"
BATCH = 2000
LINE = re.compile(
    r"progress: many\.csv: (read/validate|merge) ([\d,]+) of (about )?([\d,]+) rows, "
    r"([\d,]+|-) rows/s, (about [\w ]+ left|under a second left|time left unknown)"
)


def many_rows(path: Path, rows: int) -> Path:
    """``rows`` data lines, every tenth without a click id (rejected while reading)."""
    lines = ["click_id,payout,conversion_time,status"]
    lines += [
        f"{'' if i % 10 == 9 else f'click-{i:07d}'},{i % 90}.50,2026-07-01 12:{i % 60:02d}:00,"
        for i in range(rows)
    ]
    return write_csv(path, "\n".join(lines) + "\n")


def config_with_batches(root: Path) -> Path:
    path = root / "conversions.toml"
    path.write_text(SAMPLE_CONFIG.replace("[settings]", f"[settings]\nbatch_size = {BATCH}"))
    return path


def read_until_exit(master: int, proc: subprocess.Popen, seconds: float) -> bytes:
    """Everything the child writes to the terminal, every read bounded by the deadline."""
    out, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_a_terminal_shows_a_live_bar_with_rows_and_rows_per_second(tmp_path):
    # Big enough that reading lasts well past SHOW_AFTER_SECONDS on a fast machine too (30,000
    # rows were read in under a second once, and the bar only ever showed the merge).
    data = many_rows(tmp_path / "many.csv", 120_000)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERSIONS_")}
    args = ["--config", str(config_with_batches(tmp_path)), "--home", str(tmp_path / "home")]
    args += ["--warehouse", f"sqlite:///{tmp_path / 'w.db'}", "--received-at", RECEIVED]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ingest", *args, "--offer-source=maxbounty", str(data)],
        cwd=REPO,
        env=env | {"TERM": "xterm-256color", "COLUMNS": "160"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    try:
        shown = read_until_exit(master, proc, 120).decode("utf-8", "replace")
        stdout, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    read = re.findall(
        # "of about N" while reading; the last frame, once the file is read, knows the total.
        r"many\.csv  read/validate .*? ([\d,]+) of (?:about )?([\d,]+) rows  ([\d,]+) rows/s",
        plain,
    )
    assert read, plain[-2000:]
    assert {int(done.replace(",", "")) % BATCH for done, _, _ in read} == {0}  # per batch
    for _, total, rate in read:
        assert 116_000 <= int(total.replace(",", "")) <= 124_000  # about 120,000
        assert int(rate.replace(",", "")) > 0
    assert re.search(r"many\.csv  merge .*? of 108,000 rows  [\d,]+ rows/s", plain), plain[-2000:]
    assert "progress:" not in plain  # a terminal gets the bar, not the log lines
    assert "many.csv" in stdout.decode()  # the summary, after the bar


def test_off_a_terminal_a_line_every_period_with_the_same_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PERIOD_SECONDS", 0)  # a line at every batch
    data = many_rows(tmp_path / "many.csv", 9_000)
    code = main(
        [
            "ingest",
            "--config",
            str(config_with_batches(tmp_path)),
            "--home",
            str(tmp_path / "home"),
            "--warehouse",
            f"sqlite:///{tmp_path / 'w.db'}",
            "--received-at",
            RECEIVED,
            "--offer-source",
            "maxbounty",
            str(data),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "\x1b" not in err  # plain text for logs
    lines = [line for line in err.splitlines() if line.startswith("progress:")]
    found = [LINE.fullmatch(line) for line in lines[:-1]]
    assert all(found), lines
    read = [m for m in found if m[1] == "read/validate"]
    merge = [m for m in found if m[1] == "merge"]
    assert [int(m[2].replace(",", "")) for m in read] == [2000, 4000, 6000, 8000, 9000]
    assert all(
        m[3] == "about " and 8_000 <= int(m[4].replace(",", "")) <= 10_000 for m in read[:-1]
    )
    assert {m[4] for m in merge} == {"8,100"} and merge[-1][2] == "8,100"  # 900 rejected
    assert re.fullmatch(r"progress: many\.csv: applied after \d+ s, 9,000 data lines", lines[-1])


class Recording(Progress):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def file_started(self, name, size_bytes):
        self.calls.append(("started", name, size_bytes))

    def advance(self, phase, rows_done, *, bytes_done=None, rows_total=None):
        self.calls.append((phase, rows_done, bytes_done, rows_total))

    def file_finished(self, result):
        self.calls.append(("finished", None if result is None else result.state))


def test_ingest_reports_each_batch_and_each_merge_chunk(tmp_path, warehouse_url, config):
    from pipeline import warehouse

    data = many_rows(tmp_path / "many.csv", 5_000)
    told = Recording()
    engine = warehouse.connect(warehouse_url)
    try:
        ctx = Context(config, engine, LocalDataDir(tmp_path / "home"), progress=told)
        upload = Upload(data, "maxbounty", received_at=None, batch_size=1000)
        result = ingest_file(ctx, upload)
    finally:
        engine.dispose()
    assert result.state == "applied" and result.data_lines == 5_000
    size = data.stat().st_size
    assert told.calls[0] == ("started", "many.csv", size)
    assert told.calls[-1] == ("finished", "applied")
    read = [c for c in told.calls if c[0] == READ]
    merge = [c for c in told.calls if c[0] == MERGE]
    assert [c[1] for c in read] == [1000, 2000, 3000, 4000, 5000]  # once a batch
    assert read[-1][2] == pytest.approx(size, rel=0.03)  # bytes: an estimate, close
    assert all(c[3] is None for c in read)
    assert [c[1] for c in merge][-1] == 4_500 and {c[3] for c in merge} == {4_500}
    assert len(merge) <= 6  # once a chunk


def test_an_airflow_task_logs_progress_lines(tmp_path, monkeypatch, capsys):
    """The task's logger (Airflow's structlog writes it out) gets the same lines."""
    taskflow = pytest.importorskip("pipeline.airflow.taskflow")
    monkeypatch.setenv("CONVERSIONS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CONVERSIONS_CONFIG", str(config_with_batches(tmp_path)))
    monkeypatch.setenv("CONVERSIONS_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    monkeypatch.setattr(taskflow, "warehouse_url", lambda: None)
    monkeypatch.setattr(progress, "PERIOD_SECONDS", 0)
    told = []
    monkeypatch.setattr(taskflow.log, "info", lambda *args: told.append(args[0] % args[1:]))
    with taskflow._context() as ctx:
        assert isinstance(ctx.progress, PeriodicLines)
        ingest_file(ctx, Upload(many_rows(tmp_path / "many.csv", 3_000), "maxbounty"))
    lines = [m for m in told if m.startswith("progress:")]
    assert LINE.fullmatch(lines[0]) and "read/validate 2,000 of about" in lines[0], told
    assert re.fullmatch(r"progress: many\.csv: applied after \d+ s, 3,000 data lines", lines[-1])
