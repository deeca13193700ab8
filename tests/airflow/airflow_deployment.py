"""A real Airflow deployment for end-to-end tests: api-server, scheduler, dag-processor and
triggerer as subprocesses on fresh PostgreSQL databases, stopped whatever happens.

Shared by `test_airflow_scheduler.py` (a sender drops a file) and `test_page_browser.py` (a
person uses the page in a browser). Every wait is bounded; a timeout fails with the tail of
each component's log, the task logs and the task instance states.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

POSTGRES_URL = os.environ.get("CONVERSIONS_TEST_POSTGRES_URL")
REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).parent / "airflow"

# Bounds (seconds). Generous for a loaded CI machine; the happy path takes a fraction.
MIGRATE_TIMEOUT = 300
STARTUP_TIMEOUT = 180  # api-server healthy, DAG parsed, watcher's trigger running
STOP_TIMEOUT = 15


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

    def __init__(
        self,
        tmp: Path,
        metadata_url: str,
        warehouse_url: str,
        config_text: str,
        offer_source: str,
        dag_id: str,
        extra_env: dict[str, str] | None = None,
    ):
        self.tmp = tmp
        self.dag_id = dag_id
        self.airflow_home = tmp / "airflow"
        self.home = tmp / "data"
        self.metadata = create_engine(metadata_url, poolclass=NullPool)
        self.warehouse = create_engine(warehouse_url, poolclass=NullPool)
        self.components: list[Component] = []
        api_port, worker_log_port, trigger_log_port = _free_ports(3)
        self.api = f"http://127.0.0.1:{api_port}"
        self.api_port = api_port
        config = tmp / "conversions.toml"
        config.write_text(config_text)
        env = {
            k: v
            for k, v in os.environ.items()
            # AWS_*: a test's moto settings must not reach Airflow unless it passes them on
            # (the S3 tests give the deployment an Airflow connection instead).
            if not k.startswith(("AIRFLOW", "CONVERSIONS_", "_AIRFLOW", "AWS_"))
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
            # A task's first call to the execution API (PATCH .../run) was seen taking 30-38 s on
            # a loaded CI machine; past the default timeout the SDK retries it, the retry finds
            # the task already running and the task fails. Wait for the first answer instead.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "120",
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
        self.env = env | (extra_env or {})
        self.layout_inbox = self.home / "inbox"
        self.layout_inbox.joinpath(offer_source).mkdir(parents=True)  # the watched folder too

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
                d=self.dag_id,
            )
            runs = self.query("SELECT dag_id, run_id, run_type, state FROM dag_run ORDER BY id")
            triggers = self.query("SELECT id, classpath, triggerer_id FROM trigger")
            parts.append(f"===== dag runs: {runs}\n===== task instances: {tis}")
            parts.append(f"===== triggers: {triggers}")
            for error in self.query("SELECT filename, stacktrace FROM import_error"):
                parts.append(f"===== import error in {error.filename}:\n{error.stacktrace}")
        except Exception as exc:
            parts.append(f"===== metadata database unreadable: {exc!r}")
        for task_log in sorted((self.airflow_home / "logs").glob(f"dag_id={self.dag_id}/**/*.log")):
            parts.append(f"===== task log {task_log.relative_to(self.airflow_home)} =====")
            parts.append(_tail(task_log, 40))
        files = sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*") if p.is_file())
        parts.append(f"===== files under CONVERSIONS_HOME: {files}")
        return "\n".join(parts)
