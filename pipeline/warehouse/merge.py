"""The merge's database side: stage a file's accepted rows, read what they meet, write the result.

`core.duplicates` decides what each row does (a pure function over two tables); this module
gives it those tables and writes its `Resolution` back, in a few set-based statements per chunk
whatever the number of rows. Every query reads only the keys' rows through the
(offer_source, click_id, conversion_type) index; the conversions table is never scanned whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, text

from pipeline.core.duplicates import HISTORY_COLUMNS, Resolution, empty_existing
from pipeline.core.vocabulary import IGNORE_BY_EVENT_ID, MUTABLE_FIELDS
from pipeline.warehouse import bulk, schema

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
    conn: Connection, stage: str, kind: str, chunk_rows: int, offer_source: str
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """The staged rows back, ordered by click id, in chunks that never split a click id, each
    with what the warehouse holds for it: per duplicate key the existing conversions
    (conversions files: `core.duplicates.empty_existing`'s columns), or per status row its
    matches (status files: line, n_matches, conversion_id, current_status).

    Both are read in full before the first chunk is returned (two queries for the whole file,
    spooled to local files: `bulk.spool`), so the connection is free for the chunks' writes,
    and they see the warehouse as it was before the file, as the resolution's rules say.
    Chunks hold at least `chunk_rows` rows (the last fewer), plus the rest of their last
    click id.
    """
    _analyze(conn, stage)
    postgres = conn.dialect.name == "postgresql"
    if postgres:  # both queries sort the file's rows: in memory, not in temporary files
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
    kinds = STAGE_KINDS[kind]
    collate = ' COLLATE "C"' if postgres else ""
    rows = bulk.spool(
        conn, f"SELECT {', '.join(kinds)} FROM {stage} ORDER BY click_id{collate}, line", {}, kinds
    )
    found_sql, found_kinds = (_existing if kind == "conversions" else _status_matches)(conn, stage)
    found = bulk.spool(conn, found_sql, {"offer_source": offer_source}, found_kinds)
    if postgres:
        conn.exec_driver_sql("RESET work_mem")
    decode = _decode_existing if kind == "conversions" else _decode_matches
    aligned = _Aligned(found, decode)
    for chunk in _chunks((_decode_staged(part, kind) for part in rows), chunk_rows):
        yield chunk, aligned.upto(chunk["click_id"].iloc[-1])


SORT_MEMORY = "128MB"  # per file transaction, while its two sorting queries run


def _chunks(parts: Iterator[pd.DataFrame], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Frames ordered by click id -> chunks of at least `chunk_rows` rows that end where a
    click id ends (the last click id of a part may go on in the next one, so it waits)."""
    carry: pd.DataFrame | None = None
    for part in parts:
        frame = part if carry is None else pd.concat([carry, part], ignore_index=True)
        clicks = frame["click_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, clicks[1:] != clicks[:-1]])
        position = 0
        while (i := int(np.searchsorted(starts, position + chunk_rows))) < len(starts):
            yield frame.iloc[position : starts[i]].reset_index(drop=True)
            position = int(starts[i])
        carry = frame.iloc[position:].reset_index(drop=True)
    if carry is not None and len(carry):
        yield carry


class _Aligned:
    """A second result ordered by click id, handed out in step with the chunks: `upto(last)`
    returns its rows whose click id is at most `last` and not returned before (click ids
    compare as the queries sort them: by code point, PostgreSQL's "C" and SQLite's binary)."""

    def __init__(self, frames: Iterator[pd.DataFrame], decode):
        self.frames, self.decode = frames, decode
        self.pending = decode(None)
        self.done = False

    def upto(self, last: str) -> pd.DataFrame:
        while not self.done and (self.pending.empty or self.pending["click_id"].iloc[-1] <= last):
            part = next(self.frames, None)
            if part is None:
                self.done = True
            else:
                self.pending = pd.concat([self.pending, self.decode(part)], ignore_index=True)
        clicks = self.pending["click_id"].to_numpy()
        cut = int(np.searchsorted(clicks, last, side="right")) if len(clicks) else 0
        taken = self.pending.iloc[:cut].reset_index(drop=True)
        self.pending = self.pending.iloc[cut:].reset_index(drop=True)
        return taken


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
#
# For the whole file at once, from the staged rows, sorted by click id like them.

_EXISTING_KINDS = {
    "click_id": "text",
    "conversion_type": "text",
    "key_event": "text",
    "n_existing": "int",
    "conversion_id": "text",
    "payout": "text",
    "status": "text",
    "converted_at": "text",
    "currency": "text",
    "event_id": "text",
}


def _existing(conn: Connection, stage: str) -> tuple[str, dict[str, str]]:
    """Per duplicate key of the file: how many conversions exist and the most recent one.

    "Most recent" is the latest conversion time, then the highest id: deterministic, so a rerun
    edits the same conversion a clean run would. Only the keys' rows are read, through the
    (offer_source, click_id, conversion_type) index; the table is never scanned whole. The
    key's event id is `core.duplicates.key_event`, in SQL.
    """
    keys = f"""
        SELECT DISTINCT click_id, conversion_type,
               CASE WHEN mode = '{IGNORE_BY_EVENT_ID}' THEN coalesce(event_id, '') ELSE '' END
                   AS key_event
        FROM {stage}
    """
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
            FROM ({keys}) k
            CROSS JOIN LATERAL (
                SELECT c.conversion_id, c.payout, c.status, c.converted_at, c.currency,
                       c.event_id, count(*) OVER () AS n_existing
                FROM conversions c
                WHERE {match}
                ORDER BY c.converted_at DESC, c.conversion_id DESC
                LIMIT 1
            ) m
            ORDER BY k.click_id COLLATE "C"
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
                FROM ({keys}) k
                JOIN conversions c ON {match}
            ) ranked WHERE rn = 1
            ORDER BY click_id
        """
    return sql, _EXISTING_KINDS


def _decode_existing(part: pd.DataFrame | None) -> pd.DataFrame:
    template = empty_existing()
    if part is None:
        return template
    frame = part.copy()
    frame["payout"] = bulk.decode_payout(frame["payout"])
    frame["converted_at"] = bulk.decode_time(frame["converted_at"])
    return frame.astype(template.dtypes.to_dict())


_MATCH_KINDS = {
    "click_id": "text",
    "line": "int",
    "n_matches": "int",
    "conversion_id": "text",
    "current_status": "text",
}


def _status_matches(conn: Connection, stage: str) -> tuple[str, dict[str, str]]:
    """Per status row: how many conversions it names, and the one it names if exactly one."""
    match = """c.offer_source = :offer_source AND c.click_id = s.click_id
               AND (s.conversion_type IS NULL OR c.conversion_type = s.conversion_type)
               AND (s.event_id IS NULL OR c.event_id = s.event_id)"""
    if conn.dialect.name == "postgresql":  # index probes per row; see `_existing`
        sql = f"""
            SELECT s.click_id, s.line, m.n_matches, m.conversion_id, m.current_status
            FROM {stage} s
            CROSS JOIN LATERAL (
                SELECT count(*) AS n_matches, min(c.conversion_id) AS conversion_id,
                       min(c.status) AS current_status
                FROM conversions c WHERE {match}
            ) m
            ORDER BY s.click_id COLLATE "C", s.line
        """
    else:
        sql = f"""
            SELECT s.click_id, s.line, count(c.conversion_id) AS n_matches,
                   min(c.conversion_id) AS conversion_id, min(c.status) AS current_status
            FROM {stage} s
            LEFT JOIN conversions c ON {match}
            GROUP BY s.line
            ORDER BY s.click_id, s.line
        """
    return sql, _MATCH_KINDS


def _decode_matches(part: pd.DataFrame | None) -> pd.DataFrame:
    if part is None:
        part = pd.DataFrame({c: pd.Series(dtype="str") for c in _MATCH_KINDS})
    return part.astype(
        {"click_id": "str", "line": "int64", "n_matches": "int64", "conversion_id": "str"}
        | {"current_status": "str"}
    )


def _analyze(conn: Connection, table: str) -> None:
    """Temporary tables have no statistics until analysed; the planner needs their size."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {table}")


