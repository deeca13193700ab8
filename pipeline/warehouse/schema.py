"""The warehouse's shape: how money and time are stored, the tables, their migrations, and how a
connection is opened and locked.

Everything dialect-specific about *storage* lives here (the `Payout` and `UTCDateTime` types,
`connect`'s SQLite pragmas, the advisory lock), so the modules above describe rows and queries
and leave the dialect to this one. Each table is described once, here; the bulk writer derives
its column kinds from these `Table`s (`bulk.kinds_of`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.types import TypeDecorator

from pipeline.core.errors import one_line
from pipeline.core.model import DEFAULT_LOCK_TIMEOUT_SECONDS
from pipeline.core.money import format_micros, parse_decimal
from pipeline.core.vocabulary import MUTABLE_FIELDS, OUTCOMES

SCHEMA_VERSION = 7
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how `UTCDateTime` stores a time on SQLite
# SQLite's page cache per connection, in KiB. Its default (2 MiB) holds a sliver of the indexes
# a big file's rows go into, so most inserts read and write pages through the OS; see README
# "Performance" for what a bigger one measured.
SQLITE_CACHE_KIB = 64 * 1024
# "No bound" on SQLite, whose busy timeout 0 means "do not wait at all": about 24 days, in ms.
_SQLITE_FOREVER_MS = 2**31 - 1


class WarehouseError(RuntimeError):
    """The warehouse cannot be used (unreachable, its schema is newer than this tool, or a
    file's transaction waited past a bound: `file_transaction`)."""


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
            return value.strftime(SQLITE_TIME_FORMAT)
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
    # A fixed rejection report dropped back in: the file whose lines its `original_line` column
    # points at (the first file of the chain, however many rounds of fixing).
    Column("original_file_id", _ID),
    # The Airflow user who sent it through the page (version 4); NULL for files from elsewhere.
    Column("uploaded_by", String(255)),
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
    # The file that created it. No foreign key: a per-row check doubled the cost of writing a
    # file's rows; the reference is checked once per file instead (`ledger.finish_file`).
    Column("file_id", _ID, nullable=False),
    Column("line", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_conversions_key", "offer_source", "click_id", "conversion_type"),
)

_HISTORY_BY_FILE = "ix_conversion_history_file"

# One row per change to a conversion: each mutable field before and after, typed as in
# `conversions` (nullable: a field the change left alone is NULL on both sides).
conversion_history = Table(
    "conversion_history",
    metadata,
    Column("history_id", _ID, primary_key=True, autoincrement=True),
    Column("conversion_id", String(64), nullable=False),
    Column("file_id", _ID, nullable=False),  # checked once per file, as in `conversions`
    Column("line", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    *[
        Column(f"{side}_{field}", conversions.c[field].type)
        for field in MUTABLE_FIELDS
        for side in ("old", "new")
    ],
    Column("recorded_at", UTCDateTime, nullable=False),
    Index(_HISTORY_BY_FILE, "file_id", "line"),  # a file's changes (`extract.history`)
)

rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("file_id", ForeignKey("ingested_files.file_id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("reason_codes", Text, nullable=False),
    Column("cells", Text, nullable=False),
)

# Files the page put into the inbox, waiting for the run that records them (version 4): who sent
# them, so that the ledger row the run writes says so (`ledger.record_file`), and which ledger
# row that was, so the page can follow an upload to its end.
page_uploads = Table(
    "page_uploads",
    metadata,
    Column("upload_id", String(32), primary_key=True),
    Column("offer_source", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("original_name", String(1024), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("uploaded_by", String(255), nullable=False),
    Column("uploaded_at", UTCDateTime, nullable=False),
    Column("file_id", _ID),
    Index("ix_page_uploads_waiting", "content_hash", "offer_source", "kind"),
)

warehouse_schema = Table(
    "warehouse_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)


def _v1(conn: Connection) -> None:
    """Version 1 as it shipped: every table but the ones later versions added, without the
    indexes and columns they added, with the foreign keys version 4 removed."""
    shipped = MetaData()
    for table in metadata.sorted_tables:
        if table is page_uploads:
            continue
        copy = table.to_metadata(shipped)
        if table.name in _UNREFERENCED_IN_V4:
            copy.append_constraint(ForeignKeyConstraint(["file_id"], ["ingested_files.file_id"]))
    shipped.create_all(conn)
    for index in _ADDED_IN_V2:
        index.drop(conn, checkfirst=True)
    for column in [*_ADDED_IN_V3, *_ADDED_IN_V5]:
        conn.exec_driver_sql(f"ALTER TABLE ingested_files DROP COLUMN {column}")
    conn.exec_driver_sql(f"DROP INDEX {_HISTORY_BY_FILE}")
    conn.exec_driver_sql(
        f"CREATE INDEX {_HISTORY_BY_CONVERSION_V1} ON conversion_history (conversion_id)"
    )


# Replays and reporting select files by received time; version 1 had no index for that.
_ADDED_IN_V2 = [Index("ix_ingested_files_received", ingested_files.c.received_at)]


def _v2(conn: Connection) -> None:
    for index in _ADDED_IN_V2:
        index.create(conn, checkfirst=True)


# Version 3 links a re-dropped rejection report to the file it came from.
_ADDED_IN_V3 = ["original_file_id"]


def _v3(conn: Connection) -> None:
    kind = ingested_files.c.original_file_id.type.compile(dialect=conn.dialect)
    for column in _ADDED_IN_V3:
        conn.exec_driver_sql(f"ALTER TABLE ingested_files ADD COLUMN {column} {kind}")


# Version 4 drops the per-row foreign-key checks of the two tables a file writes a row per line
# to: on PostgreSQL each row queued a trigger that looked the file up again (about half the cost
# of writing the rows), and SQLite checked each row too. The file's ledger row is written in the
# same transaction before its rows, and `ledger.finish_file` checks the reference once per file.
_UNREFERENCED_IN_V4 = ("conversions", "conversion_history")


def _v4(conn: Connection) -> None:
    tables = [metadata.tables[name] for name in _UNREFERENCED_IN_V4]
    if conn.dialect.name == "postgresql":
        for table in tables:
            for fk in inspect(conn).get_foreign_keys(table.name):
                conn.exec_driver_sql(f'ALTER TABLE {table.name} DROP CONSTRAINT "{fk["name"]}"')
        return
    # SQLite cannot drop a constraint: rebuild each table in its current shape and copy it.
    for table in tables:
        old = f"{table.name}_v3"
        conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {old}")
        for index in table.indexes:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
        table.create(conn)
        columns = ", ".join(c.name for c in table.columns)
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {old}")
        conn.exec_driver_sql(f"DROP TABLE {old}")


# Version 5: the page's uploads, and who sent each file.
_ADDED_IN_V5 = ["uploaded_by"]


def _v5(conn: Connection) -> None:
    kind = ingested_files.c.uploaded_by.type.compile(dialect=conn.dialect)
    for column in _ADDED_IN_V5:
        conn.exec_driver_sql(f"ALTER TABLE ingested_files ADD COLUMN {column} {kind}")
    page_uploads.create(conn, checkfirst=True)


# Versioned migrations, applied in order inside one transaction (DDL is transactional on both
# PostgreSQL and SQLite, so a failed upgrade leaves the old version intact). A warehouse made
# by an older tool is upgraded in place when `connect` opens it. When the schema changes, add a
# step here and keep earlier steps producing exactly the shape they shipped with.
# Version 4: claims of files on object storage, where a claim cannot be a rename (see
# `claims`). In a MetaData of its own so that `_v1` keeps creating exactly what version 1 had.
claims_metadata = MetaData()
inbox_claims = Table(
    "inbox_claims",
    claims_metadata,
    Column("claim_id", String(32), primary_key=True),
    Column("store", Text, nullable=False),  # the data directory's location (a URL)
    Column("object_key", Text, nullable=False),  # inbox-relative: "maxbounty/a.csv"
    Column("etag", Text, nullable=False),  # the object's ETag (or version id)
    Column("size", BigInteger, nullable=False),
    Column("offer_source", String(64)),
    Column("kind", String(16), nullable=False),
    Column("mode", String(32)),
    Column("received_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
    Column("handed_off_until", UTCDateTime),  # not adopted before, though its claimer exited
    Column("state", String(16), nullable=False),  # "claimed", or "returned" to the inbox
    Column("owner_host", Text, nullable=False),
    Column("owner_pid", Integer, nullable=False),
    Column("adopted_from", Text, nullable=False),  # earlier claim ids, oldest first, spaced
    Column("file_id", _ID),  # the ledger row that finished it, in the same transaction
    UniqueConstraint("store", "object_key", "etag", "size", name="uq_inbox_claims_object"),
    Index("ix_inbox_claims_lease", "store", "lease_until"),
)


def _v6(conn: Connection) -> None:
    claims_metadata.create_all(conn, checkfirst=True)


# Version 7: history is read per file (a file's changes: the page's upload detail), never per
# conversion, so its index is (file_id, line), which a file's rows fill at the right edge,
# instead of version 1's on conversion_id, which took every row at a random place (a third of
# the cost of writing a history row). A conversion's story is `WHERE conversion_id = ...` on a
# table its owner may index so, if they need it often.
_HISTORY_BY_CONVERSION_V1 = "ix_conversion_history_conversion"


def _v7(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_HISTORY_BY_CONVERSION_V1}")
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {_HISTORY_BY_FILE} ON conversion_history (file_id, line)"
    )


MIGRATIONS = [
    (1, "conversions, conversion_history, ingested_files, rejected_rows", _v1),
    (2, "index ingested_files by received_at for replays", _v2),
    (3, "ingested_files.original_file_id: a re-dropped report's original file", _v3),
    (4, "conversions and conversion_history: file references checked per file, not per row", _v4),
    (5, "ingested_files.uploaded_by and page_uploads: who sent a file through the page", _v5),
    (6, "inbox_claims: claims of files on object storage", _v6),
    (7, "conversion_history indexed by (file_id, line), as it is read", _v7),
]


def connect(url: str, *, lock_timeout_s: int = DEFAULT_LOCK_TIMEOUT_SECONDS) -> Engine:
    """An engine with the settings this workload needs; the schema is created or upgraded.

    A URL that does not parse cleanly is refused without being shown, nor any part of it: it
    may hold a password (an unencoded ``@`` in a password puts its tail in the host).

    On SQLite every transaction takes the single writer's lock (``BEGIN IMMEDIATE``), the
    ledger's reads too, so ``lock_timeout_s`` (settings.lock_timeout_seconds; 0 = no bound) is
    the busy timeout of every connection, and a lock not granted within it is a
    `WarehouseError` that names the setting. PostgreSQL bounds its waits per file
    (`file_transaction`).
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
        busy_ms = lock_timeout_s * 1000 or _SQLITE_FOREVER_MS
        engine = create_engine(url, connect_args={"timeout": busy_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - exercised via SQLite
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - exercised via SQLite
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "handle_error")
        def _sqlite_busy(context):  # pragma: no cover - exercised via SQLite
            if _is_sqlite_busy(context.original_exception):
                raise WarehouseError(_sqlite_busy_message(context.connection)) from (
                    context.sqlalchemy_exception or context.original_exception
                )
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
            f"{one_line(exc)}"
        ) from exc
    return engine


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
                        version=version, description=description, applied_at=now()
                    )
                )
    return SCHEMA_VERSION


def now() -> datetime:
    """The time the warehouse stamps on what it records (tz-aware UTC)."""
    return datetime.now(UTC)


def _lock(conn: Connection, name: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"conversions:{name}"},
        )


@contextmanager
def file_transaction(
    engine: Engine,
    offer_source: str,
    *,
    lock_timeout_s: int = 0,
    statement_timeout_s: int = 0,
) -> Iterator[Connection]:
    """One transaction for one file, holding the offer source's merge lock throughout.

    Its waits are bounded, so that one held lock (another file's merge, a person's ``LOCK
    TABLE`` in psql, a row lock) cannot stall every file behind it silently: no lock is waited
    for longer than ``lock_timeout_s`` and no statement runs longer than
    ``statement_timeout_s`` (0 = no bound). PostgreSQL: ``lock_timeout`` and
    ``statement_timeout`` set for this transaction only (they also bound the wait for the
    advisory lock); SQLite: the busy timeout while ``BEGIN IMMEDIATE`` waits for the single
    writer's lock (SQLite has no statement timeout). When one fires, the transaction rolls back
    and a `WarehouseError` names the lock and the setting; the runner puts the file back.
    """
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # before BEGIN IMMEDIATE, which is the wait to bound
                usual_ms = _sqlite_busy_timeout(conn)
                _sqlite_busy_timeout(conn, lock_timeout_s * 1000 or _SQLITE_FOREVER_MS)
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        # Before the advisory lock: its wait is bounded too. set_config(..., true)
                        # is SET LOCAL: the bounds end with the transaction, pooled or not.
                        conn.execute(
                            text(
                                "SELECT set_config('lock_timeout', :lock, true), "
                                "set_config('statement_timeout', :statement, true)"
                            ),
                            {
                                "lock": f"{lock_timeout_s * 1000}ms",
                                "statement": f"{statement_timeout_s * 1000}ms",
                            },
                        )
                    _lock(conn, f"offer_source:{offer_source}")
                    if conn.dialect.name == "postgresql":
                        # A merge runs thousands of short probes; compiling them (JIT) only
                        # costs time.
                        conn.exec_driver_sql("SET LOCAL jit = off")
                    yield conn
            finally:
                if sqlite and not conn.invalidated:  # the pooled connection's usual patience
                    with suppress(sqlite3.Error):  # never hide the error that ended the file
                        _sqlite_busy_timeout(conn, usual_ms)
    except DBAPIError as exc:
        told = _wait_exceeded(exc, offer_source, lock_timeout_s, statement_timeout_s)
        if told is None:
            raise
        raise WarehouseError(told) from exc


def _sqlite_busy_timeout(conn: Connection, ms: int | None = None) -> int:
    """The busy timeout in ms, set to ``ms`` first if given. On the driver connection itself:
    a statement through SQLAlchemy would begin the transaction (``BEGIN IMMEDIATE``) before
    the timeout is in place."""
    dbapi = conn.connection.dbapi_connection
    if ms is not None:
        dbapi.execute(f"PRAGMA busy_timeout = {int(ms)}")
    return int(dbapi.execute("PRAGMA busy_timeout").fetchone()[0])


def _is_sqlite_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked": the busy timeout passed while another connection held
    the write lock."""
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
        or "database is locked" in str(exc)
    )


def _sqlite_busy_message(conn: Connection | None) -> str:
    """What a person reads when SQLite's write lock was not granted: the lock, who may hold
    it, and the setting with the bound that was in effect."""
    bound = ""
    if conn is not None:
        with suppress(Exception):  # the message must not fail for want of the number
            bound = f" = {_sqlite_busy_timeout(conn) / 1000:g} s"
    return (
        "the warehouse's write lock (SQLite has one writer: another file's merge or another "
        "session's write transaction holds it) was not granted within "
        f"settings.lock_timeout_seconds{bound}"
    )


def _wait_exceeded(
    exc: DBAPIError, offer_source: str, lock_timeout_s: int, statement_timeout_s: int
) -> str | None:
    """The plain-words message for a bound of `file_transaction` that fired, else None (the
    error is something else and goes on as it is)."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if lock_timeout_s and sqlstate == "55P03":  # lock_not_available: lock_timeout fired
        return (
            f"the warehouse lock for offer source {offer_source!r} (the merge lock another "
            "file of it holds, or a table or row lock another session holds) was not granted "
            f"within settings.lock_timeout_seconds = {lock_timeout_s} s"
        )
    if statement_timeout_s and sqlstate == "57014" and "statement timeout" in str(orig):
        return (
            f"a statement of the merge of offer source {offer_source!r} ran longer than "
            f"settings.statement_timeout_seconds = {statement_timeout_s} s"
        )
    return None  # SQLite's busy timeout is told by `connect`'s handle_error hook
