"""The DAGs on the CeleryExecutor: two workers apply each of 40 files exactly once, and the files
of a worker killed mid-run are finished by the other.

A real deployment on this machine: `airflow api-server`, `scheduler`, `dag-processor`,
`triggerer` and two `airflow celery worker` processes (`-H w1@…`, `-H w2@…`; their task
instances record `w1` and `w2` as host names through `[core] hostname_callable`), metadata and
Celery results in a fresh PostgreSQL database, Redis at 127.0.0.1:6379 as the broker with a
database number and a queue name of the test's own (nothing else on the machine takes its tasks,
and it takes nobody's). The sender drops 40 files of three offer sources (the concurrency test's
generator: the order of one offer source's files shows in its export) and `inbox/_READY`;
`conversions_file_drop` claims them and runs a `process_file` per file, spread over the workers.

While the workers are busy, worker 1 is killed with SIGKILL, with its whole process tree (the
task processes too): no shutdown, no rollback, claims and task instances left as they were. The
scheduler fails the tasks it held once their heartbeat stops (`task_instance_heartbeat_timeout`,
20 s here: the lease), their retries run on worker 2, take the claims over and finish the files.

What must hold, derived independently of the code under test:

* each file applied exactly once: one `applied` ledger row per dropped file (content hashes
  worked out here), one `process_file` task per file across the runs, each original in the
  archive once with its bytes, inbox, claims (`processing/`, or `inbox_claims` rows) and
  quarantine empty;
* per offer source, the warehouse equals some serial order: the ledger's commit order replayed
  file by file into a fresh warehouse gives the same export and the same outcome counts (as in
  `tests/guarantees/test_concurrency.py`, whose checks are reused);
* both workers applied files (worker 1 is killed once it has finished one); every task worker
  1 held when it died failed its try and succeeded on a later try on worker 2, started after
  the kill.

The data directory is one parameter (`data_directory`):

* `local`: a folder both workers on this machine see, woken by `inbox/_READY`;
* `s3`: a bucket on moto's server (`CONVERSIONS_HOME=s3://aws_default@<bucket>/conversions`, the
  README's Airflow form, the connection from `AIRFLOW_CONN_AWS_DEFAULT` with moto's endpoint; no
  AWS_* variable reaches Airflow), claims as `inbox_claims` rows in the warehouse, woken by the
  bucket's `s3:ObjectCreated:*` notifications on moto's SQS (no marker: each upload is notified,
  and more than one run may come of them; the later ones find nothing left). Its checks read the
  bucket with boto3 (archive with the bytes, inbox and quarantine empty) and `inbox_claims`
  with SQL (no row left, claimed or returned), not the local disk.

Needs `CONVERSIONS_TEST_POSTGRES_URL` and Redis (`CONVERSIONS_TEST_REDIS_URL`, default
redis://127.0.0.1:6379/11). Either missing: skipped, except under `CI`, where Redis missing is a
failure (PostgreSQL's rule is the scheduler test's). Every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from pipeline import config as config_module
from pipeline.core.vocabulary import OUTCOMES
from tests.airflow.airflow_deployment import (
    POSTGRES_URL,
    Deployment,
    _tail,
    databases,  # noqa: F401  (a fixture)
    sigterm_unwinds,  # noqa: F401  (a fixture)
)
from tests.airflow.s3_bucket import Bucket
from tests.guarantees.harness import LocalHome
from tests.guarantees.test_concurrency import (
    SOURCES,
    Dropped,
    assert_each_file_applied_once,
    counts_by_hash,
    drop_all,
    exported,
    ledger,
    ledger_order,
    make_files,
    serial_exports,
    write_config,
)
from tests.helpers import postgres_schema_url

DAG_ID = "conversions_file_drop"
REDIS_URL = os.environ.get("CONVERSIONS_TEST_REDIS_URL") or "redis://127.0.0.1:6379/11"
WORKERS = ("w1", "w2")
N_FILES, POOL, SEED = 40, 10, 20261203
# One task slot per worker (two in all on this 2-core machine): a worker then holds exactly the
# task it runs. With two slots, a task the worker had received but not yet started (its task
# instance still `queued`) was seen to wait for the scheduler's `task_queued_timeout` after the
# kill, since nothing else tells Airflow that it is gone.
CONCURRENCY = 1
WORKER_CELERY_CONFIG = {"worker_disable_prefetch": True, "imports": ["pipeline.airflow.steps"]}
HEARTBEAT_TIMEOUT = 20  # seconds without a heartbeat before a running task is failed

STARTUP_TIMEOUT = 180
KILL_TIMEOUT = 300  # marker dropped -> worker 1 finished a file and runs another
# The kill -> the run finished: heartbeat timeout + retry delay (30 s) + the rest of the files on
# one worker. A quiet machine needs about a minute; a loaded one (load 10 on 2 cores) measured 4.
RUN_TIMEOUT = 480

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"),
]


# --- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def redis_broker() -> Iterator[str]:
    """The broker URL; skipped without Redis, a failure under CI. Removes the test's queue."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis does not answer at {REDIS_URL}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield REDIS_URL
    finally:
        client.close()


