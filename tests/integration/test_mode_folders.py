"""Mode folders, ``inbox/<offer_source>/<mode>/``: a file applied under its folder's duplicate
mode, exactly as ``conversions ingest --mode`` applies it, whoever picks it up (the runner, the
Airflow task bodies, a replay), across releases, crashes and re-sends.

Real files in a real data directory, the real warehouse (SQLite and PostgreSQL). Expectations by
hand: maxbounty is New York (GMT-4 in July), account file times, mode ``ignore`` (its Purchase
type ``increment_payout``); a file without a conversion type uses the offer source's mode.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, text

from pipeline import cli, datadir, export, runner, warehouse
from pipeline.airflow import steps
from pipeline.context import Context
from pipeline.core import file_outcome
from pipeline.core.vocabulary import MODES, OUTCOMES
from pipeline.datadir import claims
from pipeline.results import FileResult
from tests.helpers import SAMPLE_CONFIG, assert_accounted, make_config, write_csv
from tests.integration.datadir_helpers import (
    DATA_DIRECTORIES,
    claims_held,
    context_on,
    on_s3,
    put_in_inbox,
    stored,
)
from tests.integration.test_runner import files_under

RECEIVED = datetime(2026, 7, 1, 18, 0, 0, tzinfo=UTC)
FIRST = "click_id,payout,conversion_time\nm1,5.00,2026-07-01 14:00:00\n"  # 18:00Z
UPDATE = "click_id,payout,conversion_time\nm1,7.50,2026-07-01 15:00:00\n"  # 19:00Z
FORCE_SENTENCE = (
    "a re-send under another mode needs --force (conversions ingest --force) or force (the "
    "replay DAG's param)"
)


@pytest.fixture(params=DATA_DIRECTORIES)
def ctx(request, tmp_path, engine) -> Context:
    """A data directory in a local folder, or in a bucket of the moto server (its claims rows
    of the warehouse): every test that goes through the inbox runs on both."""
    return context_on(request, make_config(), engine, tmp_path)


@pytest.fixture
def local_ctx(tmp_path, engine) -> Context:
    """For the tests of what only a local data directory has (claim.json, returned-file
    records); their S3 counterparts are `test_objectstore_runner`'s and the crash tests'."""
    return Context(make_config(), engine, datadir.LocalDataDir(tmp_path / "home"))


def conversions(ctx: Context) -> list[tuple]:
    data = export.frame(ctx.engine, ctx.config)
    return [(r.click_id, r.payout, r.converted_at) for r in data.itertuples()]


def ledger(ctx: Context) -> list[tuple]:
    f = warehouse.ingested_files
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(f).order_by(f.c.file_id)).mappings().all()
    return [(r["original_name"], r["state"], r["duplicate_mode_override"]) for r in rows]


def counts(result) -> tuple[int, ...]:
    outcomes = result["outcomes"] if isinstance(result, dict) else result.outcomes
    lines = result["data_lines"] if isinstance(result, dict) else result.data_lines
    return (lines, *(outcomes[o] for o in OUTCOMES))


def sidecar_of(ctx: Context, folder: str, name: str) -> dict:
    [sidecar] = [v for k, v in stored(ctx, folder).items() if k.endswith(f"_{name}.json")]
    return json.loads(sidecar)


def dead_worker(claimed: datadir.Claimed) -> None:
    """Rewrite claim.json as if the worker that claimed the file had died since."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    path = claimed.path.parent / claims.CLAIM_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(record | {"pid": int(done.stdout)}), encoding="utf-8")


# --- the runner ------------------------------------------------------------------------------


