"""Crash safety (DOMAIN.md §9): after a kill at any moment, a rerun converges to one clean run.

A file is applied in one transaction together with its ledger row, so a worker killed at any
point leaves the warehouse with all of that file's effects or none; the next `conversions inbox`
adopts the dead worker's claims (keeping their received time) and finishes the job. What is
compared with a clean reference run of the same inbox, on each backend:

- the warehouse: `conversions export` of every offer source, which file and line created each
  conversion, the whole change history and the rejected rows (ids and timestamps aside);
- the ledger: one row per file, with its state, counts per outcome, content hash and report
  paths; the received time of a file claimed before the kill is that claim's (recovery keeps
  it), and a file never claimed is received by the rerun;
- the archive and the quarantine (names, bytes, sidecars), the reports (one rejection report and
  one summary per applied file, byte for byte apart from timings), and nothing left behind: an
  empty inbox, no claim folder, no ``.partial`` file anywhere.

How the kills are made. The clean reference run is the real CLI, `python -m pipeline inbox
--config ... --home ... --warehouse URL`, a fresh process. The runs that are killed, and the
reruns, are the same `pipeline.cli.main(["inbox", ...])` in children forked from a fork server
that did the imports once (a second per run saved, and a kill's delay lands in the work rather
than in the imports): each child is a real process in a session and process group of its own,
killed with a real SIGKILL and reaped at once (a zombie would look alive to recovery).

``test_a_kill_at_a_random_moment_...`` kills a run after a random delay spread over the clean
run's duration (seeded: the seed is in every failure message, and ``CONVERSIONS_CRASH_SEED=<n>``
replays it); every fourth kill kills the rerun too. Which phase a kill landed in is read from
what it left behind (claim folders, committed ledger rows, reports and partial files, the
archive); reading/staging and merging run in one open transaction that leaves nothing on disk to
tell them apart, so those two are told apart by the kill's moment against the clean run's own
timings. Some windows are a millisecond wide (between the commit and the archive move, inside a
report's or sidecar's rename, between making a claim folder and writing its claim.json, inside
recovery itself), which no timer hits reliably: ``test_a_kill_at_each_narrow_window_...`` makes
the child SIGKILL itself at exactly those points (a hook around ``os.replace``/``os.mkdir`` or an
inbox function, installed in that child only), and checks that its leftovers read as the phase
meant (every phase but reading/staging and merging, every time). The kill is a real SIGKILL
either way; only its moment is chosen. CONVERSIONS_SOAK=1 runs 20 random kills per backend on a
bigger file and asserts that they hit reading/staging and merging.
"""

from __future__ import annotations

import contextlib
import csv
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from pipeline import config as config_module
from pipeline import export, warehouse
from tests.conftest import CONFIG_TOML, REPO, SOAK, soak_or

