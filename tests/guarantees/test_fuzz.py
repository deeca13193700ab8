"""Fuzzing the whole ingest: whatever bytes arrive, every data line ends in exactly one outcome.

The guarantees proved here (README "Guarantees", DOMAIN.md section 9) hold for *any* file:

- no unhandled exception: the result is a `FileResult` whose state is one of `LEDGER_STATES`; a
  file that cannot be read as a whole is `quarantined` with a file-scope reason code of the
  catalogue and a detail, and then nothing but the ledger changed (never half applied);
- the accounting invariant (`helpers.assert_accounted`): outcomes add up to the data lines;
- every data line is in exactly one outcome: the rejection report's and the `rejected_rows`
  table's line numbers, plus the lines of the conversion history (inserted, updated,
  incremented) and the ignored duplicates, cover each data line once, and no other line.

How. Hypothesis builds files three ways (`strategies.py`): (1) a *model* of a table -- header
spellings, aliases, unknown, report, empty, duplicated and missing columns; rows that are valid, or
whose cells are anything from odd Unicode in click ids (combining marks, RTL, zero-width, emoji,
whitespace variants) to every accepted time shape and broken ones (DST gaps and overlaps in New
York, 24:00, Feb 30, years 1 and 9999, epoch numbers), huge, tiny and odd payouts; blank and
malformed rows; sometimes few click ids, so every duplicate mode has work -- written with a random
dialect: delimiter, `sep=` line, quoting with doubled quotes, line breaks inside quoted cells,
CR/LF/CRLF mixes, very long cells, BOMs and encodings (UTF-8 with or without BOM, UTF-16 LE/BE with
BOM, latin-1/cp1252); (2) such a file with damaged bytes (unbalanced quotes, NULs, invalid UTF-8,
surrogates as bytes, truncation, pipe delimiters, no BOM); (3) random bytes. Each file goes through
the real `ingest.ingest_file` (or `runner.run_inbox`, which claims, archives and quarantines) on a
real warehouse, for an offer source with random options (duplicate mode, negative payouts,
`file_times`, DST policies, a `time_format`, a per-type mode), at random batch sizes, sometimes as a
dry run.

The expectations come from a second reader (`oracle.py`) written from the README's rules ("Files"),
not from the pipeline: its own BOM and decoding rules, `sep=` line, header delimiter sniffing,
header matching with the aliases, and a character-by-character CSV tokenizer (the excel dialect:
doubled quotes, line breaks inside quotes, CR, LF and CRLF). (helpers' `independent_data_lines`
guesses the delimiter from the whole first line, quotes included, and splits lines the way
`str.splitlines` does, so it is not used for these dialects.) The reader predicts whether a file is
quarantined (and with which codes), and which line numbers are data lines with which cells; the
report must show each rejected line's cells as written. For files written from a model, the model is
checked against that reader first (so the writer cannot drift), and then, for offer sources where
every row inserts (`create_new`, `new_or_repeated`), each line's outcome is predicted from the
README's value rules: the exact reason codes of a rejected line, and the exact click id, payout, UTC
time, type, status, event id and currency stored for an accepted one. Where the README leaves a
value open (years 1 and 9999, non-ASCII case mapping, C1 controls) that line is only accounted for,
not predicted. Every stored payout must fit NUMERIC(18, 6), and none may be negative where negatives
are not allowed.

Each example gets an offer source of its own (`fz<n>`), so examples sharing the test's warehouse
never see each other's conversions; a file repeating an earlier example's bytes is therefore a
new upload, never a `duplicate_file`. CI runs a bounded number of examples; CONVERSIONS_SOAK=1
runs twenty times as many. atheris is not used (it is not installed in the venv). The bugs the
fuzzing found are pinned by plain regression tests at the end.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from sqlalchemy import Engine, func, select

from pipeline import ingest, runner, warehouse
from pipeline.context import Context
from pipeline.core.model import Config
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import LEDGER_STATES, MODES
from pipeline.datadir import LocalDataDir
from tests.guarantees.oracle import (
    MAX_PAYOUT_MICROS,
    REPORT_COLUMNS,
    Reading,
    Source,
    header_problem,
    matched,
    neutralise,
    read_independently,
    row_expectation,
    sniff,
    tokenize,
    undo_neutralisation,
)
from tests.guarantees.strategies import Upload, random_bytes, rarely, uploads
from tests.helpers import POSTGRES_URL, assert_accounted, make_config, soak_or

RECEIVED = datetime(2026, 7, 1, 18, 0, 0, tzinfo=UTC)  # 14:00 in New York (EDT, UTC-4)
_OFFER_SOURCES = itertools.count(1)


# CONVERSIONS_FUZZ_NO_SHRINK=1 reports the first failing example as found: shrinking an example
# that runs a whole ingest can take minutes.
NO_SHRINK = os.environ.get("CONVERSIONS_FUZZ_NO_SHRINK", "") not in ("", "0")


def fuzz_settings(ci: int, soak: int) -> settings:
    return settings(
        max_examples=soak_or(ci, soak),
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate] if NO_SHRINK else list(Phase),
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# --- checking one result -----------------------------------------------------------------------

_TABLES = (
    warehouse.ingested_files,
    warehouse.conversions,
    warehouse.conversion_history,
    warehouse.rejected_rows,
)


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in _TABLES
        }


def offer_source_config(source: Source) -> tuple[str, Config]:
    """A config with a new offer source of these options (New York account, USD, approved)."""
    name = f"fz{next(_OFFER_SOURCES)}"
    options = {
        "duplicate_mode": source.mode,
        "allow_negative_payout": source.allow_negative,
        "file_times": source.file_times,
        "nonexistent_times": source.nonexistent,
        "ambiguous_times": source.ambiguous,
    }
    if source.time_format is not None:
        options["time_format"] = source.time_format
    if source.purchase_increments:
        options["conversion_types"] = {"Purchase": {"duplicate_mode": "increment_payout"}}
    if source.decimal_separator != ".":
        options["decimal_separator"] = source.decimal_separator
    return name, make_config(**{name: options})


def expected_report_cells(reading: Reading, line: int) -> dict[str, str]:
    """README: a rejected row's original cells as written (the report then neutralises formulas);
    a malformed row's by position, extra cells joined into the last column (an unquoted decimal
    comma's payout joined back)."""
    cells = reading.report_cells(line)
    return {
        n: c for n, c in zip(reading.names, cells, strict=True) if matched(n) not in REPORT_COLUMNS
    }


