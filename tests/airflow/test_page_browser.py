"""The page end to end, as a media buyer uses it: a real browser on a real Airflow.

Starts `airflow api-server`, `scheduler`, `dag-processor` and `triggerer` (`airflow_deployment`)
with SimpleAuthManager and two users whose passwords this test writes: `buyer` (role user) and
`watcher` (viewer). Headless Chromium (Debian's `chromium`, driven by Playwright with the system
browser) logs in through Airflow's own login page, opens Conversions, checks a file with a bad
row first, applies it (the inbox, the `_READY` marker, the triggerer's watcher, the
`conversions_file_drop` run), downloads the rejection report, fixes the row, uploads the fixed
report and sees it applied once; adds two conversions by hand; updates one status; and a viewer
is refused. Every expected count and warehouse row is worked out by hand below. Screenshots of
each page go to ``$CONVERSIONS_TEST_ARTIFACTS/page`` (default ``var/test-artifacts/page``).

Needs `CONVERSIONS_TEST_POSTGRES_URL` (skipped without it, like the scheduler test) and
`/usr/bin/chromium` (skipped without it, except under CI, where `.ci/run` installs it: there a
missing browser fails the test).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import warehouse
from tests.airflow.airflow_deployment import (
    MIGRATE_TIMEOUT,
    POSTGRES_URL,
    REPO,
    STARTUP_TIMEOUT,
    Deployment,
)

CHROMIUM = Path("/usr/bin/chromium")
DAG_ID = "conversions_file_drop"
OFFER_SOURCE = "maxbounty"
RUN_TIMEOUT_MS = 240_000  # Apply -> the run recorded the file (the follow page moves on)
ARTIFACTS = Path(os.environ.get("CONVERSIONS_TEST_ARTIFACTS") or REPO / "var" / "test-artifacts")
USERS = {"buyer": ("user", "buyer-pass-7f3a"), "watcher": ("viewer", "watcher-pass-91c2")}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"),
]

CONFIG = f"""
[settings]
settle_seconds = 0

[accounts.newyork]
timezone = "America/New_York"
currency = "USD"

[offer_sources.{OFFER_SOURCE}]
account = "newyork"
duplicate_mode = "ignore"
default_status = "approved"
"""

FILE_NAME = "june_export.csv"
# Times without an offset are UTC (file_times defaults to "utc"). Line 3's payout is no number.
CSV = (
    "click_id,payout,conversion_time\n"
    "b-1,12.50,2024-07-01 18:00:00\n"
    "b-2,abc,2024-07-01 19:00:00\n"
    "b-3,3.10,2024-01-15 14:30:00\n"
)


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def deployment(tmp_path: Path, databases: dict[str, str]) -> Iterator[Deployment]:
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({name: pw for name, (_, pw) in USERS.items()}))
    users = ",".join(f"{name}:{role}" for name, (role, _) in USERS.items())
    d = Deployment(
        tmp_path,
        databases["metadata"],
        databases["warehouse"],
        CONFIG,
        OFFER_SOURCE,
        DAG_ID,
        extra_env={
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        },
    )
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def shots() -> Path:
    folder = ARTIFACTS / "page"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _start(d: Deployment) -> None:
    d.cli("db", "migrate", timeout=MIGRATE_TIMEOUT)
    d.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(d.api_port))
    d.start("scheduler", "scheduler")
    d.start("dag-processor", "dag-processor")
    d.start("triggerer", "triggerer")
    d.wait_for("the api-server to answer", d.api_healthy, STARTUP_TIMEOUT)
    d.wait_for(
        f"{DAG_ID} to be parsed",
        lambda: d.query("SELECT 1 FROM dag WHERE dag_id = :d AND NOT is_stale", d=DAG_ID),
        STARTUP_TIMEOUT,
    )
    d.cli("dags", "unpause", DAG_ID)
    d.wait_for(
        "the _READY watcher's trigger to run in the triggerer",
        lambda: d.query(
            "SELECT 1 FROM trigger WHERE classpath LIKE '%DirectoryFileDeleteTrigger' "
            "AND triggerer_id IS NOT NULL"
        ),
        STARTUP_TIMEOUT,
    )


def _login(context, api: str, name: str):
    """Airflow's own login page, as a person fills it in; then the Conversions page."""
    page = context.new_page()
    page.goto(f"{api}/auth/login/")
    page.locator("input:not([type=password])").first.fill(name)
    page.locator("input[type=password]").fill(USERS[name][1])
    page.locator("input[type=password]").press("Enter")
    deadline = time.monotonic() + 60
    while not any(c["name"] == "_token" for c in context.cookies()):
        assert time.monotonic() < deadline, f"no login cookie for {name}: {page.content()[:2000]}"
        page.wait_for_timeout(250)
    # The login page then sends the browser on to the UI: let it arrive before going anywhere
    # (a navigation started meanwhile is interrupted by that one).
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
    page.wait_for_load_state("load")
    return page


