"""The guarantee tests' process harness: start, kill and reap real processes, and compare.

From the crash test: a data directory (`Site`) reset between runs, a fork server that runs
`conversions inbox` in forked children of one pre-imported interpreter (each in a session of its
own, killed with a real SIGKILL and reaped at once: a zombie would look alive to recovery), a
clean run of the real CLI as the reference, what a killed run leaves behind (`Leftovers`) and the
state a rerun must converge to (`State`, `check_converged`). From the concurrency test: bounded
subprocesses in a process group killed on the way out, and `n` workers forked after the imports
and released together from a start barrier. Shared by all: the environment without
`CONVERSIONS_*` variables a subprocess runs in, and the benchmarks' file generator.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import io
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url

from pipeline import config as config_module
from pipeline import export, warehouse
from tests.helpers import REPO, soak_or

# benchmarks/generate.py: the upload the benchmarks time, loaded as a module of its own.
_spec = importlib.util.spec_from_file_location("generate", REPO / "benchmarks" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

SEED = int(os.environ.get("CONVERSIONS_CRASH_SEED") or random.SystemRandom().randrange(10**6))
RUN_TIMEOUT = 180  # seconds; a run that takes longer is stuck (e.g. waiting on a dead lock)
WAIT_S = soak_or(120, 900)  # any one step; a healthy CI run needs a few seconds


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without CONVERSIONS_* variables, plus `extra`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVERSIONS_")}
    return clean | (extra or {})


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started in a session of its own, with everything it started."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


# --- the data directory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dropped:
    relative: str  # inbox-relative
    data: bytes

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    @property
    def offer_source(self) -> str:
        return self.relative.split("/", 1)[0]

    @property
    def kind(self) -> str:
        return "status" if "/status/" in self.relative else "conversions"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# --- a data directory on either backend -----------------------------------------------------------


class LocalHome:
    """A data directory in a local folder, read back with the file system (not the code under
    test): what a guarantee test drops and checks, whatever stores the data directory."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = root

    @property
    def arg(self) -> str:
        """What ``--home`` / ``CONVERSIONS_HOME`` is set to."""
        return str(self.root)

    def put(self, relative: str, data: bytes) -> None:
        """Drop a file as the sender contract says: a temporary name first, then the rename."""
        target = self.root / "inbox" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.rename(partial, target)

    def files(self, folder: str) -> dict[str, bytes]:
        """Every file under ``folder`` (``inbox``, ``archive``...), by its path below it."""
        base = self.root / folder
        if not base.exists():
            return {}
        return {
            p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if not p.is_dir()
        }

    def claims_held(self, url: str) -> int:
        """How many claims are held: claim folders under ``processing/``."""
        folder = self.root / "processing"
        return len(list(folder.iterdir())) if folder.exists() else 0


class S3Home:
    """A data directory in a bucket of its own on the moto server, read back with boto3."""

    kind = "s3"

    def __init__(self, endpoint: str):
        import uuid

        import boto3

        self.bucket = f"guar-{uuid.uuid4().hex[:16]}"
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.s3.create_bucket(Bucket=self.bucket)

    @property
    def arg(self) -> str:
        return f"s3://{self.bucket}/home"

    def put(self, relative: str, data: bytes) -> None:
        """An upload: whole once it is there (a PUT has no temporary name)."""
        self.s3.put_object(Bucket=self.bucket, Key=f"home/inbox/{relative}", Body=data)

    def files(self, folder: str) -> dict[str, bytes]:
        prefix = f"home/{folder}/" if folder else "home/"
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                found[item["Key"][len(prefix) :]] = body
        return found

    def claims_held(self, url: str) -> int:
        """How many claims are held: rows of the warehouse's ``inbox_claims``."""
        engine = warehouse.connect(url)
        try:
            with engine.connect() as conn:
                return len(conn.execute(select(warehouse.schema.inbox_claims)).all())
        finally:
            engine.dispose()


