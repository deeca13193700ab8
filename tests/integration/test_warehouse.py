"""The warehouse edge on both backends: versioned upgrades, exact payouts, merge serialisation,
staging, and the ledger's questions."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, select, text

from pipeline import warehouse
from pipeline.warehouse import bulk


def _versions(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(warehouse.warehouse_schema.c.version).order_by(
                    warehouse.warehouse_schema.c.version
                )
            ).scalars()
        )


def _record_applied(conn, **values) -> int:
    """A ledger row for an applied file of bytes ``cd…``; `values` override its columns."""
    row = {
        "content_hash": "cd" * 32,
        "original_name": "a.csv",
        "offer_source": "s",
        "kind": "conversions",
        "received_at": datetime(2026, 11, 1, tzinfo=UTC),
        "state": "applied",
    }
    return warehouse.record_file(conn, **(row | values))


def _indexes(engine, table: str) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes(table)}


def test_a_new_warehouse_gets_every_version(engine):
    assert _versions(engine) == [1, 2, 3, 4, 5, 6, 7]
    assert "ix_ingested_files_received" in _indexes(engine, "ingested_files")
    assert "ix_conversions_key" in _indexes(engine, "conversions")


def test_a_version_1_warehouse_is_upgraded_in_place_keeping_its_data(warehouse_url):
    # Build the warehouse exactly as version 1 of the tool left it, with a file and a row in it.
    old = create_engine(warehouse_url)
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    with old.begin() as conn:
        warehouse.warehouse_schema.create(conn)
        _, description, step = warehouse.MIGRATIONS[0]
        step(conn)
        conn.execute(
            warehouse.warehouse_schema.insert().values(
                version=1, description=description, applied_at=now
            )
        )
        conn.execute(
            warehouse.ingested_files.insert().values(
                file_id=1,
                content_hash="ab" * 32,
                original_name="old.csv",
                offer_source="maxbounty",
                kind="conversions",
                received_at=now,
                processed_at=now,
                state="applied",
                data_lines=1,
                inserted=1,
            )
        )
        conn.execute(
            warehouse.conversions.insert().values(
                conversion_id="old-2",
                offer_source="maxbounty",
                click_id="c1",
                conversion_type="",
                status="approved",
                payout=12_340_000,
                currency="USD",
                converted_at=now,
                duplicate_status="unknown",
                file_id=1,
                line=2,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            warehouse.conversion_history.insert().values(
                history_id=7,
                conversion_id="old-2",
                file_id=1,
                line=2,
                action="insert",
                new_payout=12_340_000,
                recorded_at=now,
            )
        )
    assert "ix_ingested_files_received" not in _indexes(old, "ingested_files")
    columns = {c["name"] for c in inspect(old).get_columns("ingested_files")}
    assert "original_file_id" not in columns  # version 1's shape, as it shipped
    for table in ("conversions", "conversion_history"):
        assert [fk["referred_table"] for fk in inspect(old).get_foreign_keys(table)] == [
            "ingested_files"
        ]
    assert "uploaded_by" not in columns
    assert "page_uploads" not in inspect(old).get_table_names()
    assert _indexes(old, "conversion_history") == {"ix_conversion_history_conversion"}
    old.dispose()

    upgraded = warehouse.connect(warehouse_url)
    try:
        assert _versions(upgraded) == [1, 2, 3, 4, 5, 6, 7]
        assert "inbox_claims" in inspect(upgraded).get_table_names()  # version 6
        assert "ix_ingested_files_received" in _indexes(upgraded, "ingested_files")
        for table in ("conversions", "conversion_history"):  # version 4: checked per file
            assert inspect(upgraded).get_foreign_keys(table) == []
        assert "ix_conversions_key" in _indexes(upgraded, "conversions")
        # version 7: read per file, indexed so
        assert _indexes(upgraded, "conversion_history") == {"ix_conversion_history_file"}
        columns = {c["name"] for c in inspect(upgraded).get_columns("ingested_files")}
        assert "original_file_id" in columns  # version 3
        assert "uploaded_by" in columns  # version 5
        assert "page_uploads" in inspect(upgraded).get_table_names()
        with upgraded.connect() as conn:
            row = conn.execute(select(warehouse.conversions)).mappings().one()
        assert (row["click_id"], row["payout"]) == ("c1", 12_340_000)
        with upgraded.connect() as conn:
            history = conn.execute(select(warehouse.conversion_history)).mappings().one()
        assert (history["history_id"], history["new_payout"]) == (7, 12_340_000)
        # Opening it again is a no-op, not a second upgrade.
        warehouse.upgrade(upgraded)
        assert _versions(upgraded) == [1, 2, 3, 4, 5, 6, 7]
    finally:
        upgraded.dispose()


def test_a_warehouse_from_a_newer_tool_is_refused(engine, warehouse_url):
    with engine.begin() as conn:
        conn.execute(
            warehouse.warehouse_schema.insert().values(
                version=99, description="from the future", applied_at=datetime.now(UTC)
            )
        )
    engine.dispose()
    with pytest.raises(warehouse.WarehouseError, match="version 99, newer than this tool"):
        warehouse.connect(warehouse_url)


def test_unreachable_warehouse_names_it_without_the_password():
    with pytest.raises(warehouse.WarehouseError) as caught:
        warehouse.connect("postgresql+psycopg://buyer:s3cret-pw@127.0.0.1:1/nowhere")
    message = str(caught.value)
    assert "127.0.0.1:1/nowhere" in message and "buyer" in message
    assert "s3cret-pw" not in message


def test_payouts_are_stored_exactly(engine):
    """NUMERIC(18,6) on PostgreSQL, decimal text on SQLite; never a binary float."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        file_id = _record_applied(conn, original_name="x.csv", received_at=now)
        for n, micros in enumerate([300_000, 999_999_999_999_999_999, -1]):
            conn.execute(
                warehouse.conversions.insert().values(
                    conversion_id=f"x-{n}",
                    offer_source="s",
                    click_id=f"c{n}",
                    status="approved",
                    payout=micros,
                    currency="USD",
                    converted_at=now,
                    duplicate_status="unknown",
                    file_id=file_id,
                    line=n + 2,
                    created_at=now,
                    updated_at=now,
                )
            )
    with engine.connect() as conn:
        raw = conn.execute(
            text("SELECT CAST(payout AS TEXT) FROM conversions ORDER BY conversion_id")
        ).scalars()
        texts = [t.rstrip("0").rstrip(".") if "." in t else t for t in raw]
    assert texts == ["0.3", "999999999999.999999", "-0.000001"]


