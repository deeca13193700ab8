"""The DAGs on the real Airflow: parsed by a DagBag, run with ``dag.test()``, on both warehouses.

Airflow's home is the throwaway one ``conftest`` sets up (SQLite metadata database). Each test
gets its own data directory, config and warehouse through the same environment variables a
deployment sets. Expectations are worked out by hand from the files written here: New York is
GMT-4 in July; maxbounty (New York, ignore) reads account time, clickbank (Dubai, edit) UTC.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import export, warehouse
from pipeline.config import load
from tests.helpers import REPO, write_csv
from tests.helpers import SAMPLE_CONFIG as CONFIG
from tests.integration.test_runner import CLICKBANK, MAXBOUNTY, STATUS  # the same files, by hand

STRAY = "click_id,payout\nz9,1.00\n"


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.resetdb()  # a fresh metadata database for this module
    return db


@pytest.fixture
def home(tmp_path: Path, warehouse_url: str, monkeypatch) -> Path:
    """A data directory with a config, wired to the DAGs through the environment."""
    home = tmp_path / "conversions"
    home.mkdir()
    (home / "conversions.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("CONVERSIONS_HOME", str(home))
    monkeypatch.delenv("CONVERSIONS_CONFIG", raising=False)  # default: the home's config
    monkeypatch.setenv("CONVERSIONS_WAREHOUSE_URL", warehouse_url)
    monkeypatch.delenv("AIRFLOW_CONN_CONVERSIONS_WAREHOUSE", raising=False)
    return home


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


def run(dag_id: str, **conf):
    dag_run = dagbag().dags[dag_id].test(run_conf=conf or None)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    return dag_run, states


def exported(home: Path, url: str) -> list[tuple]:
    engine = warehouse.connect(url)
    try:
        data = export.frame(engine, load(home / "conversions.toml"))
    finally:
        engine.dispose()
    return [
        (r.offer_source, r.click_id, r.status, r.payout, r.converted_at) for r in data.itertuples()
    ]


def ledger(url: str) -> list[tuple]:
    engine = warehouse.connect(url)
    f = warehouse.ingested_files
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(f.c.original_name, f.c.state, f.c.offer_source).order_by(f.c.file_id)
            ).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in rows]


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def asset_events(run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.name, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_run_id == run_id)
        ).all()
    return [{"asset": name, **(extra or {})} for name, extra in rows]


# --- the DagBag ---------------------------------------------------------------------------------


def test_the_dag_folder_holds_exactly_the_three_dags_with_schedules_params_and_tags(
    airflow_db, tmp_path, monkeypatch
):
    from airflow.providers.standard.triggers.file import DirectoryFileDeleteTrigger
    from airflow.sdk.definitions.param import ParamValidationError

    monkeypatch.setenv("CONVERSIONS_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("CONVERSIONS_SCHEDULE", "*/10 * * * *")
    bag = dagbag()
    assert sorted(bag.dags) == ["conversions_file_drop", "conversions_inbox", "conversions_replay"]
    inbox_dag, drop_dag, replay_dag = (
        bag.dags[d] for d in ("conversions_inbox", "conversions_file_drop", "conversions_replay")
    )
    for dag in bag.dags.values():
        assert "conversions" in dag.tags
        assert dag.doc_md and dag.doc_md.strip().startswith("### ")
        assert dag.catchup is False

    assert inbox_dag.timetable.expression == "*/10 * * * *"
    assert inbox_dag.max_active_runs == 1
    assert {t.task_id for t in inbox_dag.tasks} == {
        "claim_files",
        "conversion_files",
        "status_files",
        "process_file",
        "process_status_file",
        "summarise",
    }
    assert inbox_dag.get_task("process_file").retries == 2
    assert {t.task_id for t in drop_dag.tasks} == {t.task_id for t in inbox_dag.tasks}

    [ready] = drop_dag.timetable.asset_condition.objects
    [watcher] = ready.watchers
    assert isinstance(watcher.trigger, DirectoryFileDeleteTrigger)
    assert watcher.trigger.directory == str(tmp_path / "data" / "inbox")
    assert watcher.trigger.filename == "_READY"

    assert type(replay_dag.timetable).__name__ == "NullTimetable"  # manual only
    params = replay_dag.params
    assert list(params) == [
        "start_date",
        "end_date",
        "offer_source",
        "kind",
        "duplicate_mode",
        "dry_run",
        "force",
    ]
    assert (params["dry_run"], params["force"], params["kind"]) == (True, False, "conversions")
    for name, bad in [
        ("start_date", "2026-13-01"),
        ("kind", "everything"),
        ("duplicate_mode", "overwrite"),
        ("offer_source", "../etc"),
        ("dry_run", "yes"),
    ]:
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert params.get_param("duplicate_mode").resolve("edit") == "edit"


def test_the_inbox_and_file_drop_dags_spell_out_the_same_graph(airflow_db, tmp_path, monkeypatch):
    """Both DAG files write the pass over the inbox out in full: they must not drift apart."""
    monkeypatch.setenv("CONVERSIONS_HOME", str(tmp_path / "data"))
    bag = dagbag()

    def graph(dag_id: str) -> dict[str, tuple[list[str], str]]:  # trigger rules are str enums
        dag = bag.dags[dag_id]
        return {t.task_id: (sorted(t.upstream_task_ids), t.trigger_rule) for t in dag.tasks}

    inbox = graph("conversions_inbox")
    assert graph("conversions_file_drop") == inbox
    assert inbox["conversion_files"][0] == inbox["status_files"][0] == ["claim_files"]
    assert inbox["process_file"][0] == ["conversion_files"]
    assert inbox["process_status_file"][0] == ["process_file", "status_files"]
    assert inbox["summarise"][0] == [
        "conversion_files",
        "process_file",
        "process_status_file",
        "status_files",
    ]
    assert inbox["process_status_file"][1] == inbox["summarise"][1] == "all_done"


def test_the_schedule_is_configurable(airflow_db, monkeypatch):
    monkeypatch.setenv("CONVERSIONS_SCHEDULE", "0 * * * *")
    import importlib

    import pipeline.airflow.taskflow

    try:
        importlib.reload(pipeline.airflow.taskflow)
        assert dagbag().dags["conversions_inbox"].timetable.expression == "0 * * * *"
    finally:
        monkeypatch.delenv("CONVERSIONS_SCHEDULE")
        importlib.reload(pipeline.airflow.taskflow)


def test_a_queue_url_makes_bucket_notifications_the_wake_up_and_bad_values_are_named(
    airflow_db, tmp_path, monkeypatch
):
    """CONVERSIONS_WAKEUP_SQS_QUEUE swaps the _READY watcher for one on the bucket's
    notification queue (the amazon provider's SqsSensorTrigger, an event trigger Airflow 3.3
    accepts in an AssetWatcher); without the provider, or with a value that is not a queue URL,
    parsing stops with an error that says what to do, never a silent fall-back to the marker."""
    from airflow.sdk import AssetWatcher

    from pipeline.airflow import taskflow

    monkeypatch.setenv("CONVERSIONS_HOME", str(tmp_path / "data"))
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/conversions-inbox"
    monkeypatch.setenv("CONVERSIONS_WAKEUP_SQS_QUEUE", url)
    monkeypatch.setenv("CONVERSIONS_WAKEUP_AWS_CONN_ID", "inbox_aws")
    try:
        from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
    except ImportError:  # this branch's environment: the provider comes with object storage
        with pytest.raises(RuntimeError, match=r"apache-airflow-providers-amazon\[aiobotocore\]"):
            taskflow.ready_asset()
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags" / "conversions_file_drop.py"))
        [error] = bag.import_errors.values()  # the DAG shows the reason in the UI
        assert "CONVERSIONS_WAKEUP_SQS_QUEUE" in error
    else:
        [watcher] = taskflow.ready_asset().watchers
        assert isinstance(watcher, AssetWatcher)
        assert isinstance(watcher.trigger, SqsSensorTrigger)
        _, kwargs = watcher.trigger.serialize()
        assert (kwargs["sqs_queue"], kwargs["aws_conn_id"]) == (url, "inbox_aws")

    monkeypatch.setenv("CONVERSIONS_WAKEUP_SQS_QUEUE", "conversions-inbox")
    with pytest.raises(ValueError, match="must be the queue's URL"):
        taskflow.ready_asset()

    monkeypatch.setenv("CONVERSIONS_WAKEUP_SQS_QUEUE", "  ")  # empty: the marker, as before
    [watcher] = taskflow.ready_asset().watchers
    assert watcher.trigger.filename == "_READY"
    assert watcher.trigger.directory == str(tmp_path / "data" / "inbox")


# --- conversions_inbox --------------------------------------------------------------------------


def test_inbox_dag_applies_two_offer_sources_archives_quarantines_and_reports(
    airflow_db, home, warehouse_url
):
    write_csv(home / "inbox/maxbounty/a.csv", MAXBOUNTY)
    write_csv(home / "inbox/maxbounty/status/0_first_by_name.csv", STATUS)  # still runs last
    write_csv(home / "inbox/clickbank/c.csv", CLICKBANK)
    write_csv(home / "inbox/stray.csv", STRAY)  # not in an offer source's folder

    dag_run, states = run("conversions_inbox")

    assert dag_run.state == "success"
    assert set(states.values()) == {"success"}
    assert sorted(k for k in states if k[0].startswith("process")) == [
        ("process_file", 0),
        ("process_file", 1),
        ("process_file", 2),
        ("process_status_file", 0),
    ]
    assert exported(home, warehouse_url) == [
        ("clickbank", "c1", "approved", "7.25", "2026-07-01T10:00:00Z"),
        ("maxbounty", "m1", "declined", "5.00", "2026-07-01T18:00:00Z"),
    ]
    assert files_under(home / "inbox") == []
    assert files_under(home / "processing") == []
    [day] = [p.name for p in (home / "archive").iterdir()]
    assert files_under(home / "archive") == sorted(
        [
            f"{day}/clickbank/conversions/{sha256(CLICKBANK)[:16]}_c.csv",
            f"{day}/clickbank/conversions/{sha256(CLICKBANK)[:16]}_c.csv.json",
            f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv",
            f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv.json",
            f"{day}/maxbounty/status/{sha256(STATUS)[:16]}_0_first_by_name.csv",
            f"{day}/maxbounty/status/{sha256(STATUS)[:16]}_0_first_by_name.csv.json",
        ]
    )
    # Quarantined before it was read (no offer source), so named by its claim id, not a hash.
    quarantined = files_under(home / "quarantine")
    assert [re.sub(r"/[0-9a-f]{16}_", "/<claim>_", q) for q in quarantined] == [
        f"{day}/_unknown/<claim>_stray.csv",
        f"{day}/_unknown/<claim>_stray.csv.reason.json",
    ]
    assert (home / "quarantine" / quarantined[0]).read_text() == STRAY
    reason = json.loads((home / "quarantine" / quarantined[1]).read_text(encoding="utf-8"))
    assert reason["code"] == "unknown_offer_source"
    report = home / "reports" / day / f"a.{sha256(MAXBOUNTY)[:12]}.rejected.csv"
    assert "invalid_payout" in report.read_text(encoding="utf-8-sig")
    assert sorted(ledger(warehouse_url)) == [
        ("0_first_by_name.csv", "applied", "maxbounty"),
        ("a.csv", "applied", "maxbounty"),
        ("c.csv", "applied", "clickbank"),
    ]
    # One `conversions` asset event per applied file; the quarantined file emits none.
    events = asset_events(dag_run.run_id)
    assert sorted((e["asset"], e["file"]) for e in events) == [
        ("conversions", "clickbank/c.csv"),
        ("conversions", "maxbounty/a.csv"),
        ("conversions", "maxbounty/status/0_first_by_name.csv"),
    ]

    again, states = run("conversions_inbox")  # nothing waiting: the mapped tasks are skipped
    assert again.state == "success"
    assert states[("summarise", -1)] == "success"
    assert exported(home, warehouse_url)[1][3] == "5.00"


def test_the_warehouse_connection_wins_and_its_password_is_never_shown(
    airflow_db, home, warehouse_url, tmp_path, monkeypatch, capfd
):
    from sqlalchemy.engine import make_url

    url = make_url(warehouse_url)
    if url.get_backend_name() == "sqlite":
        connection = {"conn_type": "sqlite", "host": str(tmp_path / "from_connection.db")}
        target = f"sqlite:///{tmp_path / 'from_connection.db'}"
        password = None
    else:  # trust authentication accepts any password, which is what must stay hidden
        password = "s3cret-Pa55word"
        connection = {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port or 5432,
            "login": url.username,
            "password": password,
            "schema": url.database,
            "extra": {"options": url.query["options"]},
        }
        target = warehouse_url
        monkeypatch.setenv("CONVERSIONS_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setenv("AIRFLOW_CONN_CONVERSIONS_WAREHOUSE", json.dumps(connection))
    if password is None:
        monkeypatch.setenv("CONVERSIONS_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    write_csv(home / "inbox/clickbank/c.csv", CLICKBANK)

    dag_run, _ = run("conversions_inbox")

    assert dag_run.state == "success"
    assert exported(home, target) == [
        ("clickbank", "c1", "approved", "7.25", "2026-07-01T10:00:00Z")
    ]
    assert exported(home, f"sqlite:///{tmp_path / 'unused.db'}") == []
    if password:
        out, err = capfd.readouterr()
        assert "c.csv" in out + err  # the task logs were captured here
        assert password not in out + err
        for path in (home / "reports").rglob("*"):
            if path.is_file():
                assert password not in path.read_text(encoding="utf-8-sig")


# --- conversions_file_drop ----------------------------------------------------------------------


def test_the_trigger_fires_on_the_ready_marker_only_and_deletes_it(tmp_path):
    from airflow.providers.standard.triggers.file import DirectoryFileDeleteTrigger

    inbox = tmp_path / "inbox"
    (inbox / "maxbounty").mkdir(parents=True)
    trigger = DirectoryFileDeleteTrigger(
        directory=str(inbox), filename="_READY", poke_interval=0.05
    )

    async def first_event(timeout: float):
        runner = trigger.run()
        try:
            return await asyncio.wait_for(runner.__anext__(), timeout)
        except TimeoutError:
            return None
        finally:
            await runner.aclose()

    write_csv(inbox / "maxbounty/a.csv", MAXBOUNTY)  # data files alone do not fire it
    (inbox / "maxbounty" / "_READY").touch()  # nor a marker in a subfolder
    assert asyncio.run(first_event(0.5)) is None

    async def drop_marker_then_wait():
        waiting = asyncio.create_task(first_event(10))
        await asyncio.sleep(0.2)
        (inbox / "_READY").touch()
        return await waiting

    event = asyncio.run(drop_marker_then_wait())
    assert event is not None and event.payload == {"filepath": str(inbox / "_READY")}
    assert not (inbox / "_READY").exists()
    assert (inbox / "maxbounty/a.csv").exists()  # the trigger touches nothing else


def test_file_drop_dag_processes_the_inbox(airflow_db, home, warehouse_url):
    write_csv(home / "inbox/maxbounty/a.csv", MAXBOUNTY)
    dag_run, states = run("conversions_file_drop")
    assert dag_run.state == "success"
    assert states[("process_file", 0)] == "success"
    assert exported(home, warehouse_url) == [
        ("maxbounty", "m1", "approved", "5.00", "2026-07-01T18:00:00Z"),
    ]
    assert [e["file"] for e in asset_events(dag_run.run_id)] == ["maxbounty/a.csv"]


# --- conversions_replay -------------------------------------------------------------------------

FIRST = "click_id,payout,conversion_time\nc1,5.00,2026-07-01 10:00:00\n"
SECOND = "click_id,payout,conversion_time\nc1,9.00,2026-07-01 10:00:00\n"


def test_replay_dry_run_changes_nothing_and_force_with_edit_updates_payouts(
    airflow_db, home, warehouse_url
):
    # maxbounty ignores duplicates: the second file's payout for c1 is ignored at first. Two
    # passes, because files of one offer source in one pass apply in an order Airflow picks.
    write_csv(home / "inbox/maxbounty/1_first.csv", FIRST)
    assert run("conversions_inbox")[0].state == "success"
    write_csv(home / "inbox/maxbounty/2_second.csv", SECOND)
    assert run("conversions_inbox")[0].state == "success"
    before = exported(home, warehouse_url)
    assert before == [("maxbounty", "c1", "approved", "5.00", "2026-07-01T14:00:00Z")]
    today = datetime.now(UTC).date().isoformat()
    archive_before = files_under(home / "archive")

    # A dry run of the forced edit: reports what it would do, changes nothing.
    dry, states = run(
        "conversions_replay",
        start_date=today,
        end_date=today,
        force=True,
        duplicate_mode="edit",
    )
    assert dry.state == "success"
    assert states == {("select_archived", -1): "success", ("replay_files", -1): "success"}
    assert exported(home, warehouse_url) == before
    replays = home / "reports" / "replays"
    [run_folder] = list(replays.iterdir())
    summaries = sorted(run_folder.rglob("*.summary.json"))
    assert [json.loads(p.read_text())["state"] for p in summaries] == ["dry_run", "dry_run"]
    assert [json.loads(p.read_text())["outcomes"]["updated"] for p in summaries] == [1, 1]

    plain, _ = run("conversions_replay", start_date=today, end_date=today, dry_run=False)
    assert plain.state == "success"
    assert exported(home, warehouse_url) == before  # already applied: duplicate_file
    assert [state for _, state, _ in ledger(warehouse_url)][-2:] == [
        "duplicate_file",
        "duplicate_file",
    ]

    forced, _ = run(
        "conversions_replay",
        start_date=today,
        end_date=today,
        dry_run=False,
        force=True,
        duplicate_mode="edit",
        offer_source="maxbounty",
    )
    assert forced.state == "success"
    # Re-applied oldest first with `edit`: 5.00, then the second file's 9.00 wins.
    assert exported(home, warehouse_url) == [
        ("maxbounty", "c1", "approved", "9.00", "2026-07-01T14:00:00Z")
    ]
    assert files_under(home / "archive") == archive_before  # originals stay where they were

    empty, states = run(
        "conversions_replay", start_date="2020-01-01", end_date="2020-01-02", dry_run=False
    )
    assert empty.state == "success"
    assert states[("select_archived", -1)] == "success"


def test_replay_refuses_a_range_that_ends_before_it_starts(airflow_db, home):
    today = date.today()
    dag_run, states = run(
        "conversions_replay",
        start_date=today.isoformat(),
        end_date=date.fromordinal(today.toordinal() - 1).isoformat(),
    )
    assert dag_run.state == "failed"
    assert states[("select_archived", -1)] == "failed"
