"""The page's app through FastAPI's TestClient: logins and roles, bad input, safe writes.

The app runs with its real routes, the real engine (an SQLite warehouse and a data directory in
``tmp_path``) and Airflow's real ``get_user`` and ``requires_access_dag`` dependencies; the auth
manager is a real ``SimpleAuthManager`` deciding by role. Two stand-ins only: ``get_user`` is
replaced by a fixed user where a test needs one logged in (the real login is the browser
test's, ``tests/airflow/test_page_browser.py``), and ``DagModel.get_team_name``, which would ask
Airflow's metadata database whether the DAG belongs to a team, answers "no team".
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from airflow.api_fastapi.app import _AuthManagerState
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.models.dag import DagModel
from fastapi.testclient import TestClient
from sqlalchemy import select

from pipeline import config as config_module
from pipeline import runtime, warehouse
from pipeline.page import access
from pipeline.page.app import app, page_context

HOST = "testserver"
ORIGIN = {"Origin": f"http://{HOST}"}
MAX_BYTES = 4096
CONFIG = f"""
[settings]
max_file_bytes = {MAX_BYTES}
settle_seconds = 0

[accounts.ny]
timezone = "America/New_York"
currency = "USD"

[offer_sources.maxbounty]
account = "ny"
duplicate_mode = "ignore"
columns = {{ click_id = "Aff Sub" }}
"""
# Line 3's payout is not a number; line 4's time was reformatted by a spreadsheet.
CSV = (
    "Aff Sub,payout,conversion_time\n"
    "pa-1,12.50,2026-07-01 18:00:00\n"
    "pa-2,abc,2026-07-01 18:00:00\n"
    "pa-3,1.00,7/1/2026 18:00\n"
    "pa-4,0.25,\n"
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def ctx(tmp_path: Path, home: Path):
    path = tmp_path / "conversions.toml"
    path.write_text(CONFIG)
    cfg = config_module.load(path)
    context = runtime.open_context(cfg, home, runtime.default_warehouse_url(home))
    context.datadir.ensure(cfg.offer_sources)
    yield context
    context.engine.dispose()


@pytest.fixture
def client(ctx, monkeypatch):
    monkeypatch.setattr(_AuthManagerState, "instance", SimpleAuthManager())
    monkeypatch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, **_: None))
    app.dependency_overrides[page_context] = lambda: ctx
    try:
        yield TestClient(app, base_url=f"http://{HOST}")
    finally:
        app.dependency_overrides.clear()


def login(role: str, name: str = "ana") -> None:
    user = SimpleAuthManagerUser(username=name, role=role)
    app.dependency_overrides[access.get_user] = lambda: user


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def check(client, data: bytes = CSV.encode(), name: str = "export.csv", **form):
    fields = {"offer_source": "maxbounty", "kind": "conversions", "mode": ""} | form
    return client.post(
        "/check", data=fields, files={"file": (name, data, "text/csv")}, headers=ORIGIN
    )


# --- who may do what -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/uploads", "/upload", "/add", "/template", "/uploads/1"])
def test_every_page_needs_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 401, response.text


def test_posting_needs_a_login_too(client, home):
    response = check(client)
    assert response.status_code == 401
    assert not files_under(home / "inbox")


def test_a_viewer_reads_but_may_not_upload_add_or_update(client, home):
    login("viewer")
    assert client.get("/uploads").status_code == 200
    assert client.get("/upload").status_code == 200
    assert check(client).status_code == 403
    form = {"offer_source": "maxbounty", "lines": "v-1, 1.00"}
    assert client.post("/add", data=form, headers=ORIGIN).status_code == 403
    form |= {"lines": "v-1", "status": "declined"}
    assert client.post("/status", data=form, headers=ORIGIN).status_code == 403
    assert not files_under(home / "inbox")
    assert not (home / "page").exists() or not files_under(home / "page")


def test_a_user_checks_first_and_nothing_changes(client, ctx, home):
    login("user")
    response = check(client)
    assert response.status_code == 200, response.text
    page = response.text
    # By hand: pa-1 and pa-4 insert; pa-2's payout and pa-3's time are rejected.
    assert 'id="count-inserted"><b>2</b>' in page
    assert 'id="count-rejected"><b>2</b>' in page
    assert "invalid_payout" in page and "time_reformatted_by_spreadsheet" in page
    assert "times without an offset read as UTC" in page
    # The example line's cells, as written (the first example of each reason).
    assert "line 3: Aff Sub = pa-2, payout = abc" in page
    assert "line 4: Aff Sub = pa-3, payout = 1.00, conversion_time = 7/1/2026 18:00" in page
    with ctx.engine.connect() as conn:
        assert conn.execute(select(warehouse.conversions)).all() == []
        rows = conn.execute(select(warehouse.ingested_files)).mappings().all()
    assert [(r["state"], r["uploaded_by"], r["original_name"]) for r in rows] == [
        ("dry_run", "ana", "export.csv")
    ]
    assert not files_under(home / "inbox"), "a check puts nothing into the inbox"


def test_apply_puts_the_same_bytes_into_the_inbox_and_wakes_the_dag(client, ctx, home):
    login("user")
    page = check(client).text
    token = page.split('name="token" value="', 1)[1].split('"', 1)[0]
    form = {"token": token, "offer_source": "maxbounty", "kind": "conversions", "mode": "edit"}
    response = client.post(
        "/apply", data=form | {"name": "export.csv"}, headers=ORIGIN, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert (home / "inbox" / "maxbounty" / "edit" / "export.csv").read_bytes() == CSV.encode()
    assert (home / "inbox" / "_READY").exists()
    assert not list((home / "inbox").rglob("*.partial"))
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    assert client.get(f"/api/follow/{upload_id}").json()["where"] == "waiting"
    # The same token again: the staged file went with the first apply.
    again = client.post("/apply", data=form | {"name": "export.csv"}, headers=ORIGIN)
    assert again.status_code == 404


def test_the_run_records_who_sent_the_file(client, ctx, home):
    """The inbox pass the DAG runs writes the ledger row; it takes the uploader from the note
    the page made, and the follow route then finds the row."""
    from pipeline import runner

    login("user", name="bea")
    form = {"offer_source": "maxbounty", "lines": "h-1, 2.50\nh-2, 3.00, 2026-07-01 18:00:00"}
    response = client.post("/add", data=form, headers=ORIGIN, follow_redirects=False)
    assert response.status_code == 303, response.text
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    runner.run_inbox(ctx)
    state = client.get(f"/api/follow/{upload_id}").json()
    assert state["where"] == "recorded" and state["state"] == "applied", state
    assert state["outcomes"]["inserted"] == 2
    with ctx.engine.connect() as conn:
        row = warehouse.file_row(conn, state["file_id"])
    assert row["uploaded_by"] == "bea"
    detail = client.get(f"/uploads/{state['file_id']}").text
    assert "h-1" in detail and "<td>2.50</td>" in detail, detail
    listing = client.get("/uploads").text
    assert "bea" in listing and row["original_name"] in listing


# --- bad input -----------------------------------------------------------------------------


def test_bad_offer_source_kind_and_mode_are_refused_by_name(client, home):
    login("user")
    response = check(client, offer_source="nobody")
    assert response.status_code == 422 and "unknown offer source 'nobody'" in response.text
    response = check(client, mode="sometimes")
    assert response.status_code == 422 and "unknown duplicate mode 'sometimes'" in response.text
    response = check(client, kind="status", mode="edit")
    assert response.status_code == 422 and "conversion files only" in response.text
    response = check(client, kind="both")
    assert response.status_code == 422 and "unknown kind 'both'" in response.text
    assert not files_under(home / "inbox")


def test_an_oversized_file_leaves_nothing_behind(client, ctx, home):
    login("user")
    big = ("click_id,payout\n" + "x-1,1.00\n" * 1000).encode()
    assert len(big) > MAX_BYTES
    response = check(client, data=big)
    assert response.status_code == 413, response.text
    assert f"{MAX_BYTES:,} bytes" in response.text
    assert not files_under(home / "page"), "no staged or partial file is left"
    assert not files_under(home / "inbox")
    with ctx.engine.connect() as conn:
        assert conn.execute(select(warehouse.ingested_files)).all() == []


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\evil.csv", "evil.csv"),
        ("/abs/path/x.csv", "x.csv"),
        (".hidden.csv", "hidden.csv"),
        ("new\nline;rm -rf.csv", "new_line_rm_-rf.csv"),
    ],
)
def test_traversal_names_never_become_paths(client, ctx, home, sent, stored):
    login("user")
    page = check(client, name=sent).text
    token = page.split('name="token" value="', 1)[1].split('"', 1)[0]
    form = {"token": token, "offer_source": "maxbounty", "kind": "conversions", "name": sent}
    response = client.post("/apply", data=form, headers=ORIGIN, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert files_under(home / "inbox") == ["_READY", f"maxbounty/{stored}"]
    assert not (home.parent / "etc").exists()


def test_a_name_that_is_no_csv_and_a_forged_token_are_refused(client, home):
    login("user")
    assert check(client, name="report.xlsx").status_code == 422
    form = {"token": "../../x", "offer_source": "maxbounty", "name": "a.csv"}
    assert client.post("/apply", data=form, headers=ORIGIN).status_code == 404
    assert not files_under(home / "inbox")


def test_a_cross_site_post_is_refused(client, home):
    login("user")
    fields = {"offer_source": "maxbounty", "lines": "x-1, 1.00"}
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/f"}, {}):
        response = client.post("/add", data=fields, headers=headers)
        assert response.status_code == 403, (headers, response.text)
    assert not files_under(home / "inbox")
    ok = client.post("/add", data=fields, headers=ORIGIN, follow_redirects=False)
    assert ok.status_code == 303


def test_add_refuses_a_line_with_too_many_values_and_keeps_the_text(client, home):
    login("user")
    lines = "ok-1, 1.00\nbad, 1.00, 2026-07-01 18:00:00, Lead, approved, extra"
    response = client.post(
        "/add", data={"offer_source": "maxbounty", "lines": lines}, headers=ORIGIN
    )
    assert response.status_code == 422
    assert "line 2 has 6 values" in response.text and "ok-1, 1.00" in response.text
    assert not files_under(home / "inbox")


def test_update_status_writes_a_status_file(client, home):
    login("user")
    fields = {"offer_source": "maxbounty", "lines": "s-1\n s-2 \n", "status": "declined"}
    response = client.post("/status", data=fields, headers=ORIGIN, follow_redirects=False)
    assert response.status_code == 303
    (written,) = (home / "inbox" / "maxbounty" / "status").glob("*.csv")
    assert list(csv.reader(io.StringIO(written.read_text()))) == [
        ["click_id", "status"],
        ["s-1", "declined"],
        ["s-2", "declined"],
    ]


def test_the_template_uses_the_offer_sources_column_names(client):
    login("viewer")
    response = client.get("/template.csv", params={"offer_source": "maxbounty"})
    assert response.status_code == 200
    header = response.text.splitlines()[0].split(",")
    assert header[0] == "Aff Sub" and "payout" in header
    assert "times without an offset read as UTC" in client.get("/template").text


def test_downloads_stay_inside_the_data_directory(client, ctx, tmp_path):
    login("user")
    check(client)
    with ctx.engine.connect() as conn:
        (row,) = conn.execute(select(warehouse.ingested_files)).mappings().all()
    report = client.get(f"/uploads/{row['file_id']}/report")
    assert report.status_code == 200 and "invalid_payout" in report.text
    outside = tmp_path / "secret.csv"
    outside.write_text("not yours")
    with ctx.engine.begin() as conn:
        warehouse.finish_file(conn, row["file_id"], report_path=str(outside))
    assert client.get(f"/uploads/{row['file_id']}/report").status_code == 404
    with ctx.engine.begin() as conn:
        warehouse.finish_file(conn, row["file_id"], report_path="../secret.csv")
    assert client.get(f"/uploads/{row['file_id']}/report").status_code == 404
    assert client.get(f"/uploads/{row['file_id']}/passwd").status_code == 404


def test_the_plugin_module_is_cheap_for_every_airflow_process():
    """Every Airflow process (scheduler, DAG processor, triggerer, each task) loads the plugins;
    only the api-server needs the app, so importing the plugin must not pull in the engine or
    Airflow's API security module (seconds of imports). Checked in a fresh interpreter."""
    import subprocess
    import sys

    probe = (
        "import sys, airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        "import pipeline.page.plugin as p\n"
        "heavy = [m for m in ('pandas', 'pandera', 'sqlalchemy', 'pipeline.page.app',"
        " 'airflow.api_fastapi.core_api.security') if m in sys.modules and m not in before]\n"
        "print(repr(heavy)); print(p.ConversionsPlugin.fastapi_apps[0]['url_prefix'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[-2:] == ["[]", "/conversions"], done.stdout


def test_the_lazy_app_serves_the_page_once_imported(client):
    from pipeline.page.plugin import LazyApp

    login("viewer")
    lazy = TestClient(LazyApp(), base_url=f"http://{HOST}")
    assert lazy.get("/uploads").status_code == 200
