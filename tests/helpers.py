"""What the tests share besides fixtures: paths, the PostgreSQL switch, configs and checks.

`conftest.py` holds only fixtures and pytest hooks; a test imports what it needs from here by
name (pytest loads conftest by itself, and importing it as a module would run its hooks' set-up
twice). The sample configs live in `tests/data/`, one copy each, and are read from there:

- `sample.toml`: a config as users write it, New York (ignore) and Dubai (edit, UTC file times);
- `every_mode.toml`: the basis of `make_config`, one offer source per duplicate mode;
- `concurrency.toml`: three offer sources whose files make the serial order matter;
- `faults.toml` and `faults_after_change.toml`: before and after a config change between runs;
- `hostile.toml`: one New York account, the offer sources the hostile-input tests drop into.
"""

from __future__ import annotations

import csv
import io
import os
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from pipeline import config as config_module
from pipeline import warehouse
from pipeline.core.vocabulary import OUTCOMES

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

# PostgreSQL variants run when this is set (see conftest: they error, never skip, if it is set
# and the server does not answer).
POSTGRES_URL = os.environ.get("CONVERSIONS_TEST_POSTGRES_URL")

# The crash, concurrency and fuzz tests run a bounded number of kills, workers and examples in
# every run (CI included); CONVERSIONS_SOAK=1 runs them long (the soak command in the README).
SOAK = os.environ.get("CONVERSIONS_SOAK", "") not in ("", "0")


def soak_or(ci: int, soak: int) -> int:
    """How many kills/examples/rounds: `ci` normally, `soak` under CONVERSIONS_SOAK=1."""
    return soak if SOAK else ci


def sample_config(name: str) -> str:
    """The text of the sample config `tests/data/<name>`."""
    return (DATA / name).read_text(encoding="utf-8")


# A config file as users write it: New York (ignore) and Dubai (edit, UTC file times).
SAMPLE_CONFIG = sample_config("sample.toml")


def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections live in a schema of their own, dropped afterwards."""
    admin = create_engine(POSTGRES_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def make_config(**overrides) -> config_module.Config:
    """The test config (`every_mode.toml`), with per-offer-source overrides:
    make_config(maxbounty={...})."""
    raw = tomllib.loads(sample_config("every_mode.toml"))
    for name, values in overrides.items():
        if name == "settings":
            raw["settings"] = values
        else:
            raw["offer_sources"].setdefault(name, {"account": "ny"}).update(values)
    return config_module.parse(raw, "test.toml")


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def independent_data_lines(path: Path) -> int:
    """Count a file's data lines with nothing but the csv module (a second implementation)."""
    raw = path.read_bytes()
    for bom, enc in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if raw.startswith(bom):
            text = raw.decode(enc)
            break
    else:
        text = raw.decode("utf-8")
    first = text.splitlines()[0] if text else ""
    skip = 1
    if first.strip().startswith("sep=") and len(first.strip()) == 5:
        delimiter, skip = first.strip()[4], 2
    else:
        delimiter = max([",", ";", "\t"], key=first.count)
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))[skip:]
    return sum(1 for r in records if any(c.strip() for c in r))


def assert_accounted(result, path: Path | None = None, engine=None) -> None:
    """The accounting invariant, checked three ways for every file a test ingests."""
    total = sum(result.outcomes.values())
    assert total == result.data_lines, (result.outcomes, result.data_lines)
    if path is not None and result.state in ("applied", "dry_run"):
        assert result.data_lines == independent_data_lines(path)
    if engine is not None and result.file_id is not None:
        with engine.connect() as conn:
            row = (
                conn.execute(
                    select(warehouse.ingested_files).where(
                        warehouse.ingested_files.c.file_id == result.file_id
                    )
                )
                .mappings()
                .one()
            )
        assert row["state"] == result.state
        assert sum(row[o] for o in OUTCOMES) == row["data_lines"]
        if result.state == "applied":
            assert row["data_lines"] == result.data_lines
            with engine.connect() as conn:
                n_rejected = conn.execute(
                    select(warehouse.rejected_rows.c.line).where(
                        warehouse.rejected_rows.c.file_id == result.file_id
                    )
                ).all()
            assert len(n_rejected) == result.outcomes["rejected"]
    if result.report_path and result.state in ("applied", "dry_run"):
        with open(result.report_path, encoding="utf-8-sig", newline="") as fh:
            lines = list(csv.reader(fh, delimiter=_sniff(result.report_path)))
        assert len(lines) - 1 == result.outcomes["rejected"]


def _sniff(path: str) -> str:
    with open(path, encoding="utf-8-sig") as fh:
        first = fh.readline()
    return max([",", ";", "\t"], key=first.count)
