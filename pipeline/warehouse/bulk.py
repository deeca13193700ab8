"""Moving whole tables in and out of the warehouse fast: `COPY` on PostgreSQL, raw executemany
on SQLite.

SQLAlchemy's executemany converts every value of every row through Python type objects, which
made writes three quarters of an ingest. Here a frame becomes one CSV stream that PostgreSQL's
`COPY` reads (built by pyarrow in C), or a list of plain tuples for sqlite3's C executemany.
Values are converted column by column, never row by row.

Columns are described by a *kind*, which fixes both the SQL type of a temporary table and the
encoding of a value:

- ``text``, ``int``, ``bool``: as they are.
- ``payout``: int64 micro-units in the frame; NUMERIC(18,6) on PostgreSQL, canonical decimal text
  on SQLite (the storage of `schema.Payout`).
- ``time``: tz-aware UTC datetimes in the frame; timestamptz on PostgreSQL, sortable UTC text on
  SQLite (the storage of `schema.UTCDateTime`).

A real table's kinds are read off its `Table` (`kinds_of`), so each table is described once, in
`schema`; only temporary tables (staging, lookups) spell their kinds out.

Reads come back as text for ``payout`` and ``time`` (see `payout_text`/`time_text`) and are
decoded with the same vectorised parsers the input goes through, so no Decimal or datetime
object is built per row.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Boolean, Column, Connection, Integer, String, Table
from sqlalchemy.exc import DBAPIError

from pipeline.core import money
from pipeline.warehouse.schema import SQLITE_TIME_FORMAT, Payout, UTCDateTime

_SQL_TYPES = {
    "postgresql": {
        "text": "TEXT",
        "int": "BIGINT",
        "bool": "BOOLEAN",
        "payout": "NUMERIC(18,6)",
        "time": "TIMESTAMPTZ",
    },
    "sqlite": {
        "text": "TEXT",
        "int": "INTEGER",
        "bool": "BOOLEAN",
        "payout": "VARCHAR(24)",
        "time": "VARCHAR(32)",
    },
}
COPY_BLOCK_ROWS = 200_000
_CURSOR_NUMBERS = itertools.count()  # server-side cursors of one connection need unique names


_KINDS_BY_TYPE = (
    (Payout, "payout"),
    (UTCDateTime, "time"),
    (Boolean, "bool"),
    (Integer, "int"),  # BigInteger too
    (String, "text"),  # Text too
)


def kinds_of(table: Table) -> dict[str, str]:
    """The kind of each column a bulk write fills, in the table's order: every column but a key
    the database generates."""
    return {c.name: _kind(c) for c in table.columns if c is not table.autoincrement_column}


def _kind(column: Column) -> str:
    for sql_type, kind in _KINDS_BY_TYPE:
        if isinstance(column.type, sql_type):
            return kind
    raise TypeError(f"no bulk kind for {column.table.name}.{column.name} ({column.type!r})")


def create_temp(conn: Connection, name: str, kinds: Mapping[str, str]) -> str:
    """An empty temporary table for this transaction's use; returns the name to use.

    PostgreSQL: created afresh and dropped at commit. SQLite cannot drop a table while another
    statement of the connection is still reading (the merge reads the staged rows while it
    stages keys), so there the table is kept per connection, named after its columns, and
    emptied instead.
    """
    types = _SQL_TYPES[conn.dialect.name]
    ddl = ", ".join(f"{col} {types[kind]}" for col, kind in kinds.items())
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({ddl}) ON COMMIT DROP")
        return name
    name = f"{name}_{zlib.crc32(ddl.encode()):08x}"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({ddl})")
    conn.exec_driver_sql(f"DELETE FROM {name}")
    return name


@dataclass(frozen=True)
class Encoded:
    """Rows for one table, ready to be sent (`send`). Encoding needs no connection, so it can
    run on another thread than the one that sends, while the database stores earlier rows.

    On PostgreSQL `encode` builds the CSV blocks `COPY` reads. On SQLite, which stores rows in
    this process, the plain values executemany takes are made by `send` instead: made ahead,
    they only held two chunks' values in memory at once (peak RSS 563 against 492-511 MB on
    the 1M-row file), and were no faster."""

    table: str
    kinds: Mapping[str, str]
    blocks: tuple[bytes, ...] = ()  # PostgreSQL
    frame: pd.DataFrame | None = None  # SQLite


def encode(dialect: str, table: str, frame: pd.DataFrame, kinds: Mapping[str, str]) -> Encoded:
    """`frame[list(kinds)]` encoded for `table` on `dialect` ("postgresql" or "sqlite")."""
    if dialect != "postgresql":
        return Encoded(table, kinds, frame=frame)
    blocks = tuple(
        _csv_block(frame.iloc[start : start + COPY_BLOCK_ROWS], kinds)
        for start in range(0, len(frame), COPY_BLOCK_ROWS)
    )
    return Encoded(table, kinds, blocks=blocks)


def send(conn: Connection, rows: Encoded) -> None:
    """Append encoded rows to their table inside the connection's transaction."""
    dbapi = conn.connection.driver_connection
    names = ", ".join(rows.kinds)
    if conn.dialect.name == "postgresql":
        statement = f"COPY {rows.table} ({names}) FROM STDIN (FORMAT csv)"
        with _wrapped(conn, statement), dbapi.cursor() as cursor, cursor.copy(statement) as copy:
            for block in rows.blocks:
                copy.write(block)
    else:
        assert rows.frame is not None, "rows encoded for PostgreSQL"
        values = (_sqlite_values(rows.frame[c], kind) for c, kind in rows.kinds.items())
        placeholders = ", ".join("?" * len(rows.kinds))
        statement = f"INSERT INTO {rows.table} ({names}) VALUES ({placeholders})"
        with _wrapped(conn, statement):
            dbapi.executemany(statement, zip(*values, strict=True))


