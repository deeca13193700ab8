"""Bounded waits on the warehouse (issue 17, item 5), on real SQLite and PostgreSQL.

Another session holds a lock the merge needs (a person's ``LOCK TABLE conversions`` in psql,
SQLite's write lock, the offer source's advisory merge lock) while an inbox pass runs with
``lock_timeout_seconds = 1``: the file must come back to the inbox with its received time
within a few seconds, nothing applied, the detail naming the setting; once the lock is gone the
next pass applies it. Before the bound, PostgreSQL waited as long as the lock was held and
SQLite 60 s (its busy timeout), then failed with a bare "database is locked".

Every wait is bounded: the pass runs in a thread joined with a timeout, and the lock is
released whatever happens, so a regression fails the test instead of hanging it. The offer
sources have names of their own per test: an advisory lock's key is one per PostgreSQL
database, not per schema, so test runs sharing the server would otherwise hold each other's.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, select

from pipeline import datadir, runner, warehouse
from pipeline.context import Context
from pipeline.results import FileResult
from tests.helpers import make_config, write_csv

LOCK_TIMEOUT = 1  # seconds: settings.lock_timeout_seconds in these tests
WITHIN = 10  # seconds: "within a few seconds" (unbounded it is forever on PostgreSQL, 60 s SQLite)
MINE = "click_id,payout,conversion_time\nm1,5.00,2026-07-01 14:00:00\n"
OTHER = "click_id,payout,conversion_time\nc1,7.25,2026-07-01 10:00:00\n"


@pytest.fixture
def engine(warehouse_url: str) -> Iterator[Engine]:
    """The warehouse as `runtime` opens it for these settings: on SQLite the busy timeout of
    every connection is the lock timeout (the ledger's reads take the write lock too)."""
    eng = warehouse.connect(warehouse_url, lock_timeout_s=LOCK_TIMEOUT)
    yield eng
    eng.dispose()


@pytest.fixture
def names() -> tuple[str, str]:
    """Two offer sources of this test only: the one whose lock is held, and one that sorts
    before it, whose files must not wait."""
    tag = uuid.uuid4().hex[:8]
    return f"waits_b_{tag}", f"waits_a_{tag}"


@pytest.fixture
def ctx(tmp_path, engine, names) -> Context:
    mine, other = names
    config = make_config(
        settings={"lock_timeout_seconds": LOCK_TIMEOUT, "settle_seconds": 0},
        **{mine: {"duplicate_mode": "ignore"}, other: {"duplicate_mode": "ignore"}},
    )
    return Context(config, engine, datadir.LocalDataDir(tmp_path / "home"))


def drop(ctx: Context, relative: str, content: str) -> Path:
    return write_csv(ctx.datadir.layout.inbox / relative, content)


def ledger_states(engine: Engine) -> list[tuple[str, str]]:
    f = warehouse.ingested_files
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(f.c.original_name, f.c.state))]


@contextmanager
def held(lock: Callable[[], Callable[[], None]]) -> Iterator[Callable[[], None]]:
    """Take a lock in another session (``lock()`` returns its release) and hand back an
    idempotent release; it is released on the way out whatever happened."""
    release = lock()
    done = threading.Event()

    def release_once() -> None:
        if not done.is_set():
            done.set()
            release()

    try:
        yield release_once
    finally:
        release_once()


def table_lock(engine: Engine, warehouse_url: str) -> Callable[[], Callable[[], None]]:
    """A person's session holding the whole table: ``LOCK TABLE conversions IN ACCESS
    EXCLUSIVE MODE`` on PostgreSQL, a ``BEGIN IMMEDIATE`` write transaction on SQLite."""

    def lock() -> Callable[[], None]:
        if warehouse_url.startswith("sqlite"):
            other = sqlite3.connect(make_url(warehouse_url).database, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE conversions SET status = status")  # a write in progress

            def release() -> None:
                other.rollback()
                other.close()

            return release
        conn = engine.connect()
        conn.exec_driver_sql("LOCK TABLE conversions IN ACCESS EXCLUSIVE MODE")

        def release_pg() -> None:
            conn.rollback()
            conn.close()

        return release_pg

    return lock


def merge_lock(engine: Engine, offer_source: str) -> Callable[[], Callable[[], None]]:
    """Another file's merge of ``offer_source`` in progress: its advisory lock, taken with the
    key the code uses (`schema._lock`), spelled out here so that a change of key shows."""

    def lock() -> Callable[[], None]:
        conn = engine.connect()
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))",
            {"k": f"conversions:offer_source:{offer_source}"},
        )

        def release() -> None:
            conn.rollback()
            conn.close()

        return release

    return lock


