"""A file's accepted rows between reading and merging, and what the warehouse holds for them.

Every duplicate key includes the click id, so rows of different click ids never affect each
other: the merge can resolve any set of whole click ids on its own. The stage therefore files
each accepted row under a *partition*, a hash of its click id, in a local Arrow IPC file, and
the merge takes a few partitions at a time (chunks of at least `chunk_rows` rows), whatever the
size of the file, with no sort of the whole file anywhere.

What the warehouse holds for a batch's keys (per duplicate key the existing conversions, or per
status row its matches) is looked up as the batch arrives, by the same writer thread that
stages it (`warehouse.Background`): the database answers while the client reads the next batch,
instead of after the whole file. No write of the file's has happened yet, so this is the
warehouse as it was before the file, as the resolution's rules say. The answers are partitioned
the same way, so a chunk comes with exactly the existing rows of its keys.

Why not a table in the database (until 0.9): staging there, then reading the whole file back
sorted by click id, made the database sort and send every row once more before the first
chunk could start, while the client waited (4.5 s of a 1,000,000-row file's 30 s); the
lookups ran then too, in one query, after the read instead of during it.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection

from pipeline.core.duplicates import empty_existing
from pipeline.core.vocabulary import IGNORE_BY_EVENT_ID
from pipeline.warehouse import bulk

# The rows' columns as `core.normalise` makes them, by file kind.
_TEXT = pa.large_string()
ROW_SCHEMAS = {
    "conversions": pa.schema(
        [
            ("line", pa.int64()),
            ("click_id", _TEXT),
            ("conversion_type", _TEXT),
            ("event_id", _TEXT),
            ("payout", pa.int64()),  # micro-units
            ("status", _TEXT),
            ("converted_at", pa.timestamp("us", tz="UTC")),
            ("currency", _TEXT),
            ("mode", _TEXT),
        ]
    ),
    "status": pa.schema(
        [
            ("line", pa.int64()),
            ("click_id", _TEXT),
            ("conversion_type", _TEXT),
            ("event_id", _TEXT),
            ("status", _TEXT),
        ]
    ),
}
# What a lookup sends to the database: the columns its query reads.
_KEY_KINDS = {
    "conversions": {"click_id": "text", "conversion_type": "text", "event_id": "text"}
    | {"mode": "text"},
    "status": {"line": "int", "click_id": "text", "conversion_type": "text", "event_id": "text"},
}
ROW_BYTES_GUESS = 32  # few rows are shorter: sizes partitions to a fraction of a chunk


class Stage:
    """One file's staged rows. `append` (the writer thread, in file order) then `chunks` (once).

    Use as a context manager: the local files are removed on leaving it.
    """

    def __init__(self, kind: str, offer_source: str, *, file_bytes: int, chunk_rows: int):
        self.kind, self.offer_source, self.chunk_rows = kind, offer_source, chunk_rows
        self.partitions = max(1, math.ceil(file_bytes / (chunk_rows * ROW_BYTES_GUESS)))
        found_kinds = _EXISTING_KINDS if kind == "conversions" else _MATCH_KINDS
        self.rows = _Spool(ROW_SCHEMAS[kind], self.partitions)
        self.found = _Spool(_schema_of(found_kinds), self.partitions)
        self.found_kinds = found_kinds

    def append(self, conn: Connection, rows: pd.DataFrame) -> None:
        """Stage a batch of accepted rows and look up what the warehouse holds for them."""
        if rows.empty:
            return
        schema = self.rows.schema
        table = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False)
        self.rows.add(table, _partition(rows["click_id"], self.partitions))
        keys = bulk.create_temp(conn, "stage_keys", _KEY_KINDS[self.kind])
        bulk.insert(conn, keys, rows, _KEY_KINDS[self.kind])
        sql = (_existing if self.kind == "conversions" else _status_matches)(conn, keys)
        for part in bulk.spool(conn, sql, {"offer_source": self.offer_source}, self.found_kinds):
            found = pa.Table.from_pandas(part, schema=self.found.schema, preserve_index=False)
            self.found.add(found, _partition(part["click_id"], self.partitions))
        if conn.dialect.name == "sqlite":  # its temporary tables outlive the transaction
            conn.exec_driver_sql(f"DELETE FROM {keys}")

    def chunks(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """The staged rows in chunks of whole partitions, at least `chunk_rows` rows each (the
        last fewer), each with what the warehouse holds for its rows: per duplicate key the
        existing conversions (`core.duplicates.empty_existing`'s columns), or per status row
        its matches (line, n_matches, conversion_id, current_status)."""
        self.rows.finish()
        self.found.finish()
        taken: list[int] = []
        count = 0
        for partition in range(self.partitions):
            count += self.rows.counts[partition]
            taken.append(partition)
            if count >= self.chunk_rows or partition == self.partitions - 1:
                if count:
                    yield self._chunk(taken)
                taken, count = [], 0

    def _chunk(self, partitions: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
        rows = _decode_rows(self.rows.read(partitions), self.kind)
        found = self.found.read(partitions).to_pandas(types_mapper=_SPOOLED_TYPES.get)
        if self.kind == "conversions":  # a key met in two batches was looked up twice
            key = ["click_id", "conversion_type", "key_event"]
            found = _decode_existing(found.drop_duplicates(key))
        else:
            found = _decode_matches(found)
        return rows, found

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.rows.close()
        self.found.close()


def _partition(click_ids: pd.Series, partitions: int) -> np.ndarray:
    """Each row's partition: a fixed hash of its click id (the same in every process and run,
    so a file's chunks, and the order of its writes, are reproducible)."""
    if partitions == 1:
        return np.zeros(len(click_ids), dtype=np.int64)
    values = click_ids.fillna("").to_numpy(dtype=object)
    return (pd.util.hash_array(values, categorize=False) % np.uint64(partitions)).astype(np.int64)


class _Spool:
    """Arrow tables in a local temporary file, each record batch filed under one partition."""

    def __init__(self, schema: pa.Schema, partitions: int):
        self.schema = schema
        self.counts = [0] * partitions
        self._batches: list[list[int]] = [[] for _ in range(partitions)]
        self._written = 0
        self._file = tempfile.TemporaryFile(prefix="conversions_stage_")  # noqa: SIM115
        self._writer: pa.ipc.RecordBatchFileWriter | None = pa.ipc.new_file(self._file, schema)
        self._reader: pa.ipc.RecordBatchFileReader | None = None

    def add(self, table: pa.Table, partition: np.ndarray) -> None:
        order = np.argsort(partition, kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(len(self.counts) + 1))
        table = table.take(pa.array(order))
        assert self._writer is not None, "the stage was read already"
        for p in np.flatnonzero(np.diff(bounds)):
            piece = table.slice(bounds[p], bounds[p + 1] - bounds[p])
            for batch in piece.to_batches():
                self._writer.write_batch(batch)
                self._batches[p].append(self._written)
                self._written += 1
            self.counts[p] += piece.num_rows

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._file.seek(0)
            self._reader = pa.ipc.open_file(self._file)

    def read(self, partitions: list[int]) -> pa.Table:
        assert self._reader is not None
        batches = [self._reader.get_batch(i) for p in partitions for i in self._batches[p]]
        return pa.Table.from_batches(batches, schema=self.schema)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        self._file.close()


_SPOOLED_TYPES = {pa.int64(): pd.Int64Dtype(), _TEXT: pd.StringDtype("pyarrow", np.nan)}


def _schema_of(kinds: dict[str, str]) -> pa.Schema:
    return pa.schema([(c, _TEXT if k == "text" else pa.int64()) for c, k in kinds.items()])


def _decode_rows(table: pa.Table, kind: str) -> pd.DataFrame:
    """The staged rows with the dtypes `core.normalise` gave them."""
    out = table.to_pandas(types_mapper=_SPOOLED_TYPES.get)
    out["line"] = out["line"].astype("int64")
    if kind == "conversions":
        out["converted_at"] = out["converted_at"].astype("datetime64[us, UTC]")
    return out


# --- what the warehouse holds for a batch's keys -----------------------------------------------

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


def _existing(conn: Connection, keys: str) -> str:
    """Per duplicate key of the batch: how many conversions exist and the most recent one.

    "Most recent" is the latest conversion time, then the highest id: deterministic, so a rerun
    edits the same conversion a clean run would. Only the keys' rows are read, through the
    (offer_source, click_id, conversion_type) index; the table is never scanned whole. The
    key's event id is `core.duplicates.key_event`, in SQL.
    """
    distinct = f"""
        SELECT DISTINCT click_id, conversion_type,
               CASE WHEN mode = '{IGNORE_BY_EVENT_ID}' THEN coalesce(event_id, '') ELSE '' END
                   AS key_event
        FROM {keys}
    """
    match = """c.offer_source = :offer_source AND c.click_id = k.click_id
               AND c.conversion_type = k.conversion_type
               AND (k.key_event = '' OR c.event_id = k.key_event)"""
    if conn.dialect.name == "postgresql":
        # LATERAL makes the plan "for each staged key, probe the index". A plain join left
        # the choice to the planner, which has no statistics for rows inserted earlier in the
        # same transaction and picked merge/hash joins reading the whole table.
        return f"""
            SELECT k.click_id, k.conversion_type, k.key_event, m.n_existing, m.conversion_id,
                   {bulk.payout_text(conn, "m.payout")}, m.status,
                   {bulk.time_text(conn, "m.converted_at")}, m.currency, m.event_id
            FROM ({distinct}) k
            CROSS JOIN LATERAL (
                SELECT c.conversion_id, c.payout, c.status, c.converted_at, c.currency,
                       c.event_id, count(*) OVER () AS n_existing
                FROM conversions c
                WHERE {match}
                ORDER BY c.converted_at DESC, c.conversion_id DESC
                LIMIT 1
            ) m
        """
    # SQLite has no LATERAL; its planner always drives from the staged keys by index
    return f"""
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
            FROM ({distinct}) k
            JOIN conversions c ON {match}
        ) ranked WHERE rn = 1
    """


def _decode_existing(part: pd.DataFrame) -> pd.DataFrame:
    template = empty_existing()
    frame = part.reset_index(drop=True)
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


def _status_matches(conn: Connection, keys: str) -> str:
    """Per status row: how many conversions it names, and the one it names if exactly one."""
    match = """c.offer_source = :offer_source AND c.click_id = s.click_id
               AND (s.conversion_type IS NULL OR c.conversion_type = s.conversion_type)
               AND (s.event_id IS NULL OR c.event_id = s.event_id)"""
    if conn.dialect.name == "postgresql":  # index probes per row; see `_existing`
        return f"""
            SELECT s.click_id, s.line, m.n_matches, m.conversion_id, m.current_status
            FROM {keys} s
            CROSS JOIN LATERAL (
                SELECT count(*) AS n_matches, min(c.conversion_id) AS conversion_id,
                       min(c.status) AS current_status
                FROM conversions c WHERE {match}
            ) m
        """
    return f"""
        SELECT s.click_id, s.line, count(c.conversion_id) AS n_matches,
               min(c.conversion_id) AS conversion_id, min(c.status) AS current_status
        FROM {keys} s
        LEFT JOIN conversions c ON {match}
        GROUP BY s.line
    """


def _decode_matches(part: pd.DataFrame) -> pd.DataFrame:
    return part.reset_index(drop=True).astype(
        {"click_id": "str", "line": "int64", "n_matches": "int64", "conversion_id": "str"}
        | {"current_status": "str"}
    )
