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

from pipeline.core.vocabulary import APPLIED, DRY_RUN, DUPLICATE_FILE, QUARANTINED
from pipeline.warehouse import claims
from pipeline.warehouse.schema import ingested_files, now, page_uploads


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


def applied_mode_override(
    conn: Connection, content_hash: str, offer_source: str, kind: str, mode: str | None
) -> str | None:
    """The ``duplicate_mode_override`` of the applied copy that a file of these bytes under
    ``mode`` duplicates: ``mode`` itself if a copy was applied under it (or none was), else the
    latest applied copy's (None: applied with no override, under the configured modes)."""
    f = ingested_files.c
    applied = conn.execute(
        select(f.duplicate_mode_override)
        .where(
            f.content_hash == content_hash,
            f.offer_source == offer_source,
            f.kind == kind,
            f.state == APPLIED,
        )
        .order_by(f.file_id)
    ).scalars()
    modes = list(applied)
    return mode if not modes or mode in modes else modes[-1]


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
    """Insert a file's ledger row (`processed_at` defaults to now); returns its file id.

    A file the page put into the inbox (a waiting `page_uploads` row of the same bytes, name,
    offer source and kind) is recorded with who sent it, and the upload is linked to this row in
    the same transaction, so a rolled-back run leaves it waiting for the next one. A dry run
    never takes it: its file is still to be applied."""
    values.setdefault("processed_at", now())
    upload_id = None
    if values.get("uploaded_by") is None and values.get("state") != DRY_RUN:
        waiting = _waiting_upload(conn, values)
        if waiting is not None:
            upload_id, values["uploaded_by"] = waiting
    result = conn.execute(ingested_files.insert().values(**values))
    file_id = int(result.inserted_primary_key[0])
    if upload_id is not None:
        conn.execute(
            page_uploads.update()
            .where(page_uploads.c.upload_id == upload_id)
            .values(file_id=file_id)
        )
    if values.get("claim_id"):  # a claim held in the warehouse is done in this transaction
        claims.finish(conn, values["claim_id"], file_id)
    return file_id


def _waiting_upload(conn: Connection, values: dict[str, Any]) -> tuple[str, str] | None:
    u = page_uploads.c
    row = conn.execute(
        select(u.upload_id, u.uploaded_by)
        .where(
            u.file_id.is_(None),
            u.content_hash == values.get("content_hash"),
            u.offer_source == values.get("offer_source"),
            u.kind == values.get("kind"),
            u.original_name == values.get("original_name"),
        )
        .order_by(u.uploaded_at, u.upload_id)
        .limit(1)
    ).first()
    return (row.upload_id, row.uploaded_by) if row else None


def expect_upload(conn: Connection, **values: Any) -> None:
    """Note a file the page is about to put into the inbox (``upload_id``, ``offer_source``,
    ``kind``, ``original_name``, ``content_hash``, ``uploaded_by``), before it is there."""
    values.setdefault("uploaded_at", now())
    conn.execute(page_uploads.insert().values(**values))


def forget_upload(conn: Connection, upload_id: str) -> None:
    """Drop a noted upload whose file never reached the inbox."""
    conn.execute(page_uploads.delete().where(page_uploads.c.upload_id == upload_id))


def upload(conn: Connection, upload_id: str) -> dict[str, Any] | None:
    """One page upload: who, when, and the ledger row that recorded it (``file_id``, or None
    while it waits)."""
    row = conn.execute(select(page_uploads).where(page_uploads.c.upload_id == upload_id))
    found = row.mappings().first()
    return dict(found) if found else None


def recent_files(
    conn: Connection,
    *,
    offer_source: str | None = None,
    state: str | None = None,
    day_start: Any = None,
    day_end: Any = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Ledger rows newest first, optionally of one offer source, one state, received within
    [``day_start``, ``day_end``)."""
    f = ingested_files.c
    query = select(ingested_files).order_by(f.file_id.desc()).limit(limit)
    if offer_source:
        query = query.where(f.offer_source == offer_source)
    if state:
        query = query.where(f.state == state)
    if day_start is not None:
        query = query.where(f.received_at >= day_start)
    if day_end is not None:
        query = query.where(f.received_at < day_end)
    return [dict(r) for r in conn.execute(query).mappings()]


def file_row(conn: Connection, file_id: int) -> dict[str, Any] | None:
    """One ledger row by its file id."""
    row = conn.execute(select(ingested_files).where(ingested_files.c.file_id == file_id))
    found = row.mappings().first()
    return dict(found) if found else None


def finish_file(conn: Connection, file_id: int, **values: Any) -> None:
    """Update a file's ledger row with what its run found (state, counts, report paths).

    This is also where the file reference of the rows it wrote is checked, once per file
    rather than per row (the warehouse has no foreign key there: `schema._v4`): the row must
    exist, in this transaction, or nothing commits."""
    updated = conn.execute(
        ingested_files.update().where(ingested_files.c.file_id == file_id).values(**values)
    )
    if updated.rowcount != 1:
        raise RuntimeError(
            f"the ledger has no row for file {file_id}, which this file's rows refer to; "
            "nothing was applied"
        )


def original_of(
    conn: Connection, offer_source: str, kind: str, hash_prefix: str, same_stem: Any
) -> int | None:
    """The first file of a chain of fixed rejection reports: the applied file whose content hash
    starts with ``hash_prefix`` (the prefix a report's name carries) and whose name has the
    stem the report was named by (``same_stem(original_name)``), then that file's own original
    if it was itself a report. None when no applied file matches (the report was renamed, or
    comes from another warehouse)."""
    f = ingested_files.c
    rows = conn.execute(
        select(f.file_id, f.original_name, f.original_file_id)
        .where(
            f.offer_source == offer_source,
            f.kind == kind,
            f.state == APPLIED,
            f.content_hash.startswith(hash_prefix.lower(), autoescape=True),
        )
        .order_by(f.file_id.desc())
    ).all()
    for file_id, original_name, original_file_id in rows:
        if same_stem(original_name):
            return int(original_file_id or file_id)
    return None
