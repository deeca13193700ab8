"""Ingest benchmark: our pipeline against raw COPY (the floor) and a typical pandas loader.

    ./run bench                       # N = 1,000,000 rows
    ./run bench --rows 20000          # a quick end-to-end check
    ./run bench --big-warehouse 5000000 --second 100000 --only big

One generated file (benchmarks/generate.py: ~5% repeated click ids, ~1% bad rows, mixed types,
statuses and time formats), then, on one PostgreSQL, each step in a fresh Python process so its
peak RSS is its own:

  copy     psycopg COPY of the file, in 1 MiB blocks, into an UNLOGGED table of 7 text columns
  ingest   `pipeline.ingest.ingest_file` into a fresh warehouse (a schema of its own)
  pandas   a hand-written pandas loader (read_csv, to_datetime, tz_localize, drop_duplicates,
           to_sql(method="multi")) on the first min(N, 100,000) rows, its time scaled to N
  sqlite   `ingest_file` into a fresh SQLite warehouse
  dry      `ingest_file` with a dry-run `Upload` into a fresh PostgreSQL warehouse
  big      with --big-warehouse M: a warehouse holding M conversions (COPYed straight into the
           `conversions` table), then a --second K-row file with ~30% of its click ids already
           there, timed against the same file into an empty warehouse; the plans of the
           statements that read `conversions` are shown (auto_explain, from an untimed dry run)

"wall s" is the step itself, measured inside its process: interpreter start, imports and
creating the warehouse's tables are not included (printed separately). Peak RSS is the process's
high-water mark (VmHWM), imports included. The targets are printed for reference, never asserted.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # `pipeline`, and `generate` (imported where used, so
# that the COPY step's process holds no numpy or pyarrow)

DEFAULT_URL = os.environ.get(
    "CONVERSIONS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
STEPS = ("copy", "ingest", "pandas", "sqlite", "dry", "big")
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


# --- steps: each runs in a child process -------------------------------------------------------


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def step_copy(spec: dict) -> dict:
    import psycopg

    with psycopg.connect(_libpq(spec["url"])) as conn:
        started = time.perf_counter()
        conn.execute(
            "CREATE UNLOGGED TABLE raw_rows (click_id text, payout text, conversion_time text, "
            "conversion_type text, status text, event_id text, currency text)"
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY raw_rows FROM STDIN (FORMAT csv, HEADER true"
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

    def drop_schemas(self) -> None:
        while self.schemas:
            self.admin.execute(f"DROP SCHEMA IF EXISTS {self.schemas.pop()} CASCADE")

    def close(self) -> None:
        self.drop_schemas()
        self.admin.close()


def run_child(spec: dict) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode or not lines:
        sys.stdout.write(proc.stdout)
        return {"error": f"exit code {proc.returncode}", "process_s": process_s}
    out = json.loads(lines[-1][len(MARKER) :])
    out["process_s"] = process_s
    return out


def machine(pg: Postgres | None) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "pipeline"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        commit += " + uncommitted changes in pipeline/" if dirty else ""
    except OSError:
        commit = "?"
    import pandas
    import pyarrow

    pg_version = pg.version() if pg else "-"
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, "
        f"PostgreSQL {pg_version}, code at {commit}"
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


def fmt_row(name, rows, res, ratio, note="") -> list[str]:
    if "error" in res:
        return [name, f"{rows:,}", "failed", "-", "-", "-", res["error"]]
    wall = res["wall"]
    return [
        name,
        f"{rows:,}",
        f"{wall:.2f}",
        f"{rows / wall:,.0f}" if wall else "-",
        f"{res['rss_peak_mb']:.0f}",
        ratio,
        note,
    ]


def markdown(rows: list[list[str]]) -> str:
    head = ["step", "rows", "wall s", "rows/s", "peak RSS MB", "ratio", "note"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    align = ["<", ">", ">", ">", ">", ">", "<"]

    def line(cells):
        return (
            "| "
            + " | ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True))
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if a == ">" else "-" * (w + 2))
            for a, w in zip(align, widths, strict=True)
        )
        + "|"
    )
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def ingest_note(res: dict) -> str:
    d = res.get("detail", {})
    o = {k: v for k, v in d.get("outcomes", {}).items() if v}
    return f"{d.get('state')}: " + ", ".join(f"{k} {v:,}" for k, v in o.items())


def main() -> int:
    import generate

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) files, reports in DIR")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument(
        "--only", metavar="STEP[,STEP]", help=f"run only these steps: {', '.join(STEPS)}"
    )
    parser.add_argument(
        "--big-warehouse", type=int, metavar="M", help="also run `big` with M conversions"
    )
    parser.add_argument("--second", type=int, default=100_000, metavar="K", help="big: rows")
    parser.add_argument(
        "--existing-fraction", type=float, default=0.3, help="big: click ids already there"
    )
    parser.add_argument("--no-explain", action="store_true", help="big: skip the plans")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return 0

    steps = list(STEPS[:-1]) + (["big"] if args.big_warehouse else [])
    if args.only:
        steps = [s.strip() for s in args.only.split(",")]
        unknown = set(steps) - set(STEPS)
        if unknown:
            parser.error(f"unknown step(s) {', '.join(sorted(unknown))}; choose from {STEPS}")
        if "big" in steps and not args.big_warehouse:
            parser.error("the big step needs --big-warehouse M")
    if args.skip_pandas and "pandas" in steps:
        steps.remove("pandas")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    needs_pg = bool(set(steps) - {"sqlite"})
    pg = Postgres(args.postgres_url) if needs_pg else None
    machine_info = machine(pg)
    results: dict[str, dict] = {}
    table: list[list[str]] = []
    n = args.rows
    try:
        main_steps = [s for s in steps if s != "big"]
        path = input_file(work, n, args.seed) if main_steps else None
        for step in main_steps:
            print(f"# {step} ...", flush=True)
            reports = str(work / "reports" / step)
            if step == "copy":
                # COPY cannot skip a row with the wrong number of cells before PostgreSQL 17
                # (ON_ERROR ignore); before that it loads the file's twin, which has the same
                # bytes except that its malformed rows have the right number of cells.
                on_error = pg.version_num() >= 170000
                source = path if on_error else input_file(work, n, args.seed, malformed=False)
                res = run_child(
                    {
                        "step": "copy",
                        "url": pg.fresh_schema("copy"),
                        "path": str(source),
                        "on_error": on_error,
                    }
                )
            elif step == "ingest":
                url = pg.fresh_schema("ingest")
                res = run_child(
                    {"step": "ingest", "url": url, "path": str(path), "reports": reports}
                )
            elif step == "dry":
                url = pg.fresh_schema("dry")
                res = run_child(
                    {
                        "step": "ingest",
                        "url": url,
                        "path": str(path),
                        "reports": reports,
                        "dry_run": True,
                    }
                )
            elif step == "sqlite":
                db = work / "warehouse_sqlite.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                res = run_child(
                    {
                        "step": "ingest",
                        "url": f"sqlite:///{db}",
                        "path": str(path),
                        "reports": reports,
                    }
                )
                if not args.keep:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{db}{suffix}").unlink(missing_ok=True)
            elif step == "pandas":
                sample_rows = min(n, PANDAS_SAMPLE_ROWS)
                sample = work / f"sample_{sample_rows}_{path.name}"
                if not sample.exists():
                    generate.head(path, sample, sample_rows)
                res = run_child(
                    {"step": "pandas", "url": pg.fresh_schema("pandas"), "path": str(sample)}
                )
                if "wall" in res:
                    res["sample_rows"] = sample_rows
                    res["sample_wall"] = res["wall"]
                    res["wall"] = res["wall"] * n / sample_rows
            results[step] = res
            print(f"#   {_brief(res)}", flush=True)
            if pg:
                pg.drop_schemas()
        if "big" in steps:
            results.update(run_big(args, pg, work))
    finally:
        if pg:
            pg.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    if any(step in results for step in STEPS[:-1]):
        print(f"## Ingest benchmark: N = {n:,} rows")
    else:
        print(f"## Ingest benchmark: a big warehouse of {args.big_warehouse:,} conversions")
    print()
    print(f"Machine: {machine_info}")
    print()
    copy_wall = results.get("copy", {}).get("wall")
    labels = {
        "copy": "(a) COPY into an unlogged text table (floor)",
        "ingest": "(b) ingest_file, PostgreSQL",
        "pandas": "(c) pandas loader (scaled)",
        "sqlite": "(d) ingest_file, SQLite",
        "dry": "(e) ingest_file --dry-run, PostgreSQL",
    }
    for step in [s for s in STEPS if s in results and s != "big"]:
        res = results[step]
        ratio = f"{res['wall'] / copy_wall:.1f}x" if copy_wall and "wall" in res else "-"
        note = ""
        if step == "copy" and "detail" in res:
            note = f"{res['detail']['rows_loaded']:,} rows loaded"
            if "wellformed" in res["detail"]["file"]:
                note += " (from the file's twin without malformed rows: PG < 17)"
        elif step in ("ingest", "sqlite", "dry") and "detail" in res:
            note = ingest_note(res)
        elif step == "pandas" and "wall" in res:
            note = (
                f"{res['sample_rows']:,}-row sample in {res['sample_wall']:.2f} s, "
                f"x{n / res['sample_rows']:g}; RSS is the sample's"
            )
        table.append(
            fmt_row(labels[step], n, res, ratio + (" vs (a)" if ratio != "-" else ""), note)
        )
    if "big" in results:
        big = results["big"]
        for key, label in (
            ("empty", "second file into an empty warehouse"),
            ("big", f"second file into {args.big_warehouse:,} conversions"),
        ):
            res = big[key]
            ratio = "-"
            if key == "big" and "wall" in res and "wall" in big["empty"]:
                ratio = f"{res['wall'] / big['empty']['wall']:.2f}x vs empty"
            table.append(fmt_row(f"(big) {label}", args.second, res, ratio, ingest_note(res)))
    print(markdown(table))
    print()
    print("wall s: the step inside a fresh process (imports and table creation excluded).")
    print(_summary(results, n, args))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": n, "results": results}, indent=2, default=str)
        )
    flat = [r for k, r in results.items() if k != "big"] + [
        r for k, r in results.get("big", {}).items() if k != "plans"
    ]
    return 1 if any("error" in r for r in flat) else 0


def _brief(res: dict) -> str:
    if "error" in res:
        return f"failed: {res['error']}"
    return (
        f"{res['wall']:.2f} s, peak RSS {res['rss_peak_mb']:.0f} MB "
        f"(process {res['process_s']:.1f} s)"
    )


def _summary(results: dict, n: int, args) -> str:
    out = []
    wall = {k: v["wall"] for k, v in results.items() if isinstance(v, dict) and "wall" in v}

    def target(label, value, goal, ok):
        out.append(f"- {label}: {value} (target {goal}: {'met' if ok else 'NOT met'})")

    out.append("")
    out.append("Ratios and targets (targets are for N = 1,000,000 and are not asserted):")
    if "ingest" in wall and "copy" in wall:
        r = wall["ingest"] / wall["copy"]
        target("b/a, PostgreSQL ingest vs raw COPY", f"{r:.1f}x", "<= 5x", r <= 5)
    if "pandas" in wall and "ingest" in wall:
        r = wall["pandas"] / wall["ingest"]
        target("c/b, pandas loader vs our ingest", f"{r:.1f}x", ">= 25x", r >= 25)
    if "dry" in wall and "copy" in wall:
        r = wall["dry"] / wall["copy"]
        target("dry/a, dry run vs raw COPY", f"{r:.1f}x", "<= 2x", r <= 2)
    if "sqlite" in wall:
        target("SQLite ingest", f"{wall['sqlite']:.1f} s", "<= 30 s", wall["sqlite"] <= 30)
    if "ingest" in results and "rss_peak_mb" in results["ingest"]:
        rss = results["ingest"]["rss_peak_mb"]
        base = results["ingest"]["rss_base_mb"]
        target(
            "peak RSS of the PostgreSQL ingest",
            f"{rss:.0f} MB (after imports {base:.0f} MB)",
            "<= 500 MB",
            rss <= 500,
        )
    for step in ("ingest", "sqlite", "dry"):
        d = results.get(step, {}).get("detail")
        if d:
            out.append(
                f"- {step}: timings {d.get('timings')}, connect {d.get('connect_s')} s, "
                f"reasons {d.get('reasons')}"
            )
    if "big" in results:
        big = results["big"]
        if "wall" in big["empty"] and "wall" in big["big"]:
            r = big["big"]["wall"] / big["empty"]["wall"]
            target(
                f"{args.second:,}-row file into {args.big_warehouse:,} conversions vs empty",
                f"{r:.2f}x",
                "<= 3x",
                r <= 3,
            )
        for key in ("empty", "big"):
            d = big[key].get("detail")
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
        return {"big": out}
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
    return {"big": out}


if __name__ == "__main__":
    sys.exit(main())
