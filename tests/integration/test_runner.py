"""The inbox runner on real folders and a real warehouse (SQLite and PostgreSQL).

Expectations are worked out by hand from the files written here: New York is GMT-4 in July,
Dubai GMT+4 all year; maxbounty (New York, ignore; Purchase increments) reads account time,
clickbank (Dubai, edit) reads UTC.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from pipeline import datadir, export, runner, warehouse
from pipeline.context import Context
from pipeline.core.vocabulary import OUTCOMES
from pipeline.datadir import claims, filing
from pipeline.ingest import Upload, ingest_file
from pipeline.results import FileResult
from tests.helpers import assert_accounted, make_config, write_csv
from tests.integration.datadir_helpers import (
    DATA_DIRECTORIES,
    claims_held,
    context_on,
    put_in_inbox,
    read_written,
    stored,
)

RECEIVED = datetime(2026, 7, 1, 18, 0, 0, tzinfo=UTC)


@pytest.fixture
def ctx(tmp_path, engine) -> Context:
    return Context(make_config(), engine, datadir.LocalDataDir(tmp_path / "home"))


def drop(ctx: Context, relative: str, content: str) -> Path:
    return write_csv(ctx.datadir.layout.inbox / relative, content)


@pytest.fixture(params=DATA_DIRECTORIES)
def any_ctx(request, tmp_path, engine) -> Context:
    """For the tests that hold on any data directory: a local folder, or a bucket of the moto
    server (`test_objectstore_runner` has the S3 forms of the others)."""
    return context_on(request, make_config(), engine, tmp_path)


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def conversions(ctx: Context) -> list[tuple]:
    data = export.frame(ctx.engine, ctx.config)
    return [
        (r.offer_source, r.click_id, r.conversion_type, r.status, r.payout, r.converted_at)
        for r in data.itertuples()
    ]


def ledger(ctx: Context) -> list[dict]:
    f = warehouse.ingested_files
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(f).order_by(f.c.file_id)).mappings().all()
    return [dict(r) for r in rows]


def sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def claim_of_a_dead_worker(claimed: datadir.Claimed) -> None:
    """Rewrite claim.json as if the worker that claimed the file had died since."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    path = claimed.path.parent / claims.CLAIM_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(record | {"pid": int(done.stdout)}), encoding="utf-8")


def counts(result: FileResult) -> tuple[int, ...]:
    return (result.data_lines, *(result.outcomes[o] for o in OUTCOMES))


# --- a normal pass -----------------------------------------------------------------------------

MAXBOUNTY = (
    "click_id,payout,conversion_time\n"
    "m1,5.00,2026-07-01 14:00:00\n"  # 18:00Z
    "m2,x,2026-07-01 15:00:00\n"  # line 3: invalid payout
)
CLICKBANK = "click_id,payout,conversion_time\nc1,7.25,2026-07-01 10:00:00\n"  # UTC file
STATUS = "click_id,status\nm1,declined\n"


