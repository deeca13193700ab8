"""`conversions export` streams in chunks: the chunk size never changes what is written."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pipeline import export
from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from tests.helpers import make_config, write_csv


def test_chunked_export_writes_the_same_bytes_with_one_header(engine, tmp_path):
    config = make_config()
    rows = "".join(f"k{i},{i}.5,2026-07-0{1 + i % 3} 14:00:00\n" for i in range(7))
    path = write_csv(tmp_path / "a.csv", "click_id,payout,conversion_time\n" + rows)
    ingest_file(
        Context(config, engine, LocalDataDir(tmp_path)),
        Upload(
            path,
            "maxbounty",
            received_at=datetime(2026, 8, 1, tzinfo=UTC),
        ),
    )
    outputs = {}
    for chunk_rows in (1, 3, 100):
        out = io.StringIO()
        assert export.write(engine, config, out, chunk_rows=chunk_rows) == 7
        outputs[chunk_rows] = out.getvalue()
    assert outputs[1] == outputs[3] == outputs[100]
    lines = outputs[1].splitlines()
    assert lines[0] == ",".join(export.COLUMNS) and len(lines) == 8
    # Oldest first: July 1st (k0, k3, k6), 2nd (k1, k4), 3rd (k2, k5); 14:00 New York = 18:00Z.
    assert [line.split(",")[2] for line in lines[1:]] == ["k0", "k3", "k6", "k1", "k4", "k2", "k5"]
    assert lines[1].split(",")[6:9] == ["0.50", "USD", "2026-07-01T18:00:00Z"]


def test_an_empty_export_is_just_the_header(engine):
    out = io.StringIO()
    assert export.write(engine, make_config(), out) == 0
    assert out.getvalue() == ",".join(export.COLUMNS) + "\n"


def test_the_export_shows_each_conversions_identity_and_current_values_not_its_lineage(engine):
    out = io.StringIO()
    export.write(engine, make_config(), out)
    assert out.getvalue() == (
        "conversion_id,offer_source,click_id,conversion_type,event_id,status,payout,currency,"
        "converted_at,duplicate_status\n"
    )
