"""Hostile input: what a sender controls never runs, escapes the data directory or leaks a secret.

A sender controls the bytes of a file, its name, and what they put in the inbox (links, FIFOs,
folders). This file proves, on real files, the real CLI and both warehouses, that:

1. SQL-looking values are data: stored byte for byte (read back through `conversions export`) or
   rejected with the reader's reason code, and nothing else in the warehouse changes.
2. Every cell of a rejection report that a spreadsheet would run as a formula is neutralised
   (OWASP "CSV injection": a leading ``=`` ``+`` ``-`` ``@`` TAB or CR gets a ``'``), while plain
   numbers such as ``-12.50`` stay numbers. OWASP names the *first* character; a cell with a
   leading space (`` =1+1``) is text to Excel and LibreOffice and is left as written, like any
   other text. The export (`conversions export`) is a data export for programs (exact payouts,
   ids, JSON lines): it keeps values verbatim, and a test pins that down.
3. Hostile file names (traversal, leading dashes, Unicode, 255 bytes, newlines, bytes that are not
   UTF-8) are claimed, archived and reported under safe names; nothing is written outside the
   data directory (every test that runs files compares the tree outside it before and after).
4. Links in the inbox are never followed. Tripwires prove it: a link's target is a FIFO, and a
   watcher opens every FIFO for writing in a loop, which succeeds only while someone has it open
   for reading (an atime proves nothing, and root reads files without read permission). A hard
   link is the same file as its other name (the sender could as well have copied it), so it is
   ingested like any file; its other name is left where it is, untouched.
5. A file over ``max_file_bytes`` is quarantined without being read: a sparse 10 GB file is
   refused in well under a second with a few KB read (``rchar`` of ``/proc/self/io``).
6. A warehouse password (a real PostgreSQL role with a password) never appears in stdout, stderr,
   logging at DEBUG, summaries, reports, sidecars, the ledger or exceptions, whether the URL came
   from ``--warehouse``, ``$CONVERSIONS_WAREHOUSE_URL`` or the config, and whether the run
   succeeded or failed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
import traceback
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from pipeline import cli, datadir, export, runner, warehouse
from pipeline import config as config_module
from pipeline.context import Context
from pipeline.datadir import LocalDataDir, claims
from pipeline.datadir.objectstore import ObjectStoreDataDir
from pipeline.ingest import Upload, ingest_file
from pipeline.results import FileResult
from tests.guarantees.harness import DATA_DIRECTORIES, LocalHome, S3Home, clean_env
from tests.helpers import POSTGRES_URL, assert_accounted, sample_config, write_csv

RECEIVED = datetime(2026, 7, 1, 18, 0, tzinfo=UTC)
PASSWORD = "S3cr3t-Pa55"
TABLES = {"conversions", "conversion_history", "ingested_files", "rejected_rows"}

CONFIG_TOML = sample_config("hostile.toml")


# --- helpers -----------------------------------------------------------------------------------


class Setup:
    """tmp_path/{home, outside, cwd}: the data directory, what must stay untouched, the CLI's cwd.

    The config file lives in ``outside`` (an operator's file: no run may change it).
    """

    def __init__(self, root: Path, warehouse_url: str, settings: str = "", s3: str | None = None):
        """``s3``: the moto endpoint, for a data directory in a bucket of its own (``store``)
        instead of ``home``; the CLI's cwd and ``outside`` stay local either way."""
        self.root, self.url = root, warehouse_url
        self.home, self.outside, self.cwd = root / "home", root / "outside", root / "cwd"
        for folder in (self.home, self.outside, self.cwd):
            folder.mkdir(exist_ok=True)
        self.config_path = self.outside / "conversions.toml"
        # hostile.toml has a [settings] table: ``settings`` (one, with its header) replaces its
        # header, so both tables' keys count.
        config = CONFIG_TOML.replace("[settings]\n", settings or "[settings]\n", 1)
        self.config_path.write_text(config, encoding="utf-8")
        self.config = config_module.load(self.config_path)
        self.layout = datadir.Layout(self.home)
        self.store: LocalHome | S3Home = S3Home(s3) if s3 else LocalHome(self.home)

    def context(self, engine) -> Context:
        if isinstance(self.store, S3Home):
            limit = self.config.settings.max_file_bytes
            store = ObjectStoreDataDir(self.store.arg, engine, max_file_bytes=limit)
            return Context(self.config, engine, store)
        return Context(self.config, engine, LocalDataDir(self.layout))

    def under_reports(self, written: str) -> str:
        """Where a report a run wrote is, below the data directory's ``reports/``; it must be
        there (a folder outside it, resolved, or another prefix of the bucket fails)."""
        if isinstance(self.store, S3Home):
            prefix = f"s3://{self.store.bucket}/home/reports/"
            assert written.startswith(prefix) and ".." not in written.split("/"), written
            return written[len(prefix) :]
        assert Path(written).resolve().is_relative_to(self.layout.reports.resolve()), written
        return Path(written).relative_to(self.layout.reports).as_posix()

    def read(self, written: str) -> bytes:
        """A file a run wrote (a summary), by the path or ``s3://`` URL it gave."""
        if isinstance(self.store, S3Home):
            prefix = f"s3://{self.store.bucket}/home/"
            assert written.startswith(prefix), written
            folder, rest = written[len(prefix) :].split("/", 1)
            return self.store.files(folder)[rest]
        return Path(written).read_bytes()

    def cli(self, *args: str, env: dict[str, str] | None = None):
        options = ["--config", str(self.config_path), "--home", str(self.home), "--warehouse"]
        command, rest = args[0], [self.url, *args[1:]]
        return run_cli(command, *options, *rest, cwd=self.cwd, env=env)

    def ingest(self, engine, path: Path, offer_source: str, **kw) -> FileResult:
        return ingest_file(
            self.context(engine), Upload(path, offer_source, received_at=RECEIVED, **kw)
        )

    def outside_home(self) -> dict[str, tuple]:
        """Everything under tmp_path but the data directory and the SQLite warehouse."""
        return snapshot(
            self.root, skip=lambda p: p == self.home or p.name.startswith("warehouse.db")
        )


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    """`python -m pipeline ARGS` with no CONVERSIONS_* variables but those given."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=clean_env() | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])} | (env or {}),
        capture_output=True,
        text=True,
        errors="surrogateescape",  # a name's raw bytes must not break the test's own decoding
        timeout=timeout,
    )


def snapshot(root: Path, skip=lambda path: False) -> dict[str, tuple]:
    """Every path under `root` by lstat: links are read as links and FIFOs are never opened."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not skip(here / d)]
        for name in [*dirnames, *filenames]:
            path = here / name
            if skip(path):
                continue
            st = path.lstat()
            key = os.fsdecode(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                small = st.st_size <= 1 << 20
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if small else None
                found[key] = ("file", st.st_ino, st.st_size, st.st_mtime_ns, digest)
            else:
                found[key] = (stat.S_IFMT(st.st_mode), st.st_ino)
    return found


def files_in(folder: Path) -> list[Path]:
    """Everything but folders under `folder` (links and FIFOs included), links not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if not stat.S_ISDIR(path.lstat().st_mode):
                found.append(path)
    return sorted(found)


def is_regular(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode)


def csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def read_csv(path: Path, delimiter: str = ",") -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh, delimiter=delimiter))


def dump(engine) -> dict[str, dict[tuple, tuple]]:
    """Every row of every table, keyed by primary key, as text."""
    keys = {
        "conversions": ("conversion_id",),
        "conversion_history": ("history_id",),
        "ingested_files": ("file_id",),
        "rejected_rows": ("file_id", "line"),
        "warehouse_schema": ("version",),
    }
    out: dict[str, dict[tuple, tuple]] = {}
    with engine.connect() as conn:
        for name, key in keys.items():
            table = warehouse.metadata.tables[name]
            rows = conn.execute(select(table)).mappings().all()
            out[name] = {tuple(r[k] for k in key): tuple(map(str, r.values())) for r in rows}
    return out


def table_names(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def rchar() -> int:
    """Bytes this process has read through read()/pread() so far (Linux /proc/self/io)."""
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])


# --- 1. SQL-looking values ---------------------------------------------------------------------

SQLISH = [
    "'; DROP TABLE conversions; --",
    "1 OR 1=1",
    "1' OR '1'='1",
    "Robert'); DROP TABLE ingested_files;--",
    '"; SELECT pg_sleep(30); --',
    "$$",
    "$x$ DROP TABLE conversions $x$",
    "\\",
    "\\\\",
    "C:\\new\\table",
    "\\.",  # COPY's end-of-data marker
    "\\N",  # COPY's text-format NULL
    "%s",
    "%(name)s",
    "%%",
    ":name",
    "?",
    "E'\\\\'",
    "NULL",
    '=HYPERLINK("http://x")',  # formula-like values are data too (see the export test)
    "@SUM(1)",
    "-2+3",
    "ünï©ødé 💸 \u202eRTL",
]


@pytest.fixture(params=DATA_DIRECTORIES)
def s3(request) -> str | None:
    """The data directory of an inbox test: None, a local folder; else the moto endpoint (a
    bucket). The tests that take it are those that go through the inbox; the others hand
    ``ingest_file`` a local file, where the data directory only holds the reports."""
    return request.getfixturevalue("moto_endpoint") if request.param == "s3" else None


# Values (1.) and the export (2.) do not depend on where the data directory is: these tests
# hand `ingest_file` a local file. The inbox-route tests take ``s3`` and run on both.
def test_sql_looking_values_are_stored_verbatim_or_rejected_and_never_executed(
    tmp_path, warehouse_url, engine
):
    """Free-text columns (conversion_type, event_id) keep any text without control characters;
    the others reject what is not a click id, status, currency, payout or time."""
    setup = Setup(tmp_path, warehouse_url)
    base = write_csv(
        setup.cwd / "base.csv", "click_id,payout,conversion_time\nbase1,1.00,2026-06-01T00:00:00Z\n"
    )
    assert setup.ingest(engine, base, "maxbounty").state == "applied"
    before, tables_before = dump(engine), table_names(engine)
    outside = setup.outside_home()
    assert tables_before >= TABLES

    long_event = ("x' OR 1=1 -- " * 20)[:255]
    long_type = ("'; DROP TABLE x; " * 4)[:64]
    header = ["click_id", "payout", "conversion_time", "conversion_type", "status", "event_id"]
    header.append("currency")
    t = "2026-07-01T10:00:00Z"
    accepted: dict[str, tuple[str, str]] = {}  # click id -> (conversion_type, event_id) stored
    rows = []
    for i, value in enumerate([*SQLISH, long_type]):
        event = SQLISH[-1 - i % len(SQLISH)] if value != long_type else long_event
        rows.append([f"s{i}", "1.00", t, value, "approved", event, "usd"])
        accepted[f"s{i}"] = (value, event)
    # The reader takes a leading `'=`/`'+`/`'-`/`'@` for its own report neutralisation and drops
    # the `'` (README, Reports): documented, so pinned here.
    rows.append(["q1", "1.00", t, "", "", "'+1", ""])
    accepted["q1"] = ("", "+1")
    first_rejected = len(rows) + 2
    rejected = {  # click id -> reason codes, worked out from README's column rules
        "'; DROP TABLE conversions; --": {"invalid_click_id"},
        "1 OR 1=1": {"invalid_click_id"},
        "$$": {"invalid_click_id"},
        "%s": {"invalid_click_id"},
        ":name": {"invalid_click_id"},
        "?": {"invalid_click_id"},
        "a\x00b": {"invalid_click_id"},
        "k" * 100_000: {"invalid_click_id"},
    }
    bad_rows = [[click, "1.00", t, "", "", "", ""] for click in rejected]
    expected_codes = list(rejected.values())
    for row, codes in [
        (["r1", "1; DROP TABLE x", t, "", "", "", ""], {"invalid_payout"}),
        (["r2", "1.00", "2026-07-01'; --", "", "", "", ""], {"invalid_time"}),
        (["r3", "1.00", t, "", "'; DROP TABLE x; --", "", ""], {"invalid_status"}),
        (["r4", "1.00", t, "", "", "", "US'; --"], {"invalid_currency"}),
        (["r5", "1.00", t, "", "", "x\x00y", ""], {"invalid_event_id"}),
        (["r6", "1.00", t, "", "", long_event + "z", ""], {"invalid_event_id"}),
        (["r7", "1.00", t, long_type + "z", "", "", ""], {"invalid_conversion_type"}),
        (["r8", "1.00", t, "\x00", "", "", ""], {"invalid_conversion_type"}),
        (
            ["$$"] * 7,  # type and event id are free text; the rest are not
            {"invalid_click_id", "invalid_payout", "invalid_time", "invalid_status"}
            | {"invalid_currency"},
        ),
    ]:
        bad_rows.append(row)
        expected_codes.append(codes)
    path = write_csv(setup.cwd / "hostile.csv", csv_text([header, *rows, *bad_rows]))

    result = setup.ingest(engine, path, "many")

    assert result.state == "applied"
    assert_accounted(result, path, engine)
    assert result.outcomes["inserted"] == len(accepted)
    assert result.outcomes["rejected"] == len(bad_rows)
    after = dump(engine)
    assert table_names(engine) == tables_before
    for table, rows_before in before.items():  # nothing that was there changed
        assert {k: after[table][k] for k in rows_before} == rows_before, table
    growth = {table: len(after[table]) - len(before[table]) for table in before}
    assert growth == {
        "conversions": len(accepted),
        "conversion_history": len(accepted),
        "ingested_files": 1,
        "rejected_rows": len(bad_rows),
        "warehouse_schema": 0,
    }
    with engine.connect() as conn:
        stored = conn.execute(
            select(warehouse.rejected_rows).where(
                warehouse.rejected_rows.c.file_id == result.file_id
            )
        ).all()
    by_line = {row.line: row for row in stored}
    for n, (row, codes) in enumerate(zip(bad_rows, expected_codes, strict=True)):
        line = first_rejected + n
        assert set(by_line[line].reason_codes.split("|")) == codes, (line, row[:1])
        assert json.loads(by_line[line].cells) == dict(zip(header, row, strict=True))

    out = setup.cwd / "export.csv"
    done = setup.cli("export", "--offer-source", "many", "--format", "csv", "-o", str(out))
    assert done.returncode == 0, done.stderr
    records = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert {r["click_id"]: (r["conversion_type"], r["event_id"]) for r in records} == accepted
    assert {(r["payout"], r["currency"], r["status"]) for r in records} == {
        ("1.00", "USD", "approved")
    }
    jsonl = io.StringIO()
    export.write(engine, setup.config, jsonl, offer_source="many", fmt="jsonl")
    lines = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert {r["click_id"]: (r["conversion_type"], r["event_id"]) for r in lines} == accepted
    assert setup.outside_home().keys() - outside.keys() == {"cwd/hostile.csv", "cwd/export.csv"}


def test_quotes_in_folder_and_file_names_are_data_not_sql(tmp_path, warehouse_url, engine, s3):
    setup = Setup(tmp_path, warehouse_url, s3=s3)
    with pytest.raises(config_module.ConfigError):  # an offer source is a folder: never quoted
        config_module.parse(
            {
                "accounts": {"ny": {"timezone": "UTC", "currency": "USD"}},
                "offer_sources": {"x'; DROP TABLE conversions; --": {"account": "ny"}},
            },
            "test.toml",
        )
    folder = "x'; DROP TABLE conversions; --"
    name = "q'\"; DROP TABLE ingested_files; --.csv"
    content = "click_id,payout,conversion_time\nq1,1.00,2026-07-01T10:00:00Z\n"
    setup.store.put(f"{folder}/a.csv", content.encode())
    setup.store.put(f"maxbounty/{name}", content.encode())
    outside = setup.outside_home()

    results = {r.name: r for r in runner.run_inbox(setup.context(engine))}

    assert results["a.csv"].state == "quarantined"
    assert results["a.csv"].reason_code == "unknown_offer_source"
    assert results[name].state == "applied"
    assert table_names(engine) >= TABLES
    [ledger] = dump(engine)["ingested_files"].values()
    assert name in ledger
    [sidecar] = [v for k, v in setup.store.files("quarantine").items() if k.endswith(".json")]
    assert json.loads(sidecar)["relative"] == f"{folder}/a.csv"
    assert setup.outside_home() == outside


# --- 2. formula injection -----------------------------------------------------------------------

OWASP_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def spreadsheet_safe(cell: str) -> str:
    """What OWASP asks for a cell, written independently of `reports.neutralise`."""
    if cell.startswith(OWASP_PREFIXES) and not PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def test_every_cell_of_every_rejection_report_is_neutralised_but_numbers_stay_numbers(
    tmp_path, warehouse_url, engine, s3
):
    """Rows rejected by validation, malformed rows and rows the merge rejects all go through the
    same writer; the header (user input too), reason_code and reason columns as well (written
    through the bucket's file system too, when the reports are on S3)."""
    setup = Setup(tmp_path, warehouse_url, s3=s3)
    header = [
        "click_id",
        "payout",
        "conversion_time",
        "reason_code",  # a report's own column dropped back in: ignored, never doubled
        "conversion_type",
        "status",
        "event_id",
        "currency",
        '=HYPERLINK("http://evil/?"&A1)',
        "@note",
        "+plus",
        "-minus",
        "\tcmd",
        " =spaced",
    ]
    t = "2026-07-01T10:00:00Z"
    evil = ["=cmd|' /C calc'!A0", "@x", "+x", "-x", "\t=x", "\r=x"]
    rows = [
        ["ok1", "5.00", t, "=x", "@SUM(A1)", "", "=x", "", *evil],  # accepted
        # line 3: every column hostile
        ["=1+1", "+1+1", "-1", "@x", "@SUM(A1)", "\t=cmd", "\r=cmd", "=A1", *evil],
        ["neg1", "-12.50", t, "", "", "", "", "", "-12.50", "+3", "-0.5", "=1", "@", "-"],
        [" =1+1", "1.00", t, "", "", "", "", "", " =x", " @x", " -x", " +x", "x", "x"],
        ["short", "=1"],  # malformed: too few cells
        ["late1", "", t, "", "", "", "", "", "=late", "@late", "+late", "-late", "\tl", "\rl"],
        ["late1", "2.00", t, *[""] * 11],
        ["ok2", "1.00", t, *[""] * 10, "=extra", "@extra"],  # malformed: too many cells
    ]
    codes = {
        3: {"invalid_click_id", "invalid_payout", "invalid_time", "invalid_status"}
        | {"invalid_currency"},
        4: {"negative_payout"},
        5: {"invalid_click_id"},
        6: {"malformed_row"},
        7: {"missing_payout"},  # ignore mode: the merge rejects it (first row with a payout wins)
        9: {"malformed_row"},
    }
    path = write_csv(setup.cwd / "=evil@name.csv", csv_text([header, *rows]))

    result = setup.ingest(engine, path, "maxbounty")

    assert result.state == "applied"
    # A report on S3 is an object (assert_accounted opens files): its rows are counted below.
    assert_accounted(dataclasses.replace(result, report_path=None) if s3 else result, path, engine)
    report = setup.under_reports(result.report_path)
    assert len(report.split("/")) == 2  # <received day>/<name>
    assert not report.split("/")[1].startswith(OWASP_PREFIXES)
    report_text = setup.read(result.report_path).decode("utf-8-sig")
    written = list(csv.reader(io.StringIO(report_text, newline="")))
    assert len(written) - 1 == result.outcomes["rejected"]
    kept = [h for h in header if h != "reason_code"]
    assert written[0] == ["line", *map(spreadsheet_safe, kept), "reason_code", "reason"]
    # README: the rows the merge rejects (line 7) follow the rows validation rejected.
    assert [int(r[0]) for r in written[1:]] == [3, 4, 5, 6, 9, 7]
    width = len(header)
    for row in written[1:]:
        line = int(row[0])
        cells = rows[line - 2] + [""] * (width - len(rows[line - 2]))
        if len(cells) > width:  # README: a malformed row's extra cells join its last column
            cells = [*cells[: width - 1], ",".join(cells[width - 1 :])]
        original = [c for h, c in zip(header, cells, strict=True) if h != "reason_code"]
        assert row[1:-2] == [spreadsheet_safe(c) for c in original], line
        assert set(row[-2].split("|")) == codes[line]
        assert row[-1] and row[-1] == spreadsheet_safe(row[-1])
    flat = [cell for row in written for cell in row]
    assert not [c for c in flat if c.startswith(OWASP_PREFIXES) and not PLAIN_NUMBER.fullmatch(c)]
    assert "-12.50" in written[2] and "+3" in written[2]  # plain numbers stay numbers
    assert " =1+1" in written[3]  # a leading space: text to a spreadsheet, left as written
    assert path.name not in report_text  # the name is not in it
    summary = json.loads(setup.read(result.summary_path))
    assert summary["name"] == "=evil@name.csv"  # JSON, not a spreadsheet: kept as it is


def test_the_export_keeps_formula_like_values_verbatim_as_a_data_export(
    tmp_path, warehouse_url, engine
):
    """`conversions export` feeds programs (exact ids and payouts, JSON lines): neutralising
    would change the data (a `'` before an event id), so values come out exactly as stored,
    and a negative payout stays a number."""
    setup = Setup(tmp_path, warehouse_url)
    values = {  # click id -> event_id, conversion_type, payout
        "f1": ('=HYPERLINK("http://x")', "@SUM(1)", "-12.50"),
        "f2": ("+1+1", "-x", "0.50"),
        "f3": ("\u202e=1", "=1", "-0.000001"),
    }
    rows = [["click_id", "payout", "conversion_time", "conversion_type", "event_id"]]
    rows += [[k, pay, "2026-07-01T10:00:00Z", typ, ev] for k, (ev, typ, pay) in values.items()]
    path = write_csv(setup.cwd / "f.csv", csv_text(rows))
    result = setup.ingest(engine, path, "many")
    assert (result.state, result.outcomes["inserted"]) == ("applied", 3), result

    out = io.StringIO()
    export.write(engine, setup.config, out, offer_source="many")
    records = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert {r["click_id"]: (r["event_id"], r["conversion_type"], r["payout"]) for r in records} == (
        values
    )
    jsonl = io.StringIO()
    export.write(engine, setup.config, jsonl, offer_source="many", fmt="jsonl")
    lines = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert {r["click_id"]: (r["event_id"], r["conversion_type"]) for r in lines} == {
        k: v[:2] for k, v in values.items()
    }


# --- 3. file names -------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "x..\\..\\y.csv",  # a Windows path
    "--help.csv",  # an option, to a shell or a CLI
    " spaced  name $(touch pwned)`id`.csv",  # spaces and shell syntax
    unicodedata.normalize("NFC", "café.csv"),
    unicodedata.normalize("NFD", "café.csv"),  # looks the same, is another name
    "\u202egpj💸.csv",  # a right-to-left override and an emoji
    "x" * 251 + ".csv",  # 255 bytes, the usual limit
    "é" * 125 + ".csv",  # 254 bytes of two-byte characters
    "a\nb\r\x1b[31m.csv",  # a line break, a carriage return, a terminal escape
]
NON_UTF8_NAME = b"\xff\xfe-latin1-\xe9.csv"
SAFE_REPORT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\.(rejected\.csv|summary\.json)")


def test_hostile_file_names_are_claimed_archived_and_reported_under_safe_names(
    tmp_path, warehouse_url, engine, s3
):
    """On S3 too, but for two names: bytes that are not UTF-8 (an object key is UTF-8 by
    definition), and line breaks and an escape (moto's HTTP server answers 404 to such a
    key's PUT; AWS takes it, and lists it only URL-encoded)."""
    setup = Setup(tmp_path, warehouse_url, s3=s3)
    setup.layout.ensure(setup.config.offer_sources)
    names = [os.fsencode(n) for n in HOSTILE_NAMES if not (s3 and "\n" in n)]
    names += [] if s3 else [NON_UTF8_NAME]
    contents = {}
    for i, name in enumerate(names):
        content = f"click_id,payout,conversion_time\nn{i},1.00,2026-07-01T10:00:00Z\n".encode()
        if s3:
            setup.store.put(f"maxbounty/{os.fsdecode(name)}", content)
        else:
            folder = os.fsencode(setup.layout.inbox / "maxbounty")
            Path(os.fsdecode(folder + b"/" + name)).write_bytes(content)
        contents[os.fsdecode(name)] = content
    assert len({n for n in contents}) == len(names)  # NFC and NFD are two different files
    hidden = b"click_id,payout\nh1,1.00\n"
    setup.store.put("maxbounty/..\\x.csv", hidden)  # a hidden name
    outside = setup.outside_home()

    results = runner.run_inbox(setup.context(engine))

    assert {r.name: r.state for r in results} == dict.fromkeys(contents, "applied")
    with engine.connect() as conn:
        ledger = conn.execute(select(warehouse.ingested_files.c.original_name)).scalars().all()
    printable = {os.fsencode(n).decode("utf-8", "backslashreplace") for n in contents}
    assert set(ledger) == printable  # bytes that are not UTF-8 are kept as \xNN escapes
    assert len(export.frame(engine, setup.config)) == len(names)
    stored = setup.store.files("archive")
    archived = {k: v for k, v in stored.items() if not k.endswith(".json")}
    assert len(archived) == len(names)
    for key, data in archived.items():  # <received day>/maxbounty/conversions/<name>
        parts = key.split("/")
        name = parts[-1]
        assert parts[1:-1] == ["maxbounty", "conversions"]
        assert re.fullmatch(r"[0-9a-f]{16}_", name[:17])  # never a leading '-' or '.'
        assert len(os.fsencode(name + ".json")) <= 255
        sidecar = json.loads(stored[key + ".json"])
        assert data == contents[sidecar["relative"].removeprefix("maxbounty/")]
    reports = setup.store.files("reports")
    assert len(reports) == 2 * len(names)
    for key in reports:
        assert len(key.split("/")) == 2  # <received day>/<name>: directly in a day's folder
        assert SAFE_REPORT.fullmatch(key.split("/")[1]), key
    for result in results:
        summary = json.loads(setup.read(result.summary_path))
        assert summary["name"] == result.name
    assert setup.store.claims_held(setup.url) == 0
    assert setup.store.files("inbox") == {"maxbounty/..\\x.csv": hidden}  # never picked up
    assert setup.outside_home() == outside


def test_the_cli_ingests_files_named_like_options_after_a_double_dash(tmp_path):
    """A real process (argv, the console table); the warehouse does not matter here (SQLite)."""
    setup = Setup(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")
    engine = warehouse.connect(setup.url)
    names = ["--help.csv", "-h", "..\\x.csv", "\x1b[2J\nforged.csv", os.fsdecode(NON_UTF8_NAME)]
    for i, name in enumerate(names):
        write_csv(
            setup.cwd / name, f"click_id,payout,conversion_time\nc{i},1.00,2026-07-01T10:00:00Z\n"
        )
    spaced = write_csv(
        setup.outside / "with space" / "abs.csv",
        "click_id,payout,conversion_time\nabs1,1.00,2026-07-01T10:00:00Z\n",
    )
    outside = setup.outside_home()

    done = setup.cli("ingest", "--offer-source", "maxbounty", "--", *names, str(spaced))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "usage:" not in done.stdout + done.stderr
    with engine.connect() as conn:
        rows = conn.execute(
            select(warehouse.ingested_files.c.original_name, warehouse.ingested_files.c.state)
        ).all()
    stored = [os.fsencode(n).decode("utf-8", "backslashreplace") for n in [*names, "abs.csv"]]
    assert sorted(rows) == sorted((n, "applied") for n in stored)
    clicks = set(export.frame(engine, setup.config)["click_id"])
    assert clicks == {f"c{i}" for i in range(len(names))} | {"abs1"}
    # The summary is a block per file whose first line alone is at the margin, then the total:
    # a name cannot forge lines or drive the terminal, and every line fits in 100 columns.
    assert "\x1b" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    heads = [line for line in lines if line and not line.startswith(" ")]
    assert len(heads) == len(names) + 3, done.stdout  # and abs.csv, the total, the paths' home
    assert all(line.startswith("maxbounty/") for line in heads[:-2]), done.stdout
    assert heads[-2].startswith(f"total: {len(names) + 1} files ({len(names) + 1} applied)")
    assert heads[-1].startswith("paths are relative to the data directory")
    assert "maxbounty/\\x1b[2J\\nforged.csv (conversions): applied, 1 data line" in heads
    assert max(len(line) for line in lines) <= 100
    assert len(done.stderr.splitlines()) == len(names) + 1, done.stderr  # progress lines
    for path in files_in(setup.layout.reports):
        assert SAFE_REPORT.fullmatch(path.name), path.name
    assert setup.outside_home() == outside
    engine.dispose()


def test_an_airflow_task_log_shows_a_hostile_name_and_detail_on_one_line_each():
    """The task log (`steps.story`) escapes what could forge a log line or drive a terminal."""
    from pipeline.airflow import steps

    lines = steps.story(
        {
            "file": "maxbounty/a.csv\nmaxbounty/b.csv (conversions): applied\x1b[2J\u202e.csv",
            "kind": "conversions",
            "state": "quarantined",
            "reason_code": "missing_required_column",
            "detail": "missing 'payout' (header: click_id,\"x\ny\")",
        }
    )
    assert not [line for line in lines if re.search("[\n\r\x1b\u202e]", line)]
    assert lines[0].startswith("maxbounty/a.csv\\nmaxbounty/b.csv (conversions): applied\\x1b")
    assert all(line.startswith("  ") for line in lines[1:])  # the name's line alone at the margin
    assert lines[1:] == [
        "    nothing was applied",  # the name's line, wrapped at 100 columns
        "  missing_required_column: missing 'payout' (header: click_id,\"x\\ny\")",
        "    fix: add the column (see `conversions template`)",
    ]


def test_names_that_try_to_leave_the_reports_folder_stay_in_it(tmp_path, warehouse_url, engine, s3):
    """The name a file was dropped under comes from callers (the inbox, Airflow tickets): a
    path is never followed (nor, with the reports in a bucket, a key prefix left)."""
    setup = Setup(tmp_path, warehouse_url, s3=s3)
    path = write_csv(setup.cwd / "a.csv", "click_id,payout\nt1,1.00\nt2,x\n")
    outside = setup.outside_home()
    for name in ["../../outside/x.csv", "..\\..\\x.csv", "/etc/passwd", str(setup.outside / "y")]:
        result = setup.ingest(engine, path, "maxbounty", name=name, force=True)
        for written in (result.report_path, result.summary_path):
            assert len(setup.under_reports(written).split("/")) == 2  # <day>/<safe name>
            assert setup.read(written)
    if s3:  # nothing in the bucket but the reports
        assert {key.split("/")[0] for key in setup.store.files("")} == {"reports"}
    assert setup.outside_home() == outside


# --- 4. links and FIFOs ------------------------------------------------------------------------
# Local only: an object store has no links, FIFOs or devices (an object is bytes; its
# `not_a_regular_file` is always None), so there is nothing of these to try on S3.


class Tripwire:
    """Notices any process opening a FIFO under `root` for reading.

    Opening a FIFO for writing without blocking succeeds only while a reader has it open; a
    reader's open blocks until then. So this loop both notices a reader and releases it (it then
    reads an empty file), instead of letting the test hang.
    """

    def __init__(self, root: Path):
        self.root, self.tripped = root, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Tripwire:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _fifos(self) -> Iterator[str]:
        for dirpath, _dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if stat.S_ISFIFO(os.lstat(path).st_mode):
                        yield path
                except FileNotFoundError:
                    pass

    def _watch(self) -> None:
        while not self._stop.is_set():
            for fifo in self._fifos():
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody reads it (or it moved on)
                    continue
                self.tripped.append(fifo)
                os.close(fd)
            time.sleep(0.002)


def one_row(click: str) -> str:
    return f"click_id,payout,conversion_time\n{click},1.00,2026-07-01T10:00:00Z\n"


def build_hostile_inbox(setup: Setup) -> dict[str, Path]:
    """Links, FIFOs and a hard link in the inbox; targets outside the data directory, valid
    files (had they been followed, their rows would be in the warehouse) and FIFOs."""
    out, box = setup.outside, setup.layout.inbox
    secret = write_csv(out / "secret.csv", one_row("secret1"))
    os.mkfifo(out / "tripwire.csv")
    write_csv(out / "dir" / "inner.csv", one_row("inner1"))
    os.mkfifo(out / "dir" / "pipe.csv")
    write_csv(out / "srcdir" / "src.csv", one_row("src1"))
    os.mkfifo(out / "srcdir" / "pipe.csv")
    hard = write_csv(out / "hard.csv", one_row("hard1"))
    (box / "maxbounty").mkdir(parents=True)
    write_csv(box / "maxbounty" / "a.csv", one_row("a1"))
    links = {
        "maxbounty/link.csv": secret,
        "maxbounty/fifo-link.csv": out / "tripwire.csv",
        "maxbounty/dirlink": out / "dir",
        "maxbounty/dangling.csv": out / "missing.csv",
        "maxbounty/loop.csv": box / "maxbounty" / "loop.csv",
        "many": out / "srcdir",  # a linked offer-source folder
        "maxbounty/status": out / "dir",  # a linked status folder
        "events": out / "missing-dir",  # a dangling offer-source folder
        "fresh": box / "fresh",  # an offer-source folder that is a loop
    }
    for relative, target in links.items():
        (box / relative).symlink_to(target)
    os.mkfifo(box / "maxbounty" / "fifo.csv")
    os.mkfifo(box / "maxbounty" / ".a.csv.received.json")  # hidden: never opened either
    os.link(hard, box / "maxbounty" / "hard.csv")
    write_csv(box / "plain", one_row("plain1"))  # a file where a folder belongs
    return links


def test_links_and_fifos_in_the_inbox_are_quarantined_unopened_and_targets_untouched(
    tmp_path, warehouse_url, engine
):
    setup = Setup(tmp_path, warehouse_url)
    links = build_hostile_inbox(setup)
    (setup.layout.inbox / "maxbounty" / "self").symlink_to("self")  # a loop of one
    outside = setup.outside_home()
    ctx = setup.context(engine)

    with Tripwire(tmp_path) as wire:
        results = runner.run_inbox(ctx)
        again = runner.run_inbox(ctx)  # the offer-source folders are real folders now

    assert wire.tripped == []
    by_name = {r.name: r for r in results}
    assert {n for n, r in by_name.items() if r.state == "applied"} == {"a.csv", "hard.csv"}
    unopened = {Path(r).name for r in links} | {"fifo.csv", "self", "plain"}
    assert {n for n, r in by_name.items() if r.state == "quarantined"} == unopened
    for name in unopened:
        assert by_name[name].content_hash is None  # never read, so never hashed
        assert by_name[name].reason_code == "unknown_offer_source"
        why = {"fifo.csv": "not a regular file (a FIFO)", "plain": "not inside"}
        why = why.get(name, "a symbolic link")
        assert why in by_name[name].detail, by_name[name].detail
    assert again == []
    assert set(export.frame(engine, setup.config)["click_id"]) == {"a1", "hard1"}
    assert setup.outside_home() == outside  # targets neither read, moved, deleted nor written
    quarantined = {p.name.split("_", 1)[1]: p for p in files_in(setup.layout.quarantine)}
    for relative, target in links.items():
        moved = quarantined[Path(relative).name]
        assert moved.is_symlink() and os.readlink(moved) == str(target)
    assert stat.S_ISFIFO(quarantined["fifo.csv"].lstat().st_mode)
    for folder in ("many", "events", "fresh", "plain", "maxbounty/status"):
        path = setup.layout.inbox / folder
        assert path.is_dir() and not path.is_symlink()
    # A hard link is the same file as its other name: that name stays, with its content.
    assert (setup.outside / "hard.csv").read_text() == one_row("hard1")
    assert files_in(setup.layout.processing) == []


def test_a_fifo_swapped_in_after_the_scan_is_quarantined_not_opened(
    tmp_path, warehouse_url, engine
):
    """A sender can replace a file by a FIFO between the scan and the claim's rename: the claimed
    entry is checked again, by lstat, before anything opens it."""
    setup = Setup(tmp_path, warehouse_url)
    ctx = setup.context(engine)
    ctx.datadir.layout.ensure(ctx.config.offer_sources)
    path = write_csv(ctx.datadir.layout.inbox / "maxbounty" / "x.csv", one_row("x1"))
    [waiting] = claims.scan(ctx.datadir.layout, ctx.config.offer_sources)
    path.unlink()
    os.mkfifo(path)
    claimed = claims.claim(ctx.datadir.layout, waiting)
    assert claimed is not None

    with Tripwire(tmp_path) as wire:
        result = runner.process_claimed(ctx, claimed)

    assert wire.tripped == []
    assert (result.state, result.content_hash) == ("quarantined", None)
    assert "not a regular file (a FIFO)" in result.detail
    [moved] = [p for p in files_in(ctx.datadir.layout.quarantine) if not p.name.endswith(".json")]
    assert stat.S_ISFIFO(moved.lstat().st_mode)


def test_the_inbox_command_never_opens_a_link_target_or_a_fifo(tmp_path):
    """The same through the real `conversions inbox`: a read of any FIFO would block it, and a
    bounded wait turns that into a failure."""
    setup = Setup(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")
    build_hostile_inbox(setup)
    outside = setup.outside_home()

    with Tripwire(tmp_path) as wire:
        done = setup.cli("inbox")

    assert wire.tripped == []
    assert done.returncode == 1, done.stderr  # files were quarantined
    assert "Traceback" not in done.stderr
    assert setup.outside_home() == outside


# --- 5. the size limit --------------------------------------------------------------------------

TEN_GB = 10 * 1024**3


# A sparse 10 GB file is a local thing; the S3 form (an object over the limit, never
# downloaded) is `test_an_object_over_the_size_limit_is_quarantined_without_being_downloaded`.
def test_a_file_over_the_size_limit_is_quarantined_without_being_read(
    tmp_path, warehouse_url, engine
):
    """A sparse 10 GB file costs no disk; hashing it would read 10 GB (seconds, and rchar)."""
    setup = Setup(tmp_path, warehouse_url, settings="[settings]\nmax_file_bytes = 1000\n\n")
    big = setup.cwd / "big.csv"
    big.write_bytes(b"click_id,payout\n")
    os.truncate(big, TEN_GB)
    at_limit = write_csv(setup.cwd / "limit.csv", "click_id,payout\n" + "l1,1.00\n".ljust(984, " "))
    assert at_limit.stat().st_size == 1000
    engine.dispose()  # connections are opened before the measurement, not during it
    with engine.connect():
        pass

    read_before, started = rchar(), time.perf_counter()
    result = setup.ingest(engine, big, "maxbounty")
    elapsed, read = time.perf_counter() - started, rchar() - read_before

    assert (result.state, result.reason_code) == ("quarantined", "file_too_large")
    assert elapsed < 1.0 and read < 4 << 20, (elapsed, read)
    assert result.content_hash is None  # not hashed: that would be reading it
    assert "10,737,418,240 bytes" in result.detail
    [row] = dump(engine)["ingested_files"].values()
    assert "quarantined" in row and any("file_too_large" in cell for cell in row)
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))
    assert (summary["state"], summary["content_hash"]) == ("quarantined", None)
    assert big.stat().st_size == TEN_GB
    assert setup.ingest(engine, at_limit, "maxbounty").state == "applied"  # the limit is inclusive

    # The inbox route: claimed, quarantined with its sidecar, still unread.
    setup.layout.ensure(setup.config.offer_sources)
    os.rename(big, setup.layout.inbox / "maxbounty" / "big.csv")
    read_before, started = rchar(), time.perf_counter()
    [result] = runner.run_inbox(setup.context(engine))
    elapsed, read = time.perf_counter() - started, rchar() - read_before

    assert (result.state, result.reason_code) == ("quarantined", "file_too_large")
    assert elapsed < 1.0 and read < 4 << 20, (elapsed, read)
    [moved] = [p for p in files_in(setup.layout.quarantine) if p.name.endswith("big.csv")]
    assert moved.stat().st_size == TEN_GB
    sidecar = json.loads(moved.with_name(moved.name + ".reason.json").read_text(encoding="utf-8"))
    assert (sidecar["code"], sidecar["content_hash"]) == ("file_too_large", None)


# `conversions inbox` in a process of its own, whose I/O is only its own (moto's server runs
# in the test's process): prints what the pass read and wrote through read()/write() (socket
# receives do not count in rchar, so a download shows as the spool file's writes, wchar).
MEASURED_INBOX = """
import json, sys
import fsspec
from pipeline import cli
from pipeline.datadir import objectstore
def io_counts():
    with open("/proc/self/io") as fh:
        fields = dict(line.split(":") for line in fh)
    return int(fields["rchar"]), int(fields["wchar"])
bucket = sys.argv[1]
fsspec.filesystem("s3").ls(bucket)  # botocore's service models are read here, not in the pass
(read, wrote) = io_counts()
code = cli.main(sys.argv[2:])
after = io_counts()
counts = {"code": code, "read": after[0] - read, "wrote": after[1] - wrote}
print(json.dumps(counts), file=sys.stderr)
"""


def test_an_object_over_the_size_limit_is_quarantined_without_being_downloaded(
    tmp_path, warehouse_url, moto_endpoint
):
    """The inbox route on S3: the claim streams an object to a local spool before anything
    reads it, so a file over ``max_file_bytes`` must be told by its listed size, and filed
    away by a copy inside the store. 24 MB (moto keeps objects in memory or its temp files;
    a sparse 10 GB file has no S3 equivalent): downloading it would write 24 MB to the spool
    (measured so: the test failed so before the fix, ``wrote`` 24 MB)."""
    setup = Setup(
        tmp_path, warehouse_url, settings="[settings]\nmax_file_bytes = 1000\n\n", s3=moto_endpoint
    )
    size = 24 << 20
    data = b"click_id,payout\n" + b"b1,1.00\n" * ((size - 16) // 8)
    setup.store.put("maxbounty/big.csv", data)
    options = ["--config", str(setup.config_path), "--home", setup.store.arg]
    options += ["--warehouse", setup.url]
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_INBOX, setup.store.bucket, "inbox", *options],
        cwd=setup.cwd,
        env=clean_env() | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    measured = json.loads(done.stderr.strip().splitlines()[-1])
    assert measured["code"] == 1, done.stderr  # a file quarantined
    assert measured["read"] < 4 << 20 and measured["wrote"] < 4 << 20, measured

    with warehouse.connect(setup.url).connect() as conn:
        [row] = conn.execute(select(warehouse.ingested_files)).mappings().all()
    # Not hashed (that would be reading it): the ledger's placeholder hash, as on a disk.
    assert (row["state"], row["content_hash"]) == ("quarantined", datadir.UNHASHED)
    assert f"{len(data):,} bytes" in row["detail"]
    quarantine = setup.store.files("quarantine")
    [moved] = [k for k in quarantine if k.endswith("big.csv")]
    assert quarantine[moved] == data  # the sender's bytes, whole
    sidecar = json.loads(quarantine[moved + ".reason.json"])
    assert (sidecar["code"], sidecar["content_hash"]) == ("file_too_large", None)
    assert setup.store.files("inbox") == {}
    assert setup.store.claims_held(setup.url) == 0


# --- 6. passwords ---------------------------------------------------------------------------------

needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
)


@pytest.fixture
def role_url() -> Iterator[str]:
    """A URL of a real role with a password, in a schema of its own (trust auth: any password
    connects, which is fine: this is about where the string shows up)."""
    admin = create_engine(POSTGRES_URL)
    suffix = uuid.uuid4().hex[:10]
    role, schema = f"hostile_{suffix}", f"h_{suffix}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(text(f"CREATE SCHEMA {schema} AUTHORIZATION {role}"))
    url = make_url(POSTGRES_URL).set(username=role, password=PASSWORD)
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


@needs_postgres
def test_a_warehouse_password_never_shows_in_output_logs_files_ledger_or_exceptions(
    tmp_path, role_url, caplog, capsys, monkeypatch
):
    url = make_url(role_url)
    assert url.password == PASSWORD and PASSWORD in role_url
    setup = Setup(tmp_path, role_url)
    write_csv(setup.cwd / "a.csv", "click_id,payout\np1,1.00\np2,=bad\n")
    write_csv(setup.cwd / "b.csv", "click_id,payout\np3,2.00\n")
    down = url.set(port=1).render_as_string(hide_password=False)
    no_db = url.set(database="no_such_db").render_as_string(hide_password=False)
    outputs: list[str] = []

    def config_with(warehouse_url: str) -> str:
        path = setup.outside / f"c{len(outputs)}.toml"
        url_line = f'[settings]\nwarehouse_url = "{warehouse_url}"\n'
        path.write_text(CONFIG_TOML.replace("[settings]\n", url_line, 1))
        return str(path)

    # A real process, failing (what it prints on the way out counts too): the URL from the config.
    done = run_cli(
        "ingest", "--config", config_with(no_db), "--home", str(setup.home),
        "--offer-source", "maxbounty", "a.csv", cwd=setup.cwd,
    )  # fmt: skip
    assert done.returncode == 1 and "no_such_db" in done.stderr, done.stderr
    outputs += [done.stdout, done.stderr]

    # In process, with every logger at DEBUG (SQLAlchemy's engine and pool, psycopg).
    for logger in ("", "sqlalchemy", "psycopg"):  # the libraries set WARNING on their own
        caplog.set_level(logging.DEBUG, logger=logger)
    monkeypatch.chdir(setup.cwd)
    base = ["--config", str(setup.config_path), "--home", str(setup.home)]

    def main(*args: str, env: str | None = None, expect: int) -> None:
        if env:
            monkeypatch.setenv("CONVERSIONS_WAREHOUSE_URL", env)
        else:
            monkeypatch.delenv("CONVERSIONS_WAREHOUSE_URL", raising=False)
        assert cli.main([args[0], *base, *args[1:]]) == expect
        out, err = capsys.readouterr()
        outputs.extend([out, err])

    main(
        "ingest",
        "--config",
        config_with(role_url),
        "--offer-source",
        "maxbounty",
        "a.csv",
        expect=0,
    )
    main("ingest", "--warehouse", role_url, "--offer-source", "maxbounty", "b.csv", expect=0)
    write_csv(setup.home / "inbox" / "maxbounty" / "c.csv", "click_id,payout\np4,1.00\n")
    write_csv(setup.home / "inbox" / "stray.csv", "x\n")
    main("inbox", env=role_url, expect=1)  # the stray file is quarantined
    main("export", "--config", config_with(role_url), expect=0)
    main("ingest", "--warehouse", down, "--offer-source", "maxbounty", "a.csv", expect=1)
    main("export", env=no_db, expect=1)
    main("export", "--config", config_with(down), expect=1)
    # Malformed URLs: an unencoded '@' would put the password's tail in the host, a bad port
    # would be echoed by the parser; neither is shown, and neither is a traceback.
    raw = f"postgresql+psycopg://{url.username}:{PASSWORD.replace('-', '@')}@127.0.0.1/test"
    main("export", "--warehouse", raw, expect=1)
    main("export", env=url.render_as_string(False).replace(":5432", ":notaport"), expect=1)
    # A SQL error in the middle of a file, on the CLI and on the inbox route.
    admin = create_engine(POSTGRES_URL)
    schema = url.query["options"].split("=", 1)[1]
    with admin.begin() as conn:
        conn.execute(text(f"ALTER TABLE {schema}.conversions RENAME TO conversions_gone"))
    try:
        write_csv(setup.cwd / "d.csv", "click_id,payout\np5,1.00\n")
        main("ingest", "--warehouse", role_url, "--offer-source", "maxbounty", "d.csv", expect=1)
        write_csv(setup.home / "inbox" / "maxbounty" / "e.csv", "click_id,payout\np6,1.00\n")
        main("inbox", env=role_url, expect=1)  # put back in the inbox for the next run
        errors = []
        engine = warehouse.connect(role_url)
        try:
            setup.ingest(engine, setup.cwd / "d.csv", "maxbounty")
        except Exception as exc:  # raised to the caller: its whole chain must be clean
            errors.append(exc)
        finally:
            engine.dispose()
        try:
            warehouse.connect(down)
        except Exception as exc:
            errors.append(exc)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"ALTER TABLE {schema}.conversions_gone RENAME TO conversions"))
        admin.dispose()
    assert len(errors) == 2
    outputs += ["".join(traceback.format_exception(exc)) for exc in errors]
    outputs += [repr(exc) for exc in errors]
    outputs += [caplog.text, *(str(r.args) for r in caplog.records)]

    assert any("maxbounty/b.csv" in o for o in outputs), outputs  # the runs did produce output
    assert any("sqlalchemy" in r.name for r in caplog.records), {r.name for r in caplog.records}
    assert not [o for o in outputs if "Traceback" in o and "test_hostile" not in o]
    leaks = [o for o in outputs if any(part in o for part in (PASSWORD, *PASSWORD.split("-")))]
    assert leaks == []
    files = [p for p in [*files_in(setup.home), *files_in(setup.cwd)] if is_regular(p)]
    assert any(p.name.endswith(".reason.json") for p in files)
    assert [p for p in files if PASSWORD.encode() in p.read_bytes()] == []
    engine = warehouse.connect(role_url)
    try:
        stored = json.dumps({k: list(v.values()) for k, v in dump(engine).items()}, default=str)
    finally:
        engine.dispose()
    assert "maxbounty" in stored and PASSWORD not in stored