def _counts(page) -> dict[str, int]:
    found = {}
    for box in page.locator("[id^=count-]").all():
        outcome = box.get_attribute("id").removeprefix("count-")
        found[outcome] = int(box.locator("b").inner_text().replace(",", ""))
    return found


def _check_and_apply(page, base: str, path: Path, shots: Path, shot: str) -> dict[str, int]:
    page.goto(f"{base}/upload")
    page.select_option("#offer_source", OFFER_SOURCE)
    page.set_input_files("#file", str(path))
    page.get_by_role("button", name="Check first").click()
    page.wait_for_selector("text=Check first:")
    page.screenshot(path=shots / f"{shot}-check.png", full_page=True)
    checked = _counts(page)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(f"{base}/uploads/*", timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=shots / f"{shot}-applied.png", full_page=True)
    assert _counts(page) == checked, "the run did what the check said it would"
    return checked


def _conversions(d: Deployment) -> dict[str, tuple[int, str]]:
    t = warehouse.conversions
    with d.warehouse.connect() as conn:
        rows = conn.execute(select(t.c.click_id, t.c.payout, t.c.status)).all()
    assert len(rows) == len({r.click_id for r in rows}), f"a click id applied twice: {rows}"
    return {r.click_id: (r.payout, r.status) for r in rows}


