"""Every ignored duplicate on record: `<stem>.<hash12>.duplicates.csv` beside the report lists
each `ignored_duplicate` line with the conversion it duplicated (its id, and the file and line
that created it). Hand-worked, offer source `maxbounty` (duplicate mode `ignore`):

first.csv   line 2 d1 1.00 (inserted)   line 3 d2 2.00 (inserted)
second.csv  line 2 d1 5.00 -> duplicates first.csv line 2
            line 3 d3 3.00 (inserted)
            line 4 d3 4.00 -> duplicates second.csv line 3 (an earlier row of the same file)
            line 5 d2 9.00 -> duplicates first.csv line 3
            line 6 x  bad  (rejected: in the rejection report, not in the duplicates list)
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from tests.helpers import make_config, write_csv

RECEIVED = datetime(2026, 7, 2, 12, 0, tzinfo=UTC)
HEAD = "click_id,payout,conversion_time\n"
FIRST = HEAD + "d1,1.00,2026-07-01 10:00:00\nd2,2.00,2026-07-01 11:00:00\n"
SECOND = (
    HEAD
    + "d1,5.00,2026-07-01 12:00:00\n"
    + "d3,3.00,2026-07-01 12:00:00\n"
    + "d3,4.00,2026-07-01 13:00:00\n"
    + "d2,9.00,2026-07-01 14:00:00\n"
    + "x,oops,2026-07-01 14:00:00\n"
)


def ids(engine) -> dict[tuple[str, int], str]:
    """(click id, creating line) -> conversion id, from the warehouse."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT click_id, line, conversion_id FROM conversions"))
        return {(c, int(line)): cid for c, line, cid in rows}


def test_each_ignored_duplicate_names_the_conversion_it_duplicated(engine, tmp_path: Path):
    ctx = Context(make_config(), engine, LocalDataDir(tmp_path / "home"))

    def drop(name: str, content: str, dry_run: bool = False):
        path = write_csv(tmp_path / name, content)
        return ingest_file(ctx, Upload(path, "maxbounty", received_at=RECEIVED, dry_run=dry_run))

    first = drop("first.csv", FIRST)
    assert first.duplicates_path is None  # nothing ignored: no list
    rehearsal = drop("second.csv", SECOND, dry_run=True)
    second = drop("second.csv", SECOND)
    assert second.outcomes["ignored_duplicate"] == 3 and second.outcomes["inserted"] == 1
    made = ids(engine)
    listed = list(
        csv.DictReader(io.StringIO(Path(second.duplicates_path).read_text(encoding="utf-8-sig")))
    )
    assert [
        (r["line"], r["click_id"], r["payout"], r["mode"], r["duplicate_of"],
         r["duplicate_of_file"], r["duplicate_of_line"])
        for r in listed
    ] == [
        ("2", "d1", "5.00", "ignore", made[("d1", 2)], "first.csv", "2"),
        ("4", "d3", "4.00", "ignore", made[("d3", 3)], "second.csv", "3"),
        ("5", "d2", "9.00", "ignore", made[("d2", 3)], "first.csv", "3"),
    ]  # fmt: skip
    assert Path(second.duplicates_path).name == (
        f"second.{second.content_hash[:12]}.duplicates.csv"
    )
    summary = json.loads(Path(second.summary_path).read_text(encoding="utf-8"))
    assert summary["duplicates_path"] == second.duplicates_path
    # The rejection report holds the rejected line only, so the fix-and-re-drop loop never
    # re-sends a duplicate.
    rejected = Path(second.report_path).read_text(encoding="utf-8-sig").splitlines()
    assert len(rejected) == 2 and rejected[1].startswith("6,x,oops,")
    # A dry run lists the same lines (its own rows are not in the warehouse: named by line).
    rows = Path(rehearsal.duplicates_path).read_text(encoding="utf-8-sig").splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "5"]
    assert ",second.csv,3" in rows[2]
    assert rehearsal.duplicates_path != second.duplicates_path  # a name of its own
