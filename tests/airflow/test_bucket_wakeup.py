"""The bucket's event notifications wake `conversions_file_drop`: S3 -> SQS -> the triggerer.

A real deployment (`airflow api-server`, `scheduler`, `dag-processor`, `triggerer`,
LocalExecutor, metadata and warehouse in fresh PostgreSQL databases) with the data directory in a
bucket on moto's server (`CONVERSIONS_HOME=s3://aws_default@bucket/prefix`, the connection
`aws_default` from the environment, no AWS_* variable) and `CONVERSIONS_WAKEUP_SQS_QUEUE` set to
a queue on the same server. The bucket side is the README's: a queue policy letting the bucket
send, and `s3:ObjectCreated:*` notifications for the inbox prefix to that queue.

`conversions_file_drop` has no schedule but its asset, so nothing else can start it: the test
uploads one file (no marker) and waits, bounded, for an `asset_triggered` run whose triggering
event carries the notification's message naming the uploaded key; the file must be applied
(the rows are worked out by hand), archived in the bucket with its bytes, gone from the inbox,
and no claim row left; the queue must be empty (the trigger deleted the message it read).

The config's `settle_seconds` is 20: the wake-up comes a second or two after the upload, so a
run that scanned the inbox at once would find the object too fresh to take and leave it for the
10-minute schedule. The file-drop run waits until what woke it has settled (see
`pipeline.airflow.taskflow.claim_files`), so the object is taken by that run.

Needs `CONVERSIONS_TEST_POSTGRES_URL`; unset: skipped (as the scheduler test). Every wait is
bounded.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote_plus

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
from tests.airflow.s3_bucket import Bucket

DAG_ID = "conversions_file_drop"
OFFER_SOURCE = "maxbounty"
SETTLE_SECONDS = 20
PROCESS_TIMEOUT = 240  # upload -> the run succeeded (20 s of it is the settle time)

NEEDS_POSTGRES = pytest.mark.skipif(
    not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
)

CONFIG = f"""
[settings]
settle_seconds = {SETTLE_SECONDS}

[accounts.newyork]
timezone = "America/New_York"
currency = "USD"

[offer_sources.{OFFER_SOURCE}]
account = "newyork"
duplicate_mode = "ignore"
default_status = "approved"
file_times = "account"
"""

FILE_NAME = "bucket_export.csv"
CSV = """click_id,payout,conversion_time
sqs-1,12.50,2024-07-01 14:00:00
sqs-2,3.10,2024-01-15 09:30:00
sqs-1,99.00,2024-07-02 10:00:00
sqs-3,x,2024-11-20 10:00:00
"""
# By hand: line 4 repeats sqs-1 (mode "ignore": the first wins), line 5's payout is not a number.
# EDT is UTC-4 (July), EST UTC-5 (January). Payouts in micros.
EXPECTED_ROWS = {
    "sqs-1": (12_500_000, datetime(2024, 7, 1, 18, 0, tzinfo=UTC)),
    "sqs-2": (3_100_000, datetime(2024, 1, 15, 14, 30, tzinfo=UTC)),
}
EXPECTED_OUTCOMES = {"inserted": 2, "ignored_duplicate": 1, "rejected": 1}


# --- without a deployment ----------------------------------------------------------------------


def test_an_object_storage_home_without_a_queue_is_refused_not_watched_as_a_folder(monkeypatch):
    """Before: an s3:// home made the _READY watcher watch `<cwd>/s3:/.../inbox` on the local
    disk, where nothing ever appears. The DAG's import error now says what to set."""
    from pipeline.airflow import taskflow

    monkeypatch.setenv("CONVERSIONS_HOME", "s3://aws_default@bucket/conversions")
    monkeypatch.delenv("CONVERSIONS_WAKEUP_SQS_QUEUE", raising=False)
    with pytest.raises(ValueError, match="Set CONVERSIONS_WAKEUP_SQS_QUEUE"):
        taskflow.ready_asset()


class _Settings:
    settle_seconds = 3


class _Config:
    settings = _Settings
    offer_sources = ("maxbounty",)


class _Stop:
    requested = False


@dataclass
class _DataDir:
    """An inbox of ``settled`` files old enough to take and ``fresh`` ones that are not."""

    settled: int
    fresh: int

    def scan(self, offer_sources, settle_seconds: float = 0) -> list[str]:
        assert offer_sources == _Config.offer_sources
        return ["f"] * (self.settled + (0 if settle_seconds else self.fresh))


@dataclass
class _Ctx:
    """What `_let_the_wake_up_settle` reads of a run's context."""

    datadir: _DataDir
    config: type = _Config
    stop: type = _Stop


@dataclass
class _Event:
    timestamp: datetime


def test_a_woken_run_waits_until_the_event_that_woke_it_has_settled():
    from pipeline.airflow.taskflow import _let_the_wake_up_settle

    def waited(events, settled: int = 1, fresh: int = 1) -> float:
        start = time.monotonic()
        _let_the_wake_up_settle(_Ctx(_DataDir(settled, fresh)), events)
        return time.monotonic() - start

    now = datetime.now(UTC)
    assert 1.5 < waited({"asset": [_Event(now - timedelta(seconds=1))]}) < 2.8
    assert waited({"asset": [_Event(now - timedelta(seconds=10))]}) < 0.2  # settled already
    assert waited({"asset": [_Event(now)]}, fresh=0) < 0.2  # nothing waiting is too fresh
    assert waited({}) < 0.2  # a scheduled run: no event, no wait
    assert waited(None) < 0.2


# --- the deployment -----------------------------------------------------------------------------


@pytest.fixture
def bucket(moto_endpoint: str) -> Bucket:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
    return Bucket.create(moto_endpoint)