DATA_DIRECTORIES = ["local", "s3"]


@dataclass
class Site:
    """One data directory and the warehouse it runs against (reset between kills).

    ``s3``: the moto endpoint, for a data directory in a bucket (a new one at each reset)
    instead of ``root/home``; the config and the logs stay in ``root`` either way."""

    root: Path
    url: str
    files: list[Dropped]
    config: str  # the config file's text
    s3: str | None = None
    store: LocalHome | S3Home | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config_path(self) -> Path:
        return self.root / "conversions.toml"

    @property
    def home_arg(self) -> str:
        """``--home``: the folder, or the bucket's URL."""
        return self.store.arg if self.store is not None else str(self.home)

    def args(self) -> list[str]:
        return [
            "inbox",
            *("--config", str(self.config_path), "--home", self.home_arg),
            *("--warehouse", self.url),
        ]

    def reset(self) -> None:
        """A fresh data directory with the files waiting, and an empty warehouse."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.config_path.write_text(self.config, encoding="utf-8")
        self.store = S3Home(self.s3) if self.s3 else LocalHome(self.home)
        for dropped in self.files:
            if self.s3:
                self.store.put(dropped.relative, dropped.data)
                continue
            path = self.home / "inbox" / dropped.relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dropped.data)
        _empty_warehouse(self.url)

    def everything(self) -> dict[str, bytes]:
        """Every file of the data directory, by its path below it (``inbox/...``)."""
        assert self.store is not None, "reset() first"
        return self.store.files("")


def _empty_warehouse(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
        return
    schema = re.fullmatch(r"-csearch_path=(\w+)", parsed.query["options"])
    assert schema, parsed.query
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            # A killed worker's backend is ended by the server when its socket closes; should
            # it still hold a lock, fail rather than wait forever.
            conn.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema[1]} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {schema[1]}")
    finally:
        engine.dispose()


# --- running the CLI ---------------------------------------------------------------------------

# A fork server: imports the CLI once, then runs each `conversions inbox` in a forked child of
# its own session (a real process, killed by a real SIGKILL), saving the second of imports a
# fresh interpreter spends on every run. A request may name a hook: a point at which the child
# SIGKILLs itself (installed in that child only).
FORK_SERVER = r"""
import json, os, signal, sys, traceback
from pathlib import Path

# What a run imports on first use, too (a connection, a schema validation).
import pandera.backends.pandas.builtin_checks  # noqa: F401
import pandera.backends.pandas.register  # noqa: F401
import psycopg  # noqa: F401
import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401
from pipeline import cli
from pipeline.datadir import claims, filing

print(json.dumps({"ready": True}), flush=True)