def _drop_queue(queue: str) -> None:
    """Remove what this test left on the broker: its queue and its binding (by name only)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.delete(queue, f"_kombu.binding.{queue}")
    finally:
        client.close()


# --- the data directory (one parameter) ------------------------------------------------------


@dataclass
class LocalDataDirectory:
    """The data directory as a local folder that every worker sees (here: the same machine)."""

    home: Path
    # The watcher that wakes conversions_file_drop: the inbox's _READY marker.
    trigger_classpath = "%DirectoryFileDeleteTrigger"

    @property
    def setting(self) -> str:
        """The value of CONVERSIONS_HOME for every component."""
        return str(self.home)

    @property
    def env(self) -> dict[str, str]:
        """What every component needs besides CONVERSIONS_HOME."""
        return {}

    def prepare(self) -> None:
        (self.home / "inbox").mkdir(parents=True)  # the watched folder exists before the DAG

    def drop(self, files: Sequence[Dropped]) -> None:
        drop_all(LocalHome(self.home), files)

    def wake(self) -> None:
        (self.home / "inbox" / "_READY").touch()

    def assert_each_file_applied_once(
        self, rows: list[dict], files: Sequence[Dropped], warehouse_url: str
    ) -> None:
        assert_each_file_applied_once(LocalHome(self.home), warehouse_url, rows, files)

    def claims_left(self, warehouse_url: str) -> list[str]:
        return sorted(str(p.relative_to(self.home)) for p in self.home.glob("processing/*/*"))


@dataclass
class S3DataDirectory:
    """The data directory in a bucket on moto's server (`s3://aws_default@bucket/conversions`,
    the connection from AIRFLOW_CONN_AWS_DEFAULT, no AWS_* variable for Airflow), woken by the
    bucket's notifications on an SQS queue of the same server (README, "Event-driven runs from
    a bucket"): the documented set-up for several machines, where no _READY marker is watched.
    Every check reads the bucket and the warehouse's claims with boto3 and SQL, not through
    the code under test."""

    bucket: Bucket
    # The deployment's TMPDIR, where each task's spool (its local copies of claimed objects)
    # lives: checked after the run.
    tmp: Path
    queue_url: str = ""
    trigger_classpath = "%SqsSensorTrigger"

    @property
    def setting(self) -> str:
        return self.bucket.home

    @property
    def env(self) -> dict[str, str]:
        return self.bucket.connection_env() | {
            "CONVERSIONS_WAKEUP_SQS_QUEUE": self.queue_url,
            "TMPDIR": str(self.tmp),
        }

    def spooled_left(self) -> list[str]:
        """The local copies of claimed objects the deployment's processes left behind."""
        return sorted(p.name for p in self.tmp.glob("conversions-spool-*/*/*") if p.is_file())

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True)
        self.queue_url = self.bucket.notify_queue(f"conversions-e2e-{uuid.uuid4().hex[:8]}")
        # S3's s3:TestEvent on configuring: off the queue, so only the uploads wake the DAG.
        assert [body.get("Event") for body in self.bucket.drain(self.queue_url)] == ["s3:TestEvent"]

    def drop(self, files: Sequence[Dropped]) -> None:
        """One upload per file under its final name (an object appears whole); each is
        notified to the queue, which is the wake-up."""
        for f in files:
            self.bucket.put(f"inbox/{f.source}/{f.name}", f.original.read_bytes())

    def wake(self) -> None:
        """Nothing: the bucket's notifications of the uploads are the wake-up."""

    def assert_each_file_applied_once(
        self, rows: list[dict], files: Sequence[Dropped], warehouse_url: str
    ) -> None:
        """The ledger's half of `test_concurrency.assert_each_file_applied_once`, then the
        bucket: each original archived once with its bytes, the inbox and quarantine empty,
        and no row left in `inbox_claims` (nothing claimed, nothing returned)."""
        assert Counter(r["state"] for r in rows) == {"applied": len(files)}, Counter(
            r["state"] for r in rows
        )
        assert sorted((r["offer_source"], r["original_name"], r["content_hash"]) for r in rows) == (
            sorted((f.source, f.name, f.content_hash) for f in files)
        )
        for row in rows:
            assert sum(row[o] for o in OUTCOMES) == row["data_lines"] > 0
        archived = {
            key: body
            for key, body in self.bucket.objects("archive").items()
            if not key.endswith(".json")
        }
        expected = {f"{f.content_hash[:16]}_{f.name}": f for f in files}
        by_name = {key.rsplit("/", 1)[-1]: key for key in archived}
        assert sorted(by_name) == sorted(expected)  # each once, nothing else
        assert len(by_name) == len(archived)
        for name, key in by_name.items():
            f = expected[name]
            assert key.split("/")[1:3] == [f.source, "conversions"], key
            assert archived[key] == f.original.read_bytes(), key
        assert self.bucket.objects("inbox") == {}
        assert self.bucket.objects("quarantine") == {}
        assert self.claims_left(warehouse_url) == []

    def claims_left(self, warehouse_url: str) -> list[str]:
        engine = create_engine(warehouse_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT object_key, state, owner_host, owner_pid FROM inbox_claims")
                ).all()
        finally:
            engine.dispose()
        return sorted(" ".join(map(str, row)) for row in rows)