def test_an_update_in_the_edit_folder_changes_the_payout_under_an_ignore_source(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    [first] = runner.run_inbox(ctx)
    assert counts(first) == (1, 1, 0, 0, 0, 0, 0)
    # Control: the same update directly in maxbounty/ is ignored (its mode is ignore).
    put_in_inbox(ctx, "maxbounty/plain.csv", UPDATE.replace("7.50", "6.00"))
    [plain] = runner.run_inbox(ctx)
    assert counts(plain) == (1, 0, 0, 0, 0, 1, 0)
    assert conversions(ctx) == [("m1", "5.00", "2026-07-01T18:00:00Z")]

    put_in_inbox(ctx, "maxbounty/edit/update.csv", UPDATE)
    [update] = runner.run_inbox(ctx)

    assert (update.name, update.offer_source, update.kind, update.state) == (
        "update.csv",
        "maxbounty",
        "conversions",
        "applied",
    )
    # lines, inserted, updated, incremented, status_updated, ignored_duplicate, rejected
    assert counts(update) == (1, 0, 1, 0, 0, 0, 0)
    if on_s3(ctx):  # its report is an object: checked here, the rest by assert_accounted
        name = update.report_path.rsplit("/", 1)[-1]
        [report] = [v for k, v in stored(ctx, "reports").items() if k.endswith("/" + name)]
        assert len(report.decode("utf-8-sig").splitlines()) - 1 == update.outcomes["rejected"]
        assert_accounted(dataclasses.replace(update, report_path=None), engine=ctx.engine)
    else:
        assert_accounted(update, engine=ctx.engine)
    assert runner.exit_code([update]) == 0
    assert conversions(ctx) == [("m1", "7.50", "2026-07-01T19:00:00Z")]  # 15:00 EDT
    assert ledger(ctx) == [
        ("first.csv", "applied", None),
        ("plain.csv", "applied", None),
        ("update.csv", "applied", "edit"),
    ]
    assert stored(ctx, "inbox") == {} and claims_held(ctx) == 0
    sidecar = sidecar_of(ctx, "archive", "update.csv")
    assert (sidecar["relative"], sidecar["kind"], sidecar["mode"]) == (
        "maxbounty/edit/update.csv",
        "conversions",
        "edit",
    )
    assert "mode" not in sidecar_of(ctx, "archive", "first.csv")  # only a mode folder's file


def test_the_increment_payout_folder_adds_the_payout(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/increment_payout/more.csv", UPDATE.replace("7.50", "2.25"))
    [more] = runner.run_inbox(ctx)
    assert (more.state, counts(more)) == ("applied", (1, 0, 0, 1, 0, 0, 0))
    [(click_id, payout, _)] = conversions(ctx)
    assert (click_id, payout) == ("m1", "7.25")  # 5.00 + 2.25
    assert ledger(ctx)[-1] == ("more.csv", "applied", "increment_payout")


def test_a_run_level_mode_override_wins_over_the_folders(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/edit/update.csv", UPDATE)
    [update] = runner.run_inbox(ctx, mode_override="ignore")
    assert counts(update) == (1, 0, 0, 0, 0, 1, 0)
    assert conversions(ctx) == [("m1", "5.00", "2026-07-01T18:00:00Z")]
    assert ledger(ctx)[-1] == ("update.csv", "applied", "ignore")


def test_a_misspelt_mode_folder_is_quarantined_naming_the_six_modes(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/edt/update.csv", UPDATE)

    [result] = runner.run_inbox(ctx)

    assert (result.offer_source, result.state, result.reason_code) == (
        None,
        "quarantined",
        "unknown_offer_source",
    )
    expected = (
        "edt/ is not a mode folder (did you mean edit/?): inbox/maxbounty/ reads files directly "
        "in it, in status/ (status files) and in one folder per duplicate mode (create_new/, "
        "new_or_repeated/, ignore/, edit/, increment_payout/, ignore_by_event_id/)"
    )
    assert result.detail == expected
    assert all(f"{mode}/" in result.detail for mode in MODES)
    assert runner.exit_code([result]) == 1
    assert conversions(ctx) == [("m1", "5.00", "2026-07-01T18:00:00Z")]  # nothing changed
    quarantine = stored(ctx, "quarantine")
    [kept] = [k for k in quarantine if k.endswith("_update.csv")]
    assert quarantine[kept].decode() == UPDATE
    reason = json.loads(quarantine[kept + ".reason.json"])
    assert (reason["code"], reason["detail"], reason["relative"]) == (
        "unknown_offer_source",
        expected,
        "maxbounty/edt/update.csv",
    )
    assert "mode" not in reason
    assert stored(ctx, "inbox") == {}  # not left waiting


def test_status_files_take_no_mode_and_a_mode_folder_in_status_is_quarantined(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    put_in_inbox(ctx, "maxbounty/status/edit/s.csv", "click_id,status\nm1,declined\n")
    nested, first = runner.run_inbox(ctx)  # no offer source sorts first
    assert (first.state, nested.state, nested.reason_code) == (
        "applied",
        "quarantined",
        "unknown_offer_source",
    )
    assert nested.detail.startswith("status/edit/ is nested too deep: inbox/maxbounty/ reads")


# --- re-sends under another mode -------------------------------------------------------------


def test_the_same_bytes_under_another_mode_are_a_duplicate_that_names_force(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/edit/update.csv", UPDATE)
    runner.run_inbox(ctx)

    put_in_inbox(ctx, "maxbounty/increment_payout/update.csv", UPDATE)  # the same bytes
    put_in_inbox(ctx, "maxbounty/again.csv", UPDATE)  # the same bytes, no mode override
    put_in_inbox(ctx, "maxbounty/edit/update2.csv", UPDATE)  # the same bytes, the same mode
    again, update2, increment = runner.run_inbox(ctx)

    assert [(r.name, r.state) for r in (increment, again, update2)] == [
        ("update.csv", "duplicate_file"),
        ("again.csv", "duplicate_file"),
        ("update2.csv", "duplicate_file"),
    ]
    assert increment.detail == (
        "the same bytes were already applied for this offer source and kind under the mode "
        "edit, and this file asks for the mode increment_payout; nothing changed: "
        f"{FORCE_SENTENCE}"
    )
    assert again.detail == (
        "the same bytes were already applied for this offer source and kind under the mode "
        "edit, and this file asks for the configured modes (no mode override); nothing "
        f"changed: {FORCE_SENTENCE}"
    )
    assert update2.detail == file_outcome.DUPLICATE_DETAIL  # the same mode: the old words
    assert "already applied" in update2.detail
    assert runner.exit_code([increment, again, update2]) == 0
    assert conversions(ctx) == [("m1", "7.50", "2026-07-01T19:00:00Z")]
    f = warehouse.ingested_files
    with ctx.engine.connect() as conn:
        details = conn.execute(
            select(f.c.original_name, f.c.detail).where(f.c.state == "duplicate_file")
        ).all()
    assert sorted(details) == sorted(
        [
            ("update.csv", increment.detail),
            ("again.csv", again.detail),
            ("update2.csv", file_outcome.DUPLICATE_DETAIL),
        ]
    )


# --- releases, crashes, received times ---------------------------------------------------------


def test_a_file_put_back_after_a_failure_returns_to_its_mode_folder(local_ctx):
    ctx = local_ctx
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/edit/update.csv", UPDATE)
    with ctx.engine.begin() as conn:  # the merge's table is gone: the file fails
        conn.execute(text("ALTER TABLE conversions RENAME TO conversions_gone"))
    [failed] = runner.run_inbox(ctx)
    assert failed.state == "failed"
    inbox = ctx.datadir.layout.inbox
    assert files_under(inbox) == [
        "maxbounty/edit/.update.csv.received.json",
        "maxbounty/edit/update.csv",
    ]
    record = json.loads((inbox / "maxbounty/edit/.update.csv.received.json").read_text())
    received = datetime.fromisoformat(record["received_at"])

    with ctx.engine.begin() as conn:
        conn.execute(text("ALTER TABLE conversions_gone RENAME TO conversions"))
    [applied] = runner.run_inbox(ctx)

    assert (applied.state, counts(applied)) == ("applied", (1, 0, 1, 0, 0, 0, 0))
    assert datetime.fromisoformat(applied.received_at) == received
    assert conversions(ctx) == [("m1", "7.50", "2026-07-01T19:00:00Z")]
    assert ledger(ctx)[-1] == ("update.csv", "applied", "edit")
    f = warehouse.ingested_files
    with ctx.engine.connect() as conn:
        kept = conn.execute(select(f.c.received_at).where(f.c.file_id == applied.file_id))
        assert kept.scalar_one() == received  # the failed claim's, not the retry's
    assert files_under(inbox) == []


def test_a_dead_workers_claim_from_a_mode_folder_is_adopted_with_its_mode_and_time(local_ctx):
    ctx = local_ctx
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    # m2 is new, and its empty time is the received time: the first claim's, not the adopter's.
    late = "click_id,payout,conversion_time\nm1,9.00,2026-07-01 13:00:00\nm2,1.00,\n"
    put_in_inbox(ctx, "maxbounty/edit/late.csv", late)
    [waiting] = claims.scan(ctx.datadir.layout, ctx.config.offer_sources)
    assert (waiting.offer_source, waiting.kind, waiting.mode) == (
        "maxbounty",
        "conversions",
        "edit",
    )
    claimed = claims.claim(ctx.datadir.layout, waiting, now=RECEIVED)
    assert claimed.mode == "edit"
    record = json.loads((claimed.path.parent / claims.CLAIM_FILE).read_text())
    assert (record["relative"], record["mode"]) == ("maxbounty/edit/late.csv", "edit")
    dead_worker(claimed)  # died before touching the warehouse

    [result] = runner.run_inbox(ctx)

    assert (result.state, counts(result)) == ("applied", (2, 1, 1, 0, 0, 0, 0))
    assert result.received_at == RECEIVED.isoformat()
    assert conversions(ctx) == [
        ("m1", "9.00", "2026-07-01T17:00:00Z"),  # edited: 13:00 EDT, before RECEIVED
        ("m2", "1.00", "2026-07-01T18:00:00Z"),  # RECEIVED
    ]
    assert ledger(ctx)[-1] == ("late.csv", "applied", "edit")
    assert sidecar_of(ctx, "archive", "late.csv")["mode"] == "edit"


# --- the Airflow task bodies and replays --------------------------------------------------------


def test_the_airflow_steps_apply_a_mode_folders_file_under_its_mode(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/edit/update.csv", UPDATE)
    put_in_inbox(ctx, "maxbounty/status/s.csv", "click_id,status\nm1,declined\n")

    tickets = steps.claim(ctx)

    [ticket] = tickets["conversions"]
    assert {k: ticket[k] for k in ("file", "offer_source", "kind", "mode")} == {
        "file": "maxbounty/edit/update.csv",
        "offer_source": "maxbounty",
        "kind": "conversions",
        "mode": "edit",
    }
    [status] = tickets["status"]
    assert status["mode"] is None
    result = steps.process(ctx, ticket)
    assert (result["file"], result["state"]) == ("maxbounty/edit/update.csv", "applied")
    assert counts(result) == (1, 0, 1, 0, 0, 0, 0)
    assert steps.process(ctx, status)["state"] == "applied"
    assert [(c[0], c[1]) for c in conversions(ctx)] == [("m1", "7.50")]
    assert ledger(ctx)[1:] == [("update.csv", "applied", "edit"), ("s.csv", "applied", None)]
    again = steps.process(ctx, ticket)  # a second delivery: another run had it
    assert (again["state"], again["mode"]) == ("taken_over", "edit")


def test_a_replay_of_an_archived_mode_file_uses_its_mode_unless_the_run_gives_one(ctx):
    put_in_inbox(ctx, "maxbounty/first.csv", FIRST)
    runner.run_inbox(ctx)
    put_in_inbox(ctx, "maxbounty/edit/update.csv", UPDATE)
    runner.run_inbox(ctx)
    tickets = steps.archived_tickets(ctx, date(2000, 1, 1), date(2099, 1, 1), "maxbounty")
    assert sorted((t["file"], t["mode"]) for t in tickets) == [
        ("maxbounty/edit/update.csv", "edit"),
        ("maxbounty/first.csv", None),
    ]
    [update] = [t for t in tickets if t["mode"] == "edit"]

    same = steps.replay(ctx, update, run_id="manual__1", dry_run=False)
    assert (same["state"], same["detail"]) == ("duplicate_file", file_outcome.DUPLICATE_DETAIL)
    other = steps.replay(ctx, update, run_id="manual__2", dry_run=False, mode_override="ignore")
    assert other["state"] == "duplicate_file"
    assert other["detail"].endswith(FORCE_SENTENCE)
    forced = steps.replay(ctx, update, run_id="manual__3", dry_run=True, force=True)
    assert (forced["state"], counts(forced)) == ("dry_run", (1, 0, 1, 0, 0, 0, 0))
    assert ledger(ctx)[2:] == [
        ("update.csv", "duplicate_file", "edit"),
        ("update.csv", "duplicate_file", "ignore"),
        ("update.csv", "dry_run", "edit"),
    ]


# --- the CLI's exit code --------------------------------------------------------------------------


def test_a_file_with_every_data_line_rejected_makes_the_cli_exit_1(tmp_path, warehouse_url):
    config = tmp_path / "conversions.toml"
    config.write_text(SAMPLE_CONFIG, encoding="utf-8")
    home = tmp_path / "home"
    options = ["--config", str(config), "--home", str(home), "--warehouse", warehouse_url]
    bad = write_csv(tmp_path / "bad.csv", "click_id,payout\nb1,x\nb2,abc\n")  # 2 lines, 2 rejected
    rehearsal = write_csv(tmp_path / "rehearsal.csv", "click_id,payout\nd1,x\n")
    half = write_csv(tmp_path / "half.csv", "click_id,payout\nh1,1.00\nh2,x\n")

    assert cli.main(["ingest", *options, "--offer-source", "maxbounty", str(half)]) == 0
    assert cli.main(["ingest", *options, "--offer-source", "maxbounty", str(bad)]) == 1
    dry_run = ["ingest", *options, "--offer-source", "maxbounty", "--dry-run", str(rehearsal)]
    assert cli.main(dry_run) == 1
    # Through the inbox too, from a mode folder; a file with no data line at all is no such file.
    write_csv(home / "inbox/maxbounty/edit/bad2.csv", "click_id,payout\nc1,x\n")
    assert cli.main(["inbox", *options]) == 1
    write_csv(home / "inbox/maxbounty/empty.csv", "click_id,payout\n")
    assert cli.main(["inbox", *options]) == 0

    engine = warehouse.connect(warehouse_url)
    try:
        f = warehouse.ingested_files
        with engine.connect() as conn:
            rows = conn.execute(
                select(f.c.original_name, f.c.state, f.c.data_lines, f.c.rejected).order_by(
                    f.c.file_id
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("half.csv", "applied", 2, 1),
        ("bad.csv", "applied", 2, 2),
        ("rehearsal.csv", "dry_run", 1, 1),
        ("bad2.csv", "applied", 1, 1),
        ("empty.csv", "applied", 0, 0),
    ]


def test_all_rows_rejected_is_a_property_of_the_result():
    def result(state, lines, rejected):
        outcomes = dict.fromkeys(OUTCOMES, 0) | {"rejected": rejected, "inserted": lines - rejected}
        return FileResult(
            "a.csv", "maxbounty", "conversions", state, data_lines=lines, outcomes=outcomes
        )

    assert result("applied", 2, 2).all_rows_rejected
    assert result("dry_run", 1, 1).all_rows_rejected
    assert not result("applied", 2, 1).all_rows_rejected
    assert not result("applied", 0, 0).all_rows_rejected  # no data line: nothing to reject
    assert not FileResult("a.csv", None, "conversions", "quarantined").all_rows_rejected
    assert "all_rows_rejected" not in result("applied", 2, 2).to_dict()  # a property, no field
    assert runner.exit_code([result("applied", 2, 1), result("applied", 2, 2)]) == 1
    assert runner.exit_code(iter([result("applied", 2, 1)])) == 0
