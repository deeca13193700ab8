"""The warehouse edge: tables, migrations, the per-offer-source lock and set-based reads/writes.

SQLAlchemy 2 Core on SQLite (the embedded default) and PostgreSQL (production). Both are first
class, so anything dialect-specific is confined to three places here: how a payout and a UTC time
are stored, how the write lock is taken, and `connect`'s SQLite pragmas.

- Money: `payout` is NUMERIC(18, 6) on PostgreSQL and a canonical decimal string on SQLite (whose
  NUMERIC is a binary float). Python sees int64 micro-units either way, so arithmetic is exact.
- Time: `timestamptz` on PostgreSQL; ISO text in UTC on SQLite (sorts correctly). Python sees
  tz-aware UTC datetimes.
- Locking: a file's whole transaction holds `pg_advisory_xact_lock(offer source)` on PostgreSQL,
  so files of one offer source merge one at a time while others run in parallel; SQLite has a
  single writer anyway (`BEGIN IMMEDIATE` takes it up front, so a reader never upgrades late).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

from pipeline.duplicates import HISTORY_COLUMNS, Resolution, empty_existing
from pipeline.money import format_micros, parse_decimal

SCHEMA_VERSION = 2
OUTCOMES = ("inserted", "updated", "incremented", "status_updated", "ignored_duplicate", "rejected")


class WarehouseError(RuntimeError):
    """The warehouse cannot be used (unreachable, or its schema is newer than this tool)."""


class Payout(TypeDecorator):
    """int micro-units in Python; exact NUMERIC or decimal text in the database."""

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(24))
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None or value is pd.NA:
            return None
        if dialect.name == "sqlite":
            return format_micros(int(value))
        return Decimal(int(value)).scaleb(-6)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return parse_decimal(str(value))


class UTCDateTime(TypeDecorator):
    """tz-aware UTC datetimes in Python; timestamptz or sortable UTC text in the database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None or value is pd.NaT or value is pd.NA:
            return None
        value = pd.Timestamp(value)
        value = value.tz_localize(UTC) if value.tzinfo is None else value.tz_convert(UTC)
        if dialect.name == "sqlite":
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value.to_pydatetime()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value.astimezone(UTC)


_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
metadata = MetaData()

