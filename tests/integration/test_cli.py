"""`conversions` as a user runs it: a real subprocess on real files, on both warehouses.

Every check compares with values worked out by hand from the files written here (New York is
GMT-4 in July and GMT-5 in January, Dubai GMT+4 all year). Subprocesses cost ~0.8 s each, so
each test runs as few as its point needs and checks the rest in-process.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import select, text

from pipeline import config as config_module
from pipeline import export, reader, warehouse
from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.ingest import Upload, ingest_file
from tests.helpers import SAMPLE_CONFIG as CONFIG
from tests.helpers import independent_data_lines, write_csv

# The summary's words for a file's state and what it applied, as `table` reads them back.
STATE_WORDS = {
    "applied": "applied",
    "dry run": "dry_run",
    "quarantined": "quarantined",
    "duplicate file": "duplicate_file",
    "failed": "failed",
}
APPLIED_WORDS = ("inserted", "updated", "incremented", "status changed")
HEAD = re.compile(
    r"(?P<name>\S+) \((?P<kind>conversions|status updates)\): (?P<state>[a-z ]+?)"
    r"(?:, nothing was \w+)?(?:, (?P<lines>\d+) data lines?)?"
)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` with no CONVERSIONS_* variables but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVERSIONS_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def table(stdout: str) -> dict[str, dict]:
    """The summary's blocks, one per file, keyed by `offer_source/name`: its kind, state, counts
    (data lines, then inserted, updated, incremented, status changed, ignored as duplicates,
    rejected), the first line under a file that was not applied (`detail`: why), and the paths
    of its rejection report (`report`, None when nothing was rejected) and its `summary`."""
    found = {}
    for chunk in re.split(r"\n(?=\S)", stdout):  # a block: a line at the margin, then indented
        first, *lines = chunk.strip("\n").splitlines() or [""]
        head = HEAD.fullmatch(first)
        if head is None:  # the total, or text after the summary
            continue
        counts = [int(head["lines"] or 0), 0, 0, 0, 0, 0, 0]
        row = {"report": None, "summary": None, "detail": ""}
        for n, line in enumerate(lines):
            said = line.strip()
            if said.startswith(("rejection report:", "summary:")):  # a long path wraps under it
                label, path = said.split(":", 1)
                below = itertools.takewhile(lambda x: x.startswith("    "), lines[n + 1 :])
                said = f"{label}: " + "".join([path.strip(), *(x.strip() for x in below)])
            if said.startswith(("applied: ", "would apply: ")):
                for part in said.split(": ", 1)[1].split(", "):
                    if part != "nothing":
                        count, word = part.split(" ", 1)
                        counts[1 + APPLIED_WORDS.index(word)] = int(count)
            elif match := re.fullmatch(
                r"(?:ignored|would ignore) as duplicates: (\d+) lines?", said
            ):
                counts[5] = int(match[1])
            elif match := re.fullmatch(r"(?:rejected|would reject): (\d+) lines?", said):
                counts[6] = int(match[1])
            elif match := re.fullmatch(r"(rejection report|summary): (\S+)", said):
                row["report" if match[1] == "rejection report" else "summary"] = match[2]
        if head["state"] not in ("applied", "dry run") and lines:
            row["detail"] = lines[0].strip()
        found[head["name"]] = row | {
            "kind": "status" if head["kind"] == "status updates" else "conversions",
            "state": STATE_WORDS[head["state"]],
            "counts": tuple(counts),
        }
    return found


class Setup:
    """A working directory with a config file, a data directory and a warehouse URL."""

    def __init__(self, root: Path, warehouse_url: str):
        self.root, self.url = root, warehouse_url
        self.config_path = root / "conversions.toml"
        self.config_path.write_text(CONFIG, encoding="utf-8")
        self.home = root / "home"
        self.config = config_module.load(self.config_path)

    def __call__(self, command: str, *args: str) -> subprocess.CompletedProcess:
        options = ["--config", str(self.config_path), "--home", str(self.home)]
        return run_cli(command, *options, "--warehouse", self.url, *args, cwd=self.root)

    def file(self, name: str, content: str) -> Path:
        return write_csv(self.root / "files" / name, content)


@pytest.fixture
def cli(tmp_path, warehouse_url) -> Setup:
    return Setup(tmp_path, warehouse_url)


def exported(engine, config, offer_source=None, local_time=False) -> list[dict]:
    """The export as the library produces it, without the generated conversion ids."""
    data = export.frame(engine, config, offer_source=offer_source, local_time=local_time)
    records = data.drop(columns="conversion_id").to_dict("records")
    return [{k: (None if v != v else v) for k, v in r.items()} for r in records]  # NaN -> None


def ledger(engine) -> list[dict]:
    f = warehouse.ingested_files
    with engine.connect() as conn:
        rows = conn.execute(select(f).order_by(f.c.file_id)).mappings().all()
    return [dict(r) for r in rows]


# --- ingest and export -----------------------------------------------------------------------


def test_ingest_then_export_in_utc_and_local_time(cli, engine):
    path = cli.file(
        "ny.csv",
        "click_id,payout,conversion_time,status\n"
        "ny-summer,12.50,2026-07-01 14:00:00,\n"  # EDT: +4 h
        "ny-winter,0.000001,2026-01-15 09:30:00,PENDING\n"  # EST: +5 h
        ",3.00,2026-07-01 15:00:00,\n",  # line 4: no click id
    )
    done = cli("ingest", "--offer-source", "maxbounty", str(path))
    assert done.returncode == 0, done.stderr  # a rejected row does not fail the file
    [row] = table(done.stdout).values()
    assert (row["kind"], row["state"]) == ("conversions", "applied")
    assert row["counts"] == (3, 2, 0, 0, 0, 0, 1)
    assert row["report"].startswith("reports/")  # relative to the data directory
    report = cli.home / row["report"]
    assert report.is_file() and (cli.home / row["summary"]).is_file()
    with report.open(encoding="utf-8-sig", newline="") as fh:
        rejected = list(csv.DictReader(fh))
    assert [(r["line"], r["reason_code"], r["payout"]) for r in rejected] == [
        ("4", "missing_click_id", "3.00")
    ]
    assert "applied  maxbounty/ny.csv" in done.stderr  # the plain progress line

    done = cli("export")
    assert done.returncode == 0, done.stderr
    got = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(got[0]) == export.COLUMNS
    assert [r["conversion_id"] != "" for r in got] == [True, True]
    assert [{k: v for k, v in r.items() if k != "conversion_id"} for r in got] == [
        {
            "offer_source": "maxbounty",
            "click_id": "ny-winter",
            "conversion_type": "",
            "event_id": "",
            "status": "pending",
            "payout": "0.000001",
            "currency": "USD",
            "converted_at": "2026-01-15T14:30:00Z",
            "duplicate_status": "unknown",
        },
        {
            "offer_source": "maxbounty",
            "click_id": "ny-summer",
            "conversion_type": "",
            "event_id": "",
            "status": "approved",
            "payout": "12.50",
            "currency": "USD",
            "converted_at": "2026-07-01T18:00:00Z",
            "duplicate_status": "unknown",
        },
    ]

    out = cli.root / "local.jsonl"
    args = ["--local-time", "--format", "jsonl", "--offer-source", "maxbounty", "-o", str(out)]
    done = cli("export", *args)
    assert (done.returncode, done.stdout) == (0, "")
    local = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["click_id"], r["payout"], r["converted_at"]) for r in local] == [
        ("ny-winter", "0.000001", "2026-01-15T09:30:00-05:00"),
        ("ny-summer", "12.50", "2026-07-01T14:00:00-04:00"),
    ]


def test_dry_run_changes_nothing_and_predicts_the_real_run(cli, engine):
    path = cli.file(
        "dry.csv",
        "click_id,payout,conversion_time\n"
        "d1,1.00,2026-07-01 10:00:00\n"
        "d1,2.00,2026-07-01 11:00:00\n"  # ignore mode: the second of a key is ignored
        "d2,x,2026-07-01 12:00:00\n",  # invalid payout
    )
    done = cli("ingest", "--dry-run", "--offer-source", "maxbounty", str(path))
    assert done.returncode == 0, done.stderr
    [row] = table(done.stdout).values()
    assert (row["state"], row["counts"]) == ("dry_run", (3, 1, 0, 0, 0, 1, 1))
    assert exported(engine, cli.config) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM conversion_history")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM rejected_rows")).scalar() == 0
    [dry] = ledger(engine)
    assert (dry["state"], dry["inserted"], dry["ignored_duplicate"], dry["rejected"]) == (
        "dry_run",
        1,
        1,
        1,
    )

    # A dry run does not count as having applied these bytes: the real run applies them.
    done = cli("ingest", "--offer-source", "maxbounty", str(path))
    assert done.returncode == 0, done.stderr
    [row] = table(done.stdout).values()
    assert (row["state"], row["counts"]) == ("applied", (3, 1, 0, 0, 0, 1, 1))
    assert [(r["click_id"], r["payout"]) for r in exported(engine, cli.config)] == [("d1", "1.00")]


def test_mode_override_applies_to_one_run_only(cli, engine):
    first = cli.file("1.csv", "click_id,payout,conversion_time\nk1,10.00,2026-07-01 14:00:00\n")
    second = cli.file("2.csv", "click_id,payout,conversion_time\nk1,15.00,2026-07-01 15:00:00\n")
    third = cli.file("3.csv", "click_id,payout,conversion_time\nk1,99.00,2026-07-01 16:00:00\n")
    assert cli("ingest", "--offer-source", "maxbounty", str(first)).returncode == 0

    done = cli("ingest", "--offer-source", "maxbounty", "--mode", "edit", str(second))
    assert done.returncode == 0, done.stderr
    assert table(done.stdout)["maxbounty/2.csv"]["counts"] == (1, 0, 1, 0, 0, 0, 0)
    # Without the override, maxbounty's own mode (ignore) holds again.
    # (--json: the summary as JSON on stdout, one object per file, as its summary JSON holds it)
    done = cli("ingest", "--offer-source", "maxbounty", "--json", str(third))
    [summary] = json.loads(done.stdout)
    assert (summary["name"], summary["state"], summary["data_lines"]) == ("3.csv", "applied", 1)
    assert summary["outcomes"] == {
        "inserted": 0,
        "updated": 0,
        "incremented": 0,
        "status_updated": 0,
        "ignored_duplicate": 1,
        "rejected": 0,
    }
    assert summary == json.loads(Path(summary["summary_path"]).read_text(encoding="utf-8"))

    [k1] = exported(engine, cli.config)
    assert (k1["payout"], k1["converted_at"]) == ("15.00", "2026-07-01T19:00:00Z")
    assert [(r["original_name"], r["duplicate_mode_override"]) for r in ledger(engine)] == [
        ("1.csv", None),
        ("2.csv", "edit"),
        ("3.csv", None),
    ]


def test_status_updates_with_kind_status(cli, engine):
    conversions = cli.file(
        "c.csv",
        "click_id,payout,conversion_time\n"
        "s1,1.00,2026-07-01 10:00:00\n"
        "s2,2.00,2026-07-01 11:00:00\n",
    )
    updates = cli.file("u.csv", "click_id,status\ns1,Declined\ns3,declined\n")
    assert cli("ingest", "--offer-source", "maxbounty", str(conversions)).returncode == 0
    done = cli("ingest", "--offer-source", "maxbounty", "--kind", "status", str(updates))
    assert done.returncode == 0, done.stderr
    row = table(done.stdout)["maxbounty/u.csv"]
    assert (row["kind"], row["state"], row["counts"]) == (
        "status",
        "applied",
        (2, 0, 0, 0, 1, 0, 1),
    )
    with open(cli.home / row["report"], encoding="utf-8-sig", newline="") as fh:
        assert [(r["line"], r["reason_code"]) for r in csv.DictReader(fh)] == [
            ("3", "unknown_conversion")
        ]
    assert [(r["click_id"], r["status"]) for r in exported(engine, cli.config)] == [
        ("s1", "declined"),
        ("s2", "approved"),
    ]


def test_a_file_missing_a_required_column_is_quarantined_and_others_still_apply(cli, engine):
    good = cli.file("good.csv", "click_id,payout\ng1,1.00\n")
    bad = cli.file("bad.csv", "payout,conversion_time\n1.00,2026-07-01 14:00:00\n")
    done = cli("ingest", "--offer-source", "maxbounty", str(bad), str(good))
    assert done.returncode == 1, done.stderr
    rows = table(done.stdout)
    assert rows["maxbounty/bad.csv"]["state"] == "quarantined"
    assert rows["maxbounty/bad.csv"]["detail"].startswith(
        "missing_required_column: missing required column 'click_id'"
    )
    assert (rows["maxbounty/good.csv"]["state"], rows["maxbounty/good.csv"]["counts"]) == (
        "applied",
        (1, 1, 0, 0, 0, 0, 0),
    )
    assert "quarantined  maxbounty/bad.csv" in done.stderr
    assert [(r["original_name"], r["state"]) for r in ledger(engine)] == [
        ("bad.csv", "quarantined"),
        ("good.csv", "applied"),
    ]
    assert [r["click_id"] for r in exported(engine, cli.config)] == ["g1"]


def test_a_warehouse_failure_mid_run_is_exit_1_without_a_traceback(tmp_path):
    setup = Setup(tmp_path, f"sqlite:///{tmp_path / 'w.db'}")
    engine = warehouse.connect(setup.url)
    with engine.begin() as conn:  # the table the merge reads is gone
        conn.execute(text("ALTER TABLE conversions RENAME TO conversions_gone"))
    engine.dispose()
    path = setup.file("a.csv", "click_id,payout\na1,1.00\n")
    done = setup("ingest", "--offer-source", "maxbounty", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: warehouse error:" in done.stderr and "conversions" in done.stderr


def test_defaults_are_conversions_toml_and_var_in_the_current_directory(tmp_path):
    """A first run with no options: ./var does not exist yet and is made for the warehouse."""
    (tmp_path / "conversions.toml").write_text(CONFIG, encoding="utf-8")
    content = "click_id,payout,conversion_time\nx1,1.00,2026-07-01 14:00:00\n"
    write_csv(tmp_path / "x.csv", content)
    done = run_cli("ingest", "--offer-source", "maxbounty", "x.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert table(done.stdout)["maxbounty/x.csv"]["counts"] == (1, 1, 0, 0, 0, 0, 0)
    engine = warehouse.connect(f"sqlite:///{tmp_path / 'var' / 'warehouse.db'}")
    try:
        config = config_module.load(tmp_path / "conversions.toml")
        assert [(r["click_id"], r["converted_at"]) for r in exported(engine, config)] == [
            ("x1", "2026-07-01T18:00:00Z")
        ]
    finally:
        engine.dispose()
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    assert [p.name for p in (tmp_path / "var" / "reports").rglob("*.summary.json")] == [
        f"x.{digest}.summary.json"
    ]


# --- the inbox ---------------------------------------------------------------------------------


def test_inbox_pass_over_two_offer_sources_with_a_stray_file(tmp_path, warehouse_url, engine):
    """Home, config and warehouse come from the environment this time."""
    setup = Setup(tmp_path, warehouse_url)
    inbox = setup.home / "inbox"
    files = {
        "maxbounty/a.csv": "click_id,payout,conversion_time\nm1,5.00,2026-07-01 14:00:00\n",
        "maxbounty/status/s.csv": "click_id,status\nm1,declined\n",
        "clickbank/c.csv": "click_id,payout,conversion_time\nc1,7.25,2026-07-01 10:00:00\n",
        "stray.csv": "click_id,payout\nz1,1.00\n",
    }
    for relative, content in files.items():
        write_csv(inbox / relative, content)
    env = {
        "CONVERSIONS_HOME": str(setup.home),
        "CONVERSIONS_CONFIG": str(setup.config_path),
        "CONVERSIONS_WAREHOUSE_URL": warehouse_url,
    }
    done = run_cli("inbox", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr  # the stray file was quarantined

    rows = table(done.stdout)
    assert {name: (r["kind"], r["state"], r["counts"]) for name, r in rows.items()} == {
        "clickbank/c.csv": ("conversions", "applied", (1, 1, 0, 0, 0, 0, 0)),
        "maxbounty/a.csv": ("conversions", "applied", (1, 1, 0, 0, 0, 0, 0)),
        "maxbounty/s.csv": ("status", "applied", (1, 0, 0, 0, 1, 0, 0)),
        "-/stray.csv": ("conversions", "quarantined", (0, 0, 0, 0, 0, 0, 0)),
    }
    assert rows["-/stray.csv"]["detail"].startswith("unknown_offer_source:")
    total = next(line for line in done.stdout.splitlines() if line.startswith("total"))
    assert total == (
        "total: 4 files (3 applied, 1 quarantined); 3 data lines: 2 inserted, 1 status changed"
    )
    # Nothing was rejected: no file names a rejection report (they hold a header only).
    assert "rejection report" not in done.stdout
    assert all(r["report"] is None for r in rows.values())

    assert [p for p in inbox.rglob("*") if p.is_file()] == []
    archived = {
        p.relative_to(setup.home / "archive").parts[1:]: p.read_bytes()
        for p in (setup.home / "archive").rglob("*.csv")
    }
    digest = {r: hashlib.sha256(c.encode()).hexdigest()[:16] for r, c in files.items()}
    assert archived == {
        ("clickbank", "conversions", f"{digest['clickbank/c.csv']}_c.csv"): files[
            "clickbank/c.csv"
        ].encode(),
        ("maxbounty", "conversions", f"{digest['maxbounty/a.csv']}_a.csv"): files[
            "maxbounty/a.csv"
        ].encode(),
        ("maxbounty", "status", f"{digest['maxbounty/status/s.csv']}_s.csv"): files[
            "maxbounty/status/s.csv"
        ].encode(),
    }
    [stray] = (setup.home / "quarantine").rglob("*stray.csv")
    assert stray.read_bytes() == files["stray.csv"].encode()
    reason = json.loads(stray.with_name(stray.name + ".reason.json").read_text())
    assert (reason["code"], reason["relative"]) == ("unknown_offer_source", "stray.csv")

    assert [
        (r["offer_source"], r["click_id"], r["status"], r["payout"], r["converted_at"])
        for r in exported(engine, setup.config, local_time=True)
    ] == [
        ("clickbank", "c1", "approved", "7.25", "2026-07-01T14:00:00+04:00"),  # 10:00Z
        ("maxbounty", "m1", "declined", "5.00", "2026-07-01T14:00:00-04:00"),  # 18:00Z
    ]


# --- mistakes a user makes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_text", "args", "expected"),
    [
        pytest.param(
            CONFIG.replace("America/New_York", "Mars/Olympus_Mons"),
            ["export"],
            ["conversions.toml", "accounts.ny.timezone", "Mars/Olympus_Mons"],
            id="unknown-zone",
        ),
        pytest.param(
            CONFIG.replace('duplicate_mode = "edit"', 'duplicate_mode = "overwrite"'),
            ["export"],
            ["conversions.toml", "offer_sources.clickbank.duplicate_mode", "overwrite"],
            id="unknown-mode",
        ),
        pytest.param(
            CONFIG,
            ["ingest", "--offer-source", "nosuchnetwork", "x.csv"],
            ["offer_sources.nosuchnetwork", "no such offer source"],
            id="unknown-offer-source",
        ),
        pytest.param(
            CONFIG,
            ["ingest", "--offer-source", "maxbounty", "--received-at", "yesterday", "x.csv"],
            ["--received-at", "yesterday"],
            id="bad-received-at",
        ),
        pytest.param(
            CONFIG,
            ["ingest", "--offer-source", "maxbounty", "--received-at", "2026-07-01T10:00", "x.csv"],
            ["--received-at", "offset"],
            id="naive-received-at",
        ),
    ],
)
def test_usage_and_config_mistakes_exit_2_naming_what_and_where(
    tmp_path, config_text, args, expected
):
    (tmp_path / "conversions.toml").write_text(config_text, encoding="utf-8")
    write_csv(tmp_path / "x.csv", "click_id,payout\nx1,1.00\n")
    done = run_cli(*args, cwd=tmp_path)  # ./conversions.toml and ./var are the defaults
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    for part in expected:
        assert part in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "var" / "warehouse.db").exists()  # refused before touching anything


def test_an_unreachable_warehouse_is_named_without_its_password(tmp_path):
    """README: an unreachable warehouse is exit 1 (a transient failure), not a usage error."""
    (tmp_path / "conversions.toml").write_text(CONFIG, encoding="utf-8")
    path = write_csv(tmp_path / "x.csv", "click_id,payout\nx1,1.00\n")
    url = "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"
    done = run_cli(
        "ingest",
        "--offer-source",
        "maxbounty",
        str(path),
        cwd=tmp_path,
        env={"CONVERSIONS_WAREHOUSE_URL": url},
    )
    assert done.returncode == 1
    assert "s3cret" not in done.stderr + done.stdout
    assert "cannot open the warehouse postgresql+psycopg://u:***@127.0.0.1:1/x" in done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_text() == "click_id,payout\nx1,1.00\n"


# --- template and demo ------------------------------------------------------------------------


def test_templates_are_accepted_by_the_reader_and_apply(tmp_path):
    config = config_module.parse(tomllib.loads(CONFIG), "test.toml")
    paths = {}
    for kind in ("conversions", "status"):
        done = run_cli("template", "--kind", kind, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        paths[kind] = tmp_path / f"{kind}.csv"
        paths[kind].write_text(done.stdout, encoding="utf-8", newline="")
        assert reader.read_header(paths[kind], kind).unknown == ()
        assert independent_data_lines(paths[kind]) == 1
    assert list(reader.read_header(paths["conversions"], "conversions").columns) == [
        "click_id",
        "payout",
        "conversion_time",
        "conversion_type",
        "status",
        "event_id",
        "currency",
    ]
    assert list(reader.read_header(paths["status"], "status").columns) == [
        "click_id",
        "status",
        "conversion_type",
        "event_id",
    ]

    engine = warehouse.connect(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        for kind, outcome in (("conversions", "inserted"), ("status", "status_updated")):
            result = ingest_file(
                Context(config, engine, LocalDataDir(tmp_path)),
                Upload(paths[kind], "maxbounty", kind=kind),
            )
            assert (result.state, result.data_lines, result.outcomes[outcome]) == ("applied", 1, 1)
        [row] = exported(engine, config)
    finally:
        engine.dispose()
    # 2026-03-08 is the day New York springs forward (at 02:00): 14:00 is already EDT.
    assert row == {
        "offer_source": "maxbounty",
        "click_id": "1a2b3c4d5e6f7g8h9i0j",
        "conversion_type": "Purchase",
        "event_id": "ORDER-1001",
        "status": "declined",
        "payout": "12.50",
        "currency": "USD",
        "converted_at": "2026-03-08T18:00:00Z",
        "duplicate_status": "unknown",
    }


def test_demo_runs_the_sample_into_var_demo(tmp_path):
    done = run_cli("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    home = tmp_path / "var" / "demo"
    assert f"Demo home: {home}" in done.stderr
    rows = table(done.stdout)
    # Worked out line by line from pipeline/demo_data (see the comments there):
    # excel_export (edit, UTC): cd-1 in, cd-2 in, cd-1 again updated, cd-3 negative rejected.
    # chargebacks: cd-2 declined, cd-9 unknown. network_export (ignore, New York): mb-0001,
    # mb-0004 Upsell and mb-0008 in; mb-0001 again ignored; the second Upsell incremented;
    # rejected: ambiguous 01:30 on Nov 1, nonexistent 02:30 on Mar 8, 6.21E+23, a row with one
    # cell too many, "abc", 03/11/2026 and a formula.
    assert {name: (r["state"], r["counts"]) for name, r in rows.items()} == {
        "clickdealer/excel_export.csv": ("applied", (4, 2, 1, 0, 0, 0, 1)),
        "clickdealer/chargebacks.csv": ("applied", (2, 0, 0, 0, 1, 0, 1)),
        "maxbounty/2026-11-02_network_export.csv": ("applied", (12, 3, 0, 1, 0, 1, 7)),
        "-/stray_file.csv": ("quarantined", (0, 0, 0, 0, 0, 0, 0)),
    }
    for name in ("excel_export.csv", "chargebacks.csv", "2026-11-02_network_export.csv"):
        [original] = (home / "archive").rglob(f"*_{name}")
        assert rows[next(k for k in rows if k.endswith("/" + name))]["counts"][0] == (
            independent_data_lines(original)
        )
    for name, row in rows.items():
        if row["state"] == "applied":  # each of them has rejected rows: its report is named
            report = home / row["report"]
            assert report.is_file() and report.is_relative_to(home / "reports"), name
            with report.open(encoding="utf-8-sig", newline="") as fh:
                first = fh.readline()
                fh.seek(0)
                records = list(csv.reader(fh, delimiter=max(",;", key=first.count)))
            assert len(records) - 1 == row["counts"][-1]  # a header, then one per rejected row
    assert f"rejection reports   {home / 'reports'}/<date>/*.rejected.csv" in done.stdout
    assert f"warehouse           {home / 'warehouse.db'}" in done.stdout
    assert f"CONVERSIONS_HOME={home} CONVERSIONS_CONFIG={home / 'conversions.toml'}" in done.stdout
    assert [p.name for p in (home / "quarantine").rglob("*stray_file.csv")] != []
    assert [p for p in (home / "inbox").rglob("*") if p.is_file()] == []
    # ... and all of it through the real DAG, on an Airflow home inside the demo home.
    assert "DAG run of conversions_inbox: success" in done.stdout
    airflow_log = (home / "airflow" / "dag_test.log").read_text(encoding="utf-8")
    for task_id in ("claim_files", "process_file", "process_status_file", "summarise"):
        assert f"end task task_id={task_id}" in airflow_log
    assert (home / "airflow" / "airflow.db").is_file()