def install(point, target):
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def inside(name):
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
        return False

    real_replace, real_mkdir = os.replace, os.mkdir

    def replace(src, dst, *args, **kwargs):
        d = Path(dst)
        ours = target in d.name
        in_archive = "archive" in d.parts
        if ours and point == "report-partial" and d.name.endswith(".rejected.csv"):
            die()  # the report is complete in its .partial file, not renamed
        if ours and point == "summary-partial" and d.name.endswith(".summary.json"):
            die()
        if ours and point == "sidecar-partial" and in_archive and d.name.endswith(".json"):
            die()  # committed; the archive sidecar is still a .partial file
        real_replace(src, dst, *args, **kwargs)
        if ours and point == "summary-written" and d.name.endswith(".summary.json"):
            die()  # reports final, the transaction not committed
        if ours and point == "archived" and in_archive and not d.name.endswith(".json"):
            die()  # the file is archived, its claim folder not removed yet
        if point == "claim-recorded" and d.name == "claim.json" and inside("claim"):
            die()  # claim.json written, the file not moved into the claim folder yet

    def mkdir(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if point == "claim-folder" and inside("claim"):
            die()  # an empty claim folder

    os.replace, os.mkdir = replace, mkdir

    hooks = (("file_archived", "committed"), ("file_quarantined", "quarantine-recorded"))
    for name, hooked in hooks:
        def filed(layout, claimed, *args, _real=getattr(filing, name), _hooked=hooked, **kw):
            if point == _hooked and target in claimed.name:
                die()  # the ledger row is committed, the file not filed away yet
            return _real(layout, claimed, *args, **kw)

        setattr(filing, name, filed)

    real_recover = claims.recover

    def recover(*args, **kwargs):
        if point == "connected":
            die()  # the warehouse is open (created, upgraded), nothing claimed yet
        return real_recover(*args, **kwargs)

    claims.recover = recover
    real_write_claim = claims._write_claim

    def write_claim(claimed, *args, **kwargs):
        if point == "adopting" and target in claimed.name and inside("adopt"):
            die()  # the claim folder renamed to the adopter's id, claim.json not rewritten
        return real_write_claim(claimed, *args, **kwargs)

    claims._write_claim = write_claim


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.chdir(request["cwd"])
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            if request["hook"]:
                install(*request["hook"])
            code = cli.main(request["argv"])
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(70)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)  # reaped at once: a zombie would look alive to recovery
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class ForkServer:
    """Runs `conversions inbox` in forked children of one pre-imported interpreter."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.replies: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        started = time.monotonic()
        assert self._reply("starting the fork server") == {"ready": True}
        self.startup = time.monotonic() - started  # what a fresh process spends on imports

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))

    def _reply(self, why: str) -> dict:
        try:
            return self.replies.get(timeout=RUN_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"{why}: no answer after {RUN_TIMEOUT} s (stuck?)") from None

    def run(
        self,
        site: Site,
        *,
        hook: tuple[str, str] | None = None,
        delay: float | None = None,
        signum: int = signal.SIGKILL,
    ) -> tuple[int, float, bool]:
        """One run: (exit code, seconds, killed); sent ``signum`` (SIGKILL unless told) after
        ``delay`` if still running, and then waited for (a SIGTERM's run shuts down by itself)."""
        assert self.proc.stdin is not None
        log = site.root / "runs.log"
        request = {"argv": site.args(), "hook": hook, "cwd": str(site.root), "log": str(log)}
        started = time.monotonic()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._reply("starting a run")["pid"]
        try:
            code = self.replies.get(timeout=RUN_TIMEOUT if delay is None else delay)["exit"]
        except queue.Empty:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)
            try:
                code = self._reply("a signalled run")["exit"]
            except AssertionError:  # it never ended: kill it, then fail
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._reply("a killed run")
                raise
        elapsed = time.monotonic() - started
        if delay is None and hook is None and code not in (0, 1):
            raise AssertionError(f"a run exited {code}:\n{_tail(log)}")
        return code, elapsed, code == -signal.SIGKILL

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else ""


def _start(site: Site) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *site.args()],
        cwd=site.root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole
    )


def _finish(proc: subprocess.Popen, why: str) -> str:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        raise AssertionError(
            f"{why}: still running after {RUN_TIMEOUT} s (stuck?)\n{out}"
        ) from None
    return out


def run_clean(site: Site, why: str) -> tuple[float, str]:
    """A normal `conversions inbox` to completion; returns its wall time and output."""
    started = time.monotonic()
    proc = _start(site)
    out = _finish(proc, why)
    assert proc.returncode in (0, 1), f"{why}: exit {proc.returncode}\n{out}"  # 1: quarantined
    assert " failed " not in out, f"{why}: a file failed\n{out}"
    return time.monotonic() - started, out


@dataclass
class Kill:
    """One killed run and what it left behind."""

    what: str  # "delay 1.234 s" or "at report-partial"
    elapsed: float  # seconds from start to death
    finished: bool  # the run ended before the kill came
    at_kill: Leftovers | None = None
    phase: str = ""
    wall: float = 0.0  # time.time() of the kill

    def __str__(self) -> str:
        return f"{self.what} -> {self.phase}"


