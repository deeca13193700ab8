"""The task bodies (``pipeline.airflow.steps``) without Airflow: URLs, tickets, stories, replays.

The DAG-level behaviour is in test_airflow_dags.py; these pin down the pieces by hand-worked
examples, including the hand-off between a claiming process and the processing one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date

import pytest
from sqlalchemy.engine import make_url

from pipeline import datadir, runtime
from pipeline.airflow import steps
from pipeline.context import Context
from pipeline.core.model import ConfigError
from pipeline.datadir import claims
from pipeline.shutdown import Stop, Stopped
from tests.helpers import REPO, make_config, write_csv


@pytest.fixture
def ctx(tmp_path, engine) -> Context:
    return Context(make_config(), engine, datadir.LocalDataDir(tmp_path / "home"))


# --- settings -----------------------------------------------------------------------------------


def test_postgres_connection_fields_become_a_psycopg_url_with_libpq_extras():
    url = runtime.url_from_connection(
        "postgres",
        host="db.internal",
        login="loader",
        password="p@ss:w/rd",
        port=5433,
        schema="warehouse",
        extra={"sslmode": "require", "cursor": "realdictcursor"},  # the hook's own: dropped
    )
    parsed = make_url(url)
    assert (parsed.drivername, parsed.host, parsed.port, parsed.database) == (
        "postgresql+psycopg",
        "db.internal",
        5433,
        "warehouse",
    )
    assert (parsed.username, parsed.password) == ("loader", "p@ss:w/rd")
    assert dict(parsed.query) == {"sslmode": "require"}


def test_other_connection_types():
    assert runtime.url_from_connection("sqlite", host="/data/w.db") == "sqlite:////data/w.db"
    assert (
        runtime.url_from_connection("mysql", extra={"sqlalchemy_url": "sqlite:///x.db"})
        == "sqlite:///x.db"
    )
    with pytest.raises(ValueError, match="not supported"):
        runtime.url_from_connection("mysql", host="h")
    with pytest.raises(ValueError, match="host"):
        runtime.url_from_connection("sqlite")


def test_redacted_never_shows_a_password():
    assert runtime.redacted("postgresql+psycopg://u:s3cret@h/db") == (
        "postgresql+psycopg://u:***@h/db"
    )
    assert "s3cret" not in runtime.redacted("not a url s3cret")


def test_airflow_context_defaults_to_a_folder_in_airflow_home(tmp_path, monkeypatch):
    home = tmp_path / "airflow" / "conversions"
    home.mkdir(parents=True)
    (home / "conversions.toml").write_text(
        '[accounts.a]\ntimezone = "UTC"\n[offer_sources.s]\naccount = "a"\n', encoding="utf-8"
    )
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    for name in ("CONVERSIONS_HOME", "CONVERSIONS_CONFIG", "CONVERSIONS_WAREHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    ctx = runtime.airflow_context()
    try:
        assert ctx.datadir.layout.home == home
        assert list(ctx.config.offer_sources) == ["s"]
        assert ctx.engine.url.database == str(home / "warehouse.db")
    finally:
        ctx.engine.dispose()
    explicit = runtime.airflow_context(f"sqlite:///{tmp_path / 'other.db'}")  # the connection
    try:
        assert explicit.engine.url.database == str(tmp_path / "other.db")
    finally:
        explicit.engine.dispose()


# --- claim and process --------------------------------------------------------------------------

CLAIM_IN_ANOTHER_PROCESS = """
import json, sys
from pathlib import Path
from pipeline import datadir
from pipeline.airflow import steps
from pipeline.context import Context
from tests.helpers import make_config
ctx = Context(make_config(), None, datadir.LocalDataDir(Path(sys.argv[1])))
print(json.dumps(steps.claim(ctx)))
"""


def test_tickets_claimed_by_an_exited_process_are_processed_by_this_one(ctx):
    write_csv(ctx.datadir.layout.inbox / "maxbounty/status/s.csv", "click_id,status\nm1,declined\n")
    write_csv(ctx.datadir.layout.inbox / "maxbounty/a.csv", "click_id,payout\nm1,5.00\n")
    write_csv(ctx.datadir.layout.inbox / "stray.csv", "click_id,payout\nz,1\n")
    import json

    done = subprocess.run(
        [sys.executable, "-c", CLAIM_IN_ANOTHER_PROCESS, str(ctx.datadir.layout.home)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    claimed = json.loads(done.stdout)
    assert [t["file"] for t in claimed["conversions"]] == ["stray.csv", "maxbounty/a.csv"]
    assert [t["file"] for t in claimed["status"]] == ["maxbounty/status/s.csv"]
    assert [t["mode"] for t in (*claimed["conversions"], *claimed["status"])] == [None] * 3
    assert claims.recover(ctx.datadir.layout) == []  # the claimer exited, but the hand-off holds

    states = [
        (s["file"], s["state"])
        for s in map(lambda t: steps.process(ctx, t), [*claimed["conversions"], *claimed["status"]])
    ]
    assert states == [
        ("stray.csv", "quarantined"),
        ("maxbounty/a.csv", "applied"),
        ("maxbounty/status/s.csv", "applied"),
    ]
    assert list(ctx.datadir.layout.processing.iterdir()) == []
    again = steps.process(ctx, claimed["conversions"][1])  # a second delivery of the ticket
    assert again["state"] == "taken_over"


def test_a_transient_failure_keeps_the_claim_for_the_tasks_retry(ctx, tmp_path):
    write_csv(ctx.datadir.layout.inbox / "maxbounty/a.csv", "click_id,payout\nm1,5.00\n")
    [ticket] = steps.claim(ctx)["conversions"]
    broken = Context(
        ctx.config,
        runtime.open_context(ctx.config, tmp_path, f"sqlite:///{tmp_path / 'w.db'}").engine,
        ctx.datadir,
    )
    broken.engine.dispose()
    (tmp_path / "w.db").unlink()
    (tmp_path / "w.db").mkdir()  # the database file is now a folder: cannot be opened
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        steps.process(broken, ticket)
    [left] = list(ctx.datadir.layout.processing.iterdir())  # still claimed, not back in the inbox
    assert (left / "a.csv").exists()
    retry = steps.process(ctx, ticket)  # the retry knows only the original ticket
    assert retry["state"] == "applied"
    assert list(ctx.datadir.layout.processing.iterdir()) == []


# --- stop signals (pipeline.shutdown) -----------------------------------------------------------


def _signal_at(monkeypatch, module, name: str, nth: int) -> None:
    """Send this process a real SIGTERM when ``module.name`` is called for the ``nth`` time: a
    way to land the signal at a known point of a task (the signal and its handling are real)."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_sigterm_in_a_task_rolls_its_file_back_into_the_inbox_with_its_received_time(
    tmp_path, engine, monkeypatch
):
    config = make_config(
        settings={"batch_size": 100, "shutdown_grace_seconds": 0, "settle_seconds": 0}
    )
    home = datadir.LocalDataDir(tmp_path / "home")
    ctx = Context(config, engine, home, Stop(config.settings.shutdown_grace_seconds))
    rows = "".join(f"m{i},{i}.00,2026-07-01 10:00:00\n" for i in range(1000))
    write_csv(home.layout.inbox / "maxbounty/a.csv", "click_id,payout,conversion_time\n" + rows)
    [ticket] = steps.claim(ctx)["conversions"]
    from pipeline.core import normalise

    _signal_at(monkeypatch, normalise, "conversions", 3)  # in the third batch of ten
    with ctx.stop.handling(), pytest.raises(Stopped, match="interrupted by SIGTERM"):
        steps.process(ctx, ticket)
    monkeypatch.undo()
    assert list(home.layout.processing.iterdir()) == []
    assert (home.layout.inbox / "maxbounty/a.csv").is_file()
    assert not [p for p in home.layout.home.rglob("*.partial")]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM ingested_files").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM conversions").scalar() == 0
    # The next run takes it with the received time of the claim the signal interrupted.
    again = Context(config, engine, home)
    [retry] = steps.claim(again)["conversions"]
    assert retry["received_at"] == ticket["received_at"]
    result = steps.process(again, retry)
    assert (result["state"], result["outcomes"]["inserted"]) == ("applied", 1000)