def test_run_inbox_applies_two_offer_sources_archives_and_reports(ctx):
    drop(ctx, "maxbounty/a.csv", MAXBOUNTY)
    drop(ctx, "maxbounty/status/s.csv", STATUS)  # sorts after a.csv, so m1 exists by then
    drop(ctx, "clickbank/c.csv", CLICKBANK)
    seen = []
    results = runner.run_inbox(ctx, on_file=seen.append)

    assert seen == results
    assert [(r.offer_source, r.name, r.kind, r.state) for r in results] == [
        ("clickbank", "c.csv", "conversions", "applied"),
        ("maxbounty", "a.csv", "conversions", "applied"),
        ("maxbounty", "s.csv", "status", "applied"),
    ]
    assert [counts(r) for r in results] == [
        # lines, inserted, updated, incremented, status_updated, ignored_duplicate, rejected
        (1, 1, 0, 0, 0, 0, 0),
        (2, 1, 0, 0, 0, 0, 1),
        (1, 0, 0, 0, 1, 0, 0),
    ]
    for result in results:
        assert_accounted(result, engine=ctx.engine)
    assert runner.exit_code(results) == 0

    assert conversions(ctx) == [
        ("clickbank", "c1", "", "approved", "7.25", "2026-07-01T10:00:00Z"),
        ("maxbounty", "m1", "", "declined", "5.00", "2026-07-01T18:00:00Z"),
    ]
    assert files_under(ctx.datadir.layout.inbox) == []
    assert files_under(ctx.datadir.layout.processing) == []
    day = results[0].received_at[:10]
    assert files_under(ctx.datadir.layout.archive) == sorted(
        [
            f"{day}/clickbank/conversions/{sha256(CLICKBANK)[:16]}_c.csv",
            f"{day}/clickbank/conversions/{sha256(CLICKBANK)[:16]}_c.csv.json",
            f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv",
            f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv.json",
            f"{day}/maxbounty/status/{sha256(STATUS)[:16]}_s.csv",
            f"{day}/maxbounty/status/{sha256(STATUS)[:16]}_s.csv.json",
        ]
    )
    archived = ctx.datadir.layout.archive / day / "maxbounty" / "conversions"
    assert (archived / f"{sha256(MAXBOUNTY)[:16]}_a.csv").read_text() == MAXBOUNTY
    sidecar = json.loads((archived / f"{sha256(MAXBOUNTY)[:16]}_a.csv.json").read_text())
    assert (sidecar["relative"], sidecar["content_hash"]) == ("maxbounty/a.csv", sha256(MAXBOUNTY))

    # Reports: a rejection report per file (header only when nothing was rejected), a summary.
    a = results[1]
    with open(a.report_path, encoding="utf-8-sig", newline="") as fh:
        rejected = list(csv.DictReader(fh))
    assert [(r["line"], r["click_id"], r["payout"], r["reason_code"]) for r in rejected] == [
        ("3", "m2", "x", "invalid_payout")
    ]
    summary = json.loads(Path(a.summary_path).read_text(encoding="utf-8"))
    assert (summary["state"], summary["data_lines"], summary["outcomes"]["rejected"]) == (
        "applied",
        2,
        1,
    )
    assert summary["content_hash"] == sha256(MAXBOUNTY)
    assert [(r["original_name"], r["state"], r["claim_id"] is not None) for r in ledger(ctx)] == [
        ("c.csv", "applied", True),
        ("a.csv", "applied", True),
        ("s.csv", "applied", True),
    ]

    assert runner.run_inbox(ctx) == []  # nothing left to do


def test_the_same_bytes_dropped_again_are_archived_as_a_duplicate(any_ctx):
    ctx = any_ctx
    put_in_inbox(ctx, "maxbounty/a.csv", MAXBOUNTY)
    [first] = runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/again.csv", MAXBOUNTY)
    [again] = runner.run_inbox(ctx)
    assert (first.state, again.state) == ("applied", "duplicate_file")
    assert runner.exit_code([again]) == 0
    assert counts(again) == (0, 0, 0, 0, 0, 0, 0)
    assert [r.click_id for r in export.frame(ctx.engine, ctx.config).itertuples()] == ["m1"]
    assert [r["state"] for r in ledger(ctx)] == ["applied", "duplicate_file"]
    assert stored(ctx, "inbox") == {}
    assert [p.endswith("_again.csv") for p in stored(ctx, "archive")].count(True) == 1


def test_a_duplicate_under_the_same_name_keeps_the_applied_files_summary(any_ctx):
    ctx = any_ctx
    put_in_inbox(ctx, "maxbounty/a.csv", MAXBOUNTY)
    [first] = runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/a.csv", MAXBOUNTY)  # same bytes, same name, same day
    [again] = runner.run_inbox(ctx)
    assert (first.state, again.state) == ("applied", "duplicate_file")
    assert again.summary_path != first.summary_path
    applied = json.loads(read_written(ctx, first.summary_path))
    assert (applied["state"], applied["outcomes"]["inserted"]) == ("applied", 1)
    duplicate = json.loads(read_written(ctx, again.summary_path))
    assert (duplicate["state"], duplicate["file_id"]) == ("duplicate_file", again.file_id)
    assert read_written(ctx, first.report_path)  # the applied file's rejection report stays too


