"""The warehouse: the database every file's effects are committed to, one transaction a file.

SQLAlchemy 2 Core on SQLite (the embedded default) and PostgreSQL (production). Both are first
class, so anything dialect-specific is confined to three places: how a payout and a UTC time
are stored, how the write lock is taken (`schema`), and how whole tables move (`bulk`).

- Money: `payout` is NUMERIC(18, 6) on PostgreSQL and a canonical decimal string on SQLite (whose
  NUMERIC is a binary float). Python sees int64 micro-units either way, so arithmetic is exact.
- Time: `timestamptz` on PostgreSQL; ISO text in UTC on SQLite (sorts correctly). Python sees
  tz-aware UTC datetimes.
- Locking: a file's whole transaction holds `pg_advisory_xact_lock(offer source)` on PostgreSQL,
  so files of one offer source merge one at a time while others run in parallel; SQLite has a
  single writer anyway (`BEGIN IMMEDIATE` takes it up front, so a reader never upgrades late).
  Every wait is bounded by `settings.lock_timeout_seconds` (and a statement by
  `statement_timeout_seconds` on PostgreSQL); past it the file goes back to the inbox.

Modules, each one concept: `schema` (types, tables, migrations, `connect`, the lock), `ledger`
(the `ingested_files` questions and records), `stage` (a file's rows between reading and
merging, and what the warehouse holds for them), `merge` (its writes), `extract` (the export
query) and `bulk` (COPY / executemany, kinds read off the tables).
Callers use the names below as `warehouse.<name>`.
"""

from pipeline.warehouse.background import Background
from pipeline.warehouse.extract import EXPORT_COLUMNS, export, history
from pipeline.warehouse.ledger import (
    applied_count,
    applied_mode_override,
    expect_upload,
    file_row,
    finish_file,
    forget_upload,
    names_taken,
    original_of,
    recent_files,
    record_file,
    recorded_by_claim,
    upload,
)
from pipeline.warehouse.merge import (
    apply,
    origins,
    prepare,
    record_rejections,
    write,
)
from pipeline.warehouse.schema import (
    MIGRATIONS,
    UTCDateTime,
    WarehouseError,
    connect,
    conversion_history,
    conversions,
    file_transaction,
    ingested_files,
    metadata,
    page_uploads,
    rejected_rows,
    upgrade,
    warehouse_schema,
)
from pipeline.warehouse.stage import Stage

__all__ = [
    "EXPORT_COLUMNS",
    "MIGRATIONS",
    "Background",
    "Stage",
    "UTCDateTime",
    "WarehouseError",
    "applied_count",
    "applied_mode_override",
    "apply",
    "connect",
    "conversion_history",
    "conversions",
    "expect_upload",
    "export",
    "file_row",
    "file_transaction",
    "finish_file",
    "forget_upload",
    "history",
    "ingested_files",
    "metadata",
    "names_taken",
    "original_of",
    "origins",
    "page_uploads",
    "prepare",
    "recent_files",
    "record_file",
    "record_rejections",
    "recorded_by_claim",
    "rejected_rows",
    "upgrade",
    "upload",
    "warehouse_schema",
    "write",
]