def check(
    result: ingest.FileResult,
    upload: Upload,
    engine: Engine,
    *,
    dry_run: bool,
    source: Source,
    changed_later: bool = False,
) -> dict[str, int]:
    """Every property of the module docstring for one ingested file; returns what the file
    added to each table (the caller checks that nothing else changed)."""
    reading = read_independently(upload.raw, upload.kind)
    if currently_in_test_context():  # the fuzz tests, not the regressions
        note(f"{upload.how}; expected quarantine={set(reading.quarantine)}; result={result}")
        event(f"state: {result.state} {result.reason_code or ''}")
        event(f"encoding: {upload.how.split(' ')[0]}")
        event(f"faithful to a model: {upload.model is not None}")
        for code in result.reasons:
            event(f"row reason: {code}")
        for outcome, count in result.outcomes.items():
            if count:
                event(f"outcome: {outcome}")
    if upload.model is not None:  # the writer here is faithful to its model
        names = upload.model.names
        problem, named, columns, undecided = (
            header_problem(names, upload.kind)
            if any(n.strip() for n in names)
            else ("empty_file", (), {}, False)
        )
        assert not undecided, "models hold only headers the README settles"
        parameters = upload.model.parameters
        zone = None if parameters is None else parameters[1]
        if parameters is not None and zone is None:
            problem = "invalid_parameters_line"  # before the header is looked at
        assert reading.quarantine == (frozenset({problem}) if problem else frozenset())
        assert not reading.undecided and (problem or reading.time_zone == zone)
        if not problem:
            assert (reading.names, reading.columns) == (named, columns)
            kept = [r for r in upload.model.rows if "".join(r).strip()]
            assert list(reading.data.values()) == kept
    assert result.state in LEDGER_STATES
    effects = effects_of(result, engine)
    received = datetime.fromisoformat(result.received_at)
    with engine.connect() as conn:
        ledger = (
            conn.execute(
                select(warehouse.ingested_files).where(
                    warehouse.ingested_files.c.file_id == result.file_id
                )
            )
            .mappings()
            .one()
        )
    assert ledger["state"] == result.state
    assert_accounted(replace(result, report_path=None), None, engine)  # report: checked below
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))
    assert (summary["state"], summary["data_lines"], summary["outcomes"]) == (
        result.state,
        result.data_lines,
        result.outcomes,
    )
    undecided = result.state == "quarantined" and result.reason_code in reading.undecided
    if reading.quarantine or undecided:
        assert result.state == "quarantined"
        assert result.reason_code in reading.quarantine | reading.undecided
        assert CATALOGUE[result.reason_code].scope == "file"
        assert result.detail and ledger["detail"].startswith(f"{result.reason_code}: ")
        assert result.report_path is None and result.data_lines == 0
        assert effects == NOTHING_BUT_THE_LEDGER
        return effects
    assert result.state == ("dry_run" if dry_run else "applied"), (
        result.reason_code,
        result.detail,
    )
    assert result.data_lines == len(reading.data)
    if reading.blank:
        assert f"skipped {reading.blank} blank line(s)" in result.warnings

    # The rejection report: one row per rejected line, never twice, only data lines.
    with open(result.report_path, encoding="utf-8-sig", newline="") as fh:
        report = list(csv.reader(fh, delimiter=reading.delimiter))
    origin = reading.origin
    first = ["original_line"] if origin is not None else []
    expected_header = ["line", *first, *reading.cell_names, "reason_code", "reason"]
    assert [undo_neutralisation(c) for c in report[0]] == expected_header
    rejected: dict[int, frozenset[str]] = {}
    for row in report[1:]:
        assert len(row) == len(expected_header), row
        line = int(row[0])
        assert line in reading.data and line not in rejected, line
        rejected[line] = frozenset(row[-2].split("|"))
        assert all(CATALOGUE[c].scope == "row" for c in rejected[line]) and row[-1]
        want = expected_report_cells(reading, line)
        if origin is not None:  # a re-dropped report: the first file's line comes first
            assert row[1] == neutralise(reading.report_cells(line)[origin]), line
        assert row[1 + len(first) : -2] == [neutralise(want[n]) for n in reading.cell_names], line
        if reading.malformed(line):
            assert rejected[line] == {reading.malformed_code(line)}
    for line in reading.data:
        if reading.malformed(line):
            assert line in rejected
    assert len(rejected) == result.outcomes["rejected"]

    with engine.connect() as conn:
        stored = {
            r.line: (r.reason_codes, json.loads(r.cells))
            for r in conn.execute(
                select(warehouse.rejected_rows).where(
                    warehouse.rejected_rows.c.file_id == result.file_id
                )
            )
        }
        history = [
            r.line
            for r in conn.execute(
                select(warehouse.conversion_history.c.line).where(
                    warehouse.conversion_history.c.file_id == result.file_id
                )
            )
        ]
        inserted = {
            r.line: r
            for r in conn.execute(
                select(warehouse.conversions).where(
                    warehouse.conversions.c.file_id == result.file_id
                )
            )
        }
        payouts = [
            r.payout
            for r in conn.execute(
                select(warehouse.conversions.c.payout).where(
                    warehouse.conversions.c.offer_source == result.offer_source
                )
            )
        ]
    # No payout outside NUMERIC(18, 6), none negative where negatives are not allowed.
    assert all(-MAX_PAYOUT_MICROS <= p <= MAX_PAYOUT_MICROS for p in payouts), payouts
    assert source.allow_negative or all(p >= 0 for p in payouts), payouts
    o = result.outcomes
    if dry_run:
        assert effects == NOTHING_BUT_THE_LEDGER
    else:
        assert {
            line: frozenset(codes.split("|")) for line, (codes, _) in stored.items()
        } == rejected
        for line, (_, cells) in stored.items():
            assert cells == expected_report_cells(reading, line), line
        assert len(history) == len(set(history)), "a line in the history twice"
        assert not set(history) & set(rejected), "a line both applied and rejected"
        assert set(history) <= set(reading.data)
        assert len(history) == o["inserted"] + o["updated"] + o["incremented"] + o["status_updated"]
        untracked = set(reading.data) - set(history) - set(rejected)
        assert len(untracked) == o["ignored_duplicate"]
        assert set(inserted) <= set(history) and len(inserted) == o["inserted"]
        assert effects == {
            "ingested_files": 1,
            "conversions": o["inserted"],
            "conversion_history": len(history),
            "rejected_rows": o["rejected"],
        }

    if upload.model is None or upload.kind != "conversions":
        return effects
    wants = {
        line: row_expectation(reading, cells, source, received)
        for line, cells in reading.data.items()
        if not reading.malformed(line)
    }
    if source.mode in ("create_new", "new_or_repeated"):  # every row inserts or is rejected
        for line, want in wants.items():
            if want is None:
                continue
            if "codes" in want:
                assert rejected.get(line) == want["codes"], (line, reading.data[line])
            else:
                assert line not in rejected, (line, reading.data[line], rejected[line])
                assert dry_run or line in inserted, line
    no_edits = ("create_new", "new_or_repeated", "ignore", "ignore_by_event_id")
    if source.mode in no_edits and not changed_later:
        for line, row in inserted.items():  # no later row of the file changes a conversion
            want = wants[line]
            if want is not None:
                got = {k: getattr(row, k) for k in want.get("values", {})}
                assert got == want.get("values"), (line, reading.data[line])
    return effects