def fork_killed(
    server: ForkServer,
    site: Site,
    *,
    delay: float | None = None,
    hook: tuple[str, str] | None = None,
) -> Kill:
    """A run of the fork server, SIGKILLed after ``delay`` seconds or by ``hook``."""
    wall = time.time()
    code, elapsed, killed = server.run(site, hook=hook, delay=delay)
    if hook is not None:
        assert killed, (
            f"the hook {hook} never fired (exit {code}):\n{_tail(site.root / 'runs.log')}"
        )
        what = f"at {hook[0]} of {hook[1] or 'a file'}"
    else:
        what = f"killed after {delay:.3f} s"
    # Its clock starts after the imports a fresh process spends the first second or so on.
    return Kill(what, elapsed + server.startup, not killed, wall=wall + elapsed)


# --- what a run leaves behind -------------------------------------------------------------------


def _connect(url: str):
    engine = create_engine(url)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _bounded(dbapi_conn, _record):
            with dbapi_conn.cursor() as cur:
                cur.execute("SET statement_timeout = '60s'")
            dbapi_conn.commit()

    return engine


def _ledger_rows(url: str) -> list[dict]:
    """The committed ledger rows ([] if the tables do not exist yet)."""
    engine = _connect(url)
    try:
        with engine.connect() as conn:
            try:
                rows = conn.execute(text("SELECT * FROM ingested_files ORDER BY file_id"))
            except Exception:
                return []
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


@dataclass
class Leftovers:
    """The state on disk and in the ledger right after a kill."""

    inbox: set[str]  # inbox-relative files still waiting
    claims: dict[str, dict | None]  # claim folder -> claim.json (None: none or unreadable)
    claimed: dict[str, str]  # relative -> claim folder holding its file
    received: dict[str, str]  # relative -> received_at recorded in its claim.json
    ledger: list[dict]
    files: list[str]  # every file under home, relative