def test_stray_files_are_quarantined_and_change_nothing(any_ctx):
    ctx = any_ctx
    put_in_inbox(ctx, "stray.csv", "click_id,payout\nz1,1.00\n")
    put_in_inbox(ctx, "nosuchsource/x.csv", "click_id,payout\nz2,1.00\n")
    results = runner.run_inbox(ctx)
    assert [(r.name, r.state, r.reason_code) for r in results] == [
        ("x.csv", "quarantined", "unknown_offer_source"),
        ("stray.csv", "quarantined", "unknown_offer_source"),
    ]
    assert runner.exit_code(results) == 1
    assert ledger(ctx) == [] and conversions(ctx) == []
    quarantined = stored(ctx, "quarantine")
    assert len(quarantined) == 4  # two files, each beside its .reason.json
    assert sum(p.endswith("_stray.csv") for p in quarantined) == 1
    for result in results:
        summary = json.loads(read_written(ctx, result.summary_path))
        assert (summary["state"], summary["reason_code"]) == ("quarantined", "unknown_offer_source")


# --- crashes and failures ----------------------------------------------------------------------


def test_a_crash_after_apply_before_archive_is_adopted_without_applying_twice(ctx):
    # maxbounty's Purchase type is increment_payout: applying the file twice would show.
    drop(ctx, "maxbounty/1.csv", "click_id,payout,conversion_type\np1,5.00,Purchase\n")
    runner.run_inbox(ctx)
    content = "click_id,payout,conversion_type\np1,10.00,Purchase\n"
    drop(ctx, "maxbounty/2.csv", content)

    [claimed] = runner.claim_waiting(ctx)
    applied = ingest_file(
        ctx,
        Upload(
            claimed.path,
            "maxbounty",
            received_at=claimed.received_at,
            claim_id=claimed.claim_id,
            reports_dir=ctx.datadir.layout.reports,
        ),
    )
    assert counts(applied) == (1, 0, 0, 1, 0, 0, 0)
    # ... and the worker died here, before archiving.

    assert runner.run_inbox(ctx) == []  # the claim's owner (this process) is alive: left alone
    assert files_under(ctx.datadir.layout.processing) == [
        f"{claimed.claim_id}/2.csv",
        f"{claimed.claim_id}/claim.json",
    ]

    claim_of_a_dead_worker(claimed)
    [adopted] = runner.run_inbox(ctx)
    assert (adopted.name, adopted.state, adopted.file_id) == ("2.csv", "applied", applied.file_id)
    assert counts(adopted) == (1, 0, 0, 1, 0, 0, 0)
    assert adopted.content_hash == sha256(content)
    assert adopted.received_at == claimed.received_at.isoformat() == applied.received_at
    assert runner.exit_code([adopted]) == 0

    [p1] = export.frame(ctx.engine, ctx.config).itertuples()
    assert p1.payout == "15.00"  # 5.00 + 10.00 once, not 25.00
    assert [(r["original_name"], r["state"]) for r in ledger(ctx)] == [
        ("1.csv", "applied"),
        ("2.csv", "applied"),
    ]
    with ctx.engine.connect() as conn:
        actions = conn.execute(
            text("SELECT action FROM conversion_history ORDER BY history_id")
        ).scalars()
        assert len(list(actions)) == 2  # the insert and one increment
    assert files_under(ctx.datadir.layout.processing) == []
    assert sum(p.endswith("_2.csv") for p in files_under(ctx.datadir.layout.archive)) == 1


def test_a_crash_before_apply_is_adopted_with_the_original_received_time(ctx):
    ctx.datadir.layout.ensure(ctx.config.offer_sources)
    drop(ctx, "maxbounty/late.csv", "click_id,payout,conversion_time\nr1,1.00,\n")
    [waiting] = claims.scan(ctx.datadir.layout, ctx.config.offer_sources)
    claimed = claims.claim(ctx.datadir.layout, waiting, now=RECEIVED)
    claim_of_a_dead_worker(claimed)  # died before touching the warehouse

    [result] = runner.run_inbox(ctx)
    assert (result.state, counts(result)) == ("applied", (1, 1, 0, 0, 0, 0, 0))
    # An empty time is the received time: the first claim's, not the adopter's.
    assert conversions(ctx) == [("maxbounty", "r1", "", "approved", "1.00", "2026-07-01T18:00:00Z")]
    [row] = ledger(ctx)
    assert (row["state"], row["received_at"]) == ("applied", RECEIVED)
    assert row["claim_id"] not in (None, claimed.claim_id)  # recorded under the adopter's id
    assert (
        sum(p.startswith("2026-07-01/maxbounty/") for p in files_under(ctx.datadir.layout.archive))
        == 2
    )