DataDirectory = LocalDataDirectory | S3DataDirectory


@pytest.fixture(params=["local", "s3"])
def data_directory(request: pytest.FixtureRequest, tmp_path: Path) -> DataDirectory:
    if request.param == "local":
        return LocalDataDirectory(tmp_path / "datadir")
    if request.param == "s3":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
        bucket = Bucket.create(request.getfixturevalue("moto_endpoint"))
        return S3DataDirectory(bucket, tmp_path / "tmp")
    raise AssertionError(request.param)


# --- the deployment ----------------------------------------------------------------------------


class CeleryDeployment(Deployment):
    """The scheduler test's deployment with the CeleryExecutor and named workers."""

    def __init__(
        self,
        tmp: Path,
        metadata_url: str,
        warehouse_url: str,
        broker_url: str,
        data: DataDirectory,
        config: Path,
    ):
        super().__init__(
            tmp,
            metadata_url,
            warehouse_url,
            config_text=config.read_text(encoding="utf-8"),
            offer_source=SOURCES[0],
            dag_id=DAG_ID,
        )
        self.queue = f"conversions-test-{uuid.uuid4().hex[:12]}"
        self.env |= {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            # Results in the metadata database (psycopg 3: `db+postgresql+psycopg`).
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
            # Every task goes to this queue, and the workers read only it.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CONCURRENCY),
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # The bound for a task lost between the broker and its start (see CONCURRENCY):
            # requeued after this long (twice at most, spending no try). Longer than the
            # backlog takes to drain, or waiting tasks are requeued too.
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
            # A task's calls to the execution API wait up to 30 s (default 5, five tries): on a
            # loaded machine the api-server was seen to take longer, and a claim_files task
            # that cannot start fails the run (it has no retries).
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            # README, "Several machines": a worker takes a task only when a slot is free (else
            # a killed worker's prefetched tasks wait for the visibility timeout, seen: one
            # file stuck queued), and imports the engine once, at start (its forked tasks skip
            # the seconds of importing pandas and pandera).
            "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps(WORKER_CELERY_CONFIG),
            "CONVERSIONS_HOME": data.setting,
            "CONVERSIONS_CONFIG": str(config),
            **data.env,
        }
        self.data = data
        self.warehouse_url = warehouse_url

    def start_worker(self, name: str) -> None:
        self.start(
            name,
            *("celery", "worker", "--queues", self.queue, "--concurrency", str(CONCURRENCY)),
            *("--celery-hostname", f"{name}@%h", "--skip-serve-logs"),
            *("--without-mingle", "--without-gossip"),
            env={
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.airflow.worker_hostname.name",
                "CONVERSIONS_TEST_WORKER_HOSTNAME": name,
            },
        )

    def kill(self, name: str) -> None:
        """SIGKILL component ``name`` and every process under it, at once: a machine lost."""
        [component] = [c for c in self.components if c.name == name]
        component.remember_children()
        with suppress(ProcessLookupError):
            os.killpg(component.proc.pid, signal.SIGKILL)
        for child in component.seen.values():
            with suppress(psutil.NoSuchProcess):
                child.kill()
        component.proc.wait(timeout=10)
        self.components.remove(component)  # not a failure from now on (wait_for checks)
        self.killed = component

    def diagnostics(self) -> str:
        """Component logs, task states, the logs of tasks that did not succeed (40 files' logs
        in full would bury them) and what is left in the data directory's claims."""
        parts = [
            f"===== {c.name} (rc {c.proc.poll()}) =====\n{_tail(c.log, 40)}"
            for c in self.components
        ]
        if getattr(self, "killed", None):
            parts.append(f"===== killed {self.killed.name} =====\n{_tail(self.killed.log, 40)}")
        try:
            tis = self.task_instances()
            parts.append("===== process_file =====\n" + _table(tis, self.tries()))
            others = self.query(
                "SELECT task_id, map_index, state, try_number, hostname FROM task_instance "
                "WHERE dag_id = :d AND task_id != 'process_file'",
                d=DAG_ID,
            )
            parts.append(f"===== other tasks: {others}")
            parts.append(f"===== runs: {self.query('SELECT run_id, state FROM dag_run')}")
            unfinished = {(ti.run_id, ti.map_index) for ti in tis if ti.state != "success"}
        except Exception as exc:
            parts.append(f"===== metadata database unreadable: {exc!r}")
            unfinished = set()
        logs = self.airflow_home / "logs"
        for task_log in sorted(logs.glob(f"dag_id={DAG_ID}/**/task_id=process_file/*/*.log")):
            run_id = task_log.parent.parent.parent.name.removeprefix("run_id=")
            map_index = int(task_log.parent.name.removeprefix("map_index="))
            if (run_id, map_index) in unfinished:
                parts.append(f"===== {task_log.relative_to(logs)} =====\n{_tail(task_log, 25)}")
        try:
            parts.append(f"===== claims left: {self.data.claims_left(self.warehouse_url)}")
        except Exception as exc:
            parts.append(f"===== claims unreadable: {exc!r}")
        return "\n".join(parts)

    def task_instances(self, task_id: str = "process_file") -> list[Any]:
        """One row per file's task, across the runs (a bucket's notifications may wake the
        DAG more than once; a run that found nothing has only an unmapped, skipped one)."""
        return self.query(
            "SELECT run_id, map_index, rendered_map_index, state, try_number, hostname, "
            "start_date FROM task_instance WHERE dag_id = :d AND task_id = :t "
            "AND map_index >= 0 ORDER BY run_id, map_index",
            d=DAG_ID,
            t=task_id,
        )

    def tries(self) -> list[Any]:
        """Every finished earlier try of process_file (Airflow moves them to the history)."""
        return self.query(
            "SELECT run_id, map_index, state, try_number, hostname FROM task_instance_history "
            "WHERE dag_id = :d AND task_id = 'process_file' "
            "ORDER BY run_id, map_index, try_number",
            d=DAG_ID,
        )