def pass_behind(ctx: Context, release: Callable[[], None]) -> tuple[list[FileResult], float]:
    """Run one inbox pass while the lock is held; its results and how long it took. If it
    does not end within WITHIN seconds, the lock is released (so the thread ends) and the
    test fails."""
    results: list[FileResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.extend(runner.run_inbox(ctx))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(WITHIN)
    took = time.monotonic() - started
    if worker.is_alive():
        release()
        worker.join(60)
        pytest.fail(f"the pass waited more than {WITHIN} s behind the lock")
    if errors:
        raise errors[0]
    return results, took


def received_record(ctx: Context, relative: str) -> datetime:
    """The received time kept for a file put back in the inbox (its hidden record)."""
    folder, name = relative.rsplit("/", 1)
    path = ctx.datadir.layout.inbox / folder / f".{name}.received.json"
    return datetime.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["received_at"])


def assert_put_back(ctx: Context, failed: FileResult, took: float, relative: str, content: str):
    """The failed pass: bounded, named, the file back in the inbox intact, nothing applied."""
    assert failed.state == "failed"
    assert LOCK_TIMEOUT * 0.9 <= took < WITHIN, took  # it did wait, but only about the bound
    assert f"settings.lock_timeout_seconds = {LOCK_TIMEOUT} s" in failed.detail
    assert failed.detail.endswith("the file was put back in the inbox for the next run")
    assert runner.exit_code([failed]) == 1
    assert (ctx.datadir.layout.inbox / relative).read_text() == content
    first = received_record(ctx, relative)
    assert abs((datetime.now(UTC) - first).total_seconds()) < WITHIN + 5
    assert not [p for p in ctx.datadir.layout.processing.rglob("*") if p.is_file()]
    assert not list(ctx.datadir.layout.archive.rglob(relative.split("/")[0]))
    return first


def test_a_table_lock_sends_the_file_back_within_the_lock_timeout(
    ctx, engine, warehouse_url, names
):
    mine, _ = names
    drop(ctx, f"{mine}/a.csv", MINE)
    with held(table_lock(engine, warehouse_url)) as release:
        [failed], took = pass_behind(ctx, release)
    first = assert_put_back(ctx, failed, took, f"{mine}/a.csv", MINE)
    if warehouse_url.startswith("sqlite"):  # one write lock for the whole database
        assert "the warehouse's write lock (SQLite has one writer" in failed.detail
    else:
        assert f"the warehouse lock for offer source {mine!r}" in failed.detail
        assert "table or row lock" in failed.detail
    assert ledger_states(engine) == []  # no applied row, no row at all: it rolled back

    time.sleep(1.1)  # received times are whole seconds: a new claim's own would differ
    [applied] = runner.run_inbox(ctx)  # the lock is gone: the next pass applies it
    assert (applied.state, applied.data_lines, applied.outcomes["inserted"]) == ("applied", 1, 1)
    assert datetime.fromisoformat(applied.received_at) == first
    assert ledger_states(engine) == [("a.csv", "applied")]
    assert not [p for p in ctx.datadir.layout.inbox.rglob("*") if p.is_file()]


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_another_files_merge_lock_sends_the_file_back_and_other_sources_go_on(
    ctx, engine, warehouse_url, names
):
    """The offer source's advisory lock bounds only that offer source: the other one is
    applied in the same pass while this one's file goes back."""
    mine, other = names
    drop(ctx, f"{mine}/a.csv", MINE)
    drop(ctx, f"{other}/c.csv", OTHER)
    with held(merge_lock(engine, mine)) as release:
        results, took = pass_behind(ctx, release)
    [went_on, failed] = results  # the other offer source sorts first
    assert (went_on.offer_source, went_on.state) == (other, "applied")
    first = assert_put_back(ctx, failed, took, f"{mine}/a.csv", MINE)
    assert f"the warehouse lock for offer source {mine!r} (the merge lock" in failed.detail
    assert ledger_states(engine) == [("c.csv", "applied")]

    time.sleep(1.1)
    [applied] = runner.run_inbox(ctx)
    assert (applied.name, applied.state, applied.data_lines) == ("a.csv", "applied", 1)
    assert datetime.fromisoformat(applied.received_at) == first
    assert sorted(ledger_states(engine)) == [("a.csv", "applied"), ("c.csv", "applied")]