def test_an_oversized_file_adopted_after_a_crash_is_cleaned_up_and_quarantined_unread(
    tmp_path, engine
):
    """The dead worker left a report partial under the name ingest_file gives an unread file
    (the all-zero placeholder hash), not under the file's real hash: recovery must find it
    without hashing the file."""
    ctx = Context(
        make_config(settings={"max_file_bytes": 10}),
        engine,
        datadir.LocalDataDir(tmp_path / "home"),
    )
    ctx.datadir.layout.ensure(ctx.config.offer_sources)
    drop(ctx, "maxbounty/big.csv", MAXBOUNTY)
    [waiting] = claims.scan(ctx.datadir.layout, ctx.config.offer_sources)
    claimed = claims.claim(ctx.datadir.layout, waiting, now=RECEIVED)
    claim_of_a_dead_worker(claimed)
    day = ctx.datadir.layout.reports / "2026-07-01"
    day.mkdir(parents=True)
    partial = day / f"big.{'0' * 12}.summary.json.0123abcd.partial"
    partial.write_text("{")

    [result] = runner.run_inbox(ctx)

    assert (result.state, result.reason_code) == ("quarantined", "file_too_large")
    assert not partial.exists()


def test_a_warehouse_error_puts_the_file_back_and_the_next_run_applies_it(ctx):
    drop(ctx, "maxbounty/a.csv", MAXBOUNTY)
    ctx.datadir.layout.ensure(ctx.config.offer_sources)
    with ctx.engine.begin() as conn:  # the merge's table is gone: every file fails
        conn.execute(text("ALTER TABLE conversions RENAME TO conversions_gone"))

    [failed] = runner.run_inbox(ctx)
    assert (failed.name, failed.offer_source, failed.state) == ("a.csv", "maxbounty", "failed")
    assert failed.detail.endswith("the file was put back in the inbox for the next run")
    assert "conversions" in failed.detail
    assert runner.exit_code([failed]) == 1
    assert (ctx.datadir.layout.inbox / "maxbounty" / "a.csv").read_text() == MAXBOUNTY
    assert files_under(ctx.datadir.layout.processing) == []
    assert files_under(ctx.datadir.layout.archive) == []
    assert (
        files_under(ctx.datadir.layout.reports) == []
    )  # nothing was applied, so nothing to report
    assert ledger(ctx) == []  # rolled back with the file

    with ctx.engine.begin() as conn:  # the warehouse is back
        conn.execute(text("ALTER TABLE conversions_gone RENAME TO conversions"))
    [applied] = runner.run_inbox(ctx)
    assert (applied.state, counts(applied)) == ("applied", (2, 1, 0, 0, 0, 0, 1))
    assert [r.click_id for r in export.frame(ctx.engine, ctx.config).itertuples()] == ["m1"]
    assert files_under(ctx.datadir.layout.inbox) == []


def test_a_file_put_back_after_a_failure_keeps_its_received_time(ctx):
    """Empty conversion times are the received time: a retry must not move them."""
    drop(ctx, "maxbounty/a.csv", "click_id,payout,conversion_time\nm1,5.00,\n")
    ctx.datadir.layout.ensure(ctx.config.offer_sources)
    with ctx.engine.begin() as conn:
        conn.execute(text("ALTER TABLE conversions RENAME TO conversions_gone"))
    [failed] = runner.run_inbox(ctx)
    assert failed.state == "failed"
    record = json.loads((ctx.datadir.layout.inbox / "maxbounty/.a.csv.received.json").read_text())
    first = datetime.fromisoformat(record["received_at"])
    assert abs(datetime.now(UTC) - first).total_seconds() < 5

    time.sleep(1.1)  # received times are whole seconds: the retry's own would differ
    with ctx.engine.begin() as conn:
        conn.execute(text("ALTER TABLE conversions_gone RENAME TO conversions"))
    [applied] = runner.run_inbox(ctx)

    assert applied.state == "applied"
    assert datetime.fromisoformat(applied.received_at) == first
    [row] = conversions(ctx)
    assert row[-1] == first.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert files_under(ctx.datadir.layout.inbox) == []  # the hidden record went with the claim


