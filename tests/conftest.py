"""Shared fixtures: a fresh warehouse on each backend, a config, and file helpers.

PostgreSQL tests read `CONVERSIONS_TEST_POSTGRES_URL`. When it is set and the server does not
answer, the tests error (they never skip), so CI cannot go green without PostgreSQL. When it is
not set (a laptop without PostgreSQL), only the PostgreSQL variants are skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline import config as config_module
from pipeline import warehouse

POSTGRES_URL = os.environ.get("CONVERSIONS_TEST_POSTGRES_URL")
REPO = Path(__file__).resolve().parents[1]

# The crash, concurrency and fuzz tests run a bounded number of kills, workers and examples in
# every run (CI included); CONVERSIONS_SOAK=1 runs them long (the soak command in the README).
SOAK = os.environ.get("CONVERSIONS_SOAK", "") not in ("", "0")


def soak_or(ci: int, soak: int) -> int:
    """How many kills/examples/rounds: `ci` normally, `soak` under CONVERSIONS_SOAK=1."""
    return soak if SOAK else ci


# Airflow reads its configuration once, when first imported: point it at a throwaway home (an
# SQLite metadata database, this repo's DAG folder) before any test imports it, so the tests
# never touch a real ~/airflow. Tests that start Airflow as subprocesses build their own env.
AIRFLOW_TEST_HOME = Path(tempfile.mkdtemp(prefix="conversions-airflow-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_TEST_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_TEST_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
)


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(AIRFLOW_TEST_HOME, ignore_errors=True)


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
        ),
    ),
]


def _postgres_schema_url() -> Iterator[str]:
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


@pytest.fixture(params=BACKENDS)
def warehouse_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def engine(warehouse_url: str):
    eng = warehouse.connect(warehouse_url)
    yield eng
    eng.dispose()


BASE_CONFIG = {
    "accounts": {
        "ny": {"timezone": "America/New_York", "currency": "USD"},
        "dubai": {"timezone": "Asia/Dubai", "currency": "AED"},
    },
    "offer_sources": {
        "maxbounty": {
            "account": "ny",
            "duplicate_mode": "ignore",
            "conversion_types": {"Purchase": {"duplicate_mode": "increment_payout"}},
        },
        "clickbank": {"account": "dubai", "duplicate_mode": "edit", "file_times": "utc"},
        "events": {"account": "ny", "duplicate_mode": "ignore_by_event_id"},
        "fresh": {"account": "ny", "duplicate_mode": "new_or_repeated"},
        "many": {"account": "ny", "duplicate_mode": "create_new", "allow_negative_payout": True},
    },
}


# A config file as users write it: New York (ignore) and Dubai (edit, UTC file times).
CONFIG_TOML = """\
[accounts.ny]
timezone = "America/New_York"
currency = "USD"

[accounts.dubai]
timezone = "Asia/Dubai"
currency = "AED"

[offer_sources.maxbounty]
account = "ny"
duplicate_mode = "ignore"

[offer_sources.clickbank]
account = "dubai"
duplicate_mode = "edit"
file_times = "utc"
"""


def make_config(**overrides) -> config_module.Config:
    """The test config, with per-offer-source overrides: make_config(maxbounty={...})."""
    raw = {
        "accounts": dict(BASE_CONFIG["accounts"]),
        "offer_sources": {k: dict(v) for k, v in BASE_CONFIG["offer_sources"].items()},
    }
    for name, values in overrides.items():
        if name == "settings":
            raw["settings"] = values
        else:
            raw["offer_sources"].setdefault(name, {"account": "ny"}).update(values)
    return config_module.parse(raw, "test.toml")


@pytest.fixture
def config() -> config_module.Config:
    return make_config()


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def independent_data_lines(path: Path) -> int:
    """Count a file's data lines with nothing but the csv module (a second implementation)."""
    import csv
    import io

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
    from sqlalchemy import select

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
        assert sum(row[o] for o in warehouse.OUTCOMES) == row["data_lines"]
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
        import csv

        with open(result.report_path, encoding="utf-8-sig", newline="") as fh:
            lines = list(csv.reader(fh, delimiter=_sniff(result.report_path)))
        assert len(lines) - 1 == result.outcomes["rejected"]


def _sniff(path: str) -> str:
    with open(path, encoding="utf-8-sig") as fh:
        first = fh.readline()
    return max([",", ";", "\t"], key=first.count)