@contextmanager
def _deployment(
    tmp: Path, urls: dict[str, str], broker: str, data: DataDirectory, config: Path
) -> Iterator[CeleryDeployment]:
    d = CeleryDeployment(tmp, urls["metadata"], urls["warehouse"], broker, data, config)
    try:
        yield d
    finally:
        d.stop()
        _drop_queue(d.queue)


def _start(d: CeleryDeployment, workers: Sequence[str]) -> None:
    d.cli("db", "migrate", timeout=300)
    d.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(d.api_port))
    d.start("scheduler", "scheduler")
    d.start("dag-processor", "dag-processor")
    d.start("triggerer", "triggerer")
    for name in workers:
        d.start_worker(name)
    d.wait_for("the api-server to answer", d.api_healthy, STARTUP_TIMEOUT)
    d.wait_for(
        f"{DAG_ID} to be parsed",
        lambda: d.query("SELECT 1 FROM dag WHERE dag_id = :d AND NOT is_stale", d=DAG_ID),
        STARTUP_TIMEOUT,
    )
    d.cli("dags", "unpause", DAG_ID)
    d.wait_for(
        "the watcher's trigger to run in the triggerer",
        lambda: d.query(
            "SELECT 1 FROM trigger WHERE classpath LIKE :c AND triggerer_id IS NOT NULL",
            c=d.data.trigger_classpath,
        ),
        STARTUP_TIMEOUT,
    )
    for name in workers:  # each worker has said it is ready (Celery's own line)
        log = d.tmp / f"{name}.log"
        d.wait_for(
            f"celery worker {name} to be ready",
            lambda log=log: " ready." in log.read_text(errors="replace"),
            STARTUP_TIMEOUT,
        )


