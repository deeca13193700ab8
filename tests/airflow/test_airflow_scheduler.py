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
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from pipeline import warehouse
from pipeline.core.vocabulary import OUTCOMES

POSTGRES_URL = os.environ.get("CONVERSIONS_TEST_POSTGRES_URL")
REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_ID = "conversions_file_drop"
OFFER_SOURCE = "maxbounty"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"),
]

# Bounds (seconds). Generous for a loaded CI machine; the happy path takes a fraction.
MIGRATE_TIMEOUT = 300
STARTUP_TIMEOUT = 180  # api-server healthy, DAG parsed, watcher's trigger running
PROCESS_TIMEOUT = 180  # marker dropped -> rows in the warehouse and the run succeeded
STOP_TIMEOUT = 15

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


# --- processes ---------------------------------------------------------------------------


@dataclass(eq=False)
class Component:
    name: str
    proc: subprocess.Popen
    log: Path
    # Descendants seen so far, for the final sweep (psutil refuses to signal a reused pid).
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def remember_children(self) -> None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            self.seen.setdefault(child.pid, child)


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (none of Airflow's defaults: bound by the OS)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text_ = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text_.splitlines()[-lines:])


def _terminate(components: list[Component], timeout: float, group: bool) -> list[Component]:
    """SIGTERM each main process (or its whole process group); the ones still running after
    ``timeout``."""
    for c in components:
        c.remember_children()
        if c.proc.poll() is None:
            with suppress(ProcessLookupError):
                (os.killpg if group else os.kill)(c.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in components:
        with suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    return [c for c in components if c.proc.poll() is None]


def _stop(components: list[Component]) -> None:
    """Stop everything we started, the api-server last (a running task reports to it).

    First SIGTERM to each main process, as `docker stop` does: it stops its own children. Seen
    here: a scheduler stopped while a task was finishing then waited for its LocalExecutor
    workers forever (a second SIGTERM did not help), and a dag-processor that got SIGTERM with
    its whole group once went on parsing. So stragglers get SIGTERM to their whole group, then
    SIGKILL for the group and every descendant seen.
    """
    servers = [c for c in components if c.name == "api-server"]
    others = [c for c in components if c.name != "api-server"]
    stragglers = _terminate(others, STOP_TIMEOUT, group=False)
    if stragglers:
        print(f"[airflow e2e] still running after SIGTERM: {[c.name for c in stragglers]}")
    stragglers = _terminate(stragglers, STOP_TIMEOUT / 2, group=True)
    stragglers += _terminate(servers, STOP_TIMEOUT / 2, group=False)
    for c in components:
        if c in stragglers:
            print(f"[airflow e2e] {c.name} outlived SIGTERM: killing it")
        with suppress(ProcessLookupError):
            os.killpg(c.proc.pid, signal.SIGKILL)
        for child in c.seen.values():  # descendants that started a session of their own
            with suppress(psutil.NoSuchProcess):
                child.kill()
        with suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=10)


# --- databases ---------------------------------------------------------------------------


def _admin_engine() -> Engine:
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # set but unreachable: CI must go red, not skip
        pytest.fail(f"CONVERSIONS_TEST_POSTGRES_URL is set but PostgreSQL does not answer: {exc}")
    return engine


@pytest.fixture
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the teardowns below still run;
    further SIGTERMs are ignored meanwhile (the teardown is bounded), SIGKILL is not."""

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def databases(sigterm_unwinds: None) -> Iterator[dict[str, str]]:
    """Two fresh databases on the test server: Airflow's metadata and the warehouse."""
    admin = _admin_engine()
    suffix = uuid.uuid4().hex[:10]
    names = {"metadata": f"airflow_e2e_{suffix}", "warehouse": f"conversions_e2e_{suffix}"}
    base = make_url(POSTGRES_URL)
    created = []
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
                created.append(name)
        yield {
            key: base.set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False
            )
            for key, name in names.items()
        }
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- the test ----------------------------------------------------------------------------


