"""Rejection reports and summaries, read back from real files with the csv and json modules."""

from __future__ import annotations

import codecs
import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from pipeline.datadir.layout import report_paths
from pipeline.reports import RejectionReport, neutralise, write_summary

HASH = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "+1"),  # a plain number stays a number
        ("-5.00", "-5.00"),
        ("+3", "+3"),
        ("-1+2", "'-1+2"),  # starts like a number, but is a formula
        ("-5.", "'-5."),
        ("-", "'-"),
        ("-5\n", "'-5\n"),  # a trailing newline is not part of a plain number
        ("-٣", "'-٣"),  # Arabic-Indic digit: text to a spreadsheet
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=cmd", "'\t=cmd"),
        ("\rfoo", "'\rfoo"),
        ("normal text", "normal text"),
        ("5-3", "5-3"),  # only the first character matters
        (" =1", " =1"),
        ("'=1", "'=1"),  # already neutralised: not prefixed twice
        ("", ""),
    ],
)
def test_neutralise_cases(cell, expected):
    assert neutralise(pd.Series([cell], dtype="str")).tolist() == [expected]
    assert neutralise(pd.Series([cell], dtype=object)).tolist() == [expected]


def test_neutralise_keeps_missing_cells_and_non_text_columns():
    out = neutralise(pd.Series(["=1", None, "ok"], dtype=object))
    assert out.tolist() == ["'=1", None, "ok"]
    assert neutralise(pd.Series([-1, 2])).tolist() == [-1, 2]
    assert neutralise(pd.Series([-1, 2], dtype=object)).tolist() == [-1, 2]
    assert neutralise(pd.Series(["=1", 7, None], dtype=object)).tolist() == ["'=1", 7, None]
    assert neutralise(pd.Series([None, None], dtype=object)).tolist() == [None, None]
    original = pd.Series(["=1"], dtype="str")
    neutralise(original)
    assert original.tolist() == ["=1"]  # the input is not modified


def _rows(records: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(records).astype({"line": "int64"})


def _read(path: Path, delimiter: str) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh, delimiter=delimiter))


def test_report_round_trip(tmp_path):
    path = tmp_path / "a.rejected.csv"
    header = ["click_id", "Payout", " Reason ", "note", "LINE", "Reason-Code"]
    report = RejectionReport(path, header, ";")
    report.write(
        _rows(
            [
                {
                    "line": 2,
                    "click_id": "a;b",
                    "Payout": "=1+1",
                    "note": 'say "hi"\nsecond line',
                    "reason_code": "invalid_payout",
                    "reason": "payout is not a number",
                },
            ]
        )
    )
    report.write(
        _rows(
            [
                {
                    "line": 7,
                    "click_id": "c",
                    "Payout": "-5.00",
                    "note": "",
                    "reason_code": "negative_payout|invalid_click_id",
                    "reason": "-negative; and more",
                },
            ]
        )
    )
    assert report.commit() == path
    assert report.rows_written == 2

    raw = path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    assert raw.count(b"\r\n") == 3 and raw.endswith(b"\r\n")  # the quoted \n stays as is
    assert _read(path, ";") == [
        ["line", "click_id", "Payout", "note", "reason_code", "reason"],
        ["2", "a;b", "'=1+1", 'say "hi"\nsecond line', "invalid_payout", "payout is not a number"],
        ["7", "c", "-5.00", "", "negative_payout|invalid_click_id", "'-negative; and more"],
    ]


def test_report_takes_columns_by_name_and_ignores_extra_ones(tmp_path):
    path = tmp_path / "r.csv"
    report = RejectionReport(path, ["b", "a"], ",")
    report.write(
        pd.DataFrame(
            {"reason": ["why"], "a": ["1"], "extra": ["x"], "line": [3], "reason_code": ["c"]}
            | {"b": ["2"]}
        )
    )
    report.commit()
    assert _read(path, ",") == [
        ["line", "b", "a", "reason_code", "reason"],
        ["3", "2", "1", "c", "why"],
    ]


def test_header_names_are_neutralised_too(tmp_path):
    path = tmp_path / "r.csv"
    RejectionReport(path, ["click_id", "=HYPERLINK(1)"], "\t").commit()
    assert _read(path, "\t") == [["line", "click_id", "'=HYPERLINK(1)", "reason_code", "reason"]]


