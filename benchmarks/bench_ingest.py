"""Ingest benchmark: our pipeline against the COPY floors, dlt's merge and a pandas loader.

    ./run bench                       # N = 1,000,000 rows, 3 interleaved repetitions
    ./run bench --rows 20000 --reps 1 # a quick end-to-end check
    ./run bench --only scale          # peak RSS of the ingest at 5,000,000 rows against 1,000,000
    ./run bench --big-warehouse 5000000 --second 100000 --only big

One generated file (benchmarks/generate.py: ~5% repeated click ids, ~1% bad rows, mixed types,
statuses and time formats), then, on one PostgreSQL, each step in a fresh process (so its peak
RSS is its own) and a fresh schema:

  copy     (a) psycopg COPY of the file, in 1 MiB blocks, into an UNLOGGED table of 7 text columns
  durable  (f) the same COPY into a LOGGED table with a bigserial primary key and an index on
               (click_id, conversion_type): the durable, indexed floor for unsorted input
  dlt      (g) dlt's merge on (click_id, conversion_type): a pyarrow reader, the postgres
               destination's COPY loader (dlt_merge.py, run by the python of a separate pinned
               virtual environment, benchmarks/.dlt-venv, that the benchmark installs once)
  pandas   (c) a hand-written pandas loader (read_csv, to_datetime, tz_localize, drop_duplicates,
               to_sql(method="multi")) on the first min(N, 100,000) rows, its time scaled to N
  ingest   (b) `pipeline.ingest.ingest_file` into a fresh warehouse
  sqlite   (d) `ingest_file` into a fresh SQLite warehouse
  dry      (e) `ingest_file` with a dry-run `Upload` into a fresh PostgreSQL warehouse
  big      with --big-warehouse M: a warehouse holding M conversions (COPYed straight into the
           `conversions` table), then a --second K-row file with ~30% of its click ids already
           there, timed against the same file into an empty warehouse; the plans of the
           statements that read `conversions` are shown (auto_explain, from an untimed dry run)
  scale    the PostgreSQL ingest of a 1,000,000-row and a 5,000,000-row file (--scale-check A,B
           picks other sizes): the ratio of their peak RSS

The steps (a) to (g) run --reps times (3), interleaved: round r runs them in the order rotated by
r, so a slow phase of a shared machine is spread over the steps; the table shows medians. "wall s"
is the step itself, measured inside its process: interpreter start, imports and creating the
warehouse's tables are not included. Peak RSS is the process's high-water mark (VmHWM), imports
included, the highest of the repetitions. The machine line says how much of the CPU other
processes took during the run (from /proc/stat and the PostgreSQL processes' own counters). The
targets are printed with met / NOT met, never asserted. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # `pipeline`, and `generate` (imported where used, so
# that the COPY step's process holds no numpy or pyarrow)

import benchstats  # noqa: E402  (standard library only)

DEFAULT_URL = os.environ.get(
    "CONVERSIONS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ROUND_STEPS = ("copy", "durable", "dlt", "pandas", "ingest", "sqlite", "dry")
STEPS = (*ROUND_STEPS, "big", "scale")
LABELS = {
    "copy": "(a) COPY into an unlogged text table (floor)",
    "durable": "(f) COPY into a logged table, bigserial PK + index (durable floor)",
    "dlt": "(g) dlt merge on (click_id, conversion_type), COPY loader",
    "pandas": "(c) pandas loader (scaled)",
    "ingest": "(b) ingest_file, PostgreSQL",
    "sqlite": "(d) ingest_file, SQLite",
    "dry": "(e) ingest_file --dry-run, PostgreSQL",
}
TARGET_ROWS = 1_000_000
SCALE_ROWS = (1_000_000, 5_000_000)
OFFER_SOURCE = "network"
CONFIG = {
    "accounts": {"main": {"timezone": "America/New_York", "currency": "USD"}},
    "offer_sources": {
        OFFER_SOURCE: {
            "account": "main",
            "duplicate_mode": "ignore",
            "conversion_types": {"Purchase": {"duplicate_mode": "increment_payout"}},
        }
    },
}
PANDAS_SAMPLE_ROWS = 100_000
COPY_BLOCK = 1 << 20
MARKER = "BENCH_RESULT "
DLT_REQUIREMENTS = HERE / "dlt-requirements.txt"
DLT_VENV = HERE / ".dlt-venv"
DLT_INSTALL_TIMEOUT_S = 1200


# --- steps: each runs in a child process -------------------------------------------------------


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


RAW_COLUMNS = "click_id, payout, conversion_time, conversion_type, status, event_id, currency"
TABLES = {
    # (a): the byte-moving floor: no WAL, no index, no key.
    "unlogged": [
        "CREATE UNLOGGED TABLE raw_rows (click_id text, payout text, conversion_time text, "
        "conversion_type text, status text, event_id text, currency text)"
    ],
    # (f): what any durable, queryable table of the rows costs when they arrive unsorted: WAL,
    # a bigserial default, a primary key and a text index maintained row by row.
    "durable": [
        "CREATE TABLE raw_rows (id bigserial PRIMARY KEY, click_id text, payout text, "
        "conversion_time text, conversion_type text, status text, event_id text, currency text)",
        "CREATE INDEX raw_rows_key ON raw_rows (click_id, conversion_type)",
    ],
}


def step_copy(spec: dict) -> dict:
    """(a) or (f): the file through psycopg's COPY, as psql's \\copy sends it."""
    import psycopg

    with psycopg.connect(_libpq(spec["url"])) as conn:
        started = time.perf_counter()
        for ddl in TABLES[spec["table"]]:
            conn.execute(ddl)
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY raw_rows ({RAW_COLUMNS}) FROM STDIN (FORMAT csv, HEADER true"
                + (", ON_ERROR ignore)" if spec.get("on_error") else ")")
            ) as copy,
            open(spec["path"], "rb") as fh,
        ):
            while block := fh.read(COPY_BLOCK):
                copy.write(block)
        conn.commit()
        wall = time.perf_counter() - started
        loaded = conn.execute("SELECT count(*) FROM raw_rows").fetchone()[0]
    return {"wall": wall, "detail": {"rows_loaded": loaded, "file": Path(spec["path"]).name}}


def _config():
    from pipeline import config

    return config.parse(CONFIG, "benchmark")


def step_ingest(spec: dict) -> dict:
    from datetime import datetime

    import generate

    from pipeline import ingest, warehouse
    from pipeline.context import Context
    from pipeline.datadir import LocalDataDir

    t = time.perf_counter()
    engine = warehouse.connect(spec["url"])
    connect_s = time.perf_counter() - t
    config = _config()
    if spec.get("explain"):
        plans = _auto_explain(engine)
    started = time.perf_counter()
    reports = Path(spec["reports"])
    result = ingest.ingest_file(
        Context(config, engine, LocalDataDir(reports.parent)),
        ingest.Upload(
            Path(spec["path"]),
            OFFER_SOURCE,
            "conversions",
            received_at=datetime.fromisoformat(generate.RECEIVED_AT),
            dry_run=spec.get("dry_run", False),
            reports_dir=reports,
        ),
    )
    wall = time.perf_counter() - started
    engine.dispose()
    detail = {
        "connect_s": round(connect_s, 3),
        "state": result.state,
        "data_lines": result.data_lines,
        "outcomes": result.outcomes,
        "reasons": result.reasons,
        "timings": result.timings,
    }
    if result.detail:
        detail["detail"] = result.detail
    if spec.get("explain"):
        detail["plans"] = plans
    return {"wall": wall, "detail": detail}


def _auto_explain(engine) -> list[str]:
    """Collect (into the returned list) the plan of every statement the engine runs from now on."""
    from sqlalchemy import event

    plans: list[str] = []

    @event.listens_for(engine, "connect")
    def _load(dbapi_conn, _record):
        dbapi_conn.add_notice_handler(
            lambda diag: (
                plans.append(diag.message_primary or "")
                if "plan:" in (diag.message_primary or "")
                else None
            )
        )
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        for sql in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_buffers = on",
            "SET auto_explain.log_timing = off",
            "SET auto_explain.log_nested_statements = on",
            "SET client_min_messages = log",
        ):
            dbapi_conn.execute(sql)
        dbapi_conn.autocommit = autocommit

    engine.dispose()  # connections made from now on get the listener
    return plans


def step_pandas(spec: dict) -> dict:
    """The loader people write first; it does less than we do (no warehouse merge, no report)."""
    import generate
    import pandas as pd
    from sqlalchemy import create_engine

    engine = create_engine(spec["url"])
    received = pd.Timestamp(generate.RECEIVED_AT)
    started = time.perf_counter()

    df = pd.read_csv(spec["path"], dtype=str, keep_default_na=False, on_bad_lines="skip")
    df["click_id"] = df["click_id"].str.strip()
    df = df[df["click_id"].str.fullmatch(r"[A-Za-z0-9._~-]{1,128}")]
    df["payout"] = pd.to_numeric(df["payout"], errors="coerce")
    raw = df["conversion_time"].str.strip()
    has_offset = raw.str.contains(r"(?:Z|[+-]\d\d(?::?\d\d)?)$")
    local = pd.to_datetime(raw.where(~has_offset & (raw != "")), errors="coerce", format="mixed")
    local = local.dt.tz_localize("America/New_York", ambiguous="NaT", nonexistent="NaT")
    aware = pd.to_datetime(raw.where(has_offset), errors="coerce", format="mixed", utc=True)
    converted = local.dt.tz_convert("UTC").fillna(aware)
    df["converted_at"] = converted.where(raw != "", received)
    df["status"] = df["status"].str.lower().replace("", "approved")
    df["currency"] = df["currency"].str.upper().replace("", "USD")
    df["event_id"] = df["event_id"].replace("", None)
    df = df.dropna(subset=["payout", "converted_at"])
    df = df.drop_duplicates(subset=["click_id", "conversion_type"], keep="first")
    df = df.drop(columns=["conversion_time"]).assign(offer_source=OFFER_SOURCE)
    df.to_sql(
        "conversions_pandas",
        engine,
        if_exists="append",
        index=False,
        method="multi",
        chunksize=1000,
    )

    wall = time.perf_counter() - started
    engine.dispose()
    return {"wall": wall, "detail": {"rows_written": len(df)}}


def step_fill(spec: dict) -> dict:
    """A warehouse holding `rows` conversions, COPYed straight into its tables, then ANALYZEd."""
    from datetime import UTC, datetime

    import generate

    from pipeline import warehouse

    engine = warehouse.connect(spec["url"])
    started = time.perf_counter()
    with engine.begin() as conn:
        now = datetime.now(UTC)
        file_id = conn.execute(
            warehouse.ingested_files.insert().values(
                content_hash="0" * 64,
                original_name="benchmark-fill.csv",
                offer_source=OFFER_SOURCE,
                kind="conversions",
                received_at=now,
                processed_at=now,
                state="applied",
                data_lines=spec["rows"],
                inserted=spec["rows"],
            )
        ).inserted_primary_key[0]
        dbapi = conn.connection.driver_connection
        # Secondary indexes are rebuilt after the load (much faster than maintaining them).
        indexdefs = [
            row[0]
            for row in dbapi.execute(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = 'conversions'::regclass AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
            )
        ]
        for row in dbapi.execute(
            "SELECT indexrelid::regclass::text FROM pg_index i "
            "WHERE i.indrelid = 'conversions'::regclass AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        ).fetchall():
            dbapi.execute(f"DROP INDEX {row[0]}")
        columns = ", ".join(generate.FILL_COLUMNS)
        statement = (
            f"COPY conversions ({columns}) FROM STDIN "
            "(FORMAT csv, FORCE_NOT_NULL (conversion_type))"
        )
        with dbapi.cursor() as cur, cur.copy(statement) as copy:
            for block in generate.fill_chunks(
                spec["rows"], spec["seed"], offer_source=OFFER_SOURCE, file_id=file_id
            ):
                copy.write(block)
        copy_s = time.perf_counter() - started
        for ddl in indexdefs:
            dbapi.execute(ddl)
        index_s = time.perf_counter() - started - copy_s
    # A warehouse in use has been vacuumed: hint bits set, visibility map and statistics current
    # (otherwise the first run to read the table pays for setting hint bits on every page).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) conversions, ingested_files")
        size = conn.exec_driver_sql(
            "SELECT pg_size_pretty(pg_total_relation_size('conversions'))"
        ).scalar()
    wall = time.perf_counter() - started
    engine.dispose()
    detail = {
        "copy_s": round(copy_s, 1),
        "index_s": round(index_s, 1),
        "vacuum_analyze_s": round(wall - copy_s - index_s, 1),
        "indexes_rebuilt": indexdefs,
        "conversions_size": size,
    }
    return {"wall": wall, "detail": detail}


CHILD_STEPS = {
    "copy": step_copy,
    "ingest": step_ingest,
    "pandas": step_pandas,
    "fill": step_fill,
}


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    On Linux `ru_maxrss` survives fork + exec, so a child started by a big parent would report
    the parent's peak; VmHWM belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as fh:
            return int(re.search(r"VmHWM:\s+(\d+)", fh.read())[1]) / 1024
    except (OSError, TypeError):
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024 * 1024 if sys.platform == "darwin" else 1024)


def child_main(spec: dict) -> None:
    # Import what the step needs before measuring the baseline, so the baseline is comparable.
    if spec["step"] in ("ingest", "fill"):
        import pipeline.ingest  # noqa: F401
    if spec["step"] == "pandas":
        import pandas  # noqa: F401
        import sqlalchemy  # noqa: F401
    base = peak_rss_mb()
    out = CHILD_STEPS[spec["step"]](spec)
    out["rss_base_mb"] = base
    out["rss_peak_mb"] = peak_rss_mb()
    sys.stdout.write(MARKER + json.dumps(out, default=str) + "\n")


# --- the parent: files, schemas, processes, the table -------------------------------------------


class Postgres:
    def __init__(self, url: str):
        import psycopg

        self.url = url
        self.admin = psycopg.connect(_libpq(url), autocommit=True)
        self.schemas: list[str] = []

    def version(self) -> str:
        return self.admin.execute("SHOW server_version").fetchone()[0]

    def version_num(self) -> int:
        return int(self.admin.execute("SHOW server_version_num").fetchone()[0])

    def fresh_schema(self, label: str) -> str:
        """A URL whose connections live in a new schema (as tests/conftest.py does)."""
        from sqlalchemy.engine import make_url

        schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        self.admin.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        url = make_url(self.url).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def fresh_dlt_schema(self) -> str:
        """A new schema's name for dlt's dataset (dlt adds `<name>_staging` for its merge)."""
        schema = f"bench_dlt_{uuid.uuid4().hex[:8]}"
        self.admin.execute(f"CREATE SCHEMA {schema}")
        self.schemas += [schema, f"{schema}_staging"]
        return schema

    def database(self) -> str:
        return self.admin.info.dbname

    def drop_schemas(self) -> None:
        while self.schemas:
            self.admin.execute(f"DROP SCHEMA IF EXISTS {self.schemas.pop()} CASCADE")

    def close(self) -> None:
        self.drop_schemas()
        self.admin.close()


def run_child(spec: dict, python: str | None = None, script: Path | None = None) -> dict:
    """One step in a fresh process; its result (the child's last marker line), or an error."""
    started = time.perf_counter()
    argv = [python or sys.executable, str(script or Path(__file__).resolve())]
    argv += [] if script else ["--child"]
    try:
        proc = subprocess.run(
            [*argv, json.dumps(spec)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
    except OSError as exc:  # e.g. --dlt-python names no program
        return {"error": f"could not start {argv[0]}: {exc}", "process_s": 0.0}
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode or not lines:
        sys.stdout.write(proc.stdout)
        return {"error": f"exit code {proc.returncode}", "process_s": process_s}
    out = json.loads(lines[-1][len(MARKER) :])
    out["process_s"] = process_s
    return out


# --- dlt, in a virtual environment of its own ----------------------------------------------------


class DltUnavailable(Exception):
    """dlt's virtual environment could not be made; the message says why and what to do."""


def dlt_python(explicit: str | None, venv: Path = DLT_VENV) -> str:
    """The python that runs dlt_merge.py: --dlt-python, or the venv (.dlt-venv), made on demand.

    The venv is (re)installed from dlt-requirements.txt whenever that file changes (a stamp holds
    its hash), exactly as ./run keeps .venv in step with constraints.txt. dlt never enters the
    project's environment: its pins (pyarrow, sqlglot, ...) are its own.
    """
    if explicit:
        return explicit
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    want = hashlib.sha256(DLT_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return str(python)
    print(f"# dlt: installing {DLT_REQUIREMENTS.name} into {venv} (once) ...", flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    commands = [
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(DLT_REQUIREMENTS)],
    ]  # fmt: skip
    for command in commands:
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=DLT_INSTALL_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DltUnavailable(f"`{shlex.join(command)}` did not finish: {exc}") from exc
        if proc.returncode:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise DltUnavailable(
                f"`{shlex.join(command[:4])} ...` exited with {proc.returncode}: {tail} "
                "(no network for pip? pass --dlt-python PATH to use an existing environment "
                "with dlt[postgres], or --only without dlt)"
            )
    stamp.write_text(want + "\n")
    return str(python)


def dlt_credentials(url: str) -> dict:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {
        "database": u.database,
        "username": u.username or "postgres",
        # dlt requires a password; under trust authentication the server ignores this one.
        "password": u.password or os.environ.get("PGPASSWORD") or "unused-under-trust-auth",
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
    }


# --- the machine's conditions ------------------------------------------------------------------


class CpuMeter:
    """Who used the machine's CPU between start() and stop(): steal, us, PostgreSQL, the others.

    /proc/stat gives the machine's totals; os.times() this process tree's CPU (every child has
    been waited for); the PostgreSQL processes are sampled every `interval` seconds from
    /proc/PID/stat (backends of our database are ours, the server's background processes are
    shared). Linux only; elsewhere `text()` says it could not measure.
    """

    def __init__(self, database: str | None, interval: float = 0.5):
        self.database = database
        self.interval = interval
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seen: dict[tuple[int, int], tuple[str, int]] = {}
        self.share: benchstats.CpuShare | None = None
        self.load_start = self.load_end = (0.0, 0.0, 0.0)

    def _postgres(self) -> dict[tuple[int, int], tuple[str, int]]:
        out = {}
        if self.database is None:
            return out
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    stat = fh.read()
                if stat[stat.index("(") + 1 : stat.rindex(")")] != "postgres":
                    continue
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except (OSError, ValueError):
                continue  # ended meanwhile
            kind = benchstats.backend_kind(cmdline, self.database)
            if kind:
                start, used = benchstats.parse_pid_stat(stat)
                out[(int(entry.name), start)] = (kind, used)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.seen.update(self._postgres())

    def start(self) -> CpuMeter:
        try:
            with open("/proc/stat") as fh:
                self.stat0 = benchstats.parse_proc_stat(fh.read())
        except OSError:
            return self
        self.load_start = os.getloadavg()
        self.wall0 = time.perf_counter()
        self.times0 = os.times()
        self.pg0 = self._postgres()
        self.seen = dict(self.pg0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._thread:
            return
        self._stop.set()
        self._thread.join()
        self.seen.update(self._postgres())
        with open("/proc/stat") as fh:
            delta = benchstats.parse_proc_stat(fh.read()) - self.stat0
        t = os.times()
        bench_s = sum(t[:4]) - sum(self.times0[:4])
        spent = benchstats.cpu_seconds_by_kind(self.pg0, self.seen)
        self.share = benchstats.cpu_share(
            delta,
            time.perf_counter() - self.wall0,
            self.ticks,
            bench_s,
            spent.get("ours", 0),
            spent.get("server", 0),
        )
        self.load_end = os.getloadavg()

    def text(self) -> str:
        load = (
            f"load average {self.load_start[0]:.1f} at the start, {self.load_end[0]:.1f} at the end"
        )
        if not self.share:
            return f"{load}; CPU steal and other processes' share not measured (no /proc)"
        return f"{load}; {self.share.text()}"


def code_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or "?"
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        dirty = git("status", "--porcelain", "pipeline")
    except OSError:
        return "?"
    return (
        commit
        + (f" (branch {branch})" if branch and branch != "HEAD" else "")
        + (" + uncommitted changes in pipeline/" if dirty else "")
    )


def versions(pg: Postgres | None, dlt_version: str | None) -> str:
    import pandas
    import pyarrow

    pg_version = pg.version() if pg else "-"
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, "
        f"PostgreSQL {pg_version} (its settings as found)"
        + (f", dlt {dlt_version}" if dlt_version else "")
    )


def input_file(
    work: Path, rows: int, seed: int, name: str = "upload", malformed: bool = True, **plan_args
) -> Path:
    """The generated file, reused from `work` when a previous run (--keep) made it."""
    import generate

    twin = "" if malformed else "_wellformed"
    path = work / f"{name}_{rows}_s{seed}_v{generate.GENERATOR_VERSION}{twin}.csv"
    if path.exists():
        print(f"# reusing {path}", flush=True)
        return path
    started = time.perf_counter()
    size = generate.write(path, rows, seed, name=name, malformed=malformed, **plan_args)
    print(
        f"# generated {path.name}: {rows:,} rows, {size / 1e6:.1f} MB "
        f"({size / max(rows, 1):.1f} bytes/row) in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return path


def fmt_row(name: str, rows: int, summary: benchstats.StepSummary, vs: str, note: str = ""):
    wall = summary.wall
    if summary.errors:
        error = summary.errors[0]
        error = error if len(error) <= 60 else error[:57] + "... (see FAILED below)"
        failed = f"failed in {len(summary.errors)} of {len(summary.walls)}: {error}"
        note = f"{failed}; {note}" if wall is not None and note else failed
    if wall is None:
        return [name, f"{rows:,}", "failed", "-", "-", "-", "-", note]
    return [
        name,
        f"{rows:,}",
        f"{wall:.2f}",
        summary.spread if len(summary.walls) > 1 else "-",
        f"{rows / wall:,.0f}" if wall else "-",
        f"{summary.rss_peak_mb:.0f}" if summary.rss_peak_mb is not None else "-",
        vs,
        note,
    ]


TABLE_HEAD = ["step", "rows", "wall s", "each run s", "rows/s", "peak RSS MB", "ratio", "note"]
TABLE_ALIGN = "<>>>>>><"


def ingest_note(res: dict) -> str:
    d = res.get("detail", {})
    o = {k: v for k, v in d.get("outcomes", {}).items() if v}
    return f"{d.get('state')}: " + ", ".join(f"{k} {v:,}" for k, v in o.items())


def step_note(step: str, res: dict, n: int) -> str:
    """What the last successful repetition of a step did (rows loaded, outcomes, ...)."""
    if "detail" not in res:
        return ""
    d = res["detail"]
    if step in ("copy", "durable"):
        note = f"{d['rows_loaded']:,} rows loaded"
        if "wellformed" in d["file"]:
            note += " (from the file's twin without malformed rows: PG < 17)"
        return note
    if step == "dlt":
        steps = ", ".join(f"{k} {v}" for k, v in d.get("steps_s", {}).items() if k != "run")
        return (
            f"dlt {d.get('dlt')}: {d['rows_in_table']:,} rows in the table, "
            f"{d['malformed_rows_skipped']:,} malformed skipped; {steps} s"
        )
    if step == "pandas":
        return (
            f"{res['sample_rows']:,}-row sample in {res['sample_wall']:.2f} s, "
            f"x{n / res['sample_rows']:g}; RSS is the sample's"
        )
    return ingest_note(res)


def command_line() -> str:
    """The command as a person would type it again."""
    return shlex.join(["./run", "bench", *sys.argv[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="N (default 1,000,000)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) files, reports in DIR")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument(
        "--only", metavar="STEP[,STEP]", help=f"run only these steps: {', '.join(STEPS)}"
    )
    parser.add_argument(
        "--dlt-python", metavar="PATH", help="a python with dlt[postgres] (else .dlt-venv)"
    )
    parser.add_argument(
        "--dlt-venv",
        type=Path,
        default=DLT_VENV,
        metavar="DIR",
        help="where the benchmark installs dlt (benchmarks/.dlt-venv)",
    )
    parser.add_argument(
        "--big-warehouse", type=int, metavar="M", help="also run `big` with M conversions"
    )
    parser.add_argument("--second", type=int, default=100_000, metavar="K", help="big: rows")
    parser.add_argument(
        "--existing-fraction", type=float, default=0.3, help="big: click ids already there"
    )
    parser.add_argument("--no-explain", action="store_true", help="big: skip the plans")
    parser.add_argument(
        "--scale-check",
        nargs="?",
        const=",".join(map(str, SCALE_ROWS)),
        metavar="A,B",
        help="also run `scale`: the ingest's peak RSS at B rows vs A (1000000,5000000)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return 0

    steps = list(ROUND_STEPS)
    steps += ["big"] if args.big_warehouse else []
    steps += ["scale"] if args.scale_check else []
    if args.only:
        steps = [s.strip() for s in args.only.split(",")]
        unknown = set(steps) - set(STEPS)
        if unknown:
            parser.error(f"unknown step(s) {', '.join(sorted(unknown))}; choose from {STEPS}")
        if "big" in steps and not args.big_warehouse:
            parser.error("the big step needs --big-warehouse M")
    if args.skip_pandas and "pandas" in steps:
        steps.remove("pandas")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    try:
        scale_rows = tuple(int(v) for v in (args.scale_check or "").split(",") if v.strip())
        scale_rows = scale_rows or SCALE_ROWS
        if len(scale_rows) != 2 or min(scale_rows) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--scale-check wants two row counts A,B, got {args.scale_check!r}")
    args.scale_rows = scale_rows
    args.command = command_line()
    args.started = datetime.now(UTC)
    args.commit = code_commit()  # now: a commit made while the benchmark runs is not what it ran
    args.interrupted = False
    # SIGTERM too ends the run with a report of the runs that finished (see KeyboardInterrupt).
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    needs_pg = bool(set(steps) - {"sqlite"})
    pg = Postgres(args.postgres_url) if needs_pg else None
    dlt_exe, dlt_error = None, None
    if "dlt" in steps:
        try:
            dlt_exe = dlt_python(args.dlt_python, args.dlt_venv)
        except DltUnavailable as exc:
            dlt_error = f"dlt unavailable: {exc}"
            print(f"# {dlt_error}\n# the other steps run without it", flush=True)
    meter = CpuMeter(pg.database() if pg else None).start()
    reps: dict[str, list[dict]] = {}
    extra: dict[str, dict] = {}
    try:
        round_steps = [s for s in steps if s in ROUND_STEPS]
        ctx = RoundContext(args, pg, work, dlt_exe, dlt_error) if round_steps else None
        for r in range(args.reps if ctx else 0):
            for step in benchstats.rotated(round_steps, r):
                print(f"# round {r + 1}/{args.reps}: {step} ...", flush=True)
                res = ctx.run(step)
                reps.setdefault(step, []).append(res)
                print(f"#   {_brief(res)}", flush=True)
                if pg:
                    pg.drop_schemas()
        if "big" in steps:
            extra["big"] = run_big(args, pg, work)
            pg.drop_schemas()
        if "scale" in steps:
            extra["scale"] = run_scale(args, pg, work)
            pg.drop_schemas()
    except KeyboardInterrupt:
        # Ctrl-C (or SIGINT to the parent): report what finished rather than nothing.
        args.interrupted = True
        print("# interrupted: the report shows the runs that finished", flush=True)
    finally:
        meter.stop()
        pg_versions = versions(pg, _dlt_version(reps))
        if pg:
            pg.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(report(args, reps, extra, pg_versions, meter))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "reps": args.reps,
                    "command": args.command,
                    "started": args.started.isoformat(),
                    "commit": args.commit,
                    "interrupted": args.interrupted,
                    "machine": pg_versions,
                    "cpu": meter.share.__dict__ if meter.share else None,
                    "results": reps,
                    **extra,
                },
                indent=2,
                default=str,
            )
        )
    failed = [r for rs in reps.values() for r in rs if "error" in r]
    failed += [
        r for x in extra.values() for r in x.values() if isinstance(r, dict) and "error" in r
    ]
    return 1 if failed else 0


def _dlt_version(reps: dict) -> str | None:
    for res in reps.get("dlt", []):
        if "detail" in res:
            return res["detail"].get("dlt")
    return None


class RoundContext:
    """What the steps of a round share: the files, the database, dlt's python."""

    def __init__(self, args, pg: Postgres | None, work: Path, dlt_exe, dlt_error):
        self.args, self.pg, self.work = args, pg, work
        self.dlt_exe, self.dlt_error = dlt_exe, dlt_error
        self.n = args.rows
        self.path = input_file(work, self.n, args.seed)
        self._twin: Path | None = None

    def copy_source(self) -> tuple[Path, bool]:
        """COPY cannot skip a row with the wrong number of cells before PostgreSQL 17
        (ON_ERROR ignore); there the COPY steps load the file's twin, which has the same bytes
        except that its malformed rows have the right number of cells."""
        if self.pg.version_num() >= 170000:
            return self.path, True
        if self._twin is None:
            self._twin = input_file(self.work, self.n, self.args.seed, malformed=False)
        return self._twin, False

    def run(self, step: str) -> dict:
        pg, work, path = self.pg, self.work, self.path
        reports = str(work / "reports" / f"{step}_{uuid.uuid4().hex[:6]}")
        if step in ("copy", "durable"):
            source, on_error = self.copy_source()
            return run_child(
                {
                    "step": "copy",
                    "table": "unlogged" if step == "copy" else "durable",
                    "url": pg.fresh_schema(step),
                    "path": str(source),
                    "on_error": on_error,
                }
            )
        if step == "dlt":
            if self.dlt_exe is None:
                return {"error": self.dlt_error}
            scratch = work / f"dlt_{uuid.uuid4().hex[:8]}"
            scratch.mkdir()
            try:
                return run_child(
                    {
                        "path": str(path),
                        "credentials": dlt_credentials(pg.url),
                        "dataset": pg.fresh_dlt_schema(),
                        "work": str(scratch),
                    },
                    python=self.dlt_exe,
                    script=HERE / "dlt_merge.py",
                )
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if step in ("ingest", "dry"):
            return run_child(
                {
                    "step": "ingest",
                    "url": pg.fresh_schema(step),
                    "path": str(path),
                    "reports": reports,
                    "dry_run": step == "dry",
                }
            )
        if step == "sqlite":
            db = work / "warehouse_sqlite.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            res = run_child(
                {"step": "ingest", "url": f"sqlite:///{db}", "path": str(path), "reports": reports}
            )
            if not self.args.keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
            return res
        if step == "pandas":
            import generate

            sample_rows = min(self.n, PANDAS_SAMPLE_ROWS)
            sample = work / f"sample_{sample_rows}_{path.name}"
            if not sample.exists():
                generate.head(path, sample, sample_rows)
            res = run_child(
                {"step": "pandas", "url": pg.fresh_schema("pandas"), "path": str(sample)}
            )
            if "wall" in res:
                res["sample_rows"] = sample_rows
                res["sample_wall"] = res["wall"]
                res["wall"] = res["wall"] * self.n / sample_rows
            return res
        raise ValueError(step)


def _brief(res: dict) -> str:
    if "error" in res:
        return f"failed: {res['error']}"
    return (
        f"{res['wall']:.2f} s, peak RSS {res['rss_peak_mb']:.0f} MB "
        f"(process {res['process_s']:.1f} s)"
    )


def report(args, reps: dict, extra: dict, machine_text: str, meter: CpuMeter) -> str:
    """The Markdown the README pastes as is: heading, conditions, table, ratios, targets."""
    n = args.rows
    out = []
    summaries = {step: benchstats.summarize(rs) for step, rs in reps.items()}
    if summaries:
        out.append(
            f"## Ingest benchmark: N = {n:,} rows, "
            + (
                f"medians of {args.reps} interleaved repetitions"
                if args.reps > 1
                else "one repetition"
            )
        )
    elif "big" in extra:
        out.append(f"## Ingest benchmark: a big warehouse of {args.big_warehouse:,} conversions")
    else:
        out.append("## Ingest benchmark: peak RSS against file size")
    out.append("")
    out.append(
        f"Run {args.started:%Y-%m-%d %H:%M} UTC with `{args.command}`, code at {args.commit}."
    )
    if args.interrupted:
        out.append("")
        out.append("**Interrupted**: only the runs that finished are shown.")
    out.append("")
    out.append(f"Machine: {machine_text}; {meter.text()}.")
    out.append("")
    durable = summaries.get("durable")
    durable_wall = durable.wall if durable else None
    table = []
    for step in [s for s in ROUND_STEPS if s in summaries]:
        summary = summaries[step]
        r = benchstats.ratio(summary.wall, durable_wall)
        vs = f"{r:.2f}x (f)" if r is not None else "-"
        last = next((x for x in reversed(reps[step]) if "error" not in x), {})
        table.append(fmt_row(LABELS[step], n, summary, vs, step_note(step, last, n)))
    if "big" in extra:
        big = extra["big"]
        for key, label in (
            ("empty", "second file into an empty warehouse"),
            ("big", f"second file into {args.big_warehouse:,} conversions"),
        ):
            s = benchstats.summarize([big[key]])
            r = benchstats.ratio(s.wall, benchstats.summarize([big["empty"]]).wall)
            vs = f"{r:.2f}x empty" if key == "big" and r is not None else "-"
            table.append(fmt_row(f"(big) {label}", args.second, s, vs, ingest_note(big[key])))
    if "scale" in extra:
        small, large = args.scale_rows
        rss = {k: v.get("rss_peak_mb") for k, v in extra["scale"].items()}
        for rows in (small, large):
            res = extra["scale"][str(rows)]
            r = benchstats.ratio(rss.get(str(rows)), rss.get(str(small)))
            vs = f"{r:.2f}x RSS of {small:,}" if rows == large and r is not None else "-"
            s = benchstats.summarize([res])
            table.append(fmt_row("(scale) ingest_file, PostgreSQL", rows, s, vs, ingest_note(res)))
    out.append(benchstats.markdown_table(TABLE_HEAD, table, TABLE_ALIGN))
    out.append("")
    out.append(
        "wall s: the median over the repetitions of the step inside a fresh process (imports "
        "and table creation excluded); each run s: the repetitions in round order; peak RSS: "
        "the highest; ratio: the median against the median of (f)."
    )
    out.append(ratios_and_targets(args, summaries, extra))
    out.append(details(reps, extra, args))
    return "\n".join(out)


def ratios_and_targets(args, summaries: dict, extra: dict) -> str:
    wall = {k: s.wall for k, s in summaries.items() if s.wall is not None}
    out = ["", "Ratios of the medians (for reference):"]
    head = len(out)

    def show(label: str, num: str, den: str) -> None:
        r = benchstats.ratio(wall.get(num), wall.get(den))
        if r is not None:
            out.append(f"- {label}: {r:.2f}x")

    show("b/a, PostgreSQL ingest vs the unlogged COPY floor", "ingest", "copy")
    show("f/a, the durable floor vs the unlogged floor", "durable", "copy")
    show("g/f, dlt's merge vs the durable floor", "dlt", "durable")
    show("c/b, the pandas loader vs our ingest", "pandas", "ingest")
    show("e/b, the dry run vs the full ingest", "dry", "ingest")
    if len(out) == head:
        out = []

    out.append("")
    scope = "" if args.rows == TARGET_ROWS else f"; this run has N = {args.rows:,}"
    out.append(f"Targets (issue 13, for N = {TARGET_ROWS:,} on a 2-core machine{scope}):")

    def target(label: str, value: float | None, limit: float, unit: str = "x", stretch=None):
        if value is None:
            out.append(f"- {label}: not measured in this run (target <= {limit:g}{unit})")
            return
        mb = unit.strip() == "MB"
        shown = f"{value:.0f}{unit}" if mb else f"{value:.2f}{unit}"
        goal = f"{limit:.0f}{unit}" if mb else f"{limit:.1f}{unit}"
        line = f"- {label}: {shown}; target <= {goal}: {benchstats.Verdict(value, limit).text()}"
        if stretch is not None:
            line += f"; stretch <= {stretch:.1f}{unit}: {benchstats.Verdict(value, stretch).text()}"
        out.append(line)

    if "ingest" in summaries or "dlt" in summaries:
        target(
            "b/g, PostgreSQL ingest vs dlt's merge",
            benchstats.ratio(wall.get("ingest"), wall.get("dlt")),
            1.0,
            stretch=0.5,
        )
    if "ingest" in summaries or "durable" in summaries:
        target(
            "b/f, PostgreSQL ingest vs the durable indexed COPY floor",
            benchstats.ratio(wall.get("ingest"), wall.get("durable")),
            2.5,
            stretch=1.5,
        )
    if "dry" in summaries or "durable" in summaries:
        target(
            "e/f, dry run vs the durable floor",
            benchstats.ratio(wall.get("dry"), wall.get("durable")),
            1.0,
        )
    if "sqlite" in summaries or "ingest" in summaries:
        target(
            "d/b, SQLite ingest vs PostgreSQL ingest",
            benchstats.ratio(wall.get("sqlite"), wall.get("ingest")),
            1.0,
        )
    if "ingest" in summaries:
        target(
            "peak RSS of the PostgreSQL ingest", summaries["ingest"].rss_peak_mb, 500, unit=" MB"
        )
    if "scale" in extra:
        small, large = args.scale_rows
        rss = {k: v.get("rss_peak_mb") for k, v in extra["scale"].items()}
        target(
            f"peak RSS of the ingest at {large:,} rows vs {small:,}",
            benchstats.ratio(rss.get(str(large)), rss.get(str(small))),
            1.1,
        )
    if "big" in extra:
        big = extra["big"]
        target(
            f"{args.second:,}-row file into {args.big_warehouse:,} conversions vs into an empty "
            "warehouse",
            benchstats.ratio(big["big"].get("wall"), big["empty"].get("wall")),
            1.5,
        )
    return "\n".join(out)


def details(reps: dict, extra: dict, args) -> str:
    out = []
    for step in ("ingest", "sqlite", "dry"):
        last = next((x for x in reversed(reps.get(step, [])) if "error" not in x), None)
        if last and "detail" in last:
            d = last["detail"]
            out.append(
                f"- {step}: timings {d.get('timings')}, connect {d.get('connect_s')} s, "
                f"reasons {d.get('reasons')}"
            )
    if out:
        out.insert(0, "Where the time went (the last successful repetition of each step):")
    errors = {e for rs in reps.values() for r in rs if (e := r.get("error"))}
    errors |= {
        e
        for x in extra.values()
        for r in x.values()
        if isinstance(r, dict) and (e := r.get("error"))
    }
    for e in sorted(errors):
        out.append(f"- FAILED: {e}")
    out = ["", *out] if out else out
    if "big" in extra:
        out = out or [""]
        big = extra["big"]
        for key in ("empty", "big"):
            d = big.get(key, {}).get("detail")
            if d:
                out.append(f"- second file into the {key} warehouse: timings {d.get('timings')}")
        fill = big.get("fill", {})
        if "wall" in fill:
            out.append(
                f"- warehouse fill: {args.big_warehouse:,} conversions in {fill['wall']:.1f} s, "
                f"{fill['detail']}"
            )
        plans = big.get("plans")
        if plans is not None:
            out.append("")
            out.append(_plans_text(plans, args.big_warehouse))
    return "\n".join(out)


def run_scale(args, pg: Postgres, work: Path) -> dict:
    """The PostgreSQL ingest of an A-row and a B-row file, for the ratio of their peak RSS."""
    out = {}
    for rows in args.scale_rows:
        path = input_file(work, rows, args.seed)
        print(f"# scale: ingest of {rows:,} rows ...", flush=True)
        out[str(rows)] = run_child(
            {
                "step": "ingest",
                "url": pg.fresh_schema("scale"),
                "path": str(path),
                "reports": str(work / "reports" / f"scale_{rows}"),
            }
        )
        print(f"#   {_brief(out[str(rows)])}", flush=True)
        pg.drop_schemas()
    return out


_ON_CONVERSIONS = re.compile(r"\bon conversions\b(?!_)")
_SCAN = re.compile(
    r"(?P<node>Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)(?: Backward)?"
    r"(?: using (?P<index>\S+))? on conversions\b(?!_)[^(]*\(cost=[^)]*\) "
    r"\(actual rows=(?P<rows>\d+) loops=(?P<loops>\d+)\)"
)


def _plans_text(plans: list[str], warehouse_rows: int) -> str:
    """The plans that touch `conversions`, and whether any of them reads (nearly) all of it."""
    relevant = [p for p in plans if _ON_CONVERSIONS.search(p.split("plan:", 1)[-1])]
    whole = []
    for plan in relevant:
        for m in _SCAN.finditer(plan):
            read = int(m["rows"]) * int(m["loops"])
            if m["node"] == "Seq Scan" or read >= warehouse_rows / 2:
                how = f"{m['node']}" + (f" using {m['index']}" if m["index"] else "")
                whole.append(f"{how} returned {read:,} of {warehouse_rows:,} rows")
    head = (
        f"Plans of the {len(relevant)} statement(s) touching `conversions` in a dry run of the "
        "second file into the big warehouse (auto_explain; ANALYZE on, timing off):"
    )
    if whole:
        verdict = "WARNING: the whole conversions table is read: " + "; ".join(whole) + "."
    else:
        verdict = "No plan reads more than half of the conversions table."
    body = "\n\n".join(p.strip() for p in relevant[:8])
    more = f"\n... {len(relevant) - 8} more" if len(relevant) > 8 else ""
    return f"{head}\n{verdict}\n\n```\n{body}{more}\n```"


def run_big(args, pg: Postgres, work: Path) -> dict:
    import generate

    m, k = args.big_warehouse, args.second
    second = input_file(
        work,
        k,
        args.seed,
        name=f"second_of_{m}",
        existing_base=generate.fill_base(args.seed),
        existing_rows=m,
        existing_fraction=args.existing_fraction,
    )
    reports = work / "reports"
    out: dict = {}
    print("# big: the second file into an empty warehouse ...", flush=True)
    out["empty"] = run_child(
        {
            "step": "ingest",
            "url": pg.fresh_schema("empty"),
            "path": str(second),
            "reports": str(reports / "empty"),
        }
    )
    print(f"#   {_brief(out['empty'])}", flush=True)
    print(f"# big: filling a warehouse with {m:,} conversions ...", flush=True)
    url = pg.fresh_schema("big")
    out["fill"] = run_child({"step": "fill", "url": url, "rows": m, "seed": args.seed})
    print(f"#   {_brief(out['fill'])}", flush=True)
    if "error" in out["fill"]:
        out["big"] = out["fill"]
        return out
    if not args.no_explain:
        # Untimed: a dry run with auto_explain, before the real run changes the warehouse.
        print("# big: plans (dry run with auto_explain) ...", flush=True)
        explained = run_child(
            {
                "step": "ingest",
                "url": url,
                "path": str(second),
                "reports": str(reports / "explain"),
                "dry_run": True,
                "explain": True,
            }
        )
        out["plans"] = explained.get("detail", {}).get("plans", [])
        print(f"#   {_brief(explained)}", flush=True)
    print("# big: the second file into the big warehouse ...", flush=True)
    out["big"] = run_child(
        {"step": "ingest", "url": url, "path": str(second), "reports": str(reports / "big")}
    )
    print(f"#   {_brief(out['big'])}", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
