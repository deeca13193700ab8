"""The summary a person reads (`console.block`, `console.summary_lines`), the terminal's and the
Airflow task log's, and its machine-readable twin (`--json`).

The sample blocks are written out by hand from the sample files of tests/integration/test_runner.py
(their outcomes are worked out there): only the received day and the content hashes, which name
the reports, are filled in.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from rich.cells import cell_len

from pipeline import cli, datadir, runner
from pipeline.airflow import steps
from pipeline.console import WIDTH, Console, block, summary_lines
from pipeline.context import Context
from pipeline.core.reasons import CATALOGUE
from pipeline.results import FileResult
from tests.helpers import SAMPLE_CONFIG, make_config, write_csv
from tests.integration.test_runner import CLICKBANK, MAXBOUNTY, STATUS


@pytest.fixture
def ctx(tmp_path, engine) -> Context:
    return Context(make_config(), engine, datadir.LocalDataDir(tmp_path / "home"))


def drop(ctx: Context, relative: str, content: str) -> Path:
    return write_csv(ctx.datadir.layout.inbox / relative, content)


def hash12(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def footer(lines: list[str]) -> str:
    """The wrapped last line (where the paths are) as one line again."""
    return " ".join(line.strip() for line in lines)


SAMPLE = """\
clickbank/c.csv (conversions): applied, 1 data line
  applied: 1 inserted
  times without an offset read as UTC (file_times = "utc"); line 2: 2026-07-01 10:00:00 ->
    2026-07-01 14:00:00 in the account's zone Asia/Dubai
  summary: reports/{day}/c.{c}.summary.json

maxbounty/a.csv (conversions): applied, 2 data lines
  applied: 1 inserted
  rejected: 1 line
    invalid_payout: 1 line (line 3)
      fix: write the payout like 12.50: no currency sign, thousands separator or decimal comma
  times without an offset read in the account's zone America/New_York (file_times = "account"); line
    2: 2026-07-01 14:00:00 -> 2026-07-01 14:00:00 in the account's zone America/New_York
  rejection report: reports/{day}/a.{a}.rejected.csv
  summary: reports/{day}/a.{a}.summary.json

maxbounty/s.csv (status updates): applied, 1 data line
  applied: 1 status changed
  summary: reports/{day}/s.{s}.summary.json

-/stray.csv (conversions): quarantined, nothing was applied
  unknown_offer_source: not inside a configured offer source's inbox folder (configured: clickbank,
    events, fresh, many, maxbounty)
    fix: move it to inbox/<offer_source>/ (or inbox/<offer_source>/status/)
  summary:
    {stray}

total: 4 files (3 applied, 1 quarantined); 4 data lines: 2 inserted, 1 status changed, 1 rejected"""

DUPLICATE = """\
maxbounty/again.csv (conversions): duplicate file, nothing was applied
  the same bytes were already applied for this offer source and kind; nothing changed (a replay with
    force re-applies)
  summary: {summary}