def test_sigterm_while_claiming_puts_every_claim_back(tmp_path, engine, monkeypatch):
    config = make_config()
    home = datadir.LocalDataDir(tmp_path / "home")
    ctx = Context(config, engine, home, Stop())
    for name in ("a", "b", "c"):
        write_csv(home.layout.inbox / f"maxbounty/{name}.csv", "click_id,payout\nm1,5.00\n")
    _signal_at(monkeypatch, home, "claim", 2)
    with ctx.stop.handling(), pytest.raises(Stopped, match="2 claimed file"):
        steps.claim(ctx)
    assert list(home.layout.processing.iterdir()) == []
    waiting = sorted(p.name for p in (home.layout.inbox / "maxbounty").iterdir() if p.is_file())
    # a and b were claimed and put back with their received times; c was never claimed.
    assert waiting == [".a.csv.received.json", ".b.csv.received.json", "a.csv", "b.csv", "c.csv"]


# --- replay -------------------------------------------------------------------------------------


def test_select_archived_refuses_bad_ranges_and_unknown_offer_sources(ctx):
    with pytest.raises(ValueError, match="before the start"):
        steps.archived_tickets(ctx, date(2026, 3, 2), date(2026, 3, 1))
    with pytest.raises(ConfigError):
        steps.archived_tickets(ctx, date(2026, 3, 1), date(2026, 3, 2), "nosuchsource")
    assert steps.archived_tickets(ctx, date(2026, 3, 1), date(2026, 3, 2)) == []