ingested_files = Table(
    "ingested_files",
    metadata,
    Column("file_id", _ID, primary_key=True, autoincrement=True),
    Column("content_hash", String(64), nullable=False),
    Column("original_name", String(1024), nullable=False),
    Column("offer_source", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("processed_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("duplicate_mode_override", String(32)),
    Column("forced", Boolean, nullable=False, default=False),
    Column("claim_id", String(32)),
    Column("data_lines", Integer, nullable=False, default=0),
    *[Column(outcome, Integer, nullable=False, default=0) for outcome in OUTCOMES],
    Column("detail", Text),
    Column("report_path", Text),
    Column("summary_path", Text),
    Index("ix_ingested_files_hash", "content_hash", "offer_source", "kind", "state"),
    Index("ix_ingested_files_claim", "claim_id"),
)

conversions = Table(
    "conversions",
    metadata,
    Column("conversion_id", String(64), primary_key=True),
    Column("offer_source", String(64), nullable=False),
    Column("click_id", String(128), nullable=False),
    Column("conversion_type", String(64), nullable=False, default=""),
    Column("event_id", String(255)),
    Column("status", String(16), nullable=False),
    Column("payout", Payout, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("converted_at", UTCDateTime, nullable=False),
    Column("duplicate_status", String(16), nullable=False),
    Column("file_id", ForeignKey("ingested_files.file_id"), nullable=False),
    Column("line", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_conversions_key", "offer_source", "click_id", "conversion_type"),
)

conversion_history = Table(
    "conversion_history",
    metadata,
    Column("history_id", _ID, primary_key=True, autoincrement=True),
    Column("conversion_id", String(64), nullable=False),
    Column("file_id", ForeignKey("ingested_files.file_id"), nullable=False),
    Column("line", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    *[
        Column(f"{side}_{f}", kind)
        for f, kind in [
            ("payout", Payout),
            ("status", String(16)),
            ("converted_at", UTCDateTime),
            ("currency", String(3)),
            ("event_id", String(255)),
        ]
        for side in ("old", "new")
    ],
    Column("recorded_at", UTCDateTime, nullable=False),
    Index("ix_conversion_history_conversion", "conversion_id"),
)

rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("file_id", ForeignKey("ingested_files.file_id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("reason_codes", Text, nullable=False),
    Column("cells", Text, nullable=False),
)

warehouse_schema = Table(
    "warehouse_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)


def _v1(conn: Connection) -> None:
    """Version 1 as it shipped: every table, without the indexes later versions added."""
    metadata.create_all(conn)
    for index in _ADDED_IN_V2:
        index.drop(conn, checkfirst=True)


# Replays and reporting select files by received time; version 1 had no index for that.
_ADDED_IN_V2 = [Index("ix_ingested_files_received", ingested_files.c.received_at)]


def _v2(conn: Connection) -> None:
    for index in _ADDED_IN_V2:
        index.create(conn, checkfirst=True)


# Versioned migrations, applied in order inside one transaction (DDL is transactional on both
# PostgreSQL and SQLite, so a failed upgrade leaves the old version intact). A warehouse made
# by an older tool is upgraded in place when `connect` opens it. When the schema changes, add a
# step here and keep earlier steps producing exactly the shape they shipped with.
MIGRATIONS = [
    (1, "conversions, conversion_history, ingested_files, rejected_rows", _v1),
    (2, "index ingested_files by received_at for replays", _v2),
]


def connect(url: str) -> Engine:
    """An engine with the settings this workload needs; the schema is created or upgraded."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - exercised via SQLite
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - exercised via SQLite
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        upgrade(engine)
    except WarehouseError:
        engine.dispose()
        raise
    except Exception as exc:
        engine.dispose()
        raise WarehouseError(
            f"cannot open the warehouse {parsed.render_as_string(hide_password=True)}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return engine


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def upgrade(engine: Engine) -> int:
    """Bring the warehouse to SCHEMA_VERSION; refuse one made by a newer tool."""
    with engine.begin() as conn:
        _lock(conn, "schema")
        warehouse_schema.create(conn, checkfirst=True)
        current = conn.execute(select(func.max(warehouse_schema.c.version))).scalar() or 0
        if current > SCHEMA_VERSION:
            raise WarehouseError(
                f"the warehouse schema is version {current}, newer than this tool "
                f"({SCHEMA_VERSION}); upgrade conversions-pipeline"
            )
        for version, description, step in MIGRATIONS:
            if version > current:
                step(conn)
                conn.execute(
                    warehouse_schema.insert().values(
                        version=version, description=description, applied_at=_now()
                    )
                )
    return SCHEMA_VERSION


def _now() -> datetime:
    return datetime.now(UTC)


def _lock(conn: Connection, name: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"conversions:{name}"},
        )


@contextmanager
def file_transaction(engine: Engine, offer_source: str) -> Iterator[Connection]:
    """One transaction for one file, holding the offer source's merge lock throughout."""
    with engine.begin() as conn:
        _lock(conn, f"offer_source:{offer_source}")
        yield conn


def applied_count(conn: Connection, content_hash: str, offer_source: str, kind: str) -> int:
    f = ingested_files.c
    return conn.execute(
        select(func.count()).where(
            f.content_hash == content_hash,
            f.offer_source == offer_source,
            f.kind == kind,
            f.state == "applied",
        )
    ).scalar_one()


def applied_by_claim(conn: Connection, claim_ids: Sequence[str]) -> dict[str, Any] | None:
    """The ledger row of a claim (under any of its ids) applied before archiving was cut off."""
    row = (
        conn.execute(
            select(ingested_files).where(
                ingested_files.c.claim_id.in_(list(claim_ids)), ingested_files.c.state == "applied"
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def record_file(conn: Connection, **values: Any) -> int:
    values.setdefault("processed_at", _now())
    result = conn.execute(ingested_files.insert().values(**values))
    return int(result.inserted_primary_key[0])


def finish_file(conn: Connection, file_id: int, **values: Any) -> None:
    conn.execute(
        ingested_files.update().where(ingested_files.c.file_id == file_id).values(**values)
    )


def _stage(conn: Connection, name: str, frame: pd.DataFrame, columns: dict[str, str]) -> None:
    """A temporary table holding `frame`'s rows, for joins that stay inside the database."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    ddl = ", ".join(f"{col} {kind}" for col, kind in columns.items())
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({ddl})")
    records = _records(frame[list(columns)])
    if records:
        placeholders = ", ".join(f":{col}" for col in columns)
        conn.execute(
            text(f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({placeholders})"), records
        )


def existing_for(conn: Connection, offer_source: str, keys: pd.DataFrame) -> pd.DataFrame:
    """Per duplicate key of the file: how many conversions exist and the most recent one.

    "Most recent" is the latest conversion time, then the highest id: deterministic, so a rerun
    edits the same conversion a clean run would.
    """
    _stage(
        conn,
        "stage_keys",
        keys.drop_duplicates(),
        {"click_id": "VARCHAR(128)", "conversion_type": "VARCHAR(64)", "key_event": "VARCHAR(255)"},
    )
    c = conversions.c
    sql = text("""
        SELECT * FROM (
            SELECT k.click_id, k.conversion_type, k.key_event,
                   c.conversion_id, c.payout, c.status, c.converted_at, c.currency, c.event_id,
                   count(*) OVER (PARTITION BY k.click_id, k.conversion_type, k.key_event)
                       AS n_existing,
                   row_number() OVER (PARTITION BY k.click_id, k.conversion_type, k.key_event
                                      ORDER BY c.converted_at DESC, c.conversion_id DESC) AS rn
            FROM stage_keys k
            JOIN conversions c
              ON c.offer_source = :offer_source AND c.click_id = k.click_id
             AND c.conversion_type = k.conversion_type
             AND (k.key_event = '' OR c.event_id = k.key_event)
        ) ranked WHERE rn = 1
    """).columns(payout=c.payout.type, converted_at=c.converted_at.type)
    rows = conn.execute(sql, {"offer_source": offer_source}).mappings().all()
    template = empty_existing()
    if not rows:
        return template
    frame = pd.DataFrame.from_records(rows, columns=[*template.columns, "rn"])
    frame["converted_at"] = pd.to_datetime(frame["converted_at"], utc=True)
    return frame[template.columns].astype(template.dtypes.to_dict())


def status_matches(conn: Connection, offer_source: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Per status row: how many conversions it names, and the one it names if exactly one."""
    _stage(
        conn,
        "stage_status",
        rows,
        {
            "line": "INTEGER",
            "click_id": "VARCHAR(128)",
            "conversion_type": "VARCHAR(64)",
            "event_id": "VARCHAR(255)",
        },
    )
    sql = text("""
        SELECT s.line, count(c.conversion_id) AS n_matches,
               min(c.conversion_id) AS conversion_id, min(c.status) AS current_status
        FROM stage_status s
        LEFT JOIN conversions c
          ON c.offer_source = :offer_source AND c.click_id = s.click_id
         AND (s.conversion_type IS NULL OR c.conversion_type = s.conversion_type)
         AND (s.event_id IS NULL OR c.event_id = s.event_id)
        GROUP BY s.line
    """)
    found = conn.execute(sql, {"offer_source": offer_source}).mappings().all()
    return pd.DataFrame.from_records(
        found, columns=["line", "n_matches", "conversion_id", "current_status"]
    )


def apply(conn: Connection, resolution: Resolution, *, file_id: int, offer_source: str) -> None:
    """Write a resolution: a few bulk statements, whatever the number of rows."""
    now = _now()
    if len(resolution.inserts):
        inserts = resolution.inserts.assign(
            offer_source=offer_source, file_id=file_id, created_at=now, updated_at=now
        )
        conn.execute(conversions.insert(), _records(inserts))
    if len(resolution.updates):
        updates = resolution.updates.rename(columns={"conversion_id": "b_conversion_id"})
        values = {col: _bind(col) for col in updates.columns if col != "b_conversion_id"}
        stmt = (
            conversions.update()
            .where(conversions.c.conversion_id == _bind("b_conversion_id"))
            .values(updated_at=now, **values)
        )
        conn.execute(stmt, _records(updates))
    if len(resolution.history):
        history = resolution.history[HISTORY_COLUMNS].assign(file_id=file_id, recorded_at=now)
        conn.execute(conversion_history.insert(), _records(history))


def record_rejections(conn: Connection, file_id: int, rejected: pd.DataFrame) -> None:
    """`rejected`: line, reason_code, cells (a dict of header name -> original cell)."""
    if len(rejected):
        rows = pd.DataFrame(
            {
                "file_id": file_id,
                "line": rejected["line"].astype("int64"),
                "reason_codes": rejected["reason_code"],
                "cells": [json.dumps(c, ensure_ascii=False) for c in rejected["cells"]],
            }
        )
        conn.execute(rejected_rows.insert(), _records(rows))


def _bind(name: str):
    from sqlalchemy import bindparam

    column = conversions.c.get(name)
    return bindparam(name, type_=column.type if column is not None else None)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with None for missing values, the shape DBAPI executemany wants."""
    if frame.empty:
        return []
    out = frame.astype(object).where(frame.notna(), None)
    return out.to_dict("records")


def export(conn: Connection, offer_source: str | None = None) -> pd.DataFrame:
    """Current conversions, oldest first, with exact payouts (int micros) and UTC times."""
    c = conversions.c
    stmt = select(
        c.conversion_id,
        c.offer_source,
        c.click_id,
        c.conversion_type,
        c.event_id,
        c.status,
        c.payout,
        c.currency,
        c.converted_at,
        c.duplicate_status,
    )
    if offer_source:
        stmt = stmt.where(c.offer_source == offer_source)
    stmt = stmt.order_by(c.converted_at, c.conversion_id)
    frame = pd.DataFrame.from_records(
        conn.execute(stmt).mappings().all(), columns=[col.name for col in stmt.selected_columns]
    )
    frame["payout"] = frame["payout"].astype("Int64")
    frame["converted_at"] = pd.to_datetime(frame["converted_at"], utc=True)
    return frame
