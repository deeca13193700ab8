"""`conversions demo`: the sample end to end, through the real `conversions_inbox` DAG.

It lays out a fresh data directory with the sample config and files (two accounts in different
time zones, offer sources in different duplicate modes, bad rows, a DST edge, a duplicate, a
status update and a stray file), then runs the `conversions_inbox` DAG with Airflow's
``dag.test()`` on embedded defaults: an SQLite Airflow metadata database and an SQLite warehouse,
both inside the demo home. It prints the outcome of every file and where to look next; Airflow's
own log goes to a file, since it is long.

Airflow reads its configuration when first imported, so this must run in a process that has not
imported Airflow yet (the CLI has not).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from importlib import resources
from pathlib import Path

from pipeline.console import Console
from pipeline.results import FileResult

DAG_ID = "conversions_inbox"
REPO = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO / "dags"


# The sample files were "delivered" this long ago: the run claims only files that have not
# changed for settle_seconds (a sender may write in place), and the demo runs at once.
DELIVERED_SECONDS_AGO = 3600


def prepare(home: Path) -> Path:
    """A fresh demo home (the previous one is replaced); returns its config path.

    The sample config keeps the default settle time, as users copy it; the sample files get an
    mtime of an hour ago instead, so they have settled when the DAG runs.
    """
    if home.exists():
        shutil.rmtree(home)
    source = resources.files("pipeline") / "demo_data"
    with resources.as_file(source) as data:
        shutil.copytree(data, home)
    delivered = time.time() - DELIVERED_SECONDS_AGO
    for path in (home / "inbox").rglob("*"):
        if path.is_file():
            os.utime(path, (delivered, delivered))
    return home / "conversions.toml"


def environment(home: Path, config_path: Path) -> dict[str, str]:
    """Airflow and the DAG's settings for the demo home (no connection: the SQLite default)."""
    airflow_home = home / "airflow"
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "CONVERSIONS_HOME": str(home),
        "CONVERSIONS_CONFIG": str(config_path),
        "CONVERSIONS_WAREHOUSE_URL": f"sqlite:///{home / 'warehouse.db'}",
    }


def run(home: Path, console: Console) -> int:
    if "airflow" in sys.modules:
        raise RuntimeError("the demo configures Airflow, so it needs a process without it")
    if not (DAGS_FOLDER / f"{DAG_ID}.py").is_file():
        console.error(f"the DAG folder {DAGS_FOLDER} is missing: run the demo from the repository")
        return 1
    config_path = prepare(home)
    os.environ.pop("AIRFLOW_CONN_CONVERSIONS_WAREHOUSE", None)
    os.environ.update(environment(home, config_path))
    (home / "airflow").mkdir()
    log_path = home / "airflow" / "dag_test.log"
    console.info(
        f"Demo home: {home}\nRunning the {DAG_ID} DAG with dag.test() "
        f"(Airflow log: {log_path}) ...\n"
    )
    with _output_to(log_path):
        state = _run_dag()
    results = _results(home / "reports")
    console.summary(results, home=home)
    env = " ".join(
        f"{name}={shlex.quote(str(value))}"
        for name, value in (("CONVERSIONS_HOME", home), ("CONVERSIONS_CONFIG", config_path))
    )
    cli = conversions_command()
    where = f" (from the repository's folder, {REPO})" if cli.startswith(".venv/") else ""
    print(
        f"""
DAG run of {DAG_ID}: {state}
Where to look:
  rejection reports   {home / "reports"}/<date>/*.rejected.csv (fix them, drop them back in)
  summaries           {home / "reports"}/<date>/*.summary.json
  duplicates lists    {home / "reports"}/<date>/*.duplicates.csv (what each ignored row duplicated)
  archived originals  {home / "archive"}
  quarantined files   {home / "quarantine"} (each with a .reason.json)
  warehouse           {home / "warehouse.db"}
  Airflow's log       {log_path}

Try{where}:
  {env} {cli} export --local-time
  {env} {cli} template --offer-source maxbounty
  {cli} --help""",
        file=console.out,
    )
    return 0 if state == "success" else 1


def conversions_command(executable: str | None = None) -> str:
    """How to call `conversions` so that the printed "Try:" commands work as printed.

    A fresh clone has no `conversions` on its PATH: the script lives beside the interpreter.
    From the repository's own venv that is `.venv/bin/conversions` (run from the repository's
    folder, as `./run demo` is); from any other environment, the script's absolute path; with
    no script (a source tree on PYTHONPATH), this interpreter's `-m pipeline`.
    """
    python = Path(executable or sys.executable)
    script = python.parent / "conversions"
    venv_bin = REPO / ".venv" / "bin"
    if script.is_file() and python.parent.resolve() == venv_bin.resolve():
        return ".venv/bin/conversions"
    if script.is_file():
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(str(python.absolute()))} -m pipeline"


def _run_dag() -> str:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"the DAGs do not load: {bag.import_errors}")
    return str(bag.dags[DAG_ID].test().state)


def _results(reports: Path) -> list[FileResult]:
    """Every file's outcome, read back from the summaries the run wrote (its durable record)."""
    import json

    known = {f.name for f in fields(FileResult)}
    results = []
    for path in sorted(reports.glob("*/*.summary.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        results.append(FileResult(**{k: v for k, v in data.items() if k in known}))
    order = {"conversions": 0, "status": 1}
    return sorted(results, key=lambda r: (r.offer_source or "", order.get(r.kind, 2), r.name))


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors included) to a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
