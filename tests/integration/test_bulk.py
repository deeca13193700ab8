"""Bulk moves in and out of the database keep every value exactly, on both backends.

The expectations are the Python values themselves, read back through SQLAlchemy's ordinary
(slow, per-value) path: a second implementation of the round trip. A real table's column kinds
are read off its `Table`, so no table is described twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from pipeline import warehouse
from pipeline.core.vocabulary import MUTABLE_FIELDS
from pipeline.warehouse import bulk
from pipeline.warehouse.schema import Payout, UTCDateTime

AWKWARD_TEXT = [
    "",  # empty string, not NULL
    None,
    'quote " inside',
    "comma, inside",
    "new\nline and\r\ncrlf",
    "back\\slash \\N",
    "\\.",  # COPY's end-of-data marker in text format
    "tab\tinside",
    "ünïcødé ✓ 🎯",
    "=1+1",
    " leading and trailing ",
    "NULL",
]


def _frame(n: int) -> pd.DataFrame:
    payouts = [0, 1, -1, 300_000, 999_999_999_999_999_999, -999_999_999_999_999_999, None]
    times = [
        datetime(2026, 3, 8, 7, 0, 0, 1, tzinfo=UTC),
        None,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 30, 59, 999_999, tzinfo=UTC),
    ]
    return pd.DataFrame(
        {
            "t": pd.Series([AWKWARD_TEXT[i % len(AWKWARD_TEXT)] for i in range(n)], dtype="str"),
            "i": pd.Series([None if i % 5 == 0 else i * 10**12 for i in range(n)], dtype="Int64"),
            "p": pd.Series([payouts[i % len(payouts)] for i in range(n)], dtype="Int64"),
            "d": pd.Series([times[i % len(times)] for i in range(n)], dtype="datetime64[us, UTC]"),
        }
    )


KINDS = {"t": "text", "i": "int", "p": "payout", "d": "time"}


@pytest.mark.parametrize("rows", [1, 12, 50])
def test_insert_then_read_back_keeps_every_value(engine, rows):
    frame = _frame(rows).assign(n=range(rows))
    kinds = {"n": "int", **KINDS}
    with engine.begin() as conn:
        table = bulk.create_temp(conn, "t_bulk", kinds)
        bulk.insert(conn, table, frame, kinds)
        sql = (
            f"SELECT n, t, i, {bulk.payout_text(conn, 'p')}, {bulk.time_text(conn, 'd')} "
            f"FROM {table} ORDER BY n"
        )
        parts = list(bulk.read(conn, sql, {}, ["n", "t", "i", "p", "d"], 7))
        plain = conn.execute(text(f"SELECT t FROM {table} ORDER BY n")).scalars().all()
    back = pd.concat(parts, ignore_index=True)
    assert [len(p) for p in parts][:-1] == [7] * (len(parts) - 1)  # chunked as asked
    expected_text = [None if v is None else v for v in frame["t"].astype(object)]
    expected_text = [None if v != v else v for v in expected_text]
    assert plain == expected_text  # NULL stays NULL, "" stays "", escapes survive
    assert [None if pd.isna(v) else v for v in back["t"]] == expected_text
    assert [None if pd.isna(v) else int(v) for v in back["i"]] == [
        None if pd.isna(v) else int(v) for v in frame["i"]
    ]
    assert bulk.decode_payout(back["p"]).tolist() == frame["p"].tolist()
    decoded = bulk.decode_time(back["d"])
    assert [None if pd.isna(v) else v for v in decoded] == [
        None if pd.isna(v) else v for v in frame["d"]
    ]


def test_driver_errors_surface_as_sqlalchemy_errors(engine):
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError), engine.begin() as conn:
        bulk.insert(conn, "no_such_table", _frame(2), KINDS)


def test_a_tables_kinds_are_read_off_its_column_types():
    table = Table(
        "t_kinds",
        MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=True),  # the database fills it
        Column("amount", Payout),
        Column("at", UTCDateTime),
        Column("count", Integer),
        Column("flag", Boolean),
        Column("name", String(8)),
        Column("note", Text),
    )
    assert bulk.kinds_of(table) == {
        "amount": "payout",
        "at": "time",
        "count": "int",
        "flag": "bool",
        "name": "text",
        "note": "text",
    }
    with pytest.raises(TypeError, match=r"t_kinds\.ratio"):
        bulk.kinds_of(Table("t_kinds", MetaData(), Column("ratio", Float)))


def test_the_history_records_each_mutable_field_as_the_conversions_store_it():
    conversion = bulk.kinds_of(warehouse.conversions)
    history = bulk.kinds_of(warehouse.conversion_history)
    for field in MUTABLE_FIELDS:
        assert history[f"old_{field}"] == history[f"new_{field}"] == conversion[field]
    assert list(history) == ["conversion_id", "file_id", "line", "action"] + [
        f"{side}_{field}" for field in MUTABLE_FIELDS for side in ("old", "new")
    ] + ["recorded_at"]


def test_rows_encoded_before_the_transaction_are_sent_in_it_unchanged(engine):
    """`encode` needs no connection (the merge encodes a chunk on the main thread while the
    writer thread sends the previous one): what it built is what the table holds."""
    frame = _frame(30).assign(n=range(30))
    kinds = {"n": "int", **KINDS}
    with engine.begin() as conn:
        table = bulk.create_temp(conn, "t_encoded", kinds)
    encoded = bulk.encode(engine.dialect.name, table, frame, kinds)  # no connection in hand
    assert encoded.blocks if engine.dialect.name == "postgresql" else encoded.frame is not None
    with engine.begin() as conn:
        table = bulk.create_temp(conn, "t_encoded", kinds)  # a temporary table: made again
        bulk.send(conn, encoded)
        sql = f"SELECT n, {bulk.payout_text(conn, 'p')} FROM {table} ORDER BY n"
        back = pd.concat(list(bulk.read(conn, sql, {}, ["n", "p"], 100)), ignore_index=True)
    assert back["n"].astype(int).tolist() == list(range(30))
    assert bulk.decode_payout(back["p"]).tolist() == frame["p"].tolist()
