"""The ledger: one `ingested_files` row per file the pipeline decided about.

It is what makes a file's fate durable: whether these bytes were applied before, what a dead
worker's claim committed, and which report names a recorded file already owns. Every query on
`ingested_files` lives here, so the rest of the pipeline asks questions instead of writing SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from pipeline.core.vocabulary import APPLIED, DUPLICATE_FILE, QUARANTINED
from pipeline.warehouse.schema import ingested_files, now


def applied_count(conn: Connection, content_hash: str, offer_source: str, kind: str) -> int:
    """How many times these bytes were applied for this offer source and kind."""
    f = ingested_files.c
    return conn.execute(
        select(func.count()).where(
            f.content_hash == content_hash,
            f.offer_source == offer_source,
            f.kind == kind,
            f.state == APPLIED,
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
                f.state.in_((APPLIED, QUARANTINED, DUPLICATE_FILE)),
            )
            .order_by(f.file_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def names_taken(
    conn: Connection, content_hash: str, summary_path: str | Path, file_id: int | None
) -> bool:
    """Whether another ledger row (of these bytes) owns this summary's name."""
    f = ingested_files.c
    return (
        conn.execute(
            select(f.file_id)
            .where(f.content_hash == content_hash, f.summary_path == str(summary_path))
            .where(f.file_id != file_id)
            .limit(1)
        ).first()
        is not None
    )


def record_file(conn: Connection, **values: Any) -> int:
    """Insert a file's ledger row (`processed_at` defaults to now); returns its file id."""
    values.setdefault("processed_at", now())
    result = conn.execute(ingested_files.insert().values(**values))
    return int(result.inserted_primary_key[0])


def finish_file(conn: Connection, file_id: int, **values: Any) -> None:
    """Update a file's ledger row with what its run found (state, counts, report paths)."""
    conn.execute(
        ingested_files.update().where(ingested_files.c.file_id == file_id).values(**values)
    )