def test_replay_only_reads_from_the_archive(ctx, tmp_path):
    outside = write_csv(tmp_path / "elsewhere.csv", "click_id,payout\nm1,5.00\n")
    ticket = {
        "path": str(outside),
        "file": "maxbounty/elsewhere.csv",
        "offer_source": "maxbounty",
        "kind": "conversions",
        "received_at": "2026-03-01T00:00:00+00:00",
    }
    with pytest.raises(ValueError, match="not an archived file"):
        steps.replay(ctx, ticket, run_id="manual__x")
    sneaky = ticket | {"path": str(ctx.datadir.layout.archive / ".." / ".." / "elsewhere.csv")}
    with pytest.raises(ValueError, match="not an archived file"):
        steps.replay(ctx, sneaky, run_id="manual__x")


# --- stories and totals --------------------------------------------------------------------------


def test_story_tells_counts_top_reasons_with_examples_and_paths():
    result = {
        "file": "maxbounty/a.csv",
        "kind": "conversions",
        "state": "applied",
        "data_lines": 10,
        "outcomes": {"inserted": 5, "ignored_duplicate": 1, "rejected": 4},
        "reasons": {"invalid_payout": 2, "invalid_time": 1, "missing_click_id": 1, "x_y": 1},
        "examples": {"invalid_payout": [3, 7], "invalid_time": [4], "missing_click_id": [9]},
        "warnings": ["ignored unknown column 'note'"],
        "report_path": "/r/a.rejected.csv",
        "summary_path": "/r/a.summary.json",
    }
    assert steps.story(result) == [
        "maxbounty/a.csv (conversions): applied, 10 data lines",
        "  applied: 5 inserted",
        "  ignored as duplicates: 1 line",
        "  rejected: 4 lines",
        "    invalid_payout: 2 lines (lines 3, 7)",
        "      fix: write the payout like 12.50: no currency sign, thousands separator or "
        "decimal comma",
        "    invalid_time: 1 line (line 4)",
        "      fix: write the time like 2026-03-08 14:00:00; day-first or month-first dates are "
        "never guessed",
        "    missing_click_id: 1 line (line 9)",
        "      fix: fill in the tracker's click id",
        "    and 1 more reason: see the rejection report",
        "  warning: ignored unknown column 'note'",
        "  rejection report: /r/a.rejected.csv",
        "  summary: /r/a.summary.json",
    ]
    # Paths inside the data directory are told relative to it; a report with no rows is not told.
    assert steps.story(result | {"outcomes": {"inserted": 10}, "reasons": {}}, home="/r") == [
        "maxbounty/a.csv (conversions): applied, 10 data lines",
        "  applied: 10 inserted",
        "  warning: ignored unknown column 'note'",
        "  summary: a.summary.json",
    ]