def leftovers(site: Site) -> Leftovers:
    if site.s3:
        return _s3_leftovers(site)
    home = site.home
    inbox = {
        p.relative_to(home / "inbox").as_posix()
        for p in (home / "inbox").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    claims: dict[str, dict | None] = {}
    claimed: dict[str, str] = {}
    received: dict[str, str] = {}
    for folder in sorted((home / "processing").glob("*")):
        try:
            record = json.loads((folder / "claim.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        claims[folder.name] = record
        if record is not None:
            received[record["relative"]] = record["received_at"]
            if (folder / record["file"]).exists():
                claimed[record["relative"]] = folder.name
    files = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    return Leftovers(inbox, claims, claimed, received, _ledger_rows(site.url), files)


def _s3_leftovers(site: Site) -> Leftovers:
    """On S3 a claim is a row of ``inbox_claims`` and its object stays in the inbox until it
    is filed away: ``claimed`` names every object a claim row holds."""
    files = sorted(site.everything())
    inbox = {f[len("inbox/") :] for f in files if f.startswith("inbox/")}
    claims: dict[str, dict | None] = {}
    engine = _connect(site.url)
    try:
        with engine.connect() as conn:
            try:
                rows = list(conn.execute(text("SELECT * FROM inbox_claims")).mappings())
            except Exception:  # no schema yet
                rows = []
    finally:
        engine.dispose()
    for row in rows:
        claims[row["claim_id"]] = {
            "relative": row["object_key"],
            "received_at": _utc(row["received_at"]).isoformat(),
            "state": row["state"],
        }
    claimed = {r["relative"]: cid for cid, r in claims.items() if r and r["state"] == "claimed"}
    received = {r["relative"]: r["received_at"] for r in claims.values() if r}
    return Leftovers(inbox, claims, claimed, received, _ledger_rows(site.url), files)


# --- the state a run converges to ---------------------------------------------------------------

_DAY = re.compile(r"(?<=/)\d{4}-\d{2}-\d{2}(?=/)")
_FILE_ID = re.compile(r"\.(quarantined|duplicate)-\d+\.")


def _undated(path: str) -> str:
    """A path under home without its date folder (a rerun may cross midnight) and without the
    ledger id in a report's name (a rolled-back insert may have used one up)."""
    return _FILE_ID.sub(r".\1-<id>.", _DAY.sub("<day>", "/" + path)[1:])


def _relative(home: str, path: str | None) -> str | None:
    """A path or URL a run wrote, relative to the data directory ``home`` (``--home``)."""
    if path is None:
        return None
    assert str(path).startswith(home + "/"), (home, path)
    return _undated(str(path)[len(home) + 1 :])


@dataclass
class State:
    """Everything a run converges to, with what may legitimately differ taken out."""

    parts: dict[str, Any] = field(default_factory=dict)
    received: dict[str, datetime] = field(default_factory=dict)  # relative -> ledger received_at


def state_of(site: Site) -> State:
    home, state = site.home_arg, State()
    stored = site.everything()
    config = config_module.load(site.config_path)
    engine = warehouse.connect(site.url)
    try:
        out = io.StringIO()
        export.write(engine, config, out, fmt="csv")
        state.parts["export"] = out.getvalue()
        with engine.connect() as conn:
            files = {
                r.file_id: (r.offer_source, r.kind, r.content_hash)
                for r in conn.execute(text("SELECT * FROM ingested_files"))
            }

            def rows(sql: str) -> list[tuple]:
                return [
                    tuple(files.get(v, v) if k == "file_id" else v for k, v in r.items())
                    for r in conn.execute(text(sql)).mappings()
                ]

            state.parts["origins"] = rows(
                "SELECT conversion_id, file_id, line FROM conversions ORDER BY conversion_id"
            )
            state.parts["history"] = rows(
                "SELECT conversion_id, file_id, line, action, old_payout, new_payout, old_status,"
                " new_status, old_converted_at, new_converted_at, old_currency, new_currency,"
                " old_event_id, new_event_id FROM conversion_history ORDER BY history_id"
            )
            state.parts["rejected_rows"] = sorted(
                rows("SELECT file_id, line, reason_codes, cells FROM rejected_rows")
            )
            ledger = [
                dict(r)
                for r in conn.execute(
                    text("SELECT * FROM ingested_files ORDER BY file_id")
                ).mappings()
            ]
    finally:
        engine.dispose()

    state.parts["ledger"] = [
        {
            k: _relative(home, v) if k in ("report_path", "summary_path") else v
            for k, v in row.items()
            if k not in ("file_id", "claim_id", "processed_at", "received_at")
        }
        for row in ledger
    ]
    for row in ledger:
        received = _utc(row["received_at"])
        relative = next(
            d.relative
            for d in site.files
            if (d.offer_source, d.kind, d.name)
            == (row["offer_source"], row["kind"], row["original_name"])
        )
        state.received[relative] = received
        for key in ("report_path", "summary_path"):
            if row[key]:  # its date folder is the received date
                assert PurePosixPath(row[key]).parent.name == received.date().isoformat(), row
                assert _relative(home, row[key]) in {_undated(k) for k in stored}, (
                    f"the ledger names a missing {key}: {row[key]}"
                )

    for area in ("archive", "quarantine"):
        found = {}
        for relative, data in stored.items():
            if not relative.startswith(area + "/"):
                continue
            if relative.endswith(".json"):  # a sidecar
                record = json.loads(data)
                received = datetime.fromisoformat(record["received_at"])
                assert received == state.received[record["relative"]], (relative, received)
                assert f"/{received.date().isoformat()}/" in "/" + relative, relative
                record = {
                    k: v
                    for k, v in record.items()
                    if k not in ("claim_id", "received_at", "archived_at", "quarantined_at")
                }
                found[_undated(relative)] = record
            else:
                found[_undated(relative)] = hashlib.sha256(data).hexdigest()
        state.parts[area] = found

    reports = {}
    for relative, data in stored.items():
        if not relative.startswith("reports/"):
            continue
        if relative.endswith(".summary.json"):
            summary = json.loads(data)
            for key in ("timings", "received_at", "file_id"):
                summary.pop(key, None)
            for key in ("report_path", "summary_path", "duplicates_path"):
                summary[key] = _relative(home, summary.get(key))
            reports[_undated(relative)] = summary
        else:
            reports[_undated(relative)] = data
    state.parts["reports"] = reports

    if site.s3:  # the inbox, partial objects, and claim rows (a claim's only trace)
        state.parts["left behind"] = sorted(
            k for k in stored if k.startswith("inbox/") or k.endswith(".partial")
        ) + [f"claim row {c}" for c in _s3_leftovers(site).claims]
        return state
    local = site.home
    state.parts["left behind"] = sorted(
        p.relative_to(local).as_posix()
        for p in local.rglob("*")
        if (p.is_file() and p.parts[len(local.parts)] in ("inbox", "processing"))
        or p.name.endswith(".partial")
        or (p.is_dir() and p.parent == local / "processing")
    )
    return state


def differences(reference: State, got: State) -> list[str]:
    problems = []
    for key, want in reference.parts.items():
        have = got.parts.get(key)
        if have == want:
            continue
        if isinstance(want, str):
            diff = list(difflib.unified_diff(want.splitlines(), have.splitlines(), lineterm=""))
            problems.append(f"{key} differs ({len(diff)} diff lines):\n" + "\n".join(diff[:12]))
        elif isinstance(want, dict):
            lines = []
            for k in sorted(set(want) | set(have)):
                if want.get(k) != have.get(k):
                    lines.append(
                        f"  {k}: clean={_short(want.get(k))} crashed={_short(have.get(k))}"
                    )
            problems.append(f"{key} differs:\n" + "\n".join(lines[:12]))
        else:
            extra = list((Counter(map(repr, have)) - Counter(map(repr, want))).elements())
            missing = list((Counter(map(repr, want)) - Counter(map(repr, have))).elements())
            problems.append(
                f"{key} differs: {len(want)} rows clean, {len(have)} after the crash; "
                f"extra {_short(extra[:3])}, missing {_short(missing[:3])}"
            )
    return problems


def _short(value: Any) -> str:
    text_ = repr(value)
    return text_ if len(text_) < 400 else text_[:400] + "..."


def check_converged(reference: State, site: Site, kills: list[Kill], context: str) -> State:
    """The crashed site now holds exactly the clean run's state, received times kept."""
    got = state_of(site)
    problems = differences(reference, got)
    for kill in kills:
        assert kill.at_kill is not None
        left = kill.at_kill
        committed = {
            (r["offer_source"], r["kind"], r["original_name"]): _utc(r["received_at"])
            for r in left.ledger
        }
        for d in site.files:
            received = got.received.get(d.relative)
            if received is None:
                continue  # reported as a ledger difference
            if d.relative in left.claimed:  # claimed before the kill: recovery keeps its time
                want: datetime | None = datetime.fromisoformat(left.received[d.relative])
            else:  # committed before the kill, or received later
                want = committed.get((d.offer_source, d.kind, d.name))
            if want is not None and received != want:
                problems.append(f"{d.relative}: received {received}, {want} at {kill}")
            if want is None and received.timestamp() < kills[0].wall - 1:
                problems.append(f"{d.relative}: received {received}, before {kills[0]}")
    assert not problems, (
        f"{context}, CONVERSIONS_CRASH_SEED={SEED} ("
        + "; ".join(map(str, kills))
        + "):\n"
        + "\n".join(problems)
    )
    return got


def _utc(value: Any) -> datetime:
    return warehouse.UTCDateTime().process_result_value(value, None)


# --- bounded subprocesses -----------------------------------------------------------------------


@contextlib.contextmanager
def process_group(logs: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start subprocesses, each in its own session; whatever is still running at exit is killed."""
    started: list[subprocess.Popen] = []
    logs.mkdir(parents=True, exist_ok=True)

    def start(name: str, cmd: Sequence[str], env: dict[str, str] | None = None):
        with open(logs / f"{name}.out", "wb") as out, open(logs / f"{name}.err", "wb") as err:
            proc = subprocess.Popen(
                list(cmd),
                cwd=REPO,
                env=clean_env(env),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        proc.log_name = name  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def finish(procs: Sequence[subprocess.Popen], logs: Path) -> list[tuple[int, str, str]]:
    """Wait for all (bounded); (exit code, stdout, stderr) each. A timeout fails the test (the
    group is killed by `process_group` on the way out)."""
    deadline = time.monotonic() + WAIT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{proc.log_name} still running after {WAIT_S} s: stuck or deadlocked")
    return [
        (
            proc.returncode,
            (logs / f"{proc.log_name}.out").read_text(errors="replace"),
            (logs / f"{proc.log_name}.err").read_text(errors="replace"),
        )
        for proc in procs
    ]


# Imports everything once, then forks `n` workers: separate OS processes (own pid, own warehouse
# connections: nothing is opened before the fork) that skip a second of imports each. Worker `i`
# writes its stdout/stderr to `<logs>/<name><i>.out/.err`, says `ready-<i>` in the barrier folder
# and waits there for `go`. Exits with the first non-zero exit code of its workers.
FORKED = """
import gc, json, os, sys, time, traceback
from pathlib import Path
from pipeline import cli, runtime
from pipeline.airflow import steps
n, logs, name, barrier = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
args = sys.argv[5:]


def wait_for_start(i):
    (barrier / f"ready-{i}").touch()
    deadline = time.monotonic() + 60
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.002)


%s


children = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            out, err = open(logs / f"{name}{i}.out", "w"), open(logs / f"{name}{i}.err", "w")
            with out, err:
                sys.stdout, sys.stderr = out, err
                try:
                    code = work(i, args)
                except BaseException:
                    traceback.print_exc()
                    code = 70
                out.flush(), err.flush()
        finally:
            os._exit(code)
    children.append(pid)
worst = 0
for pid in children:
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    worst = worst or code
sys.exit(worst)
"""


def _nothing() -> None:
    pass


def run_forked(
    script: str,
    n: int,
    name: str,
    work: Path,
    args: Sequence[str],
    during: Callable[[], None] = _nothing,
    env: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Start `n` forked workers, release them together once all are ready, run `during` (the
    sender), wait for them (bounded); fail unless all exit 0; (stdout, stderr) of each."""
    barrier, logs = work / "barrier", work / "logs"
    barrier.mkdir(exist_ok=True)
    with process_group(logs) as start:
        argv = [sys.executable, "-c", script, str(n), str(logs), name, str(barrier), *args]
        parent = start(f"{name}s", argv, env)
        deadline = time.monotonic() + WAIT_S
        while len(list(barrier.glob("ready-*"))) < n:
            if parent.poll() is not None or time.monotonic() > deadline:
                errors = [p.read_text(errors="replace") for p in sorted(logs.glob("*.err"))]
                pytest.fail(f"the {name}s did not all get ready:\n" + "\n".join(errors))
            time.sleep(0.01)
        (barrier / "go").touch()
        try:
            during()
        finally:
            (barrier / "sent").touch()
        [(code, _, err)] = finish([parent], logs)
    outputs = [
        (
            (logs / f"{name}{i}.out").read_text(errors="replace"),
            (logs / f"{name}{i}.err").read_text(errors="replace"),
        )
        for i in range(n)
    ]
    assert code == 0, f"{name}s exited {code}:\n{err}\n" + "\n".join(o + e for o, e in outputs)
    return outputs