@pytest.fixture
def deployment(
    tmp_path: Path, databases: dict[str, str], bucket: Bucket
) -> Iterator[tuple[Deployment, str]]:
    queue_url = bucket.notify_queue(f"conversions-inbox-{uuid.uuid4().hex[:8]}")
    # S3 (moto as AWS) says hello on the queue when the configuration is put: a wake-up that
    # would start a run before the upload. Taken off here, so that only the upload can.
    assert [body.get("Event") for body in bucket.drain(queue_url)] == ["s3:TestEvent"]
    d = Deployment(
        tmp_path,
        databases["metadata"],
        databases["warehouse"],
        CONFIG,
        OFFER_SOURCE,
        DAG_ID,
        extra_env={
            "CONVERSIONS_HOME": bucket.home,
            "CONVERSIONS_WAKEUP_SQS_QUEUE": queue_url,
            **bucket.connection_env(),
        },
    )
    try:
        yield d, queue_url
    finally:
        d.stop()


def _warehouse_rows(d: Deployment) -> dict[str, tuple[int, datetime, str, str]]:
    t = warehouse.conversions
    with d.warehouse.connect() as conn:
        rows = conn.execute(
            select(t.c.click_id, t.c.payout, t.c.converted_at, t.c.status, t.c.currency)
        ).all()
    return {r.click_id: (r.payout, r.converted_at, r.status, r.currency) for r in rows}


def _runs(d: Deployment) -> list:
    return d.query(
        "SELECT id, run_id, run_type, state FROM dag_run WHERE dag_id = :d ORDER BY id", d=DAG_ID
    )


@pytest.mark.slow
@NEEDS_POSTGRES
def test_an_upload_notified_to_sqs_wakes_the_file_drop_dag(
    deployment: tuple[Deployment, str], bucket: Bucket
) -> None:
    d, queue_url = deployment
    started = time.monotonic()
    d.cli("db", "migrate", timeout=MIGRATE_TIMEOUT)
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
        "the SQS watcher's trigger to run in the triggerer",
        lambda: d.query(
            "SELECT 1 FROM trigger WHERE classpath LIKE '%SqsSensorTrigger' "
            "AND triggerer_id IS NOT NULL"
        ),
        STARTUP_TIMEOUT,
    )
    # Nothing ran before the upload: the DAG has no schedule of its own.
    assert _runs(d) == [], d.diagnostics()
    # ... and the trigger polls the queue (its first empty poke is in the triggerer's log).
    d.wait_for(
        "the trigger to poll the queue",
        lambda: "No messages found in SQS queue" in (d.tmp / "triggerer.log").read_text(),
        STARTUP_TIMEOUT,
    )
    ready = time.monotonic()

    key = f"inbox/{OFFER_SOURCE}/{FILE_NAME}"
    bucket.put(key, CSV.encode())  # the sender: one upload, no marker
    uploaded = time.monotonic()

    run = d.wait_for(
        f"a finished {DAG_ID} run",
        lambda: [r for r in _runs(d) if r.state in ("success", "failed")],
        PROCESS_TIMEOUT,
    )
    finished = time.monotonic()
    assert [(r.run_type, r.state) for r in run] == [("asset_triggered", "success")], d.diagnostics()

    # The run was started by the watcher's event, and that event carries the notification.
    events = d.query(
        "SELECT e.id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = 'conversions_inbox_ready' ORDER BY e.id"
    )
    consumed = d.query(
        "SELECT r.event_id FROM dagrun_asset_event r WHERE r.dag_run_id = :r",
        r=run[0].id,
    )
    assert [c.event_id for c in consumed] == [events[0].id], (events, consumed)
    extra = events[0].extra if isinstance(events[0].extra, dict) else json.loads(events[0].extra)
    bodies = [json.loads(m["Body"]) for m in extra["payload"]["message_batch"]]
    # (S3 URL-encodes the key in a notification, as AWS does)
    notified = [
        unquote_plus(r["s3"]["object"]["key"]) for body in bodies for r in body.get("Records", [])
    ]
    assert notified == [f"{bucket.prefix}/{key}"], extra

    # The file was applied by that run: the rows, the ledger, the bucket, no claim.
    assert _warehouse_rows(d) == {
        click: (payout, at, "approved", "USD") for click, (payout, at) in EXPECTED_ROWS.items()
    }, d.diagnostics()
    t = warehouse.ingested_files
    with d.warehouse.connect() as conn:
        ledger = conn.execute(select(t)).mappings().all()
        claims = conn.execute(select(warehouse.schema.inbox_claims)).all()
    assert [(r["original_name"], r["state"]) for r in ledger] == [(FILE_NAME, "applied")]
    assert {o: ledger[0][o] for o in OUTCOMES if ledger[0][o]} == EXPECTED_OUTCOMES
    assert claims == []
    processed = d.query(
        "SELECT state, rendered_map_index FROM task_instance "
        "WHERE dag_id = :d AND run_id = :r AND task_id = 'process_file'",
        d=DAG_ID,
        r=run[0].run_id,
    )
    assert [(p.state, p.rendered_map_index) for p in processed] == [
        ("success", f"{OFFER_SOURCE}/{FILE_NAME}")
    ], d.diagnostics()
    assert bucket.objects("inbox") == {}
    archived = {k: v for k, v in bucket.objects("archive").items() if not k.endswith(".json")}
    assert [k.split("/")[1:3] for k in archived] == [[OFFER_SOURCE, "conversions"]], archived
    assert list(archived.values()) == [CSV.encode()]
    assert bucket.objects("quarantine") == {}
    left = bucket.sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert left == "0"
    print(
        f"\n[bucket wake-up] components ready {ready - started:.1f}s; upload -> run finished "
        f"{finished - uploaded:.1f}s (settle {SETTLE_SECONDS}s)"
    )