@pytest.mark.parametrize("same_source", [True, False])
def test_merges_of_one_offer_source_are_serialised(engine, warehouse_url, same_source):
    if not same_source and warehouse_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: every merge is serialised")
    holding, release, entered = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with warehouse.file_transaction(engine, "maxbounty"):
            holding.set()
            release.wait(30)

    def second() -> None:
        with warehouse.file_transaction(engine, "maxbounty" if same_source else "clickbank"):
            entered.set()

    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(30)
    b = threading.Thread(target=second)
    b.start()
    try:
        if same_source:
            assert not entered.wait(1.0), "a second merge of the same source did not wait"
        else:
            assert entered.wait(10), "a merge of another source waited for the lock"
    finally:
        release.set()
        a.join(30)
        b.join(30)
    assert entered.is_set()


def test_a_merge_behind_another_gives_up_after_the_lock_timeout(engine):
    """PostgreSQL: the advisory merge lock's wait is bounded by lock_timeout; SQLite: the busy
    timeout `file_transaction` sets (the engine's own is 60 s, so 1 s can only come from it).
    The offer source is this test's own: an advisory key is one per database, not per schema."""
    source = f"waits_{uuid.uuid4().hex[:8]}"
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with warehouse.file_transaction(engine, source):
            holding.set()
            release.wait(30)

    a = threading.Thread(target=first)
    a.start()
    try:
        assert holding.wait(30)
        started = time.monotonic()
        with (
            pytest.raises(warehouse.WarehouseError) as raised,
            warehouse.file_transaction(engine, source, lock_timeout_s=1),
        ):
            pytest.fail("the second merge got in while the first held the lock")
        took = time.monotonic() - started
    finally:
        release.set()
        a.join(30)
    assert 0.9 <= took < 10, took
    assert "was not granted within settings.lock_timeout_seconds = 1 s" in str(raised.value)
    with warehouse.file_transaction(engine, source, lock_timeout_s=1):
        pass  # released: the next merge gets in


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_statement_past_the_statement_timeout_is_cancelled_and_named(engine):
    source = f"waits_{uuid.uuid4().hex[:8]}"  # its advisory key: no other test run holds it
    started = time.monotonic()
    with (
        pytest.raises(warehouse.WarehouseError) as raised,
        warehouse.file_transaction(engine, source, statement_timeout_s=1) as conn,
    ):
        conn.execute(text("SELECT pg_sleep(30)"))
    assert time.monotonic() - started < 10
    assert str(raised.value) == (
        f"a statement of the merge of offer source {source!r} ran longer than "
        "settings.statement_timeout_seconds = 1 s"
    )


