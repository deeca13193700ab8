"""The merge's writes: a chunk's `Resolution` into the warehouse, and what the reports need back.

`core.duplicates` decides what each row does (a pure function over two tables, which
`warehouse.stage` provides); this module writes its `Resolution` back, in a few set-based
statements per chunk whatever the number of rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, bindparam, text

from pipeline.core.duplicates import HISTORY_COLUMNS, Resolution
from pipeline.core.vocabulary import MUTABLE_FIELDS
from pipeline.warehouse import bulk, schema

# --- writes ------------------------------------------------------------------------------------

_CONVERSION_KINDS = bulk.kinds_of(schema.conversions)
_HISTORY_KINDS = bulk.kinds_of(schema.conversion_history)
_REJECTION_KINDS = bulk.kinds_of(schema.rejected_rows)


@dataclass(frozen=True)
class Writes:
    """A resolution's writes, encoded (`prepare`) and not yet sent (`write`)."""

    inserts: bulk.Encoded | None
    updates: pd.DataFrame | None  # final values of existing conversions: few, sent as they are
    history: bulk.Encoded | None
    now: pd.Timestamp


def apply(conn: Connection, resolution: Resolution, *, file_id: int, offer_source: str) -> None:
    """Write a resolution: a few bulk statements, whatever the number of rows."""
    write(conn, prepare(conn.dialect.name, resolution, file_id=file_id, offer_source=offer_source))


def prepare(dialect: str, resolution: Resolution, *, file_id: int, offer_source: str) -> Writes:
    """Encode a resolution's rows for `dialect`: the client's share of its writes, done apart
    from `write` so that it can run while the database stores the previous chunk's rows (on
    PostgreSQL the server otherwise waited inside each `COPY` while the rows were encoded)."""
    now = pd.Timestamp(schema.now())
    inserts = history = None
    if len(resolution.inserts):
        rows = resolution.inserts.assign(
            offer_source=offer_source, file_id=file_id, created_at=now, updated_at=now
        )
        inserts = bulk.encode(dialect, "conversions", rows, _CONVERSION_KINDS)
    if len(resolution.history):
        rows = resolution.history[HISTORY_COLUMNS].assign(file_id=file_id, recorded_at=now)
        history = bulk.encode(dialect, "conversion_history", rows, _HISTORY_KINDS)
    updates = resolution.updates if len(resolution.updates) else None
    return Writes(inserts, updates, history, now)


def write(conn: Connection, writes: Writes) -> None:
    """Send prepared writes, in the file's transaction: inserts, updates, then history."""
    if writes.inserts is not None:
        bulk.send(conn, writes.inserts)
    if writes.updates is not None:
        updated = ("conversion_id", *MUTABLE_FIELDS)
        kinds = {c: _CONVERSION_KINDS[c] for c in updated if c in writes.updates.columns}
        stage = bulk.create_temp(conn, "stage_updates", kinds)
        bulk.insert(conn, stage, writes.updates, kinds)
        _analyze(conn, stage)
        fields = [f for f in kinds if f != "conversion_id"]
        assignments = ", ".join(f"{f} = u.{f}" for f in fields)
        conn.execute(
            text(
                f"UPDATE conversions SET {assignments}, updated_at = :now FROM {stage} u "
                "WHERE conversions.conversion_id = u.conversion_id"
            ).bindparams(bindparam("now", type_=schema.UTCDateTime)),
            {"now": writes.now.to_pydatetime()},
        )
    if writes.history is not None:
        bulk.send(conn, writes.history)


def _analyze(conn: Connection, table: str) -> None:
    """Temporary tables have no statistics until analysed; the planner needs their size."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {table}")


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
        bulk.insert(conn, "rejected_rows", rows, _REJECTION_KINDS)


def origins(conn: Connection, conversion_ids: pd.Series) -> pd.DataFrame:
    """Where each conversion came from: conversion_id, the file's name as dropped, and the line
    that created it (for the list of ignored duplicates, which names what each one duplicated).
    Only the given ids' rows are read, by primary key."""
    columns = ["conversion_id", "original_name", "line"]
    ids = pd.DataFrame({"conversion_id": conversion_ids.dropna().drop_duplicates()})
    if ids.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    kinds = {"conversion_id": "text"}
    stage = bulk.create_temp(conn, "stage_ids", kinds)
    bulk.insert(conn, stage, ids, kinds)
    # The file's name by a subquery, not a join: with the ledger as one side of a join the
    # planner looped over its few rows and probed the conversions once per id per file row
    # (twice the reads on a warehouse bigger than its cache); this way each id is one probe.
    sql = f"""
        SELECT c.conversion_id,
               (SELECT f.original_name FROM ingested_files f WHERE f.file_id = c.file_id),
               c.line
        FROM {stage} s
        JOIN conversions c ON c.conversion_id = s.conversion_id
    """
    parts = list(bulk.read(conn, sql, {}, columns, 1_000_000))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
