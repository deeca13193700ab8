"""`conversions demo`: the sample end to end on the embedded defaults.

It lays out a fresh data directory with the sample config and files (two accounts in different
time zones, offer sources in different duplicate modes, bad rows, a DST edge, a duplicate, a
status update and a stray file), processes the inbox into an SQLite warehouse exactly as the
scheduled run does, and prints the outcome of every file and where to look next.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from pipeline import inbox, runner, warehouse
from pipeline.config import load
from pipeline.summary import Console


def prepare(home: Path) -> Path:
    """A fresh demo home (the previous one is replaced); returns its config path."""
    if home.exists():
        shutil.rmtree(home)
    source = resources.files("pipeline") / "demo_data"
    with resources.as_file(source) as data:
        shutil.copytree(data, home)
    return home / "conversions.toml"


def run(home: Path, console: Console) -> int:
    config_path = prepare(home)
    config = load(config_path)
    url = f"sqlite:///{home / 'warehouse.db'}"
    engine = warehouse.connect(url)
    ctx = runner.Context(config, engine, inbox.Layout(home))
    console.info(f"Demo home: {home}\nProcessing the sample inbox into {url} ...\n")
    results = runner.run_inbox(ctx)
    console.summary(results)
    env = f"CONVERSIONS_HOME={home} CONVERSIONS_CONFIG={config_path}"
    print(
        f"""
Where to look:
  rejection reports   {ctx.layout.reports}/<date>/*.rejected.csv (fix them, drop them back in)
  summaries           {ctx.layout.reports}/<date>/*.summary.json
  archived originals  {ctx.layout.archive}
  quarantined files   {ctx.layout.quarantine} (each with a .reason.json)
  warehouse           {home / "warehouse.db"}

Try:
  {env} conversions export --local-time
  {env} conversions template""",
        file=console.out,
    )
    engine.dispose()
    return 0
