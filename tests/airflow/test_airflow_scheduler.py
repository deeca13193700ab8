"""Scheduler-level end to end: a real Airflow deployment picks up a dropped file.

Starts `airflow api-server`, `scheduler`, `dag-processor` and `triggerer` as subprocesses
(LocalExecutor, metadata in a fresh PostgreSQL database), then plays the sender: writes a CSV
into `inbox/<offer_source>/` under a temporary name, renames it, creates `inbox/_READY`. The
triggerer's watcher deletes the marker and updates the asset, the scheduler starts
`conversions_file_drop`, and its tasks (reporting to the api-server's execution API) merge the
rows into the warehouse, another fresh PostgreSQL database. Only that DAG is unpaused: the
scheduled `conversions_inbox` would race it for the file. Every wait is bounded; a timeout
fails with the tail of each component's log, the task logs and the task instance states.

Needs `CONVERSIONS_TEST_POSTGRES_URL` (any database on the server; the test creates and drops
its own two). Unset: skipped. Set but the server does not answer: an error, never a skip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import warehouse
from pipeline.core.vocabulary import OUTCOMES
from tests.airflow.airflow_deployment import (
    MIGRATE_TIMEOUT,
    POSTGRES_URL,
    STARTUP_TIMEOUT,
    Deployment,
)

DAG_ID = "conversions_file_drop"
OFFER_SOURCE = "maxbounty"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"),
]

# Bounds (seconds). Generous for a loaded CI machine; the happy path takes a fraction.
PROCESS_TIMEOUT = 180  # marker dropped -> rows in the warehouse and the run succeeded

CONFIG = f"""
[settings]
settle_seconds = 0  # the file is dropped, then the marker: claim it at once

[accounts.newyork]
timezone = "America/New_York"
currency = "USD"