def test_a_media_buyer_uses_the_page(deployment: Deployment, browser, shots: Path, tmp_path):
    d = deployment
    _start(d)
    base = f"{d.api}/conversions"
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = _login(context, d.api, "buyer")

    # The UI lists the page in its navigation (the plugin's external view).
    plugins = page.request.get(f"{d.api}/api/v2/plugins").json()
    views = [v for p in plugins["plugins"] for v in p.get("external_views", [])]
    assert any(v["name"] == "Conversions" and v["destination"] == "nav" for v in views), plugins
    # ... and shows it inside the UI (an iframe on the view's route), with the person's login.
    page.goto(f"{d.api}/plugin/conversions")
    inside = page.frame_locator("iframe").first
    inside.locator("#uploads").wait_for(timeout=60_000)
    assert "Signed in as buyer" in inside.locator("header").inner_text()
    page.screenshot(path=shots / "0-inside-airflow.png", full_page=True)

    # A file with a bad row: checked first (nothing changes), then applied through the inbox.
    export = tmp_path / FILE_NAME
    export.write_text(CSV)
    page.goto(f"{base}/upload")
    page.screenshot(path=shots / "1-upload.png", full_page=True)
    counts = _check_and_apply(page, base, export, shots, "2-export")
    assert counts == {"inserted": 2, "rejected": 1}
    assert "invalid_payout" in page.content()
    assert set(_conversions(d)) == {"b-1", "b-3"}

    # The rejection report: download it, fix the payout, send it back under its own name.
    with page.expect_download() as download:
        page.click("#report-link")
    report = tmp_path / download.value.suggested_filename
    download.value.save_as(report)
    assert report.name.endswith(".rejected.csv") and report.name.startswith("june_export.")
    text = report.read_text(encoding="utf-8-sig")
    assert "b-2" in text and "abc" in text and "invalid_payout" in text
    report.write_text(text.replace(",abc,", ",4.00,"), encoding="utf-8-sig")
    assert _check_and_apply(page, base, report, shots, "3-fixed") == {"inserted": 1}
    assert _conversions(d) == {
        "b-1": (12_500_000, "approved"),
        "b-2": (4_000_000, "approved"),
        "b-3": (3_100_000, "approved"),
    }

    # Two conversions typed by hand.
    page.goto(f"{base}/add")
    page.select_option("#offer_source", OFFER_SOURCE)
    page.fill("#lines", "h-1, 1.25\nh-2\t2.50\t2024-07-02 10:00:00")
    page.screenshot(path=shots / "4-add.png", full_page=True)
    page.get_by_role("button", name="Add conversions").click()
    page.wait_for_url(f"{base}/uploads/*", timeout=RUN_TIMEOUT_MS)
    assert _counts(page) == {"inserted": 2}
    page.screenshot(path=shots / "4-add-applied.png", full_page=True)

    # One status changed.
    page.goto(f"{base}/status")
    page.select_option("#offer_source", OFFER_SOURCE)
    page.fill("#lines", "b-1")
    page.select_option("#status", "declined")
    page.screenshot(path=shots / "5-status.png", full_page=True)
    page.get_by_role("button", name="Update status").click()
    page.wait_for_url(f"{base}/uploads/*", timeout=RUN_TIMEOUT_MS)
    assert _counts(page) == {"status_updated": 1}
    assert "approved" in page.locator("#history").inner_text()
    page.screenshot(path=shots / "5-status-applied.png", full_page=True)

    assert _conversions(d) == {
        "b-1": (12_500_000, "declined"),
        "b-2": (4_000_000, "approved"),
        "b-3": (3_100_000, "approved"),
        "h-1": (1_250_000, "approved"),
        "h-2": (2_500_000, "approved"),
    }
    t = warehouse.ingested_files
    with d.warehouse.connect() as conn:
        ledger = conn.execute(select(t.c.state, t.c.uploaded_by).order_by(t.c.file_id)).all()
    assert [tuple(r) for r in ledger] == [
        ("dry_run", "buyer"),
        ("applied", "buyer"),
        ("dry_run", "buyer"),
        ("applied", "buyer"),
        ("applied", "buyer"),
        ("applied", "buyer"),
    ]

    # The uploads, newest first, and the template.
    page.goto(f"{base}/uploads")
    rows = page.locator("#uploads tr[data-file-id]")
    assert rows.count() == 6
    assert "status-declined-buyer" in rows.first.inner_text()
    page.screenshot(path=shots / "6-uploads.png", full_page=True)
    page.goto(f"{base}/template")
    page.screenshot(path=shots / "7-template.png", full_page=True)

    # A viewer sees the uploads but may not send anything.
    watcher = browser.new_context(viewport={"width": 1280, "height": 900})
    viewer = _login(watcher, d.api, "watcher")
    viewer.goto(f"{base}/uploads")
    assert viewer.locator("#uploads tr[data-file-id]").count() == 6
    viewer.goto(f"{base}/add")
    viewer.select_option("#offer_source", OFFER_SOURCE)
    viewer.fill("#lines", "v-1, 9.99")
    with viewer.expect_response(f"{base}/add") as refused:
        viewer.get_by_role("button", name="Add conversions").click()
    assert refused.value.status == 403
    assert "v-1" not in _conversions(d)
    # No login at all: 401.
    anonymous = browser.new_context().new_page()
    assert anonymous.goto(f"{base}/uploads").status == 401