class Deployment:
    """The four Airflow components, their environment, and diagnostics for failures."""

    def __init__(self, tmp: Path, metadata_url: str, warehouse_url: str):
        self.tmp = tmp
        self.airflow_home = tmp / "airflow"
        self.home = tmp / "data"
        self.metadata = create_engine(metadata_url, poolclass=NullPool)
        self.warehouse = create_engine(warehouse_url, poolclass=NullPool)
        self.components: list[Component] = []
        api_port, worker_log_port, trigger_log_port = _free_ports(3)
        self.api = f"http://127.0.0.1:{api_port}"
        self.api_port = api_port
        config = tmp / "conversions.toml"
        config.write_text(CONFIG)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "CONVERSIONS_", "_AIRFLOW"))
        }
        pythonpath = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env |= {
            "PYTHONPATH": pythonpath,  # this checkout's pipeline/, whatever .venv points at
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            # Airflow derives the async URL by swapping the driver for asyncpg (not installed);
            # psycopg 3 does async as well.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Only the DAG under test gets unpaused: conversions_inbox would otherwise race it
            # for the file (and its catch-up run starts as soon as it is parsed).
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"{self.api}/",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # >= 64 bytes (HS512)
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "CONVERSIONS_HOME": str(self.home),
            "CONVERSIONS_CONFIG": str(config),
            "CONVERSIONS_WAREHOUSE_URL": warehouse_url,
            "CONVERSIONS_READY_POKE_SECONDS": "1",
        }
        self.env = env
        self.layout_inbox = self.home / "inbox"
        self.layout_inbox.joinpath(OFFER_SOURCE).mkdir(parents=True)  # the watched folder too

    # running things

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            pytest.fail(
                f"`airflow {' '.join(args)}` exited {done.returncode}\n"
                f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
            )
        return done

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """Start `airflow ARGS` as component ``name``; ``env`` adds to (or overrides) its
        environment (per-worker settings)."""
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(AIRFLOW), *args],
                env=self.env | (env or {}),
                cwd=self.tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: Airflow forks workers
            )
        self.components.append(Component(name, proc, log))

    def stop(self) -> None:
        _stop(self.components)
        self.metadata.dispose()
        self.warehouse.dispose()

    # waiting

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` every half second until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for c in self.components:
                c.remember_children()
                if c.proc.poll() is not None:
                    pytest.fail(
                        f"airflow {c.name} exited ({c.proc.returncode}) while waiting for "
                        f"{what}\n{self.diagnostics()}"
                    )
            try:
                result = check()
            except Exception as exc:  # the database or server is not ready yet
                last_error, result = exc, None
            if result:
                return result
            time.sleep(0.5)
        pytest.fail(
            f"timed out after {timeout:.0f}s waiting for {what}"
            f" (last error: {last_error!r})\n{self.diagnostics()}"
        )

    def api_healthy(self) -> bool:
        url = f"{self.api}/api/v2/monitor/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.metadata.connect() as conn:
            return list(conn.execute(text(sql), params))

    # reporting

    def diagnostics(self) -> str:
        parts = []
        for c in self.components:
            parts.append(f"===== {c.name} (pid {c.proc.pid}, rc {c.proc.poll()}) =====")
            parts.append(_tail(c.log))
        try:
            tis = self.query(
                "SELECT run_id, task_id, map_index, state, try_number FROM task_instance "
                "WHERE dag_id = :d ORDER BY run_id, task_id, map_index",
                d=DAG_ID,
            )
            runs = self.query("SELECT dag_id, run_id, run_type, state FROM dag_run ORDER BY id")
            triggers = self.query("SELECT id, classpath, triggerer_id FROM trigger")
            parts.append(f"===== dag runs: {runs}\n===== task instances: {tis}")
            parts.append(f"===== triggers: {triggers}")
            for error in self.query("SELECT filename, stacktrace FROM import_error"):
                parts.append(f"===== import error in {error.filename}:\n{error.stacktrace}")
        except Exception as exc:
            parts.append(f"===== metadata database unreadable: {exc!r}")
        for task_log in sorted((self.airflow_home / "logs").glob(f"dag_id={DAG_ID}/**/*.log")):
            parts.append(f"===== task log {task_log.relative_to(self.airflow_home)} =====")
            parts.append(_tail(task_log, 40))
        files = sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*") if p.is_file())
        parts.append(f"===== files under CONVERSIONS_HOME: {files}")
        return "\n".join(parts)


@pytest.fixture
def deployment(tmp_path: Path, databases: dict[str, str]) -> Iterator[Deployment]:
    d = Deployment(tmp_path, databases["metadata"], databases["warehouse"])
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