@pytest.mark.parametrize("lock_s, statement_s", [(1, 2), (0, 0)])
def test_the_bounds_hold_inside_a_files_transaction_only(
    engine, warehouse_url, lock_s, statement_s
):
    """A pooled connection goes back to other work with its usual bounds: PostgreSQL's come from
    SET LOCAL (the same backend is checked), SQLite's busy timeout is restored."""
    if warehouse_url.startswith("sqlite"):
        probe = "PRAGMA busy_timeout"
        inside_expected = [str(lock_s * 1000 or 2**31 - 1)]
    else:
        probe = (
            "SELECT current_setting('lock_timeout') || ' ' || current_setting('statement_timeout')"
        )
        inside_expected = [" ".join(f"{s}s" if s else "0" for s in (lock_s, statement_s))]

    def settings(conn) -> list[str]:
        return [str(v) for v in conn.exec_driver_sql(probe).scalars()]

    def backend(conn) -> object:
        if warehouse_url.startswith("sqlite"):
            return id(conn.connection.dbapi_connection)
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()

    with engine.connect() as conn:
        before, pid = settings(conn), backend(conn)
    with warehouse.file_transaction(
        engine,
        f"waits_{uuid.uuid4().hex[:8]}",
        lock_timeout_s=lock_s,
        statement_timeout_s=statement_s,
    ) as conn:
        assert backend(conn) == pid
        assert settings(conn) == inside_expected
    with engine.connect() as conn:
        assert backend(conn) == pid
        assert settings(conn) == before
    if warehouse_url.startswith("sqlite"):
        assert before == ["60000"]  # `connect`'s default: settings.lock_timeout_seconds = 60


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 100])
def test_staged_rows_come_back_whole_per_click_id(engine, chunk_rows):
    """The merge resolves chunk by chunk: a click id split over two chunks would be resolved
    twice, so every chunk must hold all staged rows of its click ids, and nothing else lost;
    and each chunk comes with what the warehouse held for exactly its keys, once per key even
    when the key was looked up in two batches."""
    clicks = ["b", "a", "b", "c", "a", "b", "d", "c"]
    rows = pd.DataFrame(
        {
            "line": range(2, 2 + len(clicks)),
            "click_id": pd.Series(clicks, dtype="str"),
            "conversion_type": "",
            "event_id": pd.Series([None, "e1", None, None, None, None, None, None], dtype="str"),
            "payout": pd.Series([100, None, 300, 1, 2, 3, 4, 5], dtype="Int64"),
            "status": pd.Series(["approved"] * len(clicks), dtype="str"),
            "converted_at": pd.Series(
                [pd.Timestamp("2026-11-01 10:00:00.000001", tz="UTC")] + [pd.NaT] * 7,
                dtype="datetime64[us, UTC]",
            ),
            "currency": pd.Series(["USD"] * len(clicks), dtype="str"),
            "mode": pd.Series(["ignore"] * len(clicks), dtype="str"),
        }
    )
    source = f"staged_{uuid.uuid4().hex[:8]}"
    held = {"b": ("held-b", 7_000_000), "c": ("held-c", 8_000_000)}  # click -> id, payout
    with engine.begin() as conn:
        now = pd.Timestamp("2026-11-01 09:00:00", tz="UTC")
        existing = pd.DataFrame(
            {
                "conversion_id": [i for i, _ in held.values()],
                "offer_source": source,
                "click_id": list(held),
                "conversion_type": "",
                "event_id": None,
                "status": "approved",
                "payout": pd.Series([p for _, p in held.values()], dtype="Int64"),
                "currency": "USD",
                "converted_at": now,
                "duplicate_status": "unique",
                "file_id": 1,
                "line": 2,
                "created_at": now,
                "updated_at": now,
            }
        )
        bulk.insert(conn, "conversions", existing, bulk.kinds_of(warehouse.conversions))
        with warehouse.Stage(
            "conversions", source, file_bytes=20_000, chunk_rows=chunk_rows
        ) as stage:
            stage.append(conn, rows.iloc[:5])
            stage.append(conn, rows.iloc[5:])
            chunks = list(stage.chunks())
    assert stage.partitions > 1
    seen: dict[str, int] = {}
    for number, (chunk, found) in enumerate(chunks):
        for click in set(chunk["click_id"]):
            assert click not in seen, f"{click} split over chunks {seen[click]} and {number}"
            seen[click] = number
        mine = sorted(c for c in set(chunk["click_id"]) if c in held)
        assert sorted(found["click_id"]) == mine  # its keys' rows, each once
        for row in found.itertuples():
            assert (row.conversion_id, row.payout) == held[row.click_id]
            assert row.n_existing == 1
    back = pd.concat([c for c, _ in chunks]).sort_values("line", ignore_index=True)
    assert back["line"].tolist() == rows["line"].tolist()
    assert back["click_id"].tolist() == clicks
    assert back["payout"].dropna().tolist() == [100, 300, 1, 2, 3, 4, 5]
    assert back["event_id"].isna().sum() == 7 and back.loc[1, "event_id"] == "e1"
    assert back.loc[0, "converted_at"] == pd.Timestamp("2026-11-01 10:00:00.000001", tz="UTC")
    assert back["converted_at"].isna().sum() == 7
    assert (back.dtypes == rows.dtypes).all(), back.dtypes
    if chunk_rows >= len(clicks):
        assert len(chunks) == 1