def test_report_without_rows_is_just_the_header(tmp_path):
    path = tmp_path / "r.csv"
    report = RejectionReport(path, ["click_id"], ",")
    report.write(_rows([{"line": 1, "click_id": "x", "reason_code": "c", "reason": "r"}]).iloc[:0])
    report.commit()
    assert path.read_bytes() == codecs.BOM_UTF8 + b"line,click_id,reason_code,reason\r\n"
    assert report.rows_written == 0


def test_nothing_is_visible_before_commit(tmp_path):
    path = tmp_path / "r.csv"
    report = RejectionReport(path, ["click_id"], ",")
    report.write(_rows([{"line": 1, "click_id": "x", "reason_code": "c", "reason": "r"}]))
    assert not path.exists()
    assert [p.name.endswith(".partial") for p in tmp_path.iterdir()] == [True]
    report.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
    with pytest.raises(ValueError, match="already committed"):
        report.write(_rows([{"line": 2, "click_id": "y", "reason_code": "c", "reason": "r"}]))
    report.discard()  # after commit: a no-op, the report stays
    assert path.exists()


def test_discard_removes_the_partial_file(tmp_path):
    report = RejectionReport(tmp_path / "r.csv", ["click_id"], ",")
    report.discard()
    report.discard()
    assert list(tmp_path.iterdir()) == []


def test_context_manager_discards_an_uncommitted_report(tmp_path):
    with pytest.raises(RuntimeError), RejectionReport(tmp_path / "r.csv", ["a"], ",") as report:
        report.write(_rows([{"line": 1, "a": "x", "reason_code": "c", "reason": "r"}]))
        raise RuntimeError("processing failed")
    assert list(tmp_path.iterdir()) == []


def test_commit_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = tmp_path / "r.csv"
    path.symlink_to(victim)
    RejectionReport(path, ["a"], ",").commit()
    assert not path.is_symlink()
    assert victim.read_text() == "keep me"


def test_summary_json(tmp_path):
    path = tmp_path / "s.summary.json"
    summary = {
        "file": "données.csv",
        "received_at": datetime(2026, 3, 8, 18, 0, tzinfo=UTC),
        "payout_total": Decimal("12.500000"),
        "outcomes": {"inserted": np.int64(3), "rejected": 1},
        "warnings": [],
    }
    assert write_summary(path, summary) == path
    text = path.read_text(encoding="utf-8")
    assert '"file": "données.csv"' in text  # not \u-escaped
    assert text.startswith('{\n  "file"')  # indent 2, keys in the given order
    assert json.loads(text) == {
        "file": "données.csv",
        "received_at": "2026-03-08T18:00:00+00:00",
        "payout_total": "12.500000",
        "outcomes": {"inserted": 3, "rejected": 1},
        "warnings": [],
    }
    assert [p.name for p in tmp_path.iterdir()] == ["s.summary.json"]


def test_summary_refuses_unknown_types_and_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        write_summary(tmp_path / "s.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("original", "stem"),
    [
        ("conversions.csv", "conversions"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\conv.csv", "conv"),
        (" spaced name.csv", "spaced_name"),
        ("-leading.csv", "leading"),
        (".hidden.csv", "hidden"),
        ("données été.csv", "donn_es__t_"),
        ("a" * 200 + ".csv", "a" * 80),
        ("--.csv", "file"),
        ("", "file"),
        ("..", "file"),
    ],
)
def test_report_paths_sanitise_the_name(tmp_path, original, stem):
    received = datetime(2026, 3, 8, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    csv_path, json_path = report_paths(tmp_path, received, original, HASH)
    folder = tmp_path / "2026-03-09"  # the UTC date: 23:30 in New York is 03:30 UTC next day
    assert folder.is_dir()
    assert csv_path == folder / f"{stem}.0123456789ab.rejected.csv"
    assert json_path == folder / f"{stem}.0123456789ab.summary.json"


def test_report_paths_refuse_naive_times_and_non_hex_hashes(tmp_path):
    with pytest.raises(ValueError, match="timezone"):
        report_paths(tmp_path, datetime(2026, 1, 1), "a.csv", HASH)
    with pytest.raises(ValueError, match="hex"):
        report_paths(tmp_path, datetime(2026, 1, 1, tzinfo=UTC), "a.csv", "../../x/0123456789")
