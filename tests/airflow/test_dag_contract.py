"""What every file in ``dags/`` must honour when it is parsed, as Airflow's own example DAGs do.

The DAG processor parses each file again and again (every ``min_file_process_interval``), so a
parse must be cheap and side-effect free: it loads through a DagBag with no import errors, asks
for no connection (a connection is a task's business, at run time), makes at most a few
metadata-database queries, and imports none of the engine (pandas, pyarrow, pandera, numpy, and
our modules that import them or build SQLAlchemy tables): those belong inside task bodies.
Parametrised over the folder, so a new DAG file is held to the same contract without a new test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.helpers import REPO

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
MAX_PARSE_QUERIES = 1  # Airflow's bound for its own example DAGs
HEAVY_PACKAGES = ("pandas", "numpy", "pyarrow", "pandera")
# Our modules that import the heavy packages or define the warehouse's tables: task-body only.
ENGINE_MODULES = (
    "pipeline.airflow.steps",
    "pipeline.core.normalise",
    "pipeline.core.schemas",
    "pipeline.export",
    "pipeline.ingest",
    "pipeline.reader",
    "pipeline.reports",
    "pipeline.runner",
    "pipeline.warehouse",
)

# Run in a fresh interpreter, so that nothing a test imported earlier hides an import: prints
# which modules the DAG file added on top of what `import airflow.sdk` itself loads.
IMPORT_ONLY = """
import importlib.util, json, sys
import airflow.sdk
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()  # a parse must not need it; a query that slipped in must not fail on a bare file
    return db


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONVERSIONS_HOME", str(tmp_path / "conversions"))
    monkeypatch.delenv("AIRFLOW_CONN_CONVERSIONS_WAREHOUSE", raising=False)


def parse(dag_file: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(dag_file))


def test_every_dag_file_is_covered():
    assert [f.name for f in DAG_FILES] == [
        "conversions_file_drop.py",
        "conversions_inbox.py",
        "conversions_replay.py",
    ]


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda f: f.name)
def test_parses_with_no_import_errors_one_dag_named_after_its_file(airflow_db, dag_file):
    bag = parse(dag_file)
    assert bag.import_errors == {}
    assert list(bag.dag_ids) == [dag_file.stem]


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda f: f.name)
def test_parse_touches_no_connection(airflow_db, dag_file):
    from airflow.sdk import BaseHook, Connection

    with (
        mock.patch.object(BaseHook, "get_connection") as get_connection,
        mock.patch.object(Connection, "get") as get,
    ):
        bag = parse(dag_file)
    assert bag.import_errors == {}
    assert get_connection.call_count == 0, "BaseHook.get_connection() called while parsing"
    assert get.call_count == 0, "Connection.get() called while parsing"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda f: f.name)
def test_parse_makes_at_most_a_bounded_number_of_metadata_queries(airflow_db, dag_file):
    from airflow import settings
    from sqlalchemy import event

    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(settings.engine, "after_cursor_execute", count)
    try:
        bag = parse(dag_file)
    finally:
        event.remove(settings.engine, "after_cursor_execute", count)
    assert bag.import_errors == {}
    assert len(statements) <= MAX_PARSE_QUERIES, statements


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda f: f.name)
def test_parse_imports_none_of_the_engine(dag_file):
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ONLY, str(dag_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = sorted({m.split(".")[0] for m in added} & set(HEAVY_PACKAGES))
    assert heavy == [], f"{dag_file.name} imports {heavy} at parse time"
    engine = [m for m in added if m.startswith(ENGINE_MODULES)]
    assert engine == [], f"{dag_file.name} imports {engine} at parse time"
    sqlalchemy = [m for m in added if m.split(".")[0] == "sqlalchemy"]
    assert sqlalchemy == [], f"{dag_file.name} imports SQLAlchemy beyond airflow.sdk's own"
