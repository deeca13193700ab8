"""Workers running at once never apply one file twice, and per offer source they produce the
result of some serial order of the files (DOMAIN.md §9; README "Guarantees").

How it is shown, on both warehouses:

* Real concurrency. Four `conversions inbox` workers (eight in soak), each a separate OS
  process running the CLI's entry point `pipeline.cli.main` (forked after the imports, which
  would cost a second each; nothing is opened before the fork), warm up (a first connection:
  they create the warehouse's schema together), wait at a start barrier and are released at
  the same moment onto one inbox. A third of the 40 files is waiting then; the rest
  arrives in small waves while they run, and each worker runs passes until one started after
  the last wave. Why not all 40 waiting: a pass claims everything it sees before processing
  anything, so released onto a full inbox the first worker to scan claims nearly every file
  (measured: in 8 runs out of 8 one worker claimed 35 to 40 of the 40) and files of one offer
  source would hardly ever meet at the merge lock. The test fails if no offer source's files
  were spread over two workers. The Airflow stand-in: `steps.claim`, then two processes running
  `steps.process` (the mapped task's body) over half the tickets each, both starting on a copy
  of the same bytes.
* Files that make the order matter: three offer sources with different duplicate modes
  (`ignore` with `Purchase` as `increment_payout`, `edit`, `new_or_repeated`), every file
  re-sending the same two "hot" click ids plus ids from a small shared pool, with a payout unique
  to the file and row, other times, statuses and currencies. Seeded, so a failure replays.
* Each file once: the ledger has one `applied` row per dropped file (content hash worked out
  here with hashlib) and nothing else (no `quarantined`; `duplicate_file` only for the re-drop
  of the Airflow test); each file is in the archive once with its bytes; the inbox,
  `processing/` and `quarantine/` are empty; the workers' own tables (summaries) name each file
  once between them; no "database is locked".
* Some serial order. The order is the ledger's `file_id` per offer source: the row is inserted
  inside the file's transaction right *after* the offer source's merge lock is taken
  (PostgreSQL's advisory lock; SQLite's `BEGIN IMMEDIATE`, one writer), so within an offer source
  it is the commit order (`processed_at`, stamped at the same moment, must agree). The same
  files are applied one after another in that order by `conversions ingest` into a fresh
  warehouse; `conversions export --offer-source X` of the two warehouses must be identical, and
  every file's outcome counts in the two ledgers too.
* The comparison can fail: for every offer source, its first two files applied the other way
  round give a different export (by construction: the hot keys' first, last and "new" rows
  move). Checked by mutation, in a copy of the repository: without the PostgreSQL merge lock
  the inbox test's exports differ and the Airflow one's twins collide (UniqueViolation); with
  SQLite's deferred `BEGIN` both fail with "database is locked"; with a claim that copies the
  file instead of renaming it, two workers process one file (the second is recorded as
  `duplicate_file`) and the inbox test fails.

Every subprocess is bounded by a timeout and runs in its own session, killed on failure.
`CONVERSIONS_SOAK=1` runs more workers, files and rounds.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import config as config_module
from pipeline import export, runtime, warehouse
from pipeline.airflow import steps
from pipeline.context import Context
from pipeline.core.vocabulary import OUTCOMES
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from tests.guarantees.harness import (
    DATA_DIRECTORIES,
    FORKED,
    LocalHome,
    S3Home,
    finish,
    process_group,
    run_forked,
)
from tests.helpers import postgres_schema_url, sample_config, soak_or

CONFIG_TOML = sample_config("concurrency.toml")
Home = LocalHome | S3Home
SOURCES = ("maxbounty", "clickbank", "fresh")
HEADER = "click_id,payout,conversion_time,conversion_type,status,currency"
LEDGER_COUNTS = ("data_lines", *OUTCOMES)
WAVE, WAVE_EVERY_S = 3, 0.1  # how the sender drops files while the workers run


# --- the files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dropped:
    """A file as it was dropped: the pristine copy (the inbox's is moved away) and its hash."""

    source: str
    name: str
    original: Path
    content_hash: str


def make_files(folder: Path, seed: int, n_files: int, pool: int) -> list[Dropped]:
    """`n_files` conversion files, round robin over SOURCES, all re-sending the same click ids.

    Rows 1-2 of every file are the offer source's two hot click ids (default type), the rest
    come from a pool of `pool` ids (repeats within a file too). A payout is unique to its file
    and row, so whichever file comes first or last for a key shows in the result. Times are
    always explicit (an empty time would take the received time, which differs between runs).
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_files):
        source = SOURCES[i % len(SOURCES)]
        lines = [HEADER]
        for row in range(rng.randint(5, 9)):
            if row < 2:
                click, ctype = f"{source[:2]}-hot-{row}", ""
            else:
                click = f"{source[:2]}-{rng.randrange(pool):03d}"
                purchase = source == "maxbounty" and rng.random() < 0.4
                ctype = "Purchase" if purchase else ""
            payout = f"{i + 1}.{row:02d}"
            if row >= 2 and source == "clickbank" and rng.random() < 0.2:
                payout = ""  # edit keeps the old payout; missing_payout if nothing exists yet
            elif row >= 2 and rng.random() < 0.04:
                payout = "12,50"  # invalid_payout, whatever the order
            when = (
                f"2025-06-{rng.randint(1, 28):02d} {rng.randrange(24):02d}:"
                f"{rng.randrange(60):02d}:{rng.randrange(60):02d}"
                + rng.choice(["", "", "Z", "+02:00"])
            )
            status = rng.choice(["approved", "pending", "declined", "", "Declined"])
            currency = rng.choice(["", "", "", "EUR", "usd"])
            lines.append(",".join([click, payout, when, ctype, status, currency]))
        content = "\n".join(lines) + "\n"
        name = f"{i:04d}_{source}.csv"
        original = folder / source / name
        original.parent.mkdir(parents=True, exist_ok=True)
        original.write_text(content, encoding="utf-8")
        files.append(Dropped(source, name, original, hashlib.sha256(content.encode()).hexdigest()))
    assert len({f.content_hash for f in files}) == n_files  # every file is a different upload
    return files


def drop_all(home: Home, files: Sequence[Dropped]) -> None:
    """Play the sender (on a disk a temporary name, then the rename; on S3 a PUT)."""
    for f in files:
        home.put(f"{f.source}/{f.name}", f.original.read_bytes())


# --- the workers (harness.FORKED runs `work` in each) ---------------------------------------

# An inbox worker: warms up (a first connection, which creates or upgrades the warehouse: the
# workers do that at the same time too), waits for the start, then runs `conversions inbox`
# passes (the CLI's entry point, what `conversions` and `python -m pipeline` run) one after
# another, as a scheduler on several machines would, until a pass that started after the
# sender had finished. Returns the worst exit code of its passes.
INBOX_WORKER = (
    FORKED
    % """
def work(i, args):
    if cli.main(["export", *args[1:], "--output", os.devnull]) != 0:
        return 71
    gc.collect()
    wait_for_start(i)
    worst = 0
    while True:
        last = (barrier / "sent").exists()  # the sender is done: this pass sees all that is left
        worst = max(worst, cli.main(args))
        gc.collect()  # each pass opens an engine of its own, as a new process would: close it
        if last:
            return worst
        time.sleep(0.01)
"""
)

# An Airflow worker slot running `process_file`'s mapped instances one after another: each
# opens the task's own context (taskflow._context: runtime.airflow_context with the
# connection's URL), runs `steps.process` on its ticket and closes it. Prints the summaries.
MAPPED_TASK_SLOT = (
    FORKED
    % """
def work(i, args):
    tickets = json.loads((barrier / f"tickets{i}.json").read_text())
    wait_for_start(i)
    summaries = []
    for ticket in tickets:
        ctx = runtime.airflow_context(args[0])
        try:
            summaries.append(steps.process(ctx, ticket))
        finally:
            ctx.engine.dispose()
    print(json.dumps(summaries))
    return 0
"""
)


# --- the warehouses -----------------------------------------------------------------------------


@pytest.fixture
def fresh_warehouse(warehouse_url: str, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """More empty warehouses on the same backend as `warehouse_url`, by name."""
    with contextlib.ExitStack() as stack:

        def make(name: str) -> str:
            if warehouse_url.startswith("sqlite"):
                return f"sqlite:///{tmp_path / f'{name}.db'}"
            return stack.enter_context(contextlib.contextmanager(postgres_schema_url)())

        yield make


def ledger(url: str) -> list[dict]:
    engine = warehouse.connect(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(warehouse.ingested_files).order_by(warehouse.ingested_files.c.file_id)
            )
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


def exported(url: str, config: config_module.Config, source: str) -> str:
    """In-process `conversions export --offer-source SOURCE` (the same `export.write`)."""
    engine = warehouse.connect(url)
    try:
        out = io.StringIO()
        export.write(engine, config, out, offer_source=source)
        return out.getvalue()
    finally:
        engine.dispose()


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


# --- the checks ---------------------------------------------------------------------------------


def assert_each_file_applied_once(
    home: Home,
    url: str,
    rows: list[dict],
    files: Sequence[Dropped],
    twins: Sequence[Dropped] = (),
) -> None:
    """Ledger, archive, inbox and claims all say: every file applied exactly once.

    ``twins``: files whose bytes another file of ``files`` has; recorded as ``duplicate_file``.
    """
    assert Counter(r["state"] for r in rows) == {"applied": len(files)} | (
        {"duplicate_file": len(twins)} if twins else {}
    ), Counter(r["state"] for r in rows)
    assert sorted(r["original_name"] for r in rows if r["state"] == "duplicate_file") == sorted(
        f.name for f in twins
    )
    rows = [r for r in rows if r["state"] == "applied"]
    assert sorted((r["offer_source"], r["original_name"], r["content_hash"]) for r in rows) == (
        sorted((f.source, f.name, f.content_hash) for f in files)
    )
    for row in rows:
        assert sum(row[o] for o in OUTCOMES) == row["data_lines"] > 0

    archived = {k: v for k, v in home.files("archive").items() if not k.endswith(".json")}
    expected = {f"{f.content_hash[:16]}_{f.name}": f for f in [*files, *twins]}
    names = [key.rsplit("/", 1)[-1] for key in archived]
    assert sorted(names) == sorted(expected)  # each once, nothing else
    for key, data in archived.items():  # <received day>/<offer source>/conversions/<name>
        f = expected[key.rsplit("/", 1)[-1]]
        assert key.split("/")[1] == f.source
        assert data == f.original.read_bytes()
    assert home.files("inbox") == {}
    assert home.claims_held(url) == 0
    assert home.files("quarantine") == {}


def ledger_order(rows: list[dict], files: Sequence[Dropped]) -> dict[str, list[Dropped]]:
    """Per offer source, the files in the order the ledger recorded them (by file_id)."""
    by_hash = {f.content_hash: f for f in files}
    order: dict[str, list[Dropped]] = defaultdict(list)
    last_time: dict[str, object] = {}
    for row in rows:  # ordered by file_id
        if row["state"] != "applied":
            continue
        source = row["offer_source"]
        if source in last_time:  # the commit order, as the clock saw it, agrees
            assert row["processed_at"] >= last_time[source]
        last_time[source] = row["processed_at"]
        order[source].append(by_hash[row["content_hash"]])
    return order


def counts_by_hash(rows: list[dict]) -> dict[str, tuple[int, ...]]:
    return {
        r["content_hash"]: tuple(r[c] for c in LEDGER_COUNTS)
        for r in rows
        if r["state"] == "applied"
    }


def serial_exports(
    url: str, config: config_module.Config, order: dict[str, list[Dropped]], reports: Path
) -> dict[str, str]:
    """In-process reference: each offer source's files one after another, then its export."""
    engine = warehouse.connect(url)
    try:
        for source, in_order in order.items():
            for f in in_order:
                result = ingest_file(
                    Context(config, engine, LocalDataDir(Path(reports).parent)),
                    Upload(f.original, source, reports_dir=reports),
                )
                assert result.state == "applied"
    finally:
        engine.dispose()
    return {source: exported(url, config, source) for source in order}


def assert_order_matters(
    config: config_module.Config,
    order: dict[str, list[Dropped]],
    fresh_warehouse: Callable[[str], str],
    tag: str,
    reports: Path,
) -> None:
    """The comparison means something: for every offer source, its first two files applied the
    other way round give another export (the hot keys' first, last and "new" rows change)."""
    pairs = {source: files[:2] for source, files in order.items()}
    swapped = {source: files[::-1] for source, files in pairs.items()}
    one = serial_exports(fresh_warehouse(f"pair-{tag}"), config, pairs, reports)
    other = serial_exports(fresh_warehouse(f"swapped-{tag}"), config, swapped, reports)
    for source in order:
        assert one[source] != other[source], source


# --- tests --------------------------------------------------------------------------------------


def write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "conversions.toml"
    path.write_text(CONFIG_TOML, encoding="utf-8")
    return path


def table_files(stdout: str) -> list[tuple[str, str]]:
    """(offer_source/name, state) of each file's block of a `conversions` summary, in order."""
    from tests.integration.test_cli import table  # the summary's reader, shared

    return [(name, row["state"]) for name, row in table(stdout).items()]


# Runs `conversions` commands one after another in one process, through the CLI's entry point
# (what `conversions ...` runs), each with its own stdout/stderr: a subprocess per command would
# cost a second of imports each. Prints [[exit code, stdout, stderr], ...] as JSON.
CLI_SEQUENCE = """
import contextlib, io, json, sys
from pathlib import Path
from pipeline import cli
results = []
for argv in json.loads(Path(sys.argv[1]).read_text()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(params=DATA_DIRECTORIES)
def data_directory(request, warehouse_url: str) -> Callable[[Path], Home]:
    """Makes a data directory (a local folder, or a bucket of the moto server) for a round.

    On S3 the claims are warehouse rows; several workers racing for them need PostgreSQL's
    row-level concurrency (the race is decided by the database's unique index, never by moto,
    whose conditional writes are a check then a write), so S3 runs on PostgreSQL only."""
    if request.param == "local":
        return LocalHome
    if warehouse_url.startswith("sqlite"):
        pytest.skip("several workers on an S3 data directory: PostgreSQL only")
    endpoint = request.getfixturevalue("moto_endpoint")
    return lambda _root: S3Home(endpoint)


@pytest.mark.slow
def test_inbox_workers_started_together_apply_each_file_once_in_some_serial_order(
    tmp_path: Path,
    warehouse_url: str,
    fresh_warehouse: Callable[[str], str],
    data_directory: Callable[[Path], Home],
) -> None:
    """`conversions inbox` x4 at the same moment, 40 files (soak: x8, 200 files, 3 rounds);
    on S3 24 files (each S3 call is an HTTP round trip to moto on a shared 2-core machine)."""
    on_s3 = data_directory(tmp_path / "probe").kind == "s3"
    n_workers, rounds = soak_or(4, 8), soak_or(1, 3)
    n_files, pool = soak_or(24 if on_s3 else 40, 200), soak_or(10, 30)
    for round_ in range(rounds):
        url = warehouse_url if round_ == 0 else fresh_warehouse(f"concurrent{round_}")
        work = tmp_path / f"round{round_}"
        home = data_directory(work / "home")
        _inbox_round(work, 20261127 + round_, n_workers, n_files, pool, url, fresh_warehouse, home)


def _inbox_round(
    work: Path,
    seed: int,
    n_workers: int,
    n_files: int,
    pool: int,
    url: str,
    fresh_warehouse: Callable[[str], str],
    home: Home,
) -> None:
    config_path = write_config(work / "cfg")
    config = config_module.load(config_path)
    files = make_files(work / "originals", seed, n_files, pool)
    waiting = len(files) // 3
    drop_all(home, files[:waiting])
    logs = work / "logs"
    common = ["--config", str(config_path), "--home", home.arg, "--warehouse", url]

    def sender() -> None:  # the rest of the files arrives while the workers run
        for wave in range(waiting, len(files), WAVE):
            time.sleep(WAVE_EVERY_S)
            drop_all(home, files[wave : wave + WAVE])

    done = run_forked(INBOX_WORKER, n_workers, "worker", work, ["inbox", *common], sender)

    seen: list[tuple[str, str]] = []
    workers_of: dict[str, set[int]] = defaultdict(set)
    for i, (out, err) in enumerate(done):
        assert "locked" not in err and "deadlock" not in err, err
        seen += table_files(out)
        for file, _ in table_files(out):
            workers_of[file.split("/")[0]].add(i)
    # Between them the workers report each file once, applied (a claim is won by one worker).
    assert sorted(seen) == sorted((f"{f.source}/{f.name}", "applied") for f in files)
    assert max(len(w) for w in workers_of.values()) >= 2, (
        f"no offer source's files were shared between workers ({dict(workers_of)}): "
        "the merge lock was never contended, the run proved nothing"
    )

    rows = ledger(url)
    assert_each_file_applied_once(home, url, rows, files)
    order = ledger_order(rows, files)

    # The same files, one after another in the ledger's order, through `conversions ingest`
    # into a fresh warehouse; then `conversions export` of both warehouses.
    serial_url = fresh_warehouse(f"serial-{seed}")
    serial_common = ["--config", str(config_path), "--home", str(work / "serial-home")]
    commands = [
        ["ingest", "--offer-source", source, *serial_common, "--warehouse", serial_url]
        + [str(f.original) for f in in_order]
        for source, in_order in order.items()
    ] + [
        ["export", "--offer-source", source, *serial_common, "--warehouse", where]
        for where in (url, serial_url)
        for source in SOURCES
    ]
    (work / "commands.json").write_text(json.dumps(commands), encoding="utf-8")
    with process_group(logs) as start:
        serial_run = start(
            "serial", [sys.executable, "-c", CLI_SEQUENCE, str(work / "commands.json")]
        )
        # Meanwhile (the machine has two cores): the comparison can fail at all.
        assert_order_matters(config, order, fresh_warehouse, str(seed), work / "pair-reports")
        [(code, out, err)] = finish([serial_run], logs)
    assert code == 0, err
    results = json.loads(out)
    ingests, exports = results[: len(order)], results[len(order) :]
    for (code, out, err), (source, in_order) in zip(ingests, order.items(), strict=True):
        assert code == 0, f"{out}\n{err}"
        assert table_files(out) == [(f"{source}/{f.name}", "applied") for f in in_order]
    assert [code for code, _, _ in exports] == [0] * len(exports)
    concurrent = {source: out for source, (_, out, _) in zip(SOURCES, exports[:3], strict=True)}
    serial = {source: out for source, (_, out, _) in zip(SOURCES, exports[3:], strict=True)}
    for source in SOURCES:
        assert len(list(csv.reader(io.StringIO(serial[source])))) > 3  # header and conversions
        assert concurrent[source] == serial[source], source
    assert counts_by_hash(ledger(serial_url)) == counts_by_hash(rows)


@pytest.mark.slow
def test_two_mapped_task_processes_apply_each_claimed_file_once_in_some_serial_order(
    tmp_path: Path,
    warehouse_url: str,
    fresh_warehouse: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    data_directory: Callable[[Path], Home],
) -> None:
    """`claim_files` then two `process_file` instances at once, as Airflow's executor runs them.

    `dag.test()` runs mapped task instances one after another in one process, so it cannot show
    concurrency. A LocalExecutor (or Celery/Kubernetes) runs each mapped instance in its own OS
    process, whose task body is `steps.process(ctx, ticket)` with a warehouse connection of its
    own: two such processes started together, each with half of the tickets (alternately, so
    both hold files of every offer source), are two worker slots running the mapped instances.
    Left out is Airflow's bookkeeping (XComs, the asset event, the log story), which touches
    neither the inbox nor the warehouse. The serial reference runs in-process (`ingest_file`,
    what `conversions ingest` calls). That the files' order shows in the export is the inbox
    test's `assert_order_matters`; the same generator guarantees it here (hot keys).

    One file is dropped twice (same bytes, another name), and each process starts on one copy:
    exactly one applies, the other is recorded as `duplicate_file` and changes nothing.
    """
    n_files, rounds = soak_or(12, 48), soak_or(1, 4)
    for round_ in range(rounds):
        work = tmp_path / f"round{round_}"
        config_path = write_config(work / "cfg")
        config = config_module.load(config_path)
        files = make_files(work / "originals", 7 + round_, n_files, pool=6)
        # The first file's bytes again under another name: the two slots start on one copy each.
        first = files[0]
        twin = Dropped(first.source, f"again_{first.name}", first.original, first.content_hash)
        home = data_directory(work / "home")
        drop_all(home, [*files, twin])
        url = warehouse_url if round_ == 0 else fresh_warehouse(f"tasks{round_}")
        monkeypatch.setenv("CONVERSIONS_HOME", home.arg)
        monkeypatch.setenv("CONVERSIONS_CONFIG", str(config_path))

        ctx = runtime.airflow_context(url)  # the claim_files task
        try:
            tickets = steps.claim(ctx)
        finally:
            ctx.engine.dispose()
        assert tickets["status"] == []
        by_file = {t["file"]: t for t in tickets["conversions"]}
        copies = [by_file.pop(f"{first.source}/{f.name}") for f in (first, twin)]
        rest = list(by_file.values())
        assert len(rest) == n_files - 1

        (work / "barrier").mkdir()
        for i, half in enumerate(([copies[0], *rest[0::2]], [copies[1], *rest[1::2]])):
            (work / "barrier" / f"tickets{i}.json").write_text(json.dumps(half), encoding="utf-8")
        env = {"CONVERSIONS_HOME": home.arg, "CONVERSIONS_CONFIG": str(config_path)}
        done = run_forked(MAPPED_TASK_SLOT, 2, "slot", work, [url], env=env)

        summaries = [summary for out, _ in done for summary in json.loads(out)]
        states = {s["file"]: s["state"] for s in summaries}
        assert len(summaries) == len(states) == n_files + 1
        # Whichever copy's transaction took the lock first applied; the other changed nothing.
        first_won = states[f"{first.source}/{first.name}"] == "applied"
        won, lost = (first, twin) if first_won else (twin, first)
        assert states.pop(f"{lost.source}/{lost.name}") == "duplicate_file"
        applied = [won, *files[1:]]
        expected = sorted((f"{f.source}/{f.name}", "applied") for f in applied)
        assert sorted(states.items()) == expected
        assert home.claims_held(url) == 0  # no claim left for anyone to adopt

        rows = ledger(url)
        assert_each_file_applied_once(home, url, rows, applied, twins=[lost])
        order = ledger_order(rows, applied)
        serial_url = fresh_warehouse(f"tasks-serial{round_}")
        serial = serial_exports(serial_url, config, order, work / "serial-reports")
        for source in SOURCES:
            assert len(list(csv.reader(io.StringIO(serial[source])))) > 3
            assert exported(url, config, source) == serial[source], source
        assert counts_by_hash(ledger(serial_url)) == counts_by_hash(rows)