def test_a_summary_name_is_taken_only_by_another_row_of_the_same_bytes(engine):
    """A forced re-apply, or the same bytes for another source, must not reuse the first's names."""
    summary = "/home/reports/2026-11-01/a.cdcdcdcdcdcd.summary.json"
    with engine.begin() as conn:
        first = _record_applied(conn, summary_path=summary)
        second = _record_applied(conn)
        assert warehouse.names_taken(conn, "cd" * 32, summary, second)
        assert warehouse.names_taken(conn, "cd" * 32, Path(summary), None)
        assert not warehouse.names_taken(conn, "cd" * 32, summary, first)  # its own name
        assert not warehouse.names_taken(conn, "ef" * 32, summary, second)  # other bytes
        assert not warehouse.names_taken(conn, "cd" * 32, summary + ".x", second)


@pytest.mark.parametrize("warehouse_url", ["postgresql", "sqlite"], indirect=True)
def test_a_files_history_is_read_through_its_index(engine):
    """The page's upload detail (`extract.history`) finds a file's history rows through
    `ix_conversion_history_file`, not by reading the whole table (sequential scans are priced
    out on PostgreSQL, so the plan shows whether an index can serve the query at all)."""
    from sqlalchemy import event

    from pipeline.warehouse import extract

    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "conversion_history" in statement:
            seen.append((statement, parameters))

    with engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", capture)
        extract.history(conn, file_id=1)
        event.remove(conn, "before_cursor_execute", capture)
        assert len(seen) == 1, seen
        sql, parameters = seen[0]
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = conn.exec_driver_sql(f"EXPLAIN {sql}", parameters).fetchall()
        else:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    shown = "\n".join(" ".join(map(str, row)) for row in plan)
    assert "ix_conversion_history_file" in shown, shown


def test_sqlite_connections_get_the_documented_pragmas(tmp_path):
    """README "Server settings": WAL, synchronous NORMAL, foreign keys, a 64 MiB page cache."""
    engine = warehouse.connect(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.connect() as conn:
            got = [
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "cache_size")
            ]
    finally:
        engine.dispose()
    assert got == ["wal", 1, 1, -64 * 1024]  # synchronous: 1 is NORMAL; cache: negative is KiB