def ingest_one(
    upload: Upload,
    engine: Engine,
    folder: Path,
    *,
    source: Source,
    dry_run: bool,
    batch_size: int,
) -> ingest.FileResult:
    name, config = offer_source_config(source)
    path = folder / "upload.csv"
    path.write_bytes(upload.raw)
    before = table_counts(engine)
    result = ingest.ingest_file(
        Context(config, engine, LocalDataDir(folder)),
        ingest.Upload(
            path,
            name,
            upload.kind,
            received_at=RECEIVED,
            dry_run=dry_run,
            batch_size=batch_size,
        ),
    )
    effects = check(result, upload, engine, dry_run=dry_run, source=source)
    after = table_counts(engine)
    assert {t: after[t] - before[t] for t in after} == effects, "something else changed"
    return result


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture
def sqlite_engine(tmp_path: Path):
    """One SQLite warehouse for all examples of a test (each example has its own offer source)."""
    engine = warehouse.connect(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield engine
    engine.dispose()


SOURCES = st.builds(
    Source,
    mode=st.sampled_from(["create_new", "create_new", "new_or_repeated", *MODES]),
    allow_negative=st.booleans(),
    file_times=st.sampled_from(["account", "account", "utc", "utc", "Europe/Berlin"]),
    nonexistent=st.sampled_from(["reject", "shift_forward"]),
    ambiguous=st.sampled_from(["reject", "earliest", "latest"]),
    time_format=st.sampled_from([None, None, "%d/%m/%Y %H:%M", "%Y%m%d%H%M%S"]),
    purchase_increments=st.booleans(),
    decimal_separator=st.sampled_from([".", ".", ".", ","]),
)
OPTIONS = st.fixed_dictionaries(
    {
        "source": SOURCES,
        "dry_run": rarely(6),
        "batch_size": st.sampled_from([1, 2, 3, 50_000, 50_000]),
    }
)


@pytest.mark.slow
@fuzz_settings(ci=100, soak=2000)
@given(upload=uploads(), options=OPTIONS)
def test_any_file_is_applied_with_every_line_accounted_for_or_quarantined_whole(
    sqlite_engine: Engine, upload: Upload, options: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ingest_one(upload, sqlite_engine, Path(folder), **options)


@fuzz_settings(ci=60, soak=1200)
@given(upload=random_bytes("conversions") | random_bytes("status"), options=OPTIONS)
def test_random_bytes_never_raise_and_are_applied_or_quarantined(
    sqlite_engine: Engine, upload: Upload, options: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ingest_one(upload, sqlite_engine, Path(folder), **options)


@pytest.mark.parametrize(
    "warehouse_url",
    [
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
            ),
        )
    ],
    indirect=True,
)
@fuzz_settings(ci=30, soak=600)
@given(upload=uploads(("conversions",)), options=OPTIONS)
def test_any_file_on_postgresql_is_applied_with_every_line_accounted_for_or_quarantined_whole(
    engine: Engine, upload: Upload, options: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ingest_one(upload, engine, Path(folder), **options)


@pytest.mark.slow
@fuzz_settings(ci=20, soak=400)
@given(
    files=st.lists(uploads(), min_size=1, max_size=3),
    source=SOURCES,
)
def test_inbox_runs_archive_applied_files_and_quarantine_unreadable_ones_every_line_counted(
    sqlite_engine: Engine, files: list[Upload], source: Source
) -> None:
    name, config = offer_source_config(source)
    with tempfile.TemporaryDirectory() as home:
        ctx = Context(config, sqlite_engine, LocalDataDir(Path(home)))
        ctx.datadir.layout.ensure(config.offer_sources)
        dropped = {}
        for i, upload in enumerate(files):
            relative = f"{name}/{'status/' if upload.kind == 'status' else ''}f{i}.csv"
            path = ctx.datadir.layout.inbox / relative
            path.write_bytes(upload.raw)
            dropped[f"f{i}.csv"] = upload
        before = table_counts(sqlite_engine)
        results = runner.run_inbox(ctx)
        assert sorted(r.name for r in results) == sorted(dropped)
        # Conversion files before status files, as the runner promises.
        assert [r.kind for r in results] == sorted((r.kind for r in results), key="status".__eq__)
        applied: set[tuple[str | None, str]] = set()
        total = Counter({t: 0 for t in before})
        for result in results:
            upload = dropped[result.name]
            if result.state == "duplicate_file":  # the same bytes as an earlier file of the run
                assert (result.content_hash, upload.kind) in applied
                total.update(effects_of(result, sqlite_engine))
                where = ctx.datadir.layout.archive
            else:
                total.update(
                    check(
                        result,
                        upload,
                        sqlite_engine,
                        dry_run=False,
                        source=source,
                        changed_later=any(u.kind == "status" for u in files),
                    )
                )
                if result.state == "applied":
                    applied.add((result.content_hash, upload.kind))
                    where = ctx.datadir.layout.archive
                else:
                    where = ctx.datadir.layout.quarantine
                    (sidecar,) = where.rglob(f"*_{result.name}.reason.json")
                    reason = json.loads(sidecar.read_text(encoding="utf-8"))
                    assert (reason["code"], reason["content_hash"]) == (
                        result.reason_code,
                        result.content_hash,
                    )
            (filed,) = where.rglob(f"*_{result.name}")
            assert filed.read_bytes() == upload.raw
        after = table_counts(sqlite_engine)
        assert {t: after[t] - before[t] for t in after} == dict(total), "something else changed"
        leftovers = [p for p in ctx.datadir.layout.inbox.rglob("*") if p.is_file()]
        assert leftovers == [] and list(ctx.datadir.layout.processing.iterdir()) == []


NOTHING_BUT_THE_LEDGER = {
    "ingested_files": 1,
    "conversions": 0,
    "conversion_history": 0,
    "rejected_rows": 0,
}


def effects_of(result: ingest.FileResult, engine: Engine) -> dict[str, int]:
    """What one file added to each table: its ledger row, conversions, history, rejections."""
    fid = result.file_id
    with engine.connect() as conn:
        return {
            "ingested_files": 1,
            "conversions": conn.execute(
                select(func.count()).where(warehouse.conversions.c.file_id == fid)
            ).scalar_one(),
            "conversion_history": conn.execute(
                select(func.count()).where(warehouse.conversion_history.c.file_id == fid)
            ).scalar_one(),
            "rejected_rows": conn.execute(
                select(func.count()).where(warehouse.rejected_rows.c.file_id == fid)
            ).scalar_one(),
        }


# --- the reader's own self-check ---------------------------------------------------------------


def test_the_second_reader_agrees_with_the_csv_module_on_well_formed_text() -> None:
    """The tokenizer here is the expectation of every fuzz test: pin it on hand-made cases."""
    text = 'a,"b\r\nc",d\r\n\r\n"x""y",\r"z\n'
    assert tokenize(text, ",") == [["a", "b\r\nc", "d"], [], ['x"y', ""], ["z\n"]]
    assert tokenize('"ab"c,d"e\n', ",") == [["abc", 'd"e']]
    for sample in (text, '"ab"c,d"e\n', 'x;"y\r\n', "\n\r\n\r,\x00\n"):
        assert tokenize(sample, ",") == list(csv.reader(io.StringIO(sample, newline="")))
    assert sniff('"a,b";c\n') == ";" and sniff("a\tb,c\n") == "," and sniff("x") == ","
    reading = read_independently(
        b'\xef\xbb\xbfsep=;\r\nClick ID;Revenue;notes\r\n"c1";1.50;"two\nlines"\r\n;;\r\nx\r\n',
        "conversions",
    )
    assert reading.quarantine == frozenset() and reading.delimiter == ";"
    assert reading.columns == {"click_id": 0, "payout": 1}
    assert reading.data == {3: ["c1", "1.50", "two\nlines"], 5: ["x"]} and reading.blank == 1
    assert read_independently(b"clickid,sub_id,payout\n", "conversions").quarantine == {
        "duplicate_column"
    }
    assert read_independently(b"c\x00l\x00i\x00", "conversions").quarantine == {"unreadable_file"}
    assert read_independently(b"click_id,payout\nx,\xff\n", "conversions").quarantine == {
        "unreadable_file"
    }
    # The new rules of "Real exports in": Google Ads' first line and names, unmapped headers,
    # decimal commas.
    google = read_independently(
        b'"Parameters:TimeZone=-0500",,\r\nGoogle Click ID,Conversion Time,Conversion Value,'
        b"Conversion Currency\r\ngc1,2026-07-01 10:00,12,50,eur\r\n",
        "conversions",
    )
    assert google.quarantine == frozenset() and google.time_zone == "-0500"
    assert set(google.columns) == {"click_id", "conversion_time", "payout", "currency"}
    assert google.malformed_code(3) == "unquoted_decimal_comma"
    assert google.report_cells(3) == ["gc1", "2026-07-01 10:00", "12,50", "eur"]
    for raw, kind, code in (
        (
            b"sep=;\nparameters : timezone = Mars/X\nclick_id;status\n",
            "status",
            "invalid_parameters_line",
        ),
        (b"Parameters:Currency=USD\nclick_id,payout\n", "conversions", "invalid_parameters_line"),
        (b"click id,sum,notes,payout 2\n", "conversions", "unmapped_column"),
        (b"click id,status,order status\n", "status", "unmapped_column"),
        (b"click id,status,payout 2\n", "status", None),
        (b"click id,notes,sub2,IP,Country,Offer Name,User Agent,revenue\n", "conversions", None),
        (b"click date,payout\n", "conversions", "missing_required_column"),
    ):
        assert read_independently(raw, kind).quarantine == ({code} if code else set()), raw
    assert read_independently(b"click_id,payout,Click IP\n", "conversions").undecided == {
        "unmapped_column"
    }


# --- regressions the fuzzing found, written out so CI never depends on finding them again -------


def regression(raw: bytes, engine: Engine, **options: Any) -> ingest.FileResult:
    """Ingest one hand-written file with every check of the fuzz tests."""
    source = Source(options.pop("mode", "create_new"), options.pop("allow_negative", False))
    options = {"source": source, "dry_run": False, "batch_size": 50_000} | options
    with tempfile.TemporaryDirectory() as folder:
        return ingest_one(
            Upload(raw, "conversions", None, "regression"), engine, Path(folder), **options
        )


def test_a_file_quarantined_after_some_batches_were_read_reports_no_data_lines(
    sqlite_engine: Engine,
) -> None:
    """Found by fuzzing: a byte that is not UTF-8 beyond the first 8 KiB is met only after the
    first batches were counted; the quarantined result said `data_lines=1` with all outcomes 0,
    breaking the accounting invariant (and its summary said so too)."""
    rows = b"".join(b"c%d,1.00\n" % i for i in range(1000))  # 9.9 KB: decoded in two chunks
    result = regression(b"click_id,payout\n" + rows + b"\xff\n", sqlite_engine, batch_size=10)
    assert (result.state, result.reason_code, result.data_lines) == (
        "quarantined",
        "unreadable_file",
        0,
    )
    assert "byte offset 9906 (near line 1002)" in result.detail


def test_increments_past_twelve_digits_are_rejected_and_the_payout_stays_exact(
    engine: Engine,
) -> None:
    """Found by fuzzing: increments were summed without a limit. Past 12 digits PostgreSQL's
    NUMERIC(18, 6) refused the COPY (an unhandled DataError: the inbox would put the file back
    forever), SQLite stored the 13 digits, and ten maximal payouts wrapped the int64 sum to a
    negative payout. Now such a row is rejected `payout_out_of_range`, the conversion keeps its
    payout, and later rows of the key go on from there."""
    big = b"999999999999.000000"
    file = (
        b"click_id,payout\n"
        b"c1," + big + b"\n"  # line 2: inserted
        b"c1,0.999999\n"  # 3: incremented to exactly 999999999999.999999, the most there is
        b"c1,0.000001\n"  # 4: one micro too many: payout_out_of_range
        + b"c1,999999999999.999999\n" * 10  # 5-14: would wrap an int64 sum: each out of range
        + b"c2,"
        + big
        + b"\n"  # 15: inserted
        b"c2,0.5\n"  # 16: incremented
    )
    result = regression(file, engine, mode="increment_payout")
    assert result.outcomes == {
        "inserted": 2,
        "updated": 0,
        "incremented": 2,
        "status_updated": 0,
        "ignored_duplicate": 0,
        "rejected": 11,
    }
    assert result.reasons == {"payout_out_of_range": 11}
    with engine.connect() as conn:
        payouts = dict(
            conn.execute(
                select(warehouse.conversions.c.click_id, warehouse.conversions.c.payout).where(
                    warehouse.conversions.c.offer_source == result.offer_source
                )
            ).all()
        )
    assert payouts == {"c1": 999_999_999_999_999_999, "c2": 999_999_999_999_500_000}


def test_negative_increments_past_twelve_digits_are_rejected_too(engine: Engine) -> None:
    """The other side of the same limit, where negative payouts are allowed; a key whose first
    increment is refused still takes a later one that fits."""
    file = (
        b"click_id,payout\n"
        b"c1,-999999999999.5\n"  # line 2: inserted
        b"c1,-0.6\n"  # 3: payout_out_of_range
        b"c1,-0.4\n"  # 4: incremented to -999999999999.9
        b"c1,10\n"  # 5: incremented to -999999999989.9
    )
    result = regression(file, engine, mode="increment_payout", allow_negative=True)
    assert (result.outcomes["incremented"], result.reasons) == (2, {"payout_out_of_range": 1})
    with engine.connect() as conn:
        (payout,) = conn.execute(
            select(warehouse.conversions.c.payout).where(
                warehouse.conversions.c.offer_source == result.offer_source
            )
        ).one()
    assert payout == -999_999_999_989_900_000


def test_payouts_over_nine_billion_stay_exact_when_a_key_has_rows_without_payout(
    engine: Engine,
) -> None:
    """Found by fuzzing: staged rows came back through a float64 column whenever a merge chunk
    held a row without payout (a NULL), so payouts past 2**53 micro-units were rounded:
    12345678901.123457 was stored as ...456, and 999999999999.999999 as 1000000000000.00
    (on PostgreSQL a NUMERIC overflow: an unhandled error)."""
    file = (
        b"click_id,payout\n"
        b"c1,12345678901.123457\n"  # inserted
        b"c1,\n"  # ignored: a staged row without payout
        b"c2,999999999999.999999\n"  # inserted
        b"c2,\n"  # ignored
    )
    result = regression(file, engine, mode="ignore")
    assert (result.outcomes["inserted"], result.outcomes["ignored_duplicate"]) == (2, 2)
    with engine.connect() as conn:
        payouts = dict(
            conn.execute(
                select(warehouse.conversions.c.click_id, warehouse.conversions.c.payout).where(
                    warehouse.conversions.c.offer_source == result.offer_source
                )
            ).all()
        )
    assert payouts == {"c1": 12_345_678_901_123_457, "c2": 999_999_999_999_999_999}


def test_times_keep_their_microseconds_when_another_row_has_no_time(
    engine: Engine,
) -> None:
    """The same rounding for times (microseconds since 1970 past 2**53): a row without a time
    made a year-1000 time lose its last microsecond. Such times are now `time_out_of_range`
    (README "Times"), and in range (|microseconds since 1970| < 2**53) the edges stay exact."""
    file = (
        b"click_id,payout,conversion_time\n"
        b"c1,1,1000-01-01 00:00:00.000001Z\n"  # rejected, not stored
        b"c2,1,\n"
        b"c3,1,1970-01-01 00:00:00.000001Z\n"
        b"c4,1,2026-06-30T23:59:59.999999Z\n"
    )
    result = regression(file, engine)
    assert result.reasons == {"time_out_of_range": 1}
    with engine.connect() as conn:
        times = dict(
            conn.execute(
                select(
                    warehouse.conversions.c.click_id, warehouse.conversions.c.converted_at
                ).where(warehouse.conversions.c.offer_source == result.offer_source)
            ).all()
        )
    assert times == {
        "c2": RECEIVED,
        "c3": datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "c4": datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC),
    }


def test_a_nul_byte_in_a_quoted_header_cell_past_the_first_line_quarantines_the_file(
    engine: Engine,
) -> None:
    """Found by fuzzing: the reader looked for NUL bytes in the header's first physical line
    only; a quoted header cell running onto the next line carried one into the quarantine
    detail, which PostgreSQL cannot store in a text column: an unhandled error (the inbox would
    have put the file back forever)."""
    result = regression(b'"\r\x00click id","payout"\n', engine)
    assert (result.state, result.reason_code) == ("quarantined", "unreadable_file")
    assert "NUL" in result.detail and "\x00" not in result.detail
