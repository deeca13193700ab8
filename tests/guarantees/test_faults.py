"""Re-drops and faults: the same bytes twice; failures of the warehouse, the disk, the config.

What this file proves (DOMAIN.md section 9; README "Guarantees"):

- The same bytes are applied once. Re-dropped under another name, again after they were
  archived (the same day or another), or replayed without ``force``, they are ``duplicate_file``
  and change nothing: the export is compared byte for byte, the first file's ledger row, archived
  copy, sidecar and reports too. With ``force`` a replay applies them again (and says so).
- Every result has its own report and summary: a dry run, a quarantine, a forced re-apply and a
  duplicate of bytes applied the same day under the same name never write over the applied
  file's (a regression test of a bug: they used to share its names).
- A warehouse that cannot be opened stops ``conversions inbox`` before it claims anything, with
  one line naming the warehouse (password masked); a later run applies everything.
- A connection killed in the middle of a file (``pg_terminate_backend`` from the test, while a
  ``conversions inbox`` subprocess is inside the file's transaction) rolls the file back whole; it
  goes back to the inbox and the next run's export equals a clean run's.
- A report that cannot be written (folder not writable, disk full, summary name taken) means the
  file is not applied: no ledger row, no warehouse change, no partial report, the file back in
  the inbox with a clear error, applied once by the next run.
- A config change that makes an old file wrong (offer source removed, account time zone or
  duplicate mode changed) is reported per file, never a crash, and the other files of the same
  run or replay are not affected.

Faults are real wherever they can be made reliably: a closed port, a missing folder, a killed
backend, a folder replaced by a file, a small tmpfs (where this test may mount one). The
exceptions say so in their docstrings. Expectations are worked out by hand from the files
written here (New York is GMT-4 in July) or come from a clean reference run.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from pipeline import cli, datadir, export, reports, runner, warehouse
from pipeline import config as config_module
from pipeline.airflow import steps
from pipeline.context import Context
from pipeline.core.vocabulary import OUTCOMES
from pipeline.datadir import LocalDataDir, claims
from pipeline.ingest import Upload, ingest_file
from tests.guarantees.harness import clean_env, generate
from tests.helpers import POSTGRES_URL, assert_accounted, sample_config, write_csv

CONFIG = sample_config("faults.toml")

# maxbounty: New York account time, GMT-4 in July. Purchase increments, so a second application
# of this file would show in p1's payout.
A_CSV = (
    "click_id,payout,conversion_time,conversion_type\n"
    "m1,5.00,2026-07-01 14:00:00,\n"  # 18:00Z, inserted
    "p1,2.50,2026-07-01 15:00:00,Purchase\n"  # 19:00Z, inserted
    "m2,x,2026-07-01 16:00:00,\n"  # line 4: invalid_payout
)
A_EXPORT = [  # (click_id, conversion_type, status, payout, currency, converted_at)
    ("m1", "", "approved", "5.00", "USD", "2026-07-01T18:00:00Z"),
    ("p1", "Purchase", "approved", "2.50", "USD", "2026-07-01T19:00:00Z"),
]
DAY1 = datetime(2026, 7, 2, 8, 0, 0, tzinfo=UTC)


def sha256(content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


class Site:
    """A data directory, a config file and a warehouse, driven through `conversions`."""

    def __init__(self, root: Path, url: str, config_text: str = CONFIG):
        self.root, self.url = root, url
        self.config_path = root / "conversions.toml"
        self.config_path.write_text(config_text, encoding="utf-8")
        self.home = root / "home"
        self.layout = datadir.Layout(self.home)

    @property
    def config(self) -> config_module.Config:
        return config_module.load(self.config_path)

    def options(self, url: str | None = None) -> list[str]:
        return [
            "--config",
            str(self.config_path),
            "--home",
            str(self.home),
            "--warehouse",
            url or self.url,
        ]

    def main(self, command: str, *args: str, url: str | None = None) -> int:
        """`conversions COMMAND` in this process (`pipeline.cli.main`)."""
        return cli.main([command, *self.options(url), *args])

    def run(self, command: str, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
        """`conversions COMMAND` as a subprocess, with no CONVERSIONS_* variables."""
        env = clean_env()
        return subprocess.run(
            [sys.executable, "-m", "pipeline", command, *self.options(url), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def drop(self, relative: str, content: str | bytes) -> Path:
        path = self.layout.inbox / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def export_bytes(self) -> bytes:
        out = self.root / f"export-{uuid.uuid4().hex[:8]}.csv"
        assert self.main("export", "-o", str(out)) == 0
        return out.read_bytes()

    def context(self, engine, config: config_module.Config | None = None) -> Context:
        return Context(config or self.config, engine, LocalDataDir(self.layout))

    def process_on(self, engine, relative: str, content: str, now: datetime):
        """Drop a file and run it through the inbox as if it had been claimed at ``now``."""
        ctx = self.context(engine)
        ctx.datadir.layout.ensure(ctx.config.offer_sources)
        self.drop(relative, content)
        [waiting] = [
            w
            for w in claims.scan(ctx.datadir.layout, ctx.config.offer_sources)
            if w.relative == relative
        ]
        claimed = claims.claim(ctx.datadir.layout, waiting, now=now)
        return runner.process_claimed(ctx, claimed)


@pytest.fixture
def site(tmp_path, warehouse_url) -> Site:
    return Site(tmp_path, warehouse_url)


def exported_rows(data: bytes) -> list[tuple]:
    """The export read with the csv module: (click_id, type, status, payout, currency, time)."""
    rows = csv.DictReader(io.StringIO(data.decode("utf-8")))
    return [
        (
            r["click_id"],
            r["conversion_type"],
            r["status"],
            r["payout"],
            r["currency"],
            r["converted_at"],
        )
        for r in rows
    ]


def ledger(engine) -> list[dict]:
    f = warehouse.ingested_files
    with engine.connect() as conn:
        rows = conn.execute(select(f).order_by(f.c.file_id)).mappings().all()
    return [dict(r) for r in rows]


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder (hidden ones included) with its bytes."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def files_left(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def waiting_files(layout: datadir.Layout) -> dict[str, bytes]:
    """The inbox as the scanner sees it (hidden bookkeeping files are not waiting files)."""
    return {w.relative: w.path.read_bytes() for w in claims.scan(layout, ())}


def summary(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def first_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# --- A. re-drops --------------------------------------------------------------------------------


def test_redrops_under_another_name_and_after_archiving_change_nothing(site, engine, capsys):
    """Applied on July 2; re-dropped the same day (later), under another name and on another day."""
    first = site.process_on(engine, "maxbounty/a.csv", A_CSV, DAY1)
    assert (first.state, first.outcomes["inserted"], first.outcomes["rejected"]) == (
        "applied",
        2,
        1,
    )
    before_export = site.export_bytes()
    assert exported_rows(before_export) == A_EXPORT  # hand-worked
    [applied_row] = ledger(engine)
    archive_before = tree(site.layout.archive)
    assert sorted(archive_before) == [
        f"2026-07-02/maxbounty/conversions/{sha256(A_CSV)[:16]}_a.csv",
        f"2026-07-02/maxbounty/conversions/{sha256(A_CSV)[:16]}_a.csv.json",
    ]
    reports_before = tree(site.layout.reports)
    history_before = count(engine, "conversion_history")

    # The same name, the same day, twelve hours later: received time differs, bytes do not.
    same_day = site.process_on(engine, "maxbounty/a.csv", A_CSV, DAY1 + timedelta(hours=12))
    # Another name and the same name again, today, through `conversions inbox`.
    site.drop("maxbounty/b.csv", A_CSV)
    site.drop("maxbounty/a.csv", A_CSV)
    capsys.readouterr()
    assert site.main("inbox") == 0  # a duplicate is not a failure
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert out.err.count("duplicate_file") == 2

    rows = ledger(engine)
    assert rows[0] == applied_row  # the first file's ledger row, every column
    assert [(r["original_name"], r["state"]) for r in rows[1:]] == [
        ("a.csv", "duplicate_file"),
        ("a.csv", "duplicate_file"),
        ("b.csv", "duplicate_file"),
    ]
    for row in rows[1:]:
        assert row["data_lines"] == 0 and all(row[o] == 0 for o in OUTCOMES)
        assert row["content_hash"] == sha256(A_CSV)
    assert rows[1]["received_at"] == DAY1 + timedelta(hours=12)
    assert same_day.state == "duplicate_file"

    assert site.export_bytes() == before_export
    assert count(engine, "conversion_history") == history_before
    # The first file's archived copy and its sidecar (its received time, for replays) stay.
    archive_after = tree(site.layout.archive)
    for name, data in archive_before.items():
        assert archive_after[name] == data, name
    today = {p.split("/")[0] for p in archive_after} - {"2026-07-02"}
    assert len(today) == 1 and len(archive_after) == 6  # a.csv and b.csv archived today
    reports_after = tree(site.layout.reports)
    for name, data in reports_before.items():
        assert reports_after[name] == data, name
    # ... and each duplicate has a summary of its own.
    duplicates = [summary(r["summary_path"]) for r in rows[1:]]
    assert [(s["state"], s["file_id"]) for s in duplicates] == [
        ("duplicate_file", r["file_id"]) for r in rows[1:]
    ]
    assert files_left(site.layout.processing) == []
    assert waiting_files(site.layout) == {}


def test_a_replay_without_force_is_a_duplicate_and_with_force_applies_again(site, engine):
    site.process_on(engine, "maxbounty/a.csv", A_CSV, DAY1)
    before_export = site.export_bytes()
    archive_before = tree(site.layout.archive)
    reports_before = tree(site.layout.reports)
    ctx = site.context(engine)
    [ticket] = steps.archived_tickets(ctx, date(2026, 7, 2), date(2026, 7, 2))
    assert (ticket["received_at"], ticket["content_hash"]) == (DAY1.isoformat(), sha256(A_CSV))

    plain = steps.replay(ctx, ticket, run_id="manual__one", dry_run=False, force=False)
    assert (plain["state"], plain["data_lines"]) == ("duplicate_file", 0)
    assert site.export_bytes() == before_export
    assert Path(plain["summary_path"]).is_relative_to(
        site.layout.reports / "replays" / "manual__one"
    )
    assert [r["state"] for r in ledger(engine)] == ["applied", "duplicate_file"]

    forced = steps.replay(ctx, ticket, run_id="manual__two", dry_run=False, force=True)
    assert (forced["state"], forced["outcomes"]["incremented"]) == ("applied", 1)
    assert (forced["outcomes"]["ignored_duplicate"], forced["outcomes"]["rejected"]) == (1, 1)
    assert exported_rows(site.export_bytes()) == [
        A_EXPORT[0],
        ("p1", "Purchase", "approved", "5.00", "USD", "2026-07-01T19:00:00Z"),  # 2.50 + 2.50
    ]
    replay_folder = site.layout.reports / "replays" / "manual__two"
    for key in ("report_path", "summary_path"):
        assert Path(forced[key]).is_relative_to(replay_folder)
    assert summary(forced["summary_path"])["state"] == "applied"
    # The original run's reports and the archive are untouched by either replay.
    after = tree(site.layout.reports)
    for name, data in reports_before.items():
        assert after[name] == data, name
    assert tree(site.layout.archive) == archive_before
    [row] = [r for r in ledger(engine) if r["file_id"] == forced["file_id"]]
    assert (row["state"], row["forced"]) == ("applied", True)


def test_every_result_for_the_same_day_name_and_bytes_has_its_own_report(
    site, engine, capsys, monkeypatch
):
    """Regression: a dry run, a quarantine or a forced re-apply of bytes applied the same day under
    the same name used to write over the applied file's report and summary (same paths).

    The internal_error step fakes a bug (monkeypatch), the only way to reach that path on purpose.
    """
    path = write_csv(site.root / "files" / "a.csv", A_CSV)
    at = ["--received-at", DAY1.isoformat(), "--offer-source", "maxbounty"]
    assert site.main("ingest", *at, "--dry-run", str(path)) == 0  # a rehearsal first
    assert site.main("ingest", *at, str(path)) == 0
    rows = ledger(engine)
    applied = rows[1]
    assert [r["state"] for r in rows] == ["dry_run", "applied"]
    day = site.layout.reports / "2026-07-02"
    assert (applied["report_path"], applied["summary_path"]) == (
        str(day / f"a.{sha256(A_CSV)[:12]}.rejected.csv"),
        str(day / f"a.{sha256(A_CSV)[:12]}.summary.json"),
    )
    kept = {p: Path(p).read_bytes() for p in (applied["report_path"], applied["summary_path"])}

    # A forced dry run under another mode (every row now lacks an event id: another report;
    # every row rejected, so the CLI exits 1 for it: all_rows_rejected).
    assert (
        site.main("ingest", *at, "--dry-run", "--force", "--mode", "ignore_by_event_id", str(path))
        == 1
    )
    # The same bytes quarantined after a config change (the limit is now below the file's size).
    strict = site.root / "strict.toml"
    strict_toml = CONFIG.replace("[settings]\n", "[settings]\nmax_file_bytes = 10\n", 1)
    strict.write_text(strict_toml, encoding="utf-8")
    assert cli.main(["ingest", *site.options(), "--config", str(strict), *at, str(path)]) == 1
    # A forced re-apply the same day (increments p1).
    assert site.main("ingest", *at, "--force", str(path)) == 0

    # The same bytes dropped again the same day under the same name, hitting a bug.
    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "ingest_file", bug)
    crashed = site.process_on(engine, "maxbounty/a.csv", A_CSV, DAY1 + timedelta(hours=1))
    monkeypatch.undo()
    assert (crashed.state, crashed.reason_code) == ("quarantined", "internal_error")
    capsys.readouterr()

    for p, data in kept.items():
        assert Path(p).read_bytes() == data, p
    rows = ledger(engine)
    assert [(r["state"], r["forced"]) for r in rows] == [
        ("dry_run", False),
        ("applied", False),
        ("dry_run", True),
        ("quarantined", False),
        ("applied", True),
    ]
    summaries = [r["summary_path"] for r in rows] + [crashed.summary_path]
    assert None not in summaries and len(set(summaries)) == len(summaries)
    for row in rows:
        own = summary(row["summary_path"])
        assert (own["state"], own["file_id"]) == (row["state"], row["file_id"])
        assert Path(row["summary_path"]).parent == day
    assert summary(crashed.summary_path)["reason_code"] == "internal_error"
    reports_ = [r["report_path"] for r in rows if r["state"] in ("applied", "dry_run")]
    assert len(set(reports_)) == 4 and all(Path(p).is_file() for p in reports_)
    # Each report holds its own result's rejections: hand-worked counts per run.
    rejected_per_report = []
    for p in reports_:
        with open(p, encoding="utf-8-sig", newline="") as fh:
            rejected_per_report.append([(r["line"], r["reason_code"]) for r in csv.DictReader(fh)])
    assert rejected_per_report == [
        [("4", "invalid_payout")],
        [("4", "invalid_payout")],
        # every problem of a row is reported: line 4 lacks an event id as well
        [
            ("2", "missing_event_id"),
            ("3", "missing_event_id"),
            ("4", "invalid_payout|missing_event_id"),
        ],
        [("4", "invalid_payout")],
    ]
    assert summary(rows[3]["summary_path"])["reason_code"] == "file_too_large"
    assert exported_rows(site.export_bytes())[1][3] == "5.00"  # forced once: 2.50 + 2.50


# --- B1. the warehouse cannot be opened -------------------------------------------------------


def broken_urls(root: Path) -> list[tuple[str, str]]:
    """(URL, how it is named in the error) for warehouses that cannot be opened."""
    a_file = root / "not-a-folder"
    a_file.write_text("x")
    return [
        (
            "postgresql+psycopg://loader:s3cret@127.0.0.1:1/warehouse",
            "postgresql+psycopg://loader:***@127.0.0.1:1/warehouse",
        ),
        (
            f"sqlite:///{root / 'no' / 'such' / 'w.db'}",
            f"sqlite:///{root / 'no' / 'such' / 'w.db'}",
        ),
        # Not writable, even for root: its "folder" is a file.
        (f"sqlite:///{a_file / 'w.db'}", f"sqlite:///{a_file / 'w.db'}"),
    ]


def test_an_unreachable_warehouse_stops_the_inbox_before_it_claims_anything(tmp_path, capsys):
    """The first URL runs `conversions inbox` as a subprocess (what a user sees, password
    included); the others run it in-process, which is quicker and sees the same output."""
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'good.db'}")
    site.drop("maxbounty/a.csv", A_CSV)
    site.drop("clickbank/c.csv", "click_id,payout\nc1,1.00\n")
    waiting = waiting_files(site.layout)
    for n, (url, named) in enumerate(broken_urls(tmp_path)):
        if n == 0:
            done = site.run("inbox", url=url)
            code, out, err = done.returncode, done.stdout, done.stderr
        else:
            capsys.readouterr()
            code = site.main("inbox", url=url)
            out, err = capsys.readouterr()
        assert code == 1, err
        line = first_line_error(err)
        assert line.startswith(f"error: cannot open the warehouse {named}: "), line
        assert "s3cret" not in err + out
        assert out == ""
        assert waiting_files(site.layout) == waiting
        assert files_left(site.home) == sorted(f"inbox/{p}" for p in waiting)  # nothing claimed

    assert site.main("inbox") == 0  # the warehouse is back
    engine = warehouse.connect(site.url)
    try:
        assert [(r["original_name"], r["state"]) for r in ledger(engine)] == [
            ("c.csv", "applied"),
            ("a.csv", "applied"),
        ]
    finally:
        engine.dispose()
    assert waiting_files(site.layout) == {}


# --- B2. the connection dies in the middle of a file ------------------------------------------

pg_only = pytest.mark.skipif(not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set")


def generated(path: Path, rows: int) -> bytes:
    generate.write(path, rows, seed=11)
    return path.read_bytes()


MERGE_LOCK_HOLDERS = (
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = :app "
    "AND l.classid::bigint = (hashtextextended(:k, 0) >> 32) & 4294967295 "
    "AND l.objid::bigint = hashtextextended(:k, 0) & 4294967295"
)


def merge_lock(admin, select_what: str, application_name: str, offer_source: str) -> list:
    """``SELECT <select_what>`` over the backends of ``application_name`` that hold the offer
    source's merge lock, i.e. are inside a file's transaction (warehouse.file_transaction)."""
    params = {"app": application_name, "k": f"conversions:offer_source:{offer_source}"}
    with admin.connect() as conn:
        return list(
            conn.execute(text(f"SELECT {select_what} {MERGE_LOCK_HOLDERS}"), params).scalars()
        )


@pg_only
@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_connection_killed_mid_file_rolls_back_and_the_next_run_applies_it_once(
    tmp_path, warehouse_url, engine
):
    """A real fault: `pg_terminate_backend` on the worker's backend while it holds the merge lock
    of a 20,000-row file (benchmarks/generate.py). PostgreSQL only: SQLite has no server."""
    content = generated(tmp_path / "big.csv", 20_000)
    app = f"faults_{uuid.uuid4().hex[:8]}"
    worker_url = (
        make_url(warehouse_url)
        .update_query_dict({"application_name": app})
        .render_as_string(hide_password=False)
    )
    site = Site(tmp_path, worker_url)
    site.drop("maxbounty/big.csv", content)
    admin = create_engine(POSTGRES_URL)
    env = clean_env()
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "inbox", *site.options()],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        holders: list[int] = []
        while not holders and worker.poll() is None and time.monotonic() < deadline:
            holders = merge_lock(admin, "l.pid", app, "maxbounty")
            time.sleep(0.02)
        assert holders, "the worker never got inside the file's transaction"
        time.sleep(0.3)  # well inside: reading, staging and merging 20,000 rows take seconds
        # Only a backend still holding the lock is killed: the kill lands inside the transaction.
        killed = merge_lock(admin, "pg_terminate_backend(l.pid)", app, "maxbounty")
        assert killed == [True], "the file's transaction ended before the kill"
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        admin.dispose()

    assert worker.returncode == 1, err
    assert "Traceback" not in err
    assert "failed" in err and "maxbounty/big.csv" in err
    assert "put back in the inbox" in " ".join(out.split())  # the block wraps at 100 columns
    # All or nothing: not a row, not a ledger entry, not a report.
    assert ledger(engine) == []
    for table in ("conversions", "conversion_history", "rejected_rows"):
        assert count(engine, table) == 0, table
    assert files_left(site.layout.reports) == []
    assert files_left(site.layout.processing) == []
    assert waiting_files(site.layout) == {"maxbounty/big.csv": content}

    again = site.run("inbox")
    assert again.returncode == 0, again.stderr
    [row] = ledger(engine)
    assert (row["state"], row["data_lines"]) == ("applied", 20_000)
    recovered = site.export_bytes()

    # A clean run of the same bytes, received at the same time, into a warehouse of its own.
    clean = warehouse.connect(f"sqlite:///{tmp_path / 'clean.db'}")
    try:
        reference = ingest_file(
            Context(site.config, clean, LocalDataDir(tmp_path)),
            Upload(
                tmp_path / "big.csv",
                "maxbounty",
                received_at=row["received_at"],
                name="big.csv",
                reports_dir=tmp_path / "clean-reports",
            ),
        )
        assert_accounted(reference, tmp_path / "big.csv", clean)
        buffer = io.StringIO(newline="")
        export.write(clean, site.config, buffer)
    finally:
        clean.dispose()
    assert recovered == buffer.getvalue().encode("utf-8")
    assert {o: row[o] for o in OUTCOMES} == reference.outcomes


# --- B3. reports cannot be written ----------------------------------------------------------

MANY_REJECTED_ROWS = 600  # ~100 KB of report: more than the 64 KB tmpfs below


def with_rejections(rows: int = MANY_REJECTED_ROWS) -> str:
    good = "ok1,1.00,2026-07-01 14:00:00\n"
    bad = "".join(f"bad{i:05d},not-a-payout-{i:05d},2026-07-01 14:00:00\n" for i in range(rows))
    return "click_id,payout,conversion_time\n" + good + bad


def assert_not_applied_and_back_in_the_inbox(site: Site, engine, content: str) -> None:
    assert [r for r in ledger(engine) if r["state"] == "applied"] == []
    assert count(engine, "conversions") == 0 and count(engine, "rejected_rows") == 0
    assert waiting_files(site.layout) == {"maxbounty/a.csv": content.encode()}
    assert files_left(site.layout.processing) == []
    assert files_left(site.layout.archive) == []


def assert_applied_once(site: Site, engine, capsys, content: str) -> None:
    capsys.readouterr()
    assert site.main("inbox") == 0
    [row] = ledger(engine)
    assert (row["state"], row["inserted"], row["rejected"]) == (
        "applied",
        1,
        content.count("\n") - 2,
    )
    assert exported_rows(site.export_bytes()) == [
        ("ok1", "", "approved", "1.00", "USD", "2026-07-01T18:00:00Z")
    ]
    with open(row["report_path"], encoding="utf-8-sig", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == row["rejected"]
    assert summary(row["summary_path"])["state"] == "applied"


def test_a_reports_folder_that_cannot_be_written_applies_nothing(site, engine, capsys):
    """Not writable: chmod 0o500 when not root; root writes anyway, so there the day's report
    folder is made a file instead (a real ENOTDIR/EEXIST from the file system either way)."""
    site.layout.ensure(site.config.offer_sources)
    site.drop("maxbounty/a.csv", A_CSV)
    reports_dir = site.layout.reports
    blockers = []
    if os.geteuid() != 0:
        reports_dir.chmod(0o500)
    else:
        today = datetime.now(UTC).date()
        for day in (today, today + timedelta(days=1)):  # in case the run crosses midnight
            blocker = reports_dir / day.isoformat()
            blocker.write_text("not a folder")
            blockers.append(blocker)
    try:
        capsys.readouterr()
        assert site.main("inbox") == 1
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        assert "failed" in out.err and "put back in the inbox" in " ".join(out.out.split())
        assert_not_applied_and_back_in_the_inbox(site, engine, A_CSV)
    finally:
        reports_dir.chmod(0o755)
        for blocker in blockers:
            blocker.unlink()
    assert [p for p in files_left(reports_dir)] == []

    capsys.readouterr()
    assert site.main("inbox") == 0
    [row] = ledger(engine)
    assert (row["state"], row["inserted"], row["rejected"]) == ("applied", 2, 1)
    assert exported_rows(site.export_bytes()) == A_EXPORT


@contextmanager
def small_disk(folder: Path, size: str = "64k") -> Iterator[bool]:
    """Mount a tmpfs of ``size`` on ``folder`` if this process may; yields whether it did."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def test_a_full_disk_while_writing_the_report_applies_nothing(site, engine, capsys, monkeypatch):
    """A real ENOSPC where the test may mount a 64 KB tmpfs on the reports folder (root with
    CAP_SYS_ADMIN); elsewhere the report writer is monkeypatched to raise ENOSPC instead."""
    content = with_rejections()
    site.layout.ensure(site.config.offer_sources)
    site.drop("maxbounty/a.csv", content)
    with small_disk(site.layout.reports) as real:
        if not real:

            def full(self, rows):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(reports.RejectionReport, "write", full)
        capsys.readouterr()
        assert site.main("inbox") == 1
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        assert "No space left on device" in " ".join(
            out.out.split()
        ) and "put back in the inbox" in " ".join(out.out.split())
        assert_not_applied_and_back_in_the_inbox(site, engine, content)
        assert files_left(site.layout.reports) == []  # not even a partial report
    monkeypatch.undo()
    assert_applied_once(site, engine, capsys, content)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until its file system is full; returns the filler."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_keeps_the_received_time(tmp_path, monkeypatch):
    """The data directory and its SQLite warehouse on one small tmpfs (where this test may mount
    one) that fills up while a file is processed: the file goes back to the inbox, and although
    no new byte can be written its received-time record is there (claim.json renamed into
    place), so the rerun stores its empty time as the first claim's received time. Where no
    tmpfs can be mounted, writing the record fails with ENOSPC instead."""
    home = tmp_path / "home"
    with small_disk(home, "2m") as real:
        engine = warehouse.connect(f"sqlite:///{home / 'warehouse.db'}")
        ctx = Context(
            config_module.parse(
                {
                    "settings": {"settle_seconds": 0},
                    "accounts": {"a": {"timezone": "UTC"}},
                    "offer_sources": {"net": {"account": "a"}},
                }
            ),
            engine,
            LocalDataDir(home),
        )
        ctx.datadir.ensure(["net"])
        write_csv(home / "inbox/net/a.csv", "click_id,payout,conversion_time\nd1,1.00,\n")
        received = []
        real_ingest = runner.ingest_file
        fillers = []

        def ingest_on_a_full_disk(ctx, upload):
            received.append(upload.received_at)
            if real:
                fillers.append(fill(home))
            else:
                real_write_json = claims.write_json

                def no_space(path, data):
                    if path.name.endswith(".received.json"):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    return real_write_json(path, data)

                monkeypatch.setattr(claims, "write_json", no_space)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_ingest(ctx, upload)

        monkeypatch.setattr(runner, "ingest_file", ingest_on_a_full_disk)
        [first] = runner.run_inbox(ctx)
        assert first.state == "failed", first
        assert (home / "inbox/net/a.csv").exists()
        assert list((home / "processing").iterdir()) == []
        monkeypatch.undo()
        for filler in fillers:
            filler.unlink()
        time.sleep(1.1)  # received times are whole seconds: a new one would differ
        [again] = runner.run_inbox(ctx)
        assert again.state == "applied", again
        assert again.received_at == received[0].isoformat()
        # The empty conversion time is the first claim's received time, written as UTC.
        stored = export.frame(engine, ctx.config)["converted_at"].tolist()
        assert stored == [received[0].strftime("%Y-%m-%dT%H:%M:%SZ")]
        engine.dispose()