[offer_sources.{OFFER_SOURCE}]
account = "newyork"
duplicate_mode = "ignore"
default_status = "approved"
file_times = "account"
"""

FILE_NAME = "e2e_export.csv"
# Times are New York wall-clock times (file_times = "account"); all in the past.
CSV = """click_id,payout,conversion_time
e2e-1,12.50,2024-07-01 14:00:00
e2e-2,3.10,2024-01-15 09:30:00
e2e-1,99.00,2024-07-02 10:00:00
e2e-3,0.25,2024-11-20 23:15:00
e2e-4,abc,2024-11-20 10:00:00
"""
# Derived by hand: line 4 repeats e2e-1 (mode "ignore": the first wins), line 6's payout is not a
# number. EDT is UTC-4 (July), EST is UTC-5 (January; November after the 3rd). Payouts in micros.
EXPECTED_ROWS = {
    "e2e-1": (12_500_000, datetime(2024, 7, 1, 18, 0, tzinfo=UTC)),
    "e2e-2": (3_100_000, datetime(2024, 1, 15, 14, 30, tzinfo=UTC)),
    "e2e-3": (250_000, datetime(2024, 11, 21, 4, 15, tzinfo=UTC)),
}
EXPECTED_OUTCOMES = {"inserted": 3, "ignored_duplicate": 1, "rejected": 1}


@pytest.fixture
def deployment(tmp_path: Path, databases: dict[str, str]) -> Iterator[Deployment]:
    d = Deployment(
        tmp_path, databases["metadata"], databases["warehouse"], CONFIG, OFFER_SOURCE, DAG_ID
    )
    try:
        yield d
    finally:
        stopping = time.monotonic()
        d.stop()
        print(f"[airflow e2e] stopping the components took {time.monotonic() - stopping:.1f}s")


def _warehouse_rows(d: Deployment) -> dict[str, tuple[int, datetime, str, str]]:
    t = warehouse.conversions
    with d.warehouse.connect() as conn:
        rows = conn.execute(
            select(t.c.click_id, t.c.payout, t.c.converted_at, t.c.status, t.c.currency)
        ).all()
    return {r.click_id: (r.payout, r.converted_at, r.status, r.currency) for r in rows}


def test_marker_drop_runs_the_file_drop_dag_end_to_end(deployment: Deployment) -> None:
    d = deployment
    started = time.monotonic()

    d.cli("db", "migrate", timeout=MIGRATE_TIMEOUT)
    migrated = time.monotonic()

    d.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(d.api_port))
    d.start("scheduler", "scheduler")
    d.start("dag-processor", "dag-processor")
    d.start("triggerer", "triggerer")

    d.wait_for("the api-server to answer", d.api_healthy, STARTUP_TIMEOUT)
    d.wait_for(
        f"{DAG_ID} to be parsed",
        lambda: d.query("SELECT 1 FROM dag WHERE dag_id = :d AND NOT is_stale", d=DAG_ID),
        STARTUP_TIMEOUT,
    )
    d.cli("dags", "unpause", DAG_ID)
    d.wait_for(
        "the _READY watcher's trigger to run in the triggerer",
        lambda: d.query(
            "SELECT 1 FROM trigger WHERE classpath LIKE '%DirectoryFileDeleteTrigger' "
            "AND triggerer_id IS NOT NULL"
        ),
        STARTUP_TIMEOUT,
    )
    ready = time.monotonic()

    # The sender: the file under a temporary name, renamed when complete, then the marker.
    folder = d.layout_inbox / OFFER_SOURCE
    partial = folder / f"{FILE_NAME}.partial"
    partial.write_text(CSV)
    partial.rename(folder / FILE_NAME)
    marker = d.layout_inbox / "_READY"
    marker.touch()
    dropped = time.monotonic()
    dropped_on = datetime.now(UTC).date()

    d.wait_for(
        "the rows in the warehouse",
        lambda: len(_warehouse_rows(d)) >= len(EXPECTED_ROWS),
        PROCESS_TIMEOUT,
    )
    rows_in = time.monotonic()
    run = d.wait_for(
        f"a successful {DAG_ID} run",
        lambda: d.query(
            "SELECT run_id, run_type FROM dag_run WHERE dag_id = :d AND state = 'success'",
            d=DAG_ID,
        ),
        max(10.0, PROCESS_TIMEOUT - (rows_in - dropped)),
    )
    succeeded = time.monotonic()

    rows = _warehouse_rows(d)
    assert rows == {
        click: (payout, at, "approved", "USD") for click, (payout, at) in EXPECTED_ROWS.items()
    }, d.diagnostics()
    t = warehouse.ingested_files
    with d.warehouse.connect() as conn:
        ledger = conn.execute(select(t).where(t.c.original_name == FILE_NAME)).mappings().all()
    assert len(ledger) == 1, ledger
    assert ledger[0]["state"] == "applied"
    assert ledger[0]["offer_source"] == OFFER_SOURCE
    assert ledger[0]["data_lines"] == 5
    assert {o: ledger[0][o] for o in OUTCOMES if ledger[0][o]} == EXPECTED_OUTCOMES

    assert not marker.exists(), "the triggerer should have deleted the _READY marker"
    assert not (folder / FILE_NAME).exists(), "the file should have left the inbox"
    archived = list(d.home.glob(f"archive/*/{OFFER_SOURCE}/conversions/*_{FILE_NAME}"))
    assert len(archived) == 1, d.diagnostics()
    assert archived[0].read_text() == CSV
    day = archived[0].parts[-4]
    assert day in {dropped_on.isoformat(), datetime.now(UTC).date().isoformat()}
    assert not list(d.home.glob("quarantine/**/*.csv"))

    assert len(run) == 1 and run[0].run_type == "asset_triggered", run
    processed = d.query(
        "SELECT state, rendered_map_index FROM task_instance "
        "WHERE dag_id = :d AND run_id = :r AND task_id = 'process_file'",
        d=DAG_ID,
        r=run[0].run_id,
    )
    assert [(p.state, p.rendered_map_index) for p in processed] == [
        ("success", f"{OFFER_SOURCE}/{FILE_NAME}")
    ], d.diagnostics()

    # The watcher's event started the run; the applied file emitted one `conversions` event
    # (through the alias) for downstream DAGs, carrying the file's outcomes.
    events = d.query(
        "SELECT a.name, e.extra, e.source_dag_id, e.source_task_id FROM asset_event e "
        "JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
    )
    assert [e.name for e in events] == ["conversions_inbox_ready", "conversions"], events
    applied = events[1]
    extra = json.loads(applied.extra) if isinstance(applied.extra, str) else applied.extra
    assert (applied.source_dag_id, applied.source_task_id) == (DAG_ID, "process_file")
    assert extra["file"] == f"{OFFER_SOURCE}/{FILE_NAME}"
    assert {o: n for o, n in extra["outcomes"].items() if n} == EXPECTED_OUTCOMES

    print(
        f"\n[airflow e2e] db migrate {migrated - started:.1f}s; components ready "
        f"{ready - migrated:.1f}s; marker -> rows {rows_in - dropped:.1f}s; "
        f"marker -> run success {succeeded - dropped:.1f}s; "
        f"total so far {time.monotonic() - started:.1f}s (teardown follows)"
    )