def test_an_unexpected_error_quarantines_the_file_intact(ctx, monkeypatch):
    drop(ctx, "maxbounty/a.csv", MAXBOUNTY)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(runner, "ingest_file", broken)
    [result] = runner.run_inbox(ctx)
    assert (result.state, result.reason_code) == ("quarantined", "internal_error")
    assert result.detail == "RuntimeError: a bug"
    assert runner.exit_code([result]) == 1
    [kept] = [p for p in ctx.datadir.layout.quarantine.rglob("*_a.csv")]
    assert kept.name == f"{sha256(MAXBOUNTY)[:16]}_a.csv"
    assert kept.read_text() == MAXBOUNTY
    reason = json.loads(kept.with_name(kept.name + ".reason.json").read_text(encoding="utf-8"))
    assert (reason["code"], reason["detail"]) == ("internal_error", "RuntimeError: a bug")
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))
    assert (summary["state"], summary["reason_code"]) == ("quarantined", "internal_error")
    assert ledger(ctx) == [] and conversions(ctx) == []


# --- exit codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], 0),
        (["applied"], 0),
        (["applied", "dry_run", "duplicate_file"], 0),
        (["applied", "quarantined"], 1),
        (["failed", "applied"], 1),
        (["quarantined", "failed"], 1),
    ],
)
def test_exit_code_is_1_only_when_a_file_was_quarantined_or_failed(states, expected):
    results = [FileResult(f"{n}.csv", "maxbounty", "conversions", s) for n, s in enumerate(states)]
    assert runner.exit_code(results) == expected
    assert runner.exit_code(iter(results)) == expected  # any iterable, consumed once


@pytest.mark.parametrize(
    ("state", "data_lines", "rejected", "expected"),
    [
        ("applied", 2, 2, 1),  # every data line rejected: exit 1 though the file was read
        ("dry_run", 1, 1, 1),
        ("applied", 2, 1, 0),
        ("applied", 0, 0, 0),
    ],
)
def test_exit_code_is_1_for_a_file_whose_every_data_line_was_rejected(
    state, data_lines, rejected, expected
):
    outcomes = dict.fromkeys(OUTCOMES, 0) | {
        "rejected": rejected,
        "inserted": data_lines - rejected,
    }
    result = FileResult(
        "a.csv", "maxbounty", "conversions", state, data_lines=data_lines, outcomes=outcomes
    )
    assert result.all_rows_rejected is bool(expected)
    assert runner.exit_code([result]) == expected
    assert (
        runner.exit_code(iter([FileResult("b.csv", "maxbounty", "conversions", "applied"), result]))
        == expected
    )


def test_a_warehouse_that_went_down_puts_every_file_back(tmp_path):
    """The warehouse answered at start, then went away: nothing can even be looked up."""
    down = create_engine("postgresql+psycopg://u:s3cret@127.0.0.1:1/x")
    ctx = Context(make_config(), down, datadir.LocalDataDir(tmp_path / "home"))
    drop(ctx, "maxbounty/a.csv", MAXBOUNTY)
    drop(ctx, "clickbank/c.csv", CLICKBANK)
    results = runner.run_inbox(ctx)
    assert [(r.name, r.state) for r in results] == [("c.csv", "failed"), ("a.csv", "failed")]
    assert all(r.detail.startswith("OperationalError: ") for r in results)
    assert not any("s3cret" in r.detail for r in results)
    assert runner.exit_code(results) == 1
    assert files_under(ctx.datadir.layout.inbox) == [
        "clickbank/.c.csv.received.json",  # hidden: the received time the retry keeps
        "clickbank/c.csv",
        "maxbounty/.a.csv.received.json",
        "maxbounty/a.csv",
    ]
    assert files_under(ctx.datadir.layout.processing) == []
    assert (ctx.datadir.layout.inbox / "maxbounty" / "a.csv").read_text() == MAXBOUNTY
    down.dispose()