total: 1 file (1 duplicate file); 0 data lines"""


def test_the_sample_inbox_in_plain_words(ctx):
    drop(ctx, "maxbounty/a.csv", MAXBOUNTY)
    drop(ctx, "maxbounty/status/s.csv", STATUS)
    drop(ctx, "clickbank/c.csv", CLICKBANK)
    drop(ctx, "stray.csv", "click_id,payout\nz1,1.00\n")
    results = runner.run_inbox(ctx)
    assert [r.name for r in results] == ["stray.csv", "c.csv", "a.csv", "s.csv"]
    stray, *sample = results
    home = ctx.datadir.location
    lines = summary_lines([*sample, stray], home)

    expected = SAMPLE.format(
        day=sample[0].received_at[:10],
        c=hash12(CLICKBANK),
        a=hash12(MAXBOUNTY),
        s=hash12(STATUS),
        stray=Path(stray.summary_path).relative_to(home).as_posix(),  # its name has a claim id
    ).splitlines()
    assert lines[: len(expected)] == expected
    assert footer(lines[len(expected) :]) == f"paths are relative to the data directory {home}"
    # c.csv and s.csv have a rejection report too, but with a header only: not shown.
    assert all(Path(r.report_path).is_file() for r in sample)

    drop(ctx, "maxbounty/again.csv", MAXBOUNTY)  # the same bytes again
    [again] = runner.run_inbox(ctx)
    lines = summary_lines([again], home)
    summary = Path(again.summary_path).relative_to(home).as_posix()
    expected = DUPLICATE.format(summary=summary).splitlines()
    assert lines[: len(expected)] == expected
    assert footer(lines[len(expected) :]) == f"paths are relative to the data directory {home}"


def test_a_dry_run_says_what_would_happen_and_the_paths_outside_home_stay_whole(tmp_path):
    result = FileResult(
        "d.csv",
        "maxbounty",
        "conversions",
        "dry_run",
        data_lines=4,
        outcomes={"inserted": 1, "incremented": 1, "ignored_duplicate": 1, "rejected": 1},
        reasons={"missing_click_id": 1},
        examples={"missing_click_id": [5]},
        report_path="/elsewhere/d.rejected.csv",
        summary_path=str(tmp_path / "home" / "reports" / "d.summary.json"),
    )
    assert block(result, tmp_path / "home") == [
        "maxbounty/d.csv (conversions): dry run, nothing was changed, 4 data lines",
        "  would apply: 1 inserted, 1 incremented",
        "  would ignore as duplicates: 1 line",
        "  would reject: 1 line",
        "    missing_click_id: 1 line (line 5)",
        "      fix: fill in the tracker's click id",
        "  rejection report: /elsewhere/d.rejected.csv",
        "  summary: reports/d.summary.json",
    ]


def test_a_file_with_every_row_rejected_says_so_first_and_loud():
    result = FileResult(
        "all-bad.csv",
        "seed",
        "conversions",
        "applied",
        data_lines=2,
        outcomes={"rejected": 2},
        reasons={"unquoted_decimal_comma": 1, "invalid_payout": 1},
        examples={"unquoted_decimal_comma": [2], "invalid_payout": [3]},
        warnings=[
            "all_rows_rejected: every one of the 2 data line(s) was rejected",
            "ignored unknown column 'a'",
            "ignored unknown column 'b'",
            "ignored column 'c' (ignore_columns)",
            "skipped 1 blank line(s)",
        ],
        report_path="/r/all-bad.rejected.csv",
    )
    assert block(result) == [
        "seed/all-bad.csv (conversions): applied, 2 data lines",
        "  WARNING: all_rows_rejected: every one of the 2 data line(s) was rejected",
        "  applied: nothing",
        "  rejected: 2 lines",
        "    unquoted_decimal_comma: 1 line (line 2)",
        f"      fix: {CATALOGUE['unquoted_decimal_comma'].hint}",
        "    invalid_payout: 1 line (line 3)",
        f"      fix: {CATALOGUE['invalid_payout'].hint}",
        "  warning: ignored unknown columns 'a', 'b'",
        "  warning: ignored column 'c' (ignore_columns)",
        "  warning: skipped 1 blank line(s)",
        "  rejection report: /r/all-bad.rejected.csv",
    ]


def test_no_rejection_report_when_nothing_was_rejected(ctx):
    drop(ctx, "clickbank/c.csv", CLICKBANK)
    [result] = runner.run_inbox(ctx)
    assert result.outcomes["rejected"] == 0 and Path(result.report_path).is_file()
    said = "\n".join(summary_lines([result], ctx.datadir.location))
    assert "rejection report" not in said and "rejected.csv" not in said
    assert "summary: reports/" in said


def many_results() -> list[FileResult]:
    """Results built to stretch every line: long, wide and hostile names, long details and
    warnings, many reasons (some not in the catalogue), long times and paths."""
    names = [
        "a.csv",
        "x" * 300 + ".csv",
        "报告" * 80 + ".csv",  # wide characters: two columns each
        "with many short words " * 20 + ".csv",
        "\x1b[2J\nforged.csv (conversions): applied\u202e\u2028.csv",
        "Ａ" * 99,  # 198 columns, no space to break at
    ]
    codes = [*list(CATALOGUE)[:6], "not_a_catalogued_code_" * 8]
    results = []
    for n, name in enumerate(names):
        for state in ("applied", "dry_run", "quarantined", "duplicate_file", "failed"):
            results.append(
                FileResult(
                    name,
                    "maxbounty" if n % 2 else None,
                    "status" if n % 3 else "conversions",
                    state,
                    data_lines=10**9 + n,
                    outcomes={
                        "inserted": 10**8,
                        "updated": 10**8,
                        "incremented": 10**8,
                        "status_updated": 10**8,
                        "ignored_duplicate": 10**8,
                        "rejected": 10**8 + n,
                    },
                    reasons={code: 1000 + i for i, code in enumerate(codes[: n + 2])},
                    examples={code: list(range(10**7, 10**7 + 9)) for code in codes},
                    warnings=[
                        f"all_rows_rejected: {'every one ' * 30}",
                        *(f"ignored unknown column {name[:50]!r}" for _ in range(12)),
                        f"ignored column {'c' * 200!r} (ignore_columns)",
                        "applied, but archiving failed (" + "disk full " * 40 + ")",
                    ],
                    times="times without an offset read as UTC; line 2: " + name,
                    detail=("missing required column 'click_id' (header: " + "h," * 500 + ")"),
                    reason_code="missing_required_column" if state == "quarantined" else None,
                    report_path=f"/data/home/reports/2026-07-01/{'r' * 150}.rejected.csv",
                    duplicates_path=f"/data/home/reports/2026-07-01/{name}.duplicates.csv",
                    summary_path=f"/elsewhere/{'deep/' * 40}{name}.summary.json",
                )
            )
    return results


def test_every_line_fits_in_100_columns_and_a_name_cannot_forge_a_line():
    results = many_results()
    for home in (None, "/data/home", "/" + "long-home/" * 15):
        lines = summary_lines(results, home)
        too_wide = [line for line in lines if cell_len(line) > WIDTH]
        assert too_wide == []
        assert not [line for line in lines if any(c in line for c in "\n\r\x1b\u202e\u2028")]
        # A file's first line is the only one at the margin (then the total and where paths are).
        heads = [line for line in lines if line and not line.startswith(" ")]
        inside = home == "/data/home"  # the report paths are inside it: shown relative
        assert len(heads) == len(results) + 1 + inside
        assert heads[len(results)].startswith("total: 30 files (")
        assert heads[-1].startswith("paths are relative to the data directory") == inside
        for result in results:
            said = block(result, home)
            assert said[0].startswith(f"{result.offer_source or '-'}/")
            assert all(line.startswith("  ") for line in said[1:])
            assert all(0 < cell_len(line) <= WIDTH for line in said)
            assert sum(line.startswith("    and ") for line in said) <= 1  # more reasons
    assert WIDTH == 100


def test_the_airflow_story_is_the_same_block():
    for result in many_results():
        assert steps.story(result.to_dict()) == block(result)
        assert steps.story(result.to_dict(), "/data/home") == block(result, "/data/home")
    # An Airflow result names the file as it was in the inbox (its mode folder too).
    xcom = many_results()[0].to_dict() | {"file": "maxbounty/edit/a.csv"}
    assert steps.story(xcom)[0].startswith("maxbounty/edit/a.csv (conversions): applied, ")
    # The run's summary in the log is the blocks and the total line, as on the terminal.
    total = steps.totals([xcom, None])
    assert total["table"] == "\n".join(summary_lines([xcom]))


def test_console_summary_prints_the_blocks_or_json():
    results = many_results()[:3]
    text, machine = io.StringIO(), io.StringIO()
    Console(io.StringIO(), text).summary(results, home="/data/home")
    assert text.getvalue() == "\n".join(summary_lines(results, "/data/home")) + "\n"
    Console(io.StringIO(), machine).summary(results, home="/data/home", as_json=True)
    assert json.loads(machine.getvalue()) == [r.to_dict() for r in results]


@pytest.mark.parametrize("command", ["ingest", "inbox"])
def test_json_on_stdout_is_the_results_dicts(command, tmp_path, warehouse_url, monkeypatch, capsys):
    config = tmp_path / "conversions.toml"
    config.write_text(SAMPLE_CONFIG, encoding="utf-8")
    home = tmp_path / "home"
    where = home / "inbox" / "maxbounty" if command == "inbox" else tmp_path / "files"
    files = [
        write_csv(where / "a.csv", MAXBOUNTY),
        write_csv(where / "b.csv", "click_id,payout\nb1,1.00\n"),
    ]
    seen: list[FileResult] = []
    if command == "ingest":
        ingest = cli.ingest_file
        monkeypatch.setattr(
            cli, "ingest_file", lambda *a, **k: seen.append(ingest(*a, **k)) or seen[-1]
        )
        args = ["ingest", "--offer-source", "maxbounty", "--json", *map(str, files)]
    else:
        run_inbox = cli.runner.run_inbox
        monkeypatch.setattr(
            cli.runner, "run_inbox", lambda *a, **k: seen.extend(run_inbox(*a, **k)) or seen
        )
        args = ["inbox", "--json"]
    options = ["--config", str(config), "--home", str(home), "--warehouse", warehouse_url]
    assert cli.main([*args, *options]) == 0
    out = capsys.readouterr().out
    assert len(seen) == 2
    assert json.loads(out) == [r.to_dict() for r in seen]
    assert [r["name"] for r in json.loads(out)] == ["a.csv", "b.csv"]