def _run_state(d: CeleryDeployment, n_files: int = N_FILES) -> str | None:
    """ "success" or "failed" once the DAG is done with the batch, else None.

    Done: every file has its task, each finished, and every run of the DAG is over with none
    waiting to start (no queued asset event). The _READY marker makes one run; a bucket's
    notifications (one per upload, up to ten per trigger event) may make more, the later ones
    finding nothing left: then the worst state of them all.
    """
    # The queued events before the runs: the scheduler turns an event into a run in one
    # transaction, so read in this order no event is missed between the two (read the other way
    # round, the run it became could start just after the runs were read, unseen).
    pending = d.query("SELECT 1 FROM asset_dag_run_queue WHERE target_dag_id = :d", d=DAG_ID)
    runs = d.query("SELECT state FROM dag_run WHERE dag_id = :d", d=DAG_ID)
    if isinstance(d.data, LocalDataDirectory):
        assert len(runs) <= 1, runs  # one marker, one run
    tis = d.task_instances()
    finished = ("success", "failed", "upstream_failed")
    if (
        not runs
        or pending
        or any(r.state not in ("success", "failed") for r in runs)
        or len(tis) < n_files
        or any(ti.state not in finished for ti in tis)
    ):
        return None
    return "failed" if any(r.state == "failed" for r in runs) else "success"


# --- the test ----------------------------------------------------------------------------------


