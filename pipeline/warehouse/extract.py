"""The extract query: current conversions streamed out of the warehouse with exact values.

Named `extract` (reading rows out, as in extract-transform-load) so it is not mistaken for
`pipeline/export.py`, the `conversions export` command that turns these exact values into text
(decimal payouts, UTC or account-local times, CSV or JSON lines). This module only reads; the
function keeps the name `export` because that command is what it serves (`warehouse.export`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from sqlalchemy import Connection, select

from pipeline.warehouse import bulk, schema

# What `conversions export` shows of a conversion, in the table's order: its identity and
# current values, not its lineage (which file and line wrote it, and when).
_LINEAGE = ("file_id", "line", "created_at", "updated_at")
EXPORT_COLUMNS = [c.name for c in schema.conversions.columns if c.name not in _LINEAGE]


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


def history(conn: Connection, file_id: int, limit: int = 1000) -> list[dict]:
    """What one file changed: its history rows in line order, each with the conversion's click
    id and type, the action, and every field's old and new value (None where it stayed)."""
    h, c = schema.conversion_history, schema.conversions
    query = (
        select(h, c.c.click_id, c.c.conversion_type)
        .join(c, c.c.conversion_id == h.c.conversion_id)
        .where(h.c.file_id == file_id)
        .order_by(h.c.line, h.c.history_id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]