def test_a_summary_that_cannot_be_written_removes_the_committed_report(site, engine, capsys):
    """The report is committed, then the summary fails (a folder holds its name: a real EISDIR),
    all before the transaction commits: the report goes, nothing is applied."""
    content = with_rejections(3)
    site.layout.ensure(site.config.offer_sources)
    site.drop("maxbounty/a.csv", content)
    today = datetime.now(UTC).date()
    traps = [
        site.layout.reports / d.isoformat() / f"a.{sha256(content)[:12]}.summary.json"
        for d in (today, today + timedelta(days=1))
    ]
    for trap in traps:
        trap.mkdir(parents=True)
    capsys.readouterr()
    assert site.main("inbox") == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "put back in the inbox" in " ".join(out.out.split())
    assert_not_applied_and_back_in_the_inbox(site, engine, content)
    assert files_left(site.layout.reports) == []  # the committed rejection report was removed
    for trap in traps:
        trap.rmdir()
    assert_applied_once(site, engine, capsys, content)


# --- B4. the config changed since the file came in --------------------------------------------

BEFORE_CHANGE = (
    CONFIG
    + """
[offer_sources.gone]
account = "utc"
"""
)
AFTER_CHANGE = sample_config("faults_after_change.toml")  # and the offer source "gone" is gone