ALL_REJECTED = {
    "file": "maxbounty/edit/a.csv",
    "kind": "conversions",
    "state": "applied",
    "data_lines": 2,
    "outcomes": {"rejected": 2},
    "reasons": {"invalid_payout": 2},
    "examples": {"invalid_payout": [2, 3]},
    "warnings": [
        "ignored unknown column 'note'",
        "all_rows_rejected: every one of the 2 data lines was rejected",
    ],
}


def test_story_tells_a_file_with_every_row_rejected_first():
    lines = steps.story(ALL_REJECTED)
    assert lines == [
        "maxbounty/edit/a.csv (conversions): applied, 2 data lines",
        "  WARNING: all_rows_rejected: every one of the 2 data lines was rejected",
        "  applied: nothing",
        "  rejected: 2 lines",
        "    invalid_payout: 2 lines (lines 2, 3)",
        "      fix: write the payout like 12.50: no currency sign, thousands separator or "
        "decimal comma",
        "  warning: ignored unknown column 'note'",  # once, in its place
    ]
    # A result without the warning (one recorded before a crash) is told from its counts.
    bare = steps.story(ALL_REJECTED | {"warnings": []})
    assert bare[1:3] == [
        "  WARNING: all_rows_rejected: all 2 data line(s) were rejected; nothing of the file was "
        "applied (see",
        "    the rejection report)",
    ]
    assert not any("all_rows_rejected" in line for line in steps.story(ALL_REJECTED | {
        "warnings": [], "outcomes": {"inserted": 1, "rejected": 1}
    }))  # fmt: skip


def test_totals_count_files_with_every_row_rejected():
    total = steps.totals(
        [
            {"name": "a", "offer_source": "s", "kind": "conversions", "state": "applied",
             "data_lines": 2, "outcomes": {"rejected": 2}},
            {"name": "b", "offer_source": "s", "kind": "conversions", "state": "dry_run",
             "data_lines": 1, "outcomes": {"rejected": 1}},
            {"name": "c", "offer_source": "s", "kind": "conversions", "state": "applied",
             "data_lines": 2, "outcomes": {"inserted": 1, "rejected": 1}},
            {"name": "d", "offer_source": "s", "kind": "conversions", "state": "applied",
             "data_lines": 0, "outcomes": {}},
        ]
    )  # fmt: skip
    assert total["all_rows_rejected"] == 2
    assert total["states"] == {"applied": 3, "dry_run": 1}


def test_totals_count_states_and_outcomes():
    total = steps.totals(
        [
            {"name": "a", "offer_source": "s", "kind": "conversions", "state": "applied",
             "outcomes": {"inserted": 2, "rejected": 1}},
            {"name": "b", "offer_source": "s", "kind": "conversions", "state": "applied",
             "outcomes": {"inserted": 1}},
            {"name": "c", "offer_source": None, "kind": "conversions", "state": "quarantined"},
            None,
        ]
    )  # fmt: skip
    assert total["files"] == 3
    assert total["states"] == {"applied": 2, "quarantined": 1}
    assert total["outcomes"] == {
        "inserted": 3,
        "updated": 0,
        "incremented": 0,
        "status_updated": 0,
        "ignored_duplicate": 0,
        "rejected": 1,
    }
    assert total["all_rows_rejected"] == 0
    assert total["table"].splitlines()[-1] == (
        "total: 3 files (2 applied, 1 quarantined); 0 data lines: 3 inserted, 1 rejected"
    )


def test_an_airflow_connection_object_gives_the_url_its_fields_give():
    """`runtime.url_of` reads an Airflow `Connection` (the task SDK's, here) field by field."""
    from airflow.sdk import Connection

    conn = Connection(
        conn_id="conversions_warehouse",
        conn_type="postgres",
        host="db.internal",
        login="loader",
        password="secret",
        port=5433,
        schema="warehouse",
        extra='{"sslmode": "require"}',
    )
    parsed = make_url(runtime.url_of(conn))
    assert (parsed.drivername, parsed.host, parsed.port, parsed.database) == (
        "postgresql+psycopg",
        "db.internal",
        5433,
        "warehouse",
    )
    assert (parsed.username, parsed.password, parsed.query) == (
        "loader",
        "secret",
        {"sslmode": "require"},
    )