def test_status_files_run_after_the_conversions_they_update_whatever_their_names(any_ctx):
    # "maxbounty/status/a.csv" sorts before "maxbounty/z.csv" as a path; it must still run last.
    ctx = any_ctx
    put_in_inbox(ctx, "maxbounty/status/a.csv", "click_id,status\nz1,declined\n")
    put_in_inbox(
        ctx, "maxbounty/z.csv", "click_id,payout,conversion_time\nz1,2.00,2026-07-01 14:00:00\n"
    )
    results = runner.run_inbox(ctx)
    assert [(r.name, r.kind) for r in results] == [("z.csv", "conversions"), ("a.csv", "status")]
    assert results[1].outcomes["status_updated"] == 1
    assert [(c[1], c[3]) for c in conversions(ctx)] == [("z1", "declined")]


def test_a_dry_run_pass_leaves_the_files_in_the_inbox(any_ctx):
    ctx = any_ctx
    put_in_inbox(ctx, "maxbounty/a.csv", MAXBOUNTY)
    results = runner.run_inbox(ctx, dry_run=True)
    assert [r.state for r in results] == ["dry_run"]
    assert list(stored(ctx, "inbox")) == ["maxbounty/a.csv"]
    assert claims_held(ctx) == 0  # a rehearsal's claim ends with it
    assert conversions(ctx) == []
    assert [r.state for r in runner.run_inbox(ctx)] == ["applied"]
    assert [c[1] for c in conversions(ctx)] == ["m1"]


def test_an_archive_failure_after_apply_is_a_warning_and_a_later_run_archives(ctx, monkeypatch):
    content = "click_id,payout,conversion_type\np1,5.00,Purchase\n"  # increments if re-applied
    drop(ctx, "maxbounty/a.csv", content)
    drop(ctx, "maxbounty/b.csv", "click_id,payout\nb1,1.00\n")
    real_archive = filing.file_archived

    def archive(layout, claimed, content_hash):
        if claimed.relative.endswith("a.csv"):
            raise OSError(28, "No space left on device")
        return real_archive(layout, claimed, content_hash)

    monkeypatch.setattr(filing, "file_archived", archive)
    first, second = runner.run_inbox(ctx)  # the failure does not stop the pass
    assert (first.name, first.state, second.name, second.state) == (
        "a.csv",
        "applied",
        "b.csv",
        "applied",
    )
    assert "archiving failed" in first.warnings[-1] and "No space left" in first.warnings[-1]
    assert runner.exit_code([first, second]) == 0
    monkeypatch.setattr(filing, "file_archived", real_archive)

    [left] = [p for p in ctx.datadir.layout.processing.iterdir() if p.is_dir()]
    claimed = datadir.Claimed(
        path=left / "a.csv",
        claim_id=left.name,
        relative="maxbounty/a.csv",
        offer_source="maxbounty",
        kind="conversions",
        received_at=datetime.fromisoformat(first.received_at),
    )
    claim_of_a_dead_worker(claimed)
    [adopted] = runner.run_inbox(ctx)
    assert (adopted.name, adopted.state) == ("a.csv", "applied")
    assert sorted((c[1], c[4]) for c in conversions(ctx)) == [("b1", "1.00"), ("p1", "5.00")]
    assert [r["state"] for r in ledger(ctx)] == ["applied", "applied"]
    assert files_under(ctx.datadir.layout.processing) == []


def test_a_dry_run_pass_moves_nothing_not_even_a_file_it_would_quarantine(any_ctx):
    ctx = any_ctx
    put_in_inbox(ctx, "maxbounty/a.csv", "click_id,payout\nm1,5.00\n")
    put_in_inbox(ctx, "stray.csv", "click_id,payout\nz,1\n")  # in no offer source's folder
    before = stored(ctx, "inbox")
    results = {r.name: r for r in runner.run_inbox(ctx, dry_run=True)}
    assert (results["a.csv"].state, results["stray.csv"].state) == ("dry_run", "quarantined")
    assert "dry run: it would be quarantined; left in the inbox" in results["stray.csv"].detail
    assert stored(ctx, "inbox") == before
    assert stored(ctx, "quarantine") == {}
    assert conversions(ctx) == []