def test_two_celery_workers_apply_each_file_once_and_finish_a_killed_workers_files(
    tmp_path: Path,
    databases: dict[str, str],  # noqa: F811
    redis_broker: str,
    data_directory: DataDirectory,
) -> None:
    config_path = write_config(tmp_path / "cfg")
    config = config_module.load(config_path)
    files = make_files(tmp_path / "originals", SEED, N_FILES, POOL)
    data_directory.prepare()

    with _deployment(tmp_path, databases, redis_broker, data_directory, config_path) as d:
        _start(d, WORKERS)

        data_directory.drop(files)  # the sender: temp names renamed, then the marker
        data_directory.wake()

        # Worker 1 dies while it holds files: once it has finished one file (both workers
        # share the batch) and is running at least one more.
        def busy_after_one_file() -> bool:
            mine = [ti.state for ti in d.task_instances() if ti.hostname == "w1"]
            return "success" in mine and "running" in mine

        d.wait_for("worker w1 to finish a file and run another", busy_after_one_file, KILL_TIMEOUT)
        d.kill("w1")
        killed_at = datetime.now(UTC)
        # What it held: its tasks still marked running (nothing changes them until the
        # heartbeat timeout, seconds away); those that had finished are not in it.
        held = {
            (ti.run_id, ti.map_index): ti
            for ti in d.task_instances()
            if ti.state == "running" and ti.hostname == "w1"
        }
        assert held, "worker 1 finished its tasks before it was killed: nothing to recover"

        state = d.wait_for("the run to finish", lambda: _run_state(d), RUN_TIMEOUT)
        assert state == "success", d.diagnostics()
        tis = d.task_instances()
        earlier = d.tries()

    # Every file applied exactly once, archived once, no claim left, nothing quarantined.
    rows = ledger(databases["warehouse"])
    data_directory.assert_each_file_applied_once(rows, files, databases["warehouse"])

    # Per offer source, some serial order: the ledger's, replayed into a fresh warehouse.
    order = ledger_order(rows, files)
    assert sorted(order) == sorted(SOURCES)
    with contextmanager(postgres_schema_url)() as serial_url:
        serial = serial_exports(serial_url, config, order, tmp_path / "serial-reports")
        assert counts_by_hash(ledger(serial_url)) == counts_by_hash(rows)
    for source in SOURCES:
        assert exported(databases["warehouse"], config, source) == serial[source], source

    # One process_file per file, all succeeded in the end; both workers did some.
    assert len(tis) == N_FILES
    assert sorted(ti.rendered_map_index for ti in tis) == sorted(
        f"{f.source}/{f.name}" for f in files
    )
    assert Counter(ti.state for ti in tis) == {"success": N_FILES}, _table(tis, earlier)
    assert {ti.hostname for ti in tis} == set(WORKERS), _table(tis, earlier)

    # Each task worker 1 held when it died: that try failed (no heartbeat), a later one
    # succeeded on worker 2, started after the kill. Its file was applied once (above).
    for (run_id, map_index), was in held.items():
        now = next(ti for ti in tis if (ti.run_id, ti.map_index) == (run_id, map_index))
        assert now.hostname == "w2", _table(tis, earlier)
        assert now.try_number > was.try_number, _table(tis, earlier)
        assert now.start_date > killed_at, _table(tis, earlier)
        dead = [
            t
            for t in earlier
            if (t.run_id, t.map_index, t.try_number) == (run_id, map_index, was.try_number)
        ]
        assert [t.hostname for t in dead] == ["w1"], _table(tis, earlier)
        assert dead[0].state in ("failed", "up_for_retry"), _table(tis, earlier)
    if isinstance(data_directory, S3DataDirectory):
        # Every task removed its spool when it ended (claim_files too, whose claims were
        # handed on, not filed), so only the killed worker's copies of what it held remain.
        held_names = {
            ti.rendered_map_index.rsplit("/", 1)[-1]  # rendered by the end (None while running)
            for ti in tis
            if (ti.run_id, ti.map_index) in held
        }
        assert set(data_directory.spooled_left()) <= held_names, data_directory.spooled_left()
    print(
        f"\n[celery e2e] worker 1 held {len(held)} task(s) when killed: "
        f"{sorted(ti.rendered_map_index for ti in tis if (ti.run_id, ti.map_index) in held)}; "
        f"{len({ti.run_id for ti in tis})} run(s) had files"
    )


def _table(tis: list[Any], earlier: list[Any]) -> str:
    lines = [f"{t.run_id} {t.map_index} {t.rendered_map_index} {t.state} try {t.try_number} "
             f"on {t.hostname}" for t in tis]  # fmt: skip
    lines += [
        f"earlier: {t.run_id} {t.map_index} {t.state} try {t.try_number} on {t.hostname}"
        for t in earlier
    ]
    return "\n".join(lines)
