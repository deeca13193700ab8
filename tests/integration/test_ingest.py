"""End to end on real files and a real warehouse (SQLite and PostgreSQL), expectations by hand."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, text

from pipeline import export, warehouse
from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from tests.helpers import assert_accounted, make_config, write_csv

RECEIVED = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
HEADER = "click_id,payout,conversion_time,conversion_type,status,event_id,currency\n"


@pytest.fixture
def run(engine, tmp_path):
    """ingest(text or path, offer_source, **options) -> FileResult, invariant checked."""
    counter = iter(range(1_000_000))

    def ingest(
        content, offer_source="maxbounty", *, config=None, encoding="utf-8", name=None, **options
    ):
        if isinstance(content, Path):
            path = content
        else:
            path = write_csv(tmp_path / "in" / (name or f"f{next(counter)}.csv"), content, encoding)
        result = ingest_file(
            Context(config or make_config(), engine, LocalDataDir(tmp_path)),
            Upload(
                path,
                offer_source,
                received_at=options.pop("received_at", RECEIVED),
                **options,
            ),
        )
        assert_accounted(result, path, engine)
        return result

    return ingest


def rows(engine, offer_source=None, config=None, local=False):
    data = export.frame(
        engine, config or make_config(), offer_source=offer_source, local_time=local
    )
    return [
        tuple(None if v is None or v != v else v for v in r)
        for r in data[
            [
                "click_id",
                "conversion_type",
                "event_id",
                "status",
                "payout",
                "currency",
                "converted_at",
                "duplicate_status",
            ]
        ].itertuples(index=False)
    ]


def report_rows(result) -> list[dict[str, str]]:
    with open(result.report_path, encoding="utf-8-sig", newline="") as fh:
        first = fh.readline()
        fh.seek(0)
        if first.startswith("\ufeff"):
            fh.read(1)
        delimiter = max([",", ";", "\t"], key=first.count)
        return list(csv.DictReader(fh, delimiter=delimiter))


# --- times -------------------------------------------------------------------------------------


def test_seed_example_account_and_utc_files_land_the_same_instant(run, engine):
    config = make_config(nyutc={"account": "ny", "file_times": "utc"})
    run(HEADER + "a1,1.00,2026-07-01 14:00:00,,,,\n", "maxbounty", config=config)
    run(HEADER + "a2,1.00,2026-07-01 18:00:00,,,,\n", "nyutc", config=config)
    times = {r[0]: r[6] for r in rows(engine, config=config)}
    assert times == {"a1": "2026-07-01T18:00:00Z", "a2": "2026-07-01T18:00:00Z"}
    local = {r[0]: r[6] for r in rows(engine, config=config, local=True)}
    assert local == {"a1": "2026-07-01T14:00:00-04:00", "a2": "2026-07-01T14:00:00-04:00"}


def test_gmt_plus_4_account_and_new_york_winter(run, engine):
    config = make_config(dubailocal={"account": "dubai", "file_times": "account"})
    run(HEADER + "d1,1.00,2026-07-01 14:00:00,,,,\n", "dubailocal", config=config)
    run(HEADER + "w1,1.00,2026-01-15 14:00:00,,,,\n", "maxbounty", config=config)
    times = {r[0]: r[6] for r in rows(engine, config=config)}
    assert times == {"d1": "2026-07-01T10:00:00Z", "w1": "2026-01-15T19:00:00Z"}


@pytest.mark.parametrize(
    "policy, expected",
    [
        (
            {},
            {"gap": "rejected:nonexistent_local_time", "overlap": "rejected:ambiguous_local_time"},
        ),
        (
            {"nonexistent_times": "shift_forward", "ambiguous_times": "earliest"},
            {"gap": "2026-03-08T07:00:00Z", "overlap": "2026-11-01T05:30:00Z"},
        ),
        (
            {"ambiguous_times": "latest"},
            {"gap": "rejected:nonexistent_local_time", "overlap": "2026-11-01T06:30:00Z"},
        ),
    ],
)
def test_dst_edges_per_policy(run, engine, policy, expected):
    config = make_config(maxbounty=policy)
    result = run(
        HEADER + "gap,1.00,2026-03-08 02:30:00,,,,\noverlap,1.00,2026-11-01 01:30:00,,,,\n",
        config=config,
    )
    got = {r[0]: r[6] for r in rows(engine, config=config)}
    for rr in report_rows(result) if result.outcomes["rejected"] else []:
        got[rr["click_id"]] = f"rejected:{rr['reason_code']}"
    assert got == expected


def test_explicit_offsets_future_and_day_first(run, engine):
    result = run(
        HEADER
        + "z,1.00,2026-07-01T18:00:00Z,,,,\n"
        + "o,1.00,2026-07-01 20:00:00+02:00,,,,\n"
        + "fut,1.00,2026-11-20 12:05:01Z,,,,\n"
        + "ok,1.00,2026-11-20 12:05:00Z,,,,\n"
        + "dayfirst,1.00,01/07/2026 14:00:00,,,,\n"
        + "empty,1.00,,,,,\n"
    )
    times = {r[0]: r[6] for r in rows(engine)}
    assert times == {
        "z": "2026-07-01T18:00:00Z",
        "o": "2026-07-01T18:00:00Z",
        "ok": "2026-11-20T12:05:00Z",
        "empty": "2026-11-20T12:00:00Z",
    }
    assert {r["click_id"]: r["reason_code"] for r in report_rows(result)} == {
        "fut": "time_in_future",
        "dayfirst": "time_reformatted_by_spreadsheet",  # never guessed, and said why
    }


# --- duplicate modes across files --------------------------------------------------------------


def test_increment_payout_is_exact_across_files(run, engine, warehouse_url):
    run(HEADER + "p1,0.10,2026-11-01 10:00:00,Purchase,,,\n")
    result = run(HEADER + "p1,0.20,2026-11-01 11:00:00,Purchase,,,\n")
    assert result.outcomes["incremented"] == 1
    assert [r[4] for r in rows(engine)] == ["0.30"]
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT payout FROM conversions")).scalar_one()
    assert Decimal(str(raw)) == Decimal("0.30")
    with engine.connect() as conn:
        hist = conn.execute(
            select(
                warehouse.conversion_history.c.action,
                warehouse.conversion_history.c.old_payout,
                warehouse.conversion_history.c.new_payout,
            ).order_by(warehouse.conversion_history.c.history_id)
        ).all()
    assert [tuple(h) for h in hist] == [("insert", None, 100_000), ("increment", 100_000, 300_000)]


def test_every_mode_in_file_and_against_the_warehouse(run, engine):
    # maxbounty: ignore (Purchase: increment); clickbank: edit (UTC times); events:
    # ignore_by_event_id; fresh: new_or_repeated; many: create_new.
    run(HEADER + "k1,1.00,2026-11-01 10:00:00,,,,\n", "maxbounty")
    r = run(
        HEADER + "k1,2.00,2026-11-01 10:00:00,,,,\nk2,3.00,2026-11-01 10:00:00,,,,\n"
        "k2,4.00,2026-11-01 10:00:00,,,,\n",
        "maxbounty",
    )
    assert (r.outcomes["inserted"], r.outcomes["ignored_duplicate"]) == (1, 2)

    run(HEADER + "e1,5.00,2026-11-01 10:00:00,,pending,,\n", "clickbank")
    r = run(HEADER + "e1,,,,declined,,\ne1,6.50,,,,,EUR\n", "clickbank")
    assert r.outcomes["updated"] == 2

    r = run(
        HEADER + "v1,1.00,2026-11-01 10:00:00,,,ord-1,\nv1,1.00,2026-11-01 10:00:00,,,ord-1,\n"
        "v1,1.00,2026-11-01 10:00:00,,,ord-2,\nv2,1.00,2026-11-01 10:00:00,,,,\n",
        "events",
    )
    assert (r.outcomes["inserted"], r.outcomes["ignored_duplicate"], r.outcomes["rejected"]) == (
        2,
        1,
        1,
    )
    assert report_rows(r)[0]["reason_code"] == "missing_event_id"

    run(HEADER + "n1,1.00,2026-11-01 10:00:00,,,,\nn1,1.00,2026-11-01 10:00:00,,,,\n", "fresh")
    run(HEADER + "c1,1.00,2026-11-01 10:00:00,,,,\nc1,-1.00,2026-11-01 10:00:00,,,,\n", "many")

    got = sorted(rows(engine))
    assert got == sorted(
        [
            ("k1", "", None, "approved", "1.00", "USD", "2026-11-01T15:00:00Z", "unknown"),
            ("k2", "", None, "approved", "3.00", "USD", "2026-11-01T15:00:00Z", "unknown"),
            ("e1", "", None, "declined", "6.50", "EUR", "2026-11-01T10:00:00Z", "unknown"),
            ("v1", "", "ord-1", "approved", "1.00", "USD", "2026-11-01T15:00:00Z", "unknown"),
            ("v1", "", "ord-2", "approved", "1.00", "USD", "2026-11-01T15:00:00Z", "unknown"),
            ("n1", "", None, "approved", "1.00", "USD", "2026-11-01T15:00:00Z", "new"),
            ("n1", "", None, "approved", "1.00", "USD", "2026-11-01T15:00:00Z", "repeated"),
            ("c1", "", None, "approved", "1.00", "USD", "2026-11-01T15:00:00Z", "unknown"),
            ("c1", "", None, "approved", "-1.00", "USD", "2026-11-01T15:00:00Z", "unknown"),
        ]
    )


def test_type_override_and_run_override(run, engine):
    run(
        HEADER
        + "t1,1.00,2026-11-01 10:00:00,Purchase,,,\nt1,2.00,2026-11-01 10:00:00,Purchase,,,\n"
        "t1,5.00,2026-11-01 10:00:00,Lead,,,\nt1,6.00,2026-11-01 10:00:00,Lead,,,\n"
    )
    got = {(r[0], r[1]): r[4] for r in rows(engine)}
    assert got == {("t1", "Purchase"): "3.00", ("t1", "Lead"): "5.00"}
    r = run(HEADER + "t1,9.00,,Lead,,,\n", mode_override="edit")
    assert r.outcomes["updated"] == 1
    assert {(x[0], x[1]): x[4] for x in rows(engine)}[("t1", "Lead")] == "9.00"


def test_edit_targets_the_most_recent_of_several(run, engine):
    run(HEADER + "m1,1.00,2026-11-01 10:00:00,,,,\nm1,2.00,2026-11-02 10:00:00,,,,\n", "many")
    run(HEADER + "m1,7.00,,,,,\n", "many", mode_override="edit")
    got = sorted((r[6], r[4]) for r in rows(engine))
    assert got == [("2026-11-01T15:00:00Z", "1.00"), ("2026-11-02T15:00:00Z", "7.00")]


@pytest.mark.parametrize("batch_size", [1, 50_000])
def test_edits_stay_on_the_most_recent_before_the_file_even_once_one_moves_its_time(
    run, engine, batch_size
):
    """Worked by hand from `core.duplicates` (the most recent conversion is chosen as the file
    begins): A (Nov 1) and B (Nov 2) exist; the file's first row moves B to before A, its second
    sets a payout, and it goes to B still, in one batch or one row per batch (a merge that looked
    the key up again after the first row's write would find A the most recent)."""
    run(HEADER + "m1,1.00,2026-11-01 10:00:00,,,,\nm1,2.00,2026-11-02 10:00:00,,,,\n", "many")
    edits = HEADER + "m1,,2026-10-31 10:00:00,,,,\nm1,7.00,,,,,\n"
    r = run(edits, "many", mode_override="edit", batch_size=batch_size)
    assert r.outcomes["updated"] == 2
    got = sorted((r[6], r[4]) for r in rows(engine))
    assert got == [("2026-10-31T14:00:00Z", "7.00"), ("2026-11-01T15:00:00Z", "1.00")]


# --- status updates ----------------------------------------------------------------------------


def test_status_updates_none_one_many(run, engine):
    run(
        HEADER + "s1,1.00,2026-11-01 10:00:00,,,,\ns2,1.00,2026-11-01 10:00:00,Lead,,,\n"
        "s2,1.00,2026-11-01 10:00:00,Sale,,,\n",
        "maxbounty",
    )
    r = run(
        "click_id,status,conversion_type\ns1,Declined,\ns2,declined,\ns2,pending,Sale\n"
        "nope,approved,\n",
        kind="status",
    )
    assert r.outcomes["status_updated"] == 2 and r.outcomes["rejected"] == 2
    assert {x["click_id"]: x["reason_code"] for x in report_rows(r)} == {
        "s2": "ambiguous_conversion",
        "nope": "unknown_conversion",
    }
    got = {(x[0], x[1]): x[3] for x in rows(engine)}
    assert got == {("s1", ""): "declined", ("s2", "Lead"): "approved", ("s2", "Sale"): "pending"}


# --- files as people make them -----------------------------------------------------------------


def test_excel_style_file(run, engine):
    content = "\ufeffClick ID;Revenue;Date;Type;Notes\r\nx1;12.50;2026-11-01 10:00:00;Lead;hi\r\n"
    r = run(content)
    assert r.warnings and "Notes" in r.warnings[0]
    assert rows(engine) == [
        ("x1", "Lead", None, "approved", "12.50", "USD", "2026-11-01T15:00:00Z", "unknown")
    ]


def test_utf16_file(run, engine):
    run("\ufeff" + HEADER + "u1,1.25,2026-11-01 10:00:00,,,,\n", encoding="utf-16-le")
    assert [r[4] for r in rows(engine)] == ["1.25"]


def test_bad_rows_beside_good_ones(run, engine):
    r = run(
        HEADER
        + "good,1.00,2026-11-01 10:00:00,,,,\n"
        + "6.21E+23,1.00,2026-11-01 10:00:00,,,,\n"
        + "short,1.00\n"
        + "comma,12,50,2026-11-01 10:00:00,,,,\n"
        + ",abc,nope,,weird,,QQQ\n"
        + "neg,-1.00,2026-11-01 10:00:00,,,,\n"
    )
    reasons = {x["line"]: x["reason_code"] for x in report_rows(r)}
    assert reasons == {
        "3": "click_id_mangled_by_spreadsheet",
        "4": "malformed_row",
        "5": "unquoted_decimal_comma",  # 12,50 split into 12 and 50: said, not "malformed"
        "6": "missing_click_id|invalid_payout|invalid_time|invalid_status|invalid_currency",
        "7": "negative_payout",
    }
    assert [x[0] for x in rows(engine)] == ["good"]


def test_missing_required_column_is_quarantined(run, engine):
    r = run("click_id,conversion_time\na,2026-11-01 10:00:00\n")
    assert r.state == "quarantined" and r.reason_code == "missing_required_column"
    assert "payout" in r.detail
    assert rows(engine) == []


def test_same_bytes_twice_apply_once(run, engine):
    content = HEADER + "d1,1.00,2026-11-01 10:00:00,Purchase,,,\n"
    assert run(content, name="a.csv").state == "applied"
    again = run(content, name="b.csv")
    assert again.state == "duplicate_file"
    assert [r[4] for r in rows(engine)] == ["1.00"]
    forced = run(content, name="c.csv", force=True)
    assert forced.state == "applied" and forced.outcomes["incremented"] == 1


def test_rejection_report_fixed_and_dropped_back(run, engine, tmp_path):
    r = run(
        HEADER + "ok,1.00,2026-11-01 10:00:00,,,,\nbad,1,00,2026-11-01 10:00:00,,,,\n"
        "fx,=1+1,2026-11-01 10:00:00,,,,\n"
    )
    report = Path(r.report_path).read_text(encoding="utf-8-sig")
    assert "'=1+1" in report  # neutralised for spreadsheets
    # Fix it as a user does in a spreadsheet: cell by cell, keeping the report's own columns.
    fixed_rows = report_rows(r)
    assert [x["click_id"] for x in fixed_rows] == ["bad", "fx"]
    bad, fx = fixed_rows
    # An unquoted decimal comma: the payout is shown joined, the other cells in their columns.
    assert bad["reason_code"] == "unquoted_decimal_comma"
    assert (bad["payout"], bad["conversion_time"]) == ("1,00", "2026-11-01 10:00:00")
    bad.update(payout="1.00")
    fx.update(payout="2.00")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(bad))
    writer.writeheader()
    writer.writerows(fixed_rows)
    fixed = out.getvalue()
    path = write_csv(tmp_path / "fixed.csv", fixed)
    again = run(path)
    assert again.state == "applied", again
    assert again.outcomes["inserted"] == 2 and again.outcomes["rejected"] == 0
    assert sorted((x[0], x[4]) for x in rows(engine)) == [
        ("bad", "1.00"),
        ("fx", "2.00"),
        ("ok", "1.00"),
    ]