_spec = importlib.util.spec_from_file_location("generate", REPO / "benchmarks" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

SEED = int(os.environ.get("CONVERSIONS_CRASH_SEED") or random.SystemRandom().randrange(10**6))
RUN_TIMEOUT = 180  # seconds; a run that takes longer is stuck (e.g. waiting on a dead lock)
# Several batches and merge chunks per file, so a kill lands between them as well as inside.
CONFIG = "[settings]\nbatch_size = 5000\n\n" + CONFIG_TOML
PHASES = (
    "startup",  # before any file was claimed: importing, connecting, upgrading the schema
    "claiming",  # a claim folder without its file yet, or files still waiting beside claims
    "reading+staging",  # a claimed file's transaction is open, before the merge
    "merging",  # the same transaction, merging the staged rows
    "reports written",  # the file's report and summary are final, its transaction not committed
    "committed",  # the ledger row is committed, the file still in its claim folder
    "archiving",  # the archive (or quarantine) holds part of the file's move
    "finished",  # the run ended before the kill
)


# --- the inbox ---------------------------------------------------------------------------------


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


def generated(rows: int, seed: int) -> bytes:
    """benchmarks/generate.py's upload, its empty times filled in.

    An empty time is the file's received time, which differs between the clean run and a
    crashed one by construction; everything else in the file is as generated.
    """
    raw = generate.HEADER.encode() + b"\n" + b"".join(generate.csv_chunks(rows, seed))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(io.StringIO(raw.decode(), newline="")):
        if len(row) > 2 and row[2] == "":
            row[2] = "2026-10-01 12:00:00"
        writer.writerow(row)
    return out.getvalue().encode()


CLICKBANK = (
    b"click_id,payout,conversion_time,status\n"
    b"c1,7.25,2026-07-01 10:00:00,\n"
    b"c2,3.00,2026-07-01 11:00:00,pending\n"
    b"c1,8.00,2026-07-01 12:00:00,approved\n"  # edit mode: updates c1
    b"c3,x,2026-07-01 10:00:00,\n"  # invalid_payout
)


def inbox_files(rows: int, seed: int = 11) -> list[Dropped]:
    """What a sender drops, in the order a run processes it (per offer source, conversion files
    by name, then status files): another offer source's small file (edit mode, an update and a
    rejection) and the same bytes under another name (a duplicate_file), the generated upload,
    a file quarantined as a whole, and status updates for conversions of the upload (plus one
    that matches nothing, rejected by the merge)."""
    keys = generate.plan(rows, seed).keys[:300]
    clicks = generate.click_ids(keys).to_pylist()
    types = generate.TYPES[generate.conversion_types(keys)]
    statuses = ["declined", "pending", "approved"]
    status_lines = [
        f"{c},{statuses[i % 3]},{t}" for i, (c, t) in enumerate(zip(clicks, types, strict=True))
    ]
    return [
        Dropped("clickbank/cb.csv", CLICKBANK),
        Dropped("clickbank/cb2.csv", CLICKBANK),  # the same bytes again: a duplicate_file
        Dropped("maxbounty/big.csv", generated(rows, seed)),
        Dropped("maxbounty/broken.csv", b"payout,conversion_time\n1.00,2026-07-01 10:00:00\n"),
        Dropped(
            "maxbounty/status/st.csv",
            ("click_id,status,conversion_type\n" + "\n".join(status_lines) + "\n").encode()
            + b"no-such-click,declined,\n",
        ),
    ]


@dataclass
class Site:
    """One data directory and the warehouse it runs against (reset between kills)."""

    root: Path
    url: str
    files: list[Dropped]

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config_path(self) -> Path:
        return self.root / "conversions.toml"

    def args(self) -> list[str]:
        return [
            "inbox",
            *("--config", str(self.config_path), "--home", str(self.home)),
            *("--warehouse", self.url),
        ]

    def reset(self) -> None:
        """A fresh data directory with the files waiting, and an empty warehouse."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.config_path.write_text(CONFIG, encoding="utf-8")
        for dropped in self.files:
            path = self.home / "inbox" / dropped.relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dropped.data)
        _empty_warehouse(self.url)


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
from pipeline import cli, datadir

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

    for name, hooked in (("archive", "committed"), ("quarantine", "quarantine-recorded")):
        def filing(layout, claimed, *args, _real=getattr(datadir, name), _hooked=hooked, **kw):
            if point == _hooked and target in claimed.name:
                die()  # the ledger row is committed, the file not filed away yet
            return _real(layout, claimed, *args, **kw)

        setattr(datadir, name, filing)

    real_recover = datadir.recover

    def recover(*args, **kwargs):
        if point == "connected":
            die()  # the warehouse is open (created, upgraded), nothing claimed yet
        return real_recover(*args, **kwargs)

    datadir.recover = recover
    real_write_claim = datadir._write_claim

    def write_claim(claimed, *args, **kwargs):
        if point == "adopting" and target in claimed.name and inside("adopt"):
            die()  # the claim folder renamed to the adopter's id, claim.json not rewritten
        return real_write_claim(claimed, *args, **kwargs)

    datadir._write_claim = write_claim


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
            env=_env(),
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
        self, site: Site, *, hook: tuple[str, str] | None = None, delay: float | None = None
    ) -> tuple[int, float, bool]:
        """One run: (exit code, seconds, killed); SIGKILLed after ``delay`` if still running."""
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
                os.killpg(pid, signal.SIGKILL)
            code = self._reply("a killed run")["exit"]
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
            _kill_group(self.proc)
            self.proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else ""


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield server
    server.close()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVERSIONS_")}


def _start(site: Site) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *site.args()],
        cwd=site.root,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen, why: str) -> str:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
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


def phase_of(site: Site, left: Leftovers, elapsed: float, merge_starts: dict[str, float]) -> str:
    """Which phase the kill landed in, read from what it left behind (see the module doc).

    A run claims every waiting file, then processes them one by one in order, so the first file
    (in processing order) that is not filed away yet is the one the kill interrupted.
    """
    if not left.claims and all(d.relative in left.inbox for d in site.files):
        return "startup"
    if any(record is None for record in left.claims.values()):
        return "claiming"  # a claim folder without its claim.json yet
    recorded = {(r["offer_source"], r["kind"], r["original_name"]) for r in left.ledger}
    filed_areas = [f for f in left.files if f.split("/")[0] in ("archive", "quarantine")]
    for d in site.files:
        stored = f"{d.sha256[:16]}_{d.name}"
        filed = any(f.endswith("/" + stored) for f in filed_areas)
        filing = any(f"/{stored}." in f for f in filed_areas)  # its sidecar, final or partial
        named_by_claim = d.relative in left.received
        if d.relative in left.inbox:
            return "claiming"  # waiting while other files are claimed already
        if filed:
            if named_by_claim:
                return "archiving"  # filed away, its claim folder not removed yet
            continue  # done
        if d.relative not in left.claimed:
            return "claiming"  # claim.json written, the file not moved in yet
        if (d.offer_source, d.kind, d.name) in recorded:
            return "archiving" if filing else "committed"
        stem = f"{Path(d.name).stem}.{d.sha256[:12]}."
        final = [f for f in left.files if f.startswith("reports/") and stem in f]
        if any(f.endswith((".summary.json", ".rejected.csv")) for f in final):
            return "reports written"
        return "merging" if elapsed >= merge_starts.get(d.relative, 1e9) else "reading+staging"
    return "finished"


# --- the state a run converges to ---------------------------------------------------------------

_DAY = re.compile(r"(?<=/)\d{4}-\d{2}-\d{2}(?=/)")
_FILE_ID = re.compile(r"\.(quarantined|duplicate)-\d+\.")


def _undated(path: str) -> str:
    """A path under home without its date folder (a rerun may cross midnight) and without the
    ledger id in a report's name (a rolled-back insert may have used one up)."""
    return _FILE_ID.sub(r".\1-<id>.", _DAY.sub("<day>", "/" + path)[1:])


def _relative(home: Path, path: str | None) -> str | None:
    return None if path is None else _undated(Path(path).relative_to(home).as_posix())


@dataclass
class State:
    """Everything a run converges to, with what may legitimately differ taken out."""

    parts: dict[str, Any] = field(default_factory=dict)
    received: dict[str, datetime] = field(default_factory=dict)  # relative -> ledger received_at


def state_of(site: Site) -> State:
    home, state = site.home, State()
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
                assert Path(row[key]).parent.name == received.date().isoformat(), row
                assert Path(row[key]).is_file(), f"the ledger names a missing {key}: {row[key]}"

    for area in ("archive", "quarantine"):
        found = {}
        for path in sorted((home / area).rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(home).as_posix()
            if path.name.endswith(".json"):  # a sidecar
                record = json.loads(path.read_text(encoding="utf-8"))
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
                found[_undated(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
        state.parts[area] = found

    reports = {}
    for path in sorted((home / "reports").rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(home).as_posix()
        if path.name.endswith(".summary.json"):
            summary = json.loads(path.read_text(encoding="utf-8"))
            for key in ("timings", "received_at", "file_id"):
                summary.pop(key, None)
            for key in ("report_path", "summary_path"):
                summary[key] = _relative(home, summary.get(key))
            reports[_undated(relative)] = summary
        else:
            reports[_undated(relative)] = path.read_bytes()
    state.parts["reports"] = reports

    state.parts["left behind"] = sorted(
        p.relative_to(home).as_posix()
        for p in home.rglob("*")
        if (p.is_file() and p.parts[len(home.parts)] in ("inbox", "processing"))
        or p.name.endswith(".partial")
        or (p.is_dir() and p.parent == home / "processing")
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


def merge_starts(site: Site, started_wall: float) -> dict[str, float]:
    """When each file's merge began in the clean run, in seconds from the run's start."""
    starts = {}
    for d in site.files:
        stem = f"{Path(d.name).stem}.{d.sha256[:12]}.summary.json"
        for path in (site.home / "reports").rglob(stem):
            timings = json.loads(path.read_text(encoding="utf-8")).get("timings", {})
            if "merge_s" in timings:
                starts[d.relative] = path.stat().st_mtime - started_wall - timings["merge_s"]
    return starts


# --- the tests ---------------------------------------------------------------------------------


@dataclass
class Reference:
    state: State
    duration: float
    merge_starts: dict[str, float]


def clean_reference(site: Site) -> Reference:
    site.reset()
    wall = time.time()
    duration, _ = run_clean(site, "the clean reference run")
    ref = state_of(site)
    states = Counter(r["state"] for r in ref.parts["ledger"])
    assert states == {"applied": 3, "duplicate_file": 1, "quarantined": 1}, ref.parts["ledger"]
    assert ref.parts["left behind"] == [], ref.parts["left behind"]
    assert len(ref.parts["quarantine"]) == 2, ref.parts["quarantine"]  # the file and its reason
    # A rejection report for each applied file (each has rejected rows), a summary for each file.
    names = Counter(k.rsplit(".", 2)[-2] for k in ref.parts["reports"])
    assert names == {"rejected": 3, "summary": 5}, sorted(ref.parts["reports"])
    return Reference(ref, duration, merge_starts(site, wall))


def crash(site: Site, reference: Reference, kill: Kill) -> Kill:
    kill.at_kill = leftovers(site)
    kill.phase = (
        "finished"
        if kill.finished
        else phase_of(site, kill.at_kill, kill.elapsed, reference.merge_starts)
    )
    return kill


def delays(rng: random.Random, count: int, duration: float) -> Iterator[float]:
    """``count`` delays spread over [0, duration]: one drawn in each equal slice, shuffled."""
    slices = [duration * (i + rng.random()) / count for i in range(count)]
    rng.shuffle(slices)
    yield from slices


@pytest.mark.slow
def test_a_kill_at_a_random_moment_then_a_rerun_converges_to_the_clean_run(
    warehouse_url: str, tmp_path: Path, fork_server: ForkServer
) -> None:
    site = Site(tmp_path / "site", warehouse_url, inbox_files(soak_or(12_000, 40_000)))
    reference = clean_reference(site)
    rng = random.Random(SEED)
    count = soak_or(4, 20)
    histogram: Counter[str] = Counter()
    # The clean run's duration without the imports a fork server's child skips.
    span = max(reference.duration - fork_server.startup, 0.5)
    for i, delay in enumerate(delays(rng, count, span * 1.05)):
        site.reset()
        kills = [crash(site, reference, fork_killed(fork_server, site, delay=delay))]
        if i % 4 == 0:  # kill the rerun too
            again = rng.uniform(0, span)
            kills.append(crash(site, reference, fork_killed(fork_server, site, delay=again)))
        histogram.update(k.phase for k in kills)
        code, _, _ = fork_server.run(site)
        assert code in (0, 1), f"the rerun after {'; '.join(map(str, kills))} exited {code}"
        check_converged(reference.state, site, kills, f"kill #{i + 1} of {count}")
    backend = make_url(warehouse_url).get_backend_name()
    print(
        f"\n[crash {backend}] seed {SEED}: {sum(histogram.values())} kills survived, clean run "
        f"{reference.duration:.2f} s; phases: {dict(sorted(histogram.items()))}"
    )
    if SOAK:  # the narrow windows (startup included) are the other test's, every time
        missing = set(PHASES) - {"finished"} - NARROW - set(histogram)
        assert not missing, f"phases never hit (seed {SEED}): {missing}; {histogram}"


# Windows too narrow for a timer (or, for startup, too early), each hit by the process killing
# itself exactly there, and the phase its leftovers must read as. The last one kills twice:
# after the commit, then the rerun inside recovery (its claim folder renamed, claim.json not yet
# rewritten).
NARROW = {"startup", "claiming", "reports written", "committed", "archiving"}
BIG, DUPLICATE, BROKEN = "big", "cb2", "broken"
POINTS: list[tuple[list[tuple[str, str]], str]] = [
    ([("connected", "")], "startup"),
    ([("claim-folder", "")], "claiming"),
    ([("claim-recorded", "")], "claiming"),
    ([("report-partial", BIG)], "merging|reading+staging"),
    ([("summary-partial", BIG)], "reports written"),
    ([("summary-written", BIG)], "reports written"),
    ([("committed", BIG)], "committed"),
    ([("committed", DUPLICATE)], "committed"),
    ([("quarantine-recorded", BROKEN)], "committed"),
    ([("sidecar-partial", BIG)], "archiving"),
    ([("archived", BIG)], "archiving"),
    ([("committed", BIG), ("adopting", BIG)], "committed"),
]


@pytest.mark.slow
def test_a_kill_at_each_narrow_window_then_a_rerun_converges_to_the_clean_run(
    warehouse_url: str, tmp_path: Path, fork_server: ForkServer
) -> None:
    site = Site(tmp_path / "site", warehouse_url, inbox_files(600))
    reference = clean_reference(site)
    failures = []
    histogram: Counter[str] = Counter()
    for points, expected in POINTS:
        site.reset()
        kills = [crash(site, reference, fork_killed(fork_server, site, hook=p)) for p in points]
        histogram.update(k.phase for k in kills)
        try:
            assert kills[0].phase in expected.split("|"), f"{points}: left {kills[0].at_kill}"
            code, _, _ = fork_server.run(site)
            assert code in (0, 1), f"{points}: the rerun exited {code}"
            check_converged(reference.state, site, kills, f"killed at {points}")
        except AssertionError as exc:
            failures.append(str(exc))
    backend = make_url(warehouse_url).get_backend_name()
    print(f"\n[crash {backend}] narrow windows: {dict(sorted(histogram.items()))}")
    assert not failures, "\n\n".join(failures)
    assert set(histogram) >= NARROW, histogram
