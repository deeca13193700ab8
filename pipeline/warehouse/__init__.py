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

import numpy as np
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
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.types import TypeDecorator

from pipeline.core.duplicates import HISTORY_COLUMNS, Resolution, empty_existing
from pipeline.core.money import format_micros, parse_decimal
from pipeline.core.vocabulary import OUTCOMES
from pipeline.warehouse import bulk

SCHEMA_VERSION = 2


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
            return value.strftime(bulk.SQLITE_TIME_FORMAT)
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
    """An engine with the settings this workload needs; the schema is created or upgraded.

    A URL that does not parse cleanly is refused without being shown, nor any part of it: it
    may hold a password (an unencoded ``@`` in a password puts its tail in the host).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise WarehouseError(
            "the warehouse URL cannot be parsed (not shown: it may hold a password); "
            "percent-encode special characters in the user name and password"
        ) from None
    if "@" in (parsed.host or ""):
        raise WarehouseError(
            "the warehouse URL has an '@' in its host (not shown: it may hold a password); "
            "an '@' in a password must be percent-encoded as %40"
        )
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
        if conn.dialect.name == "postgresql":
            # A merge runs thousands of short probes; compiling them (JIT) only costs time.
            conn.exec_driver_sql("SET LOCAL jit = off")
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


def recorded_by_claim(conn: Connection, claim_ids: Sequence[str]) -> dict[str, Any] | None:
    """The ledger row a claim (under any of its ids) committed before its worker died: the
    file was applied, quarantined or found a duplicate, and only the filing away was cut off.
    (A dry run's row is not one: the file still waits for its real run.)"""
    f = ingested_files.c
    row = (
        conn.execute(
            select(ingested_files)
            .where(
                f.claim_id.in_(list(claim_ids)),
                f.state.in_(("applied", "quarantined", "duplicate_file")),
            )
            .order_by(f.file_id)
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


# --- the file's accepted rows, staged in the database -------------------------------------------
#
# Accepted rows go to a temporary table batch by batch as the file is read, so memory does not
# grow with the file. The merge then reads them back grouped by click id (every duplicate key
# includes the click id, so a group holds all rows of its keys) in chunks of bounded size, and
# resolves each chunk on its own.

STAGE_KINDS = {
    "conversions": {
        "line": "int",
        "click_id": "text",
        "conversion_type": "text",
        "event_id": "text",
        "payout": "int",  # micro-units
        "status": "text",
        "converted_at": "int",  # microseconds since the epoch, UTC
        "currency": "text",
        "mode": "text",
    },
    "status": {
        "line": "int",
        "click_id": "text",
        "conversion_type": "text",
        "event_id": "text",
        "status": "text",
    },
}


def stage_create(conn: Connection, kind: str) -> str:
    """The staging table for a file's accepted rows; returns its name."""
    return bulk.create_temp(conn, "stage_rows", STAGE_KINDS[kind])


def stage_drop(conn: Connection, stage: str) -> None:
    """Free the staged rows once merged (SQLite keeps temporary tables per connection)."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")


def stage_append(conn: Connection, stage: str, kind: str, rows: pd.DataFrame) -> None:
    """Append a batch of accepted rows (as `normalise` makes them) to the staging table."""
    if kind == "conversions":
        epoch = rows["converted_at"].astype("datetime64[us, UTC]")
        micros = pd.Series(epoch.array.asi8, index=rows.index, dtype="Int64")
        rows = rows.assign(converted_at=micros.where(epoch.notna(), pd.NA))
    bulk.insert(conn, stage, rows, STAGE_KINDS[kind])


def staged_chunks(
    conn: Connection, stage: str, kind: str, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The staged rows back, ordered by click id, in chunks that never split a click id."""
    kinds = STAGE_KINDS[kind]
    collate = ' COLLATE "C"' if conn.dialect.name == "postgresql" else ""
    sql = f"SELECT {', '.join(kinds)} FROM {stage} ORDER BY click_id{collate}, line"
    carry: pd.DataFrame | None = None
    for part in bulk.read(conn, sql, {}, list(kinds), chunk_rows):
        part = _decode_staged(part, kind)
        frame = part if carry is None else pd.concat([carry, part], ignore_index=True)
        last = frame["click_id"].iloc[-1]
        cut = int(np.searchsorted(frame["click_id"].to_numpy() == last, True))
        if len(frame) >= chunk_rows and cut > 0:
            yield frame.iloc[:cut].reset_index(drop=True)
            carry = frame.iloc[cut:].reset_index(drop=True)
        else:
            carry = frame
    if carry is not None and len(carry):
        yield carry


def _decode_staged(part: pd.DataFrame, kind: str) -> pd.DataFrame:
    out = part.astype({c: "str" for c, k in STAGE_KINDS[kind].items() if k == "text"})
    out["line"] = out["line"].astype("int64")
    if kind == "conversions":
        out["payout"] = out["payout"].astype("Int64")
        micros = out["converted_at"].astype("Int64")
        out["converted_at"] = pd.to_datetime(micros, unit="us", utc=True).astype(
            "datetime64[us, UTC]"
        )
    return out


# --- reads the merge needs ---------------------------------------------------------------------


def existing_for(conn: Connection, offer_source: str, keys: pd.DataFrame) -> pd.DataFrame:
    """Per duplicate key of the chunk: how many conversions exist and the most recent one.

    "Most recent" is the latest conversion time, then the highest id: deterministic, so a rerun
    edits the same conversion a clean run would. Only the keys' rows are read, through the
    (offer_source, click_id, conversion_type) index; the table is never scanned whole.
    """
    key_kinds = {"click_id": "text", "conversion_type": "text", "key_event": "text"}
    stage = bulk.create_temp(conn, "stage_keys", key_kinds)
    bulk.insert(conn, stage, keys.drop_duplicates(), key_kinds)
    _analyze(conn, stage)
    match = """c.offer_source = :offer_source AND c.click_id = k.click_id
               AND c.conversion_type = k.conversion_type
               AND (k.key_event = '' OR c.event_id = k.key_event)"""
    if conn.dialect.name == "postgresql":
        # LATERAL makes the plan "for each staged key, probe the index". A plain join left
        # the choice to the planner, which has no statistics for rows inserted earlier in the
        # same transaction and picked merge/hash joins reading the whole table.
        sql = f"""
            SELECT k.click_id, k.conversion_type, k.key_event, m.n_existing, m.conversion_id,
                   {bulk.payout_text(conn, "m.payout")}, m.status,
                   {bulk.time_text(conn, "m.converted_at")}, m.currency, m.event_id
            FROM {stage} k
            CROSS JOIN LATERAL (
                SELECT c.conversion_id, c.payout, c.status, c.converted_at, c.currency,
                       c.event_id, count(*) OVER () AS n_existing
                FROM conversions c
                WHERE {match}
                ORDER BY c.converted_at DESC, c.conversion_id DESC
                LIMIT 1
            ) m
        """
    else:  # SQLite has no LATERAL; its planner always drives from the staged keys by index
        sql = f"""
            SELECT click_id, conversion_type, key_event, n_existing, conversion_id,
                   {bulk.payout_text(conn, "payout")}, status,
                   {bulk.time_text(conn, "converted_at")}, currency, event_id
            FROM (
                SELECT k.click_id, k.conversion_type, k.key_event,
                       c.conversion_id, c.payout, c.status, c.converted_at, c.currency,
                       c.event_id,
                       count(*) OVER (PARTITION BY k.click_id, k.conversion_type, k.key_event)
                           AS n_existing,
                       row_number() OVER (PARTITION BY k.click_id, k.conversion_type, k.key_event
                                          ORDER BY c.converted_at DESC, c.conversion_id DESC)
                           AS rn
                FROM {stage} k
                JOIN conversions c ON {match}
            ) ranked WHERE rn = 1
        """
    template = empty_existing()
    parts = list(
        bulk.read(conn, sql, {"offer_source": offer_source}, list(template.columns), 1_000_000)
    )
    if not parts:
        return template
    frame = pd.concat(parts, ignore_index=True)
    frame["payout"] = bulk.decode_payout(frame["payout"])
    frame["converted_at"] = bulk.decode_time(frame["converted_at"])
    return frame.astype(template.dtypes.to_dict())


def status_matches(conn: Connection, offer_source: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Per status row: how many conversions it names, and the one it names if exactly one."""
    row_kinds = {"line": "int", "click_id": "text", "conversion_type": "text", "event_id": "text"}
    stage = bulk.create_temp(conn, "stage_status", row_kinds)
    bulk.insert(conn, stage, rows, row_kinds)
    _analyze(conn, stage)
    match = """c.offer_source = :offer_source AND c.click_id = s.click_id
               AND (s.conversion_type IS NULL OR c.conversion_type = s.conversion_type)
               AND (s.event_id IS NULL OR c.event_id = s.event_id)"""
    if conn.dialect.name == "postgresql":  # index probes per row; see `existing_for`
        sql = f"""
            SELECT s.line, m.n_matches, m.conversion_id, m.current_status
            FROM {stage} s
            CROSS JOIN LATERAL (
                SELECT count(*) AS n_matches, min(c.conversion_id) AS conversion_id,
                       min(c.status) AS current_status
                FROM conversions c WHERE {match}
            ) m
        """
    else:
        sql = f"""
            SELECT s.line, count(c.conversion_id) AS n_matches,
                   min(c.conversion_id) AS conversion_id, min(c.status) AS current_status
            FROM {stage} s
            LEFT JOIN conversions c ON {match}
            GROUP BY s.line
        """
    columns = ["line", "n_matches", "conversion_id", "current_status"]
    parts = list(bulk.read(conn, sql, {"offer_source": offer_source}, columns, 1_000_000))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame.astype({"line": "int64", "n_matches": "int64"})


def _analyze(conn: Connection, table: str) -> None:
    """Temporary tables have no statistics until analysed; the planner needs their size."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {table}")


# --- writes ------------------------------------------------------------------------------------

_CONVERSION_KINDS = {
    "conversion_id": "text",
    "offer_source": "text",
    "click_id": "text",
    "conversion_type": "text",
    "event_id": "text",
    "status": "text",
    "payout": "payout",
    "currency": "text",
    "converted_at": "time",
    "duplicate_status": "text",
    "file_id": "int",
    "line": "int",
    "created_at": "time",
    "updated_at": "time",
}
_FIELD_KINDS = {
    "payout": "payout",
    "status": "text",
    "converted_at": "time",
    "currency": "text",
    "event_id": "text",
}
_HISTORY_KINDS = {
    "conversion_id": "text",
    "file_id": "int",
    "line": "int",
    "action": "text",
    **{f"{side}_{f}": _FIELD_KINDS[f] for f in _FIELD_KINDS for side in ("old", "new")},
    "recorded_at": "time",
}


def apply(conn: Connection, resolution: Resolution, *, file_id: int, offer_source: str) -> None:
    """Write a resolution: a few bulk statements, whatever the number of rows."""
    now = pd.Timestamp(_now())
    if len(resolution.inserts):
        inserts = resolution.inserts.assign(
            offer_source=offer_source, file_id=file_id, created_at=now, updated_at=now
        )
        bulk.insert(conn, "conversions", inserts, _CONVERSION_KINDS)
    if len(resolution.updates):
        kinds = {"conversion_id": "text"} | {
            f: _FIELD_KINDS[f] for f in _FIELD_KINDS if f in resolution.updates.columns
        }
        stage = bulk.create_temp(conn, "stage_updates", kinds)
        bulk.insert(conn, stage, resolution.updates, kinds)
        _analyze(conn, stage)
        fields = [f for f in kinds if f != "conversion_id"]
        assignments = ", ".join(f"{f} = u.{f}" for f in fields)
        conn.execute(
            text(
                f"UPDATE conversions SET {assignments}, updated_at = :now FROM {stage} u "
                "WHERE conversions.conversion_id = u.conversion_id"
            ).bindparams(bindparam("now", type_=UTCDateTime)),
            {"now": now.to_pydatetime()},
        )
    if len(resolution.history):
        history = resolution.history[HISTORY_COLUMNS].assign(file_id=file_id, recorded_at=now)
        bulk.insert(conn, "conversion_history", history, _HISTORY_KINDS)


def record_rejections(conn: Connection, file_id: int, rejected: pd.DataFrame) -> None:
    """`rejected`: line, reason_code, cells (a dict of header name -> original cell)."""
    if len(rejected):
        rows = pd.DataFrame(
            {
                "file_id": file_id,
                "line": rejected["line"].astype("int64").to_numpy(),
                "reason_codes": rejected["reason_code"].to_numpy(),
                "cells": [json.dumps(c, ensure_ascii=False) for c in rejected["cells"]],
            }
        )
        kinds = {"file_id": "int", "line": "int", "reason_codes": "text", "cells": "text"}
        bulk.insert(conn, "rejected_rows", rows, kinds)


EXPORT_COLUMNS = [
    "conversion_id",
    "offer_source",
    "click_id",
    "conversion_type",
    "event_id",
    "status",
    "payout",
    "currency",
    "converted_at",
    "duplicate_status",
]


def export(
    conn: Connection, offer_source: str | None = None, chunk_rows: int = 100_000
) -> Iterator[pd.DataFrame]:
    """Current conversions, oldest first, in chunks: exact payouts (Int64 micros), UTC times.

    Streamed (a server-side cursor on PostgreSQL), so exporting a warehouse of millions of
    conversions needs the memory of one chunk.
    """
    selected = [
        bulk.payout_text(conn, c)
        if c == "payout"
        else bulk.time_text(conn, c)
        if c == "converted_at"
        else c
        for c in EXPORT_COLUMNS
    ]
    where = "WHERE offer_source = :offer_source" if offer_source else ""
    sql = (
        f"SELECT {', '.join(selected)} FROM conversions {where} "
        "ORDER BY converted_at, conversion_id"
    )
    params = {"offer_source": offer_source} if offer_source else {}
    text_columns = [c for c in EXPORT_COLUMNS if c not in ("payout", "converted_at")]
    for part in bulk.read(conn, sql, params, EXPORT_COLUMNS, chunk_rows):
        part = part.astype(dict.fromkeys(text_columns, "str"))
        part["payout"] = bulk.decode_payout(part["payout"])
        part["converted_at"] = bulk.decode_time(part["converted_at"])
        yield part