def test_dry_run_changes_nothing_and_predicts_the_real_run(run, engine):
    content = HEADER + "q1,1.00,2026-11-01 10:00:00,,,,\nq1,2.00,2026-11-01 10:00:00,,,,\n"
    dry = run(content, dry_run=True)
    assert dry.state == "dry_run" and rows(engine) == []
    real = run(content)
    assert real.outcomes == dry.outcomes


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batch_size_does_not_change_results(run, engine, tmp_path, batch_size):
    lines = [HEADER.strip()]
    for i in range(40):
        click = f"b{i % 7}"
        payout = "x" if i % 11 == 0 else f"{i}.{i:02d}"
        lines.append(f"{click},{payout},2026-11-01 10:{i:02d}:00,{'Purchase' if i % 3 else ''},,,")
    content = "\n".join(lines) + "\n"
    big = run(content, name="big.csv")
    big_rows, big_report = rows(engine), report_rows(big)
    with engine.begin() as conn:
        for table in ("conversion_history", "rejected_rows", "conversions", "ingested_files"):
            conn.execute(text(f"DELETE FROM {table}"))
    small = run(content, name="small.csv", config=make_config(settings={"batch_size": batch_size}))
    assert rows(engine) == big_rows
    assert report_rows(small) == big_report
    assert small.outcomes == big.outcomes
