"""Fix-and-re-drop keeps its history: a rejection report dropped back in keeps pointing at the
first file's lines (`original_line`), the ledger links each round to the first file, and report
names do not grow round after round. Hand-worked: the first file's lines 3 and 4 are bad; the
report lists them as its lines 2 and 3; the re-dropped report's own report lists the still-bad
row as its line 2 with original_line 4."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import boto3
import pytest
from sqlalchemy import select

from pipeline import warehouse
from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.datadir.objectstore import ObjectStoreDataDir
from pipeline.ingest import Upload, ingest_file
from tests.helpers import make_config, write_csv

RECEIVED = datetime(2026, 7, 2, 12, 0, tzinfo=UTC)
FIRST = (
    "click_id,payout,conversion_time\n"
    "r1,1.00,2026-07-01 10:00:00\n"
    "r2,x,2026-07-01 10:00:00\n"  # line 3: invalid_payout
    "r3,3.00,2026-07-01 25:00:00\n"  # line 4: invalid_time
    "r4,4.00,2026-07-01 10:00:00\n"
)


@pytest.fixture(params=["local", "s3"])
def ctx(request, engine, tmp_path) -> Context:
    """The reports in a local data directory, or in a bucket of the moto server: a person
    downloads a report from either, fixes it and drops it back."""
    if request.param == "s3":
        home = request.getfixturevalue("s3_home")
        return Context(make_config(), engine, ObjectStoreDataDir(home, engine))
    return Context(make_config(), engine, LocalDataDir(tmp_path / "home"))


def report(path: str) -> list[dict]:
    """A report's rows, read back without the code under test (a file, or boto3)."""
    if path.startswith("s3://"):
        bucket, key = path[len("s3://") :].split("/", 1)
        data = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        text = data.decode("utf-8-sig")
    else:
        text = Path(path).read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def rewrite(rows: list[dict], **fixes: dict) -> str:
    """What a person saves after fixing cells in a spreadsheet (the report's columns kept)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row | fixes.get(row["click_id"], {}))
    return out.getvalue()


def ledger(engine) -> list[tuple]:
    f = warehouse.ingested_files.c
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(f.file_id, f.original_name, f.original_file_id).order_by(f.file_id)
            )
        ]


def test_three_rounds_of_fixing_keep_the_first_files_lines_and_names(ctx, engine, tmp_path):

    def drop(name: str, text: str):
        path = write_csv(tmp_path / "drops" / name, text)
        return ingest_file(ctx, Upload(path, "maxbounty", received_at=RECEIVED, name=name))

    first = drop("net.csv", FIRST)
    rows = report(first.report_path)
    assert [(r["line"], r["click_id"], r["reason_code"]) for r in rows] == [
        ("3", "r2", "invalid_payout"),
        ("4", "r3", "invalid_time"),
    ]
    assert "original_line" not in rows[0]  # a first file's report needs none
    name1 = PurePosixPath(first.report_path).name
    assert name1 == f"net.{first.content_hash[:12]}.rejected.csv"

    # Round 2: r2 fixed; r3's time is "fixed" in a spreadsheet that reformats it on save.
    second = drop(
        name1, rewrite(rows, r2={"payout": "2.00"}, r3={"conversion_time": "7/1/2026 10:00"})
    )
    assert (second.state, second.outcomes["inserted"], second.outcomes["rejected"]) == (
        "applied",
        1,
        1,
    )
    rows2 = report(second.report_path)
    assert [(r["line"], r["original_line"], r["click_id"], r["reason_code"]) for r in rows2] == [
        ("3", "4", "r3", "time_reformatted_by_spreadsheet")
    ]
    assert "format the column as text" in rows2[0]["reason"]
    name2 = PurePosixPath(second.report_path).name
    assert name2 == f"net.{second.content_hash[:12]}.rejected.csv"  # not net.<h1>.rejected.<h2>...

    # Round 3: the time written as the tool wants it; nothing left to reject.
    third = drop(name2, rewrite(rows2, r3={"conversion_time": "2026-07-01 10:00:00"}))
    assert (third.state, third.outcomes["inserted"], third.outcomes["rejected"]) == (
        "applied",
        1,
        0,
    )
    assert PurePosixPath(third.summary_path).name == f"net.{third.content_hash[:12]}.summary.json"

    (id1, _, none), (id2, _, link2), (_, _, link3) = ledger(engine)
    assert none is None and link2 == id1 and link3 == id1  # every round points at the first file
    assert id2 > id1


def test_a_report_renamed_by_hand_is_applied_without_a_link(ctx, engine, tmp_path):
    first = ingest_file(
        ctx, Upload(write_csv(tmp_path / "net.csv", FIRST), "maxbounty", received_at=RECEIVED)
    )
    fixed = rewrite(report(first.report_path), r2={"payout": "2.00"})
    renamed = write_csv(tmp_path / "my fixes.csv", fixed)
    again = ingest_file(ctx, Upload(renamed, "maxbounty", received_at=RECEIVED))
    assert again.outcomes["inserted"] == 1
    assert [link for *_, link in ledger(engine)] == [None, None]