def insert(conn: Connection, table: str, frame: pd.DataFrame, kinds: Mapping[str, str]) -> None:
    """Append `frame[list(kinds)]` to `table` inside the connection's transaction."""
    if frame.empty:
        return
    send(conn, encode(conn.dialect.name, table, frame, kinds))


def read(
    conn: Connection, sql: str, params: Mapping[str, object], columns: list[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Stream a query's rows as frames of up to `chunk_rows` rows, raw values as the driver gives.

    `sql` uses ``:name`` parameters. On PostgreSQL a server-side cursor keeps the result out of
    client memory; sqlite3 produces rows lazily anyway.
    """
    dbapi = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name=f"conversions_read_{next(_CURSOR_NUMBERS)}")
        cursor.itersize = chunk_rows
        statement = _pyformat(sql)
    else:
        cursor = dbapi.cursor()
        statement = sql
    try:
        while True:
            with _wrapped(conn, sql):
                if statement is not None:
                    cursor.execute(statement, dict(params))
                    statement = None
                rows = cursor.fetchmany(chunk_rows)
            if not rows:
                return
            yield _frame(rows, columns)
    finally:
        cursor.close()


SPOOL_BLOCK_BYTES = 4 << 20  # how much of a spooled result is parsed at a time (~50k rows)
_SPOOL_FETCH_ROWS = 20_000  # SQLite: rows are Python tuples until written out, so few at a time


def spool(
    conn: Connection, sql: str, params: Mapping[str, object], kinds: Mapping[str, str]
) -> Iterator[pd.DataFrame]:
    """Run a query to its end now, keep its rows in a local temporary file, and return them as
    frames (text columns as ``str``, int as ``Int64``) of about `SPOOL_BLOCK_BYTES` of CSV on
    PostgreSQL, of `_SPOOL_FETCH_ROWS` rows on SQLite.

    Why: once the query has been read, the connection is free for the writes the rows lead to
    (a cursor left open would hold it), and the file keeps client memory flat whatever the
    result's size. PostgreSQL sends the rows as CSV (`COPY (query) TO STDOUT`), which pyarrow
    parses in C; SQLite's rows become Arrow record batches column by column, kept as an Arrow
    IPC stream (no text round trip). Kinds: ``text`` and ``int`` only.
    """
    # Closed by the returned generator when it is read to the end (or collected).
    out = tempfile.TemporaryFile(prefix="conversions_spool_")  # noqa: SIM115
    try:
        if conn.dialect.name == "postgresql":
            statement = f"COPY ({_pyformat(sql)}) TO STDOUT (FORMAT csv)"
            dbapi = conn.connection.driver_connection
            with (
                _wrapped(conn, sql),
                dbapi.cursor() as cursor,
                cursor.copy(statement, dict(params)) as copy,
            ):
                for data in copy:
                    out.write(data)
            frames = _spooled_csv(out, kinds)
        else:
            _spool_sqlite(conn, sql, params, kinds, out)
            frames = _spooled_ipc(out)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return frames


_ARROW_KINDS = {"text": pa.large_string(), "int": pa.int64()}


def _spool_sqlite(
    conn: Connection, sql: str, params: Mapping[str, object], kinds: Mapping[str, str], out
) -> None:
    schema = pa.schema([(c, _ARROW_KINDS[k]) for c, k in kinds.items()])
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _wrapped(conn, sql):
            cursor.execute(sql, dict(params))
            writer = None
            while rows := cursor.fetchmany(_SPOOL_FETCH_ROWS):
                columns = [
                    _column(v, t)
                    for v, t in zip(zip(*rows, strict=True), schema.types, strict=True)
                ]
                if writer is None:
                    writer = pa.ipc.new_stream(out, schema)
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
            if writer is not None:
                writer.close()
    finally:
        cursor.close()


def _column(values: tuple, kind: pa.DataType) -> pa.Array:
    """One column of SQLite's rows. SQLite types values, not columns: a value of another type
    in a text column (an expression's integer) is taken as its text, as the CSV path did."""
    try:
        return pa.array(values, kind)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        if kind != pa.large_string():
            raise
        return pa.array([None if v is None else str(v) for v in values], kind)


def _spooled_ipc(out) -> Iterator[pd.DataFrame]:
    with out:
        if out.seek(0, io.SEEK_END) == 0:
            return
        out.seek(0)
        for batch in pa.ipc.open_stream(out):
            yield batch.to_pandas(types_mapper=_SPOOLED_TYPES.get)


_SPOOLED_TYPES = {pa.int64(): pd.Int64Dtype(), pa.large_string(): pd.StringDtype("pyarrow", np.nan)}


def _spooled_csv(out, kinds: Mapping[str, str]) -> Iterator[pd.DataFrame]:
    types = {"text": pa.string(), "int": pa.int64()}
    with out:
        if out.seek(0, io.SEEK_END) == 0:
            return
        out.seek(0)
        batches = pacsv.open_csv(
            out,
            read_options=pacsv.ReadOptions(column_names=list(kinds), block_size=SPOOL_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: types[k] for c, k in kinds.items()},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in batches:
            yield batch.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    """Rows as a frame, integers exact: pandas makes a column of integers and NULLs float64,
    which rounds those past 2**53 (micro-unit payouts over 9 billion, microseconds before 1685);
    such columns keep the driver's Python ints instead (our tables have no float columns)."""
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for i in np.flatnonzero((frame.dtypes == "float64").to_numpy()):
        frame[columns[i]] = pd.Series([row[i] for row in rows], dtype=object)
    return frame


@contextlib.contextmanager
def _wrapped(conn: Connection, statement: str) -> Iterator[None]:
    """Driver errors as SQLAlchemy's `DBAPIError`, as if SQLAlchemy had run the statement, so
    callers tell a database failure from a bug the same way on every path."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        raise DBAPIError.instance(statement, None, exc, base, dialect=conn.dialect) from exc


def payout_text(conn: Connection, column: str) -> str:
    """SQL for a payout column as exact decimal text (decode with `decode_payout`)."""
    return f"CAST({column} AS TEXT)"


def time_text(conn: Connection, column: str) -> str:
    """SQL for a time column as UTC text in `SQLITE_TIME_FORMAT` (decode with `decode_time`)."""
    if conn.dialect.name == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    return column


def decode_payout(values: pd.Series) -> pd.Series:
    """Decimal text from the database -> Int64 micro-units (<NA> for NULL)."""
    micros, invalid, _ = money.parse_payouts(values.astype("str"))
    if invalid.any():
        raise ValueError(
            f"the warehouse holds payouts that are not exact decimals: {values[invalid]}"
        )
    return micros


def decode_time(values: pd.Series) -> pd.Series:
    """UTC text from the database -> datetime64[us, UTC] (NaT for NULL)."""
    return pd.to_datetime(values, format=SQLITE_TIME_FORMAT, utc=True).astype("datetime64[us, UTC]")


def _pyformat(sql: str) -> str:
    """``:name`` -> ``%(name)s`` for psycopg (our SQL has no other colons or percent signs)."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql)


# --- encoding ----------------------------------------------------------------------------------


def _csv_block(frame: pd.DataFrame, kinds: Mapping[str, str]) -> bytes:
    """CSV for COPY: strings always quoted, NULL as an empty unquoted field."""
    arrays = [_arrow(frame[column], kind) for column, kind in kinds.items()]
    table = pa.Table.from_arrays(arrays, names=list(kinds))
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return out.getvalue()


def _arrow(values: pd.Series, kind: str) -> pa.Array:
    if kind == "payout":
        return _micros_to_decimal(values)
    if kind == "time":
        return _time_text(values, utc_suffix=True)
    if kind == "int":
        return pa.array(values.astype("Int64"), pa.int64())
    if kind == "bool":
        return pa.array(values.astype("boolean"), pa.bool_())
    array = pa.array(values.astype("str"), pa.large_string())
    return array


def _micros_to_decimal(values: pd.Series) -> pa.Array:
    """Int64 micros -> decimal128(18, 6) whose unscaled integer *is* the micros: exact, no maths."""
    micros = values.astype("Int64")
    present = micros.notna().to_numpy()
    low = micros.fillna(0).to_numpy(dtype=np.int64)
    words = np.empty((len(low), 2), dtype=np.int64)
    words[:, 0] = low
    words[:, 1] = low >> 63  # sign extension to 128 bits
    validity = None if present.all() else pa.array(present).buffers()[1]
    return pa.Array.from_buffers(
        pa.decimal128(18, 6), len(low), [validity, pa.py_buffer(words.tobytes())]
    )


def _sqlite_values(values: pd.Series, kind: str) -> list:
    """One column as a list of plain Python values (None for missing) for sqlite3."""
    if kind == "payout":
        values = money.format_series(values.astype("Int64"))
    elif kind == "time":
        return _time_text(values).to_pylist()
    elif kind == "int":
        return pa.array(values.astype("Int64"), pa.int64()).to_pylist()
    elif kind == "bool":
        return pa.array(values.astype("boolean"), pa.bool_()).to_pylist()
    return pa.array(values.astype("str"), pa.large_string()).to_pylist()


def _time_text(values: pd.Series, utc_suffix: bool = False) -> pa.Array:
    """UTC instants as `SQLITE_TIME_FORMAT` text (with a trailing ``Z`` if asked), nulls kept.

    Arrow's cast of a naive timestamp to string is several times faster than its CSV writer's
    or strftime's formatting, and gives exactly this layout.
    """
    naive = pa.array(_as_utc(values).dt.tz_localize(None), pa.timestamp("us"))
    text = naive.cast(pa.string())  # a zone-aware cast looks up the zone per value: 7x slower
    return pc.binary_join_element_wise(text, "Z", "") if utc_suffix else text


def _as_utc(values: pd.Series) -> pd.Series:
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.to_datetime(values, utc=True)
    return values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