CLICKBANK_OLD = (
    "click_id,payout,conversion_time\n"
    "c1,1.00,2026-03-08 02:30:00\n"  # UTC then; in New York's DST gap now
    "c2,2.00,2026-03-09T12:00:00Z\n"  # explicit: the same instant under any zone
)
MAXBOUNTY_OLD = (
    "click_id,payout,conversion_time,event_id\n"
    "m1,5.00,2026-07-01 14:00:00,\n"  # no event id: missing_event_id now
    "m3,1.00,2026-07-01 14:00:00,E3\n"  # the same key incl. event id: ignored_duplicate
)


def test_config_changes_make_old_files_reported_per_file_never_a_crash(
    tmp_path, warehouse_url, engine, capsys
):
    site = Site(tmp_path, warehouse_url, BEFORE_CHANGE)
    site.process_on(engine, "clickbank/c.csv", CLICKBANK_OLD, DAY1)
    site.process_on(engine, "maxbounty/a.csv", MAXBOUNTY_OLD, DAY1)
    site.process_on(engine, "gone/g.csv", "click_id,payout\ng1,1.00\n", DAY1)
    # A file of "gone" claimed by a worker that died; the next run adopts it after the change.
    site.drop("gone/late.csv", "click_id,payout\ng9,9.00\n")
    ctx = site.context(engine)
    [waiting] = claims.scan(ctx.datadir.layout, ctx.config.offer_sources)
    orphan = claims.claim(ctx.datadir.layout, waiting)
    claim_json = orphan.path.parent / claims.CLAIM_FILE
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    record = json.loads(claim_json.read_text(encoding="utf-8"))
    claim_json.write_text(json.dumps(record | {"pid": int(dead.stdout)}), encoding="utf-8")
    before = exported_rows(site.export_bytes())
    assert sorted(before) == [
        ("c1", "", "approved", "1.00", "EUR", "2026-03-08T02:30:00Z"),
        ("c2", "", "approved", "2.00", "EUR", "2026-03-09T12:00:00Z"),
        ("g1", "", "approved", "1.00", "EUR", "2026-07-02T08:00:00Z"),
        ("m1", "", "approved", "5.00", "USD", "2026-07-01T18:00:00Z"),
        ("m3", "", "approved", "1.00", "USD", "2026-07-01T18:00:00Z"),
    ]

    archived_before = tree(site.layout.archive)
    site.config_path.write_text(AFTER_CHANGE, encoding="utf-8")
    site.drop("maxbounty/new.csv", "click_id,payout,event_id\nn1,3.00,E1\n")  # unaffected
    capsys.readouterr()
    assert site.main("inbox") == 1  # the orphan is quarantined (exit 1), nothing crashes
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert "quarantined" in out.err and "applied" in out.err
    assert [r["state"] for r in ledger(engine) if r["original_name"] == "new.csv"] == ["applied"]
    [reason] = list(site.layout.quarantine.rglob("*late.csv.reason.json"))
    assert json.loads(reason.read_text(encoding="utf-8"))["code"] == "unknown_offer_source"

    # A forced replay of the three archived files under the new config, in one run.
    ctx = site.context(engine)
    tickets = steps.archived_tickets(ctx, date(2026, 7, 2), date(2026, 7, 2))
    assert [t["file"] for t in tickets] == ["clickbank/c.csv", "gone/g.csv", "maxbounty/a.csv"]
    got = [steps.replay(ctx, t, run_id="after_change", dry_run=False, force=True) for t in tickets]
    assert [(g["state"], g["reason_code"]) for g in got] == [
        ("applied", None),
        ("quarantined", "unknown_offer_source"),
        ("applied", None),
    ]
    assert "gone" in got[1]["detail"]
    assert (got[0]["reasons"], got[0]["outcomes"]["updated"]) == ({"nonexistent_local_time": 1}, 1)
    assert (got[2]["reasons"], got[2]["outcomes"]["ignored_duplicate"]) == (
        {"missing_event_id": 1},
        1,
    )
    for g in got:
        assert summary(g["summary_path"])["state"] == g["state"]
    after = exported_rows(site.export_bytes())
    assert after[:-1] == before  # nothing else changed; n1 came in today
    assert after[-1][:5] == ("n1", "", "approved", "3.00", "USD")
    archived_after = tree(site.layout.archive)
    assert {k: archived_after[k] for k in archived_before} == archived_before
    assert len(archived_after) == len(archived_before) + 2  # and new.csv, archived today
