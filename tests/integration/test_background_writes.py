"""`warehouse.Background`: a file's writes overlap the reading, in order, one at a time, and a
failure or an interruption never leaves a statement running on the file's transaction."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from pipeline import warehouse


def _append(conn, value: int, seen: list) -> None:
    seen.append((value, threading.current_thread().name))
    conn.execute(text("INSERT INTO bg_probe (v) VALUES (:v)"), {"v": value})


def _fail(conn) -> None:
    conn.execute(text("SELECT no_such_column FROM bg_probe"))


def test_writes_run_in_order_and_the_connection_comes_back_after_finish(engine):
    seen: list = []
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE bg_probe (v INTEGER)"))
        with warehouse.Background(conn) as writes:
            for value in range(20):
                writes(_append, value, seen)
            writes.finish()
            count = conn.execute(text("SELECT count(*) FROM bg_probe")).scalar()
        assert count == 20
        order = [v for (v,) in conn.execute(text("SELECT v FROM bg_probe"))]
    assert [v for v, _ in seen] == list(range(20)) and sorted(order) == list(range(20))
    threads = {name for _, name in seen}  # on its own thread, the same one every time
    assert len(threads) == 1 and threads != {threading.current_thread().name}


def test_a_failed_write_is_raised_to_the_caller(engine):
    with engine.connect() as conn, conn.begin():
        conn.execute(text("CREATE TEMPORARY TABLE bg_probe (v INTEGER)"))
        with (
            pytest.raises(Exception, match="no_such_column"),
            warehouse.Background(conn) as writes,
        ):
            writes(_fail)
            writes(_append, 1, [])  # the previous write's error surfaces here at the latest


def test_an_interrupted_caller_cancels_the_write_in_flight(engine):
    """A stop signal reaches the main thread while the server runs a long write: the statement
    is cancelled and the thread joined before the error goes on, so the rollback is prompt."""
    long = (
        "SELECT pg_sleep(60)"
        if engine.dialect.name == "postgresql"
        else "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1e12) "
        "SELECT count(*) FROM r"  # minutes of work in the SQLite library
    )
    started = time.monotonic()
    with engine.connect() as conn:
        transaction = conn.begin()
        with pytest.raises(KeyboardInterrupt), warehouse.Background(conn) as writes:
            writes(lambda c: c.execute(text(long)))
            time.sleep(0.5)  # the sleep is running on the server
            raise KeyboardInterrupt
        transaction.rollback()
        assert conn.execute(text("SELECT 1")).scalar() == 1  # the connection is usable again
    assert time.monotonic() - started < 20  # not the 60 s the statement would have taken


def test_reading_hands_the_writer_one_write_per_batch(engine, tmp_path, monkeypatch):
    """Each batch's accepted rows and its rejected rows go to the writer as one write: a second
    write per batch would wait for the first, and the reading of the next batch with it. A dry
    run writes nothing in the merge, so every write counted here is the reading's."""
    from datetime import UTC, datetime

    from pipeline.context import Context
    from pipeline.datadir import LocalDataDir
    from pipeline.ingest import Upload, ingest_file
    from tests.helpers import make_config, write_csv

    calls: list[str] = []
    handed = warehouse.Background.__call__

    def counted(self, write, *args, **kwargs):
        calls.append(write.__name__)
        return handed(self, write, *args, **kwargs)

    monkeypatch.setattr(warehouse.Background, "__call__", counted)
    # Three batches of two rows; each has an accepted row and a rejected one (a bad payout).
    body = "".join(
        f"k{i},1.00,2026-11-01 10:00:00\nb{i},oops,2026-11-01 10:00:00\n" for i in range(3)
    )
    path = write_csv(tmp_path / "in" / "f.csv", "click_id,payout,conversion_time\n" + body)
    result = ingest_file(
        Context(make_config(), engine, LocalDataDir(tmp_path)),
        Upload(
            path,
            "maxbounty",
            received_at=datetime(2026, 11, 20, 12, tzinfo=UTC),
            batch_size=2,
            dry_run=True,
        ),
    )
    assert result.outcomes["inserted"] == 3 and result.outcomes["rejected"] == 3, result
    assert len(calls) == 3, calls
