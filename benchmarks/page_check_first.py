"""How long the page's Check first takes for a 50,000-row file (README "The page").

Posts a generated file (one row in 500 with a bad payout) to the page's ``/check`` route
through FastAPI's TestClient: the real route (streamed to the staging folder, the dry run, the
page rendered) on an SQLite warehouse in a temporary folder, first empty, then holding the
earlier checks' dry-run ledger rows (a dry run writes no conversions). The login is a fixed user
(the auth manager's check is not what is measured). Prints the wall time of each request and
the engine's own time for the dry run. A script, not a test: the numbers go in the notes.

    .venv/bin/python benchmarks/page_check_first.py [--rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from airflow.api_fastapi.app import _AuthManagerState
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.models.dag import DagModel
from fastapi.testclient import TestClient

from pipeline import config, runtime
from pipeline.page import access
from pipeline.page.app import app, page_context

CONFIG = """
[accounts.ny]
timezone = "America/New_York"
currency = "USD"

[offer_sources.maxbounty]
account = "ny"
duplicate_mode = "ignore"
file_times = "account"
"""


def rows(n: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    lines = ["click_id,payout,conversion_time,conversion_type,status"]
    for i in range(n):
        payout = "abc" if i % 500 == 0 else f"{rng.randint(1, 99999) / 100:.2f}"
        lines.append(f"c{i:08d},{payout},2026-03-{1 + i % 28:02d} 14:00:00,Lead,approved")
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "data"
        path = Path(tmp) / "conversions.toml"
        path.write_text(CONFIG)
        cfg = config.load(path)
        ctx = runtime.open_context(cfg, home, runtime.default_warehouse_url(home))
        ctx.datadir.ensure(cfg.offer_sources)
        _AuthManagerState.instance = SimpleAuthManager()
        DagModel.get_team_name = staticmethod(lambda dag_id, **_: None)
        user = SimpleAuthManagerUser(username="bench", role="user")
        app.dependency_overrides[page_context] = lambda: ctx
        app.dependency_overrides[access.get_user] = lambda: user
        client = TestClient(app, base_url="http://testserver")
        data = rows(args.rows)
        print(f"{args.rows:,} rows, {len(data):,} bytes")
        for attempt in range(args.repeat):
            started = time.perf_counter()
            response = client.post(
                "/check",
                data={"offer_source": "maxbounty", "kind": "conversions"},
                files={"file": ("bench.csv", data, "text/csv")},
                headers={"Origin": "http://testserver"},
            )
            took = time.perf_counter() - started
            assert response.status_code == 200, response.text[:2000]
            rejected = response.text.split('id="count-rejected"><b>', 1)[1].split("<", 1)[0]
            engine_s = response.text.split("checked in ", 1)[1].split(" s", 1)[0]
            print(
                f"check {attempt + 1}: {took:.2f} s for the request, {engine_s} s of it the dry "
                f"run (HTTP 200; {rejected} rejected)"
            )
        ctx.engine.dispose()


if __name__ == "__main__":
    main()