# --- writes ------------------------------------------------------------------------------------

_CONVERSION_KINDS = bulk.kinds_of(schema.conversions)
_HISTORY_KINDS = bulk.kinds_of(schema.conversion_history)
_REJECTION_KINDS = bulk.kinds_of(schema.rejected_rows)


def apply(conn: Connection, resolution: Resolution, *, file_id: int, offer_source: str) -> None:
    """Write a resolution: a few bulk statements, whatever the number of rows."""
    now = pd.Timestamp(schema.now())
    if len(resolution.inserts):
        inserts = resolution.inserts.assign(
            offer_source=offer_source, file_id=file_id, created_at=now, updated_at=now
        )
        bulk.insert(conn, "conversions", inserts, _CONVERSION_KINDS)
    if len(resolution.updates):
        updated = ("conversion_id", *MUTABLE_FIELDS)
        kinds = {c: _CONVERSION_KINDS[c] for c in updated if c in resolution.updates.columns}
        stage = bulk.create_temp(conn, "stage_updates", kinds)
        bulk.insert(conn, stage, resolution.updates, kinds)
        _analyze(conn, stage)
        fields = [f for f in kinds if f != "conversion_id"]
        assignments = ", ".join(f"{f} = u.{f}" for f in fields)
        conn.execute(
            text(
                f"UPDATE conversions SET {assignments}, updated_at = :now FROM {stage} u "
                "WHERE conversions.conversion_id = u.conversion_id"
            ).bindparams(bindparam("now", type_=schema.UTCDateTime)),
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
