"""Exports shaped like the ones media buyers really get, end to end: the CLI's inbox pass (a real
subprocess) and the inbox DAG (`dag.test()`), on both warehouses.

Each file is written from its format's public documentation, and each expected row is worked
out by hand here (New York is GMT-4 in July and GMT-5 in January; Berlin GMT+2 in July and
GMT+1 in January):

- Google Ads' offline-conversion template, with its `Parameters:TimeZone=` first line and its own
  column names; no config line at all.
- A European network's export: UTF-8 with BOM, `;`, CRLF, decimal commas with `.` grouping,
  status words (`Confirmed`, `On hold`, `Rejected`), a time without seconds, and one time a
  spreadsheet reformatted; two config lines (`decimal_separator`, `file_times`).
- An affiliate network's export with its own names (`Aff Sub`, `Conversion ID`, `Commission`,
  `Conversion Status` `Paid`), a second date column and harmless extras; three config lines.
- The seed's example with the default config: 18:00:00 in the file is 14:00:00 in the New York
  account's logs.
- The silent-default file: a status and a currency column nobody mapped stop the file
  (`unmapped_column`) instead of being stored as approved / USD.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import export, warehouse
from pipeline.config import load
from pipeline.core.reasons import CATALOGUE
from tests.helpers import write_csv
from tests.integration.test_cli import run_cli

CONFIG = """
[settings]
settle_seconds = 0

[accounts.ny]
timezone = "America/New_York"

[accounts.berlin]
timezone = "Europe/Berlin"
currency = "EUR"

[offer_sources.google]            # Google Ads' template: nothing to configure
account = "ny"

[offer_sources.eunet]             # a European network
account = "berlin"
decimal_separator = ","
file_times = "account"

[offer_sources.affnet]            # an affiliate network with its own column names
account = "ny"
columns = { click_id = "Aff Sub", event_id = "Conversion ID" }
ignore_columns = ["Click Date"]
status_aliases = { paid = "approved" }

[offer_sources.seed]              # the seed's example, default config
account = "ny"
"""

GOOGLE = (
    "Parameters:TimeZone=America/New_York\n"
    "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency\n"
    "Cj0KCQjw-gclid-001,Purchase,2026-07-01 14:00:00,12.50,USD\n"
    "Cj0KCQjw-gclid-002,Lead,2026-07-01 09:30:00-0500,0,USD\n"
    "Cj0KCQjw-gclid-003,Purchase,2026-01-15 08:00:00,99.99,EUR\n"
)
EUNET = (
    "\ufeffClick ID;Payout;Date;Status;Currency\r\n"
    "eu-001;12,50;2026-07-01 14:00:00;Confirmed;EUR\r\n"
    "eu-002;1.234,56;2026-01-15 09:00;On hold;\r\n"
    "eu-003;0,5;2026-07-02 00:30:00;Rejected;EUR\r\n"
    "eu-004;7,5;31.07.2026 10:00;Confirmed;EUR\r\n"
)
AFFNET = (
    "Conversion ID,Aff Sub,Offer Name,Commission,Conversion Status,Currency Code,"
    "Conversion Date,Click Date,Sub ID 2,IP\n"
    "T-1001,aff-click-1,Keto Gummies,25.00,Paid,USD,2026-07-01 10:00:00,2026-06-30 22:00:00,fb,"
    "192.0.2.1\n"
    "T-1002,aff-click-2,Keto Gummies,25.00,pending,USD,2026-07-01 11:00:00,2026-06-30 23:00:00,"
    "fb,192.0.2.2\n"
    "T-1003,aff-click-3,VPN Trial,4.10,declined,USD,2026-07-01 12:00:00,2026-07-01 01:00:00,tt,"
    "192.0.2.3\n"
)
SEED = "click_id,payout,conversion_time\nseed-1,1.00,2026-07-01 18:00:00\n"
ALL_BAD = "click_id,payout,conversion_time\nb-1,12,50,2026-07-01 10:00:00\nb-2,x,\n"
SILENT = (
    "click_id,payout,conversion_time,Order Status,Currency Used\n"
    "s-1,10.00,2026-07-01 10:00:00,declined,EUR\n"
)

# (offer_source, click_id, conversion_type, event_id, status, payout, currency, converted_at)
EXPECTED = sorted(
    [
        ("google", "Cj0KCQjw-gclid-001", "Purchase", "", "approved", "12.50", "USD",
         "2026-07-01T18:00:00Z"),  # 14:00 New York (Parameters line), GMT-4
        ("google", "Cj0KCQjw-gclid-002", "Lead", "", "approved", "0.00", "USD",
         "2026-07-01T14:30:00Z"),  # its own offset -0500 wins over the Parameters line
        ("google", "Cj0KCQjw-gclid-003", "Purchase", "", "approved", "99.99", "EUR",
         "2026-01-15T13:00:00Z"),  # 08:00 New York in January, GMT-5
        ("eunet", "eu-001", "", "", "approved", "12.50", "EUR", "2026-07-01T12:00:00Z"),
        ("eunet", "eu-002", "", "", "pending", "1234.56", "EUR", "2026-01-15T08:00:00Z"),
        ("eunet", "eu-003", "", "", "declined", "0.50", "EUR", "2026-07-01T22:30:00Z"),
        ("affnet", "aff-click-1", "", "T-1001", "approved", "25.00", "USD",
         "2026-07-01T10:00:00Z"),  # file times are UTC by default
        ("affnet", "aff-click-2", "", "T-1002", "pending", "25.00", "USD",
         "2026-07-01T11:00:00Z"),
        ("affnet", "aff-click-3", "", "T-1003", "declined", "4.10", "USD",
         "2026-07-01T12:00:00Z"),
        ("seed", "seed-1", "", "", "approved", "1.00", "USD", "2026-07-01T18:00:00Z"),
    ]
)  # fmt: skip


def drop_all(home: Path) -> None:
    inbox = home / "inbox"
    write_csv(inbox / "google" / "google-ads-offline.csv", GOOGLE)
    write_csv(inbox / "eunet" / "export-juli.csv", EUNET)
    write_csv(inbox / "affnet" / "conversions_report.csv", AFFNET)
    write_csv(inbox / "seed" / "seed.csv", SEED)
    write_csv(inbox / "affnet" / "silent-defaults.csv", SILENT)
    write_csv(inbox / "seed" / "all-bad.csv", ALL_BAD)


def exported(home: Path, url: str, local_time: bool = False) -> list[tuple]:
    engine = warehouse.connect(url)
    try:
        data = export.frame(engine, load(home / "conversions.toml"), local_time=local_time)
    finally:
        engine.dispose()
    return sorted(
        (
            r.offer_source,
            r.click_id,
            r.conversion_type or "",
            r.event_id or "",
            r.status,
            r.payout,
            r.currency,
            r.converted_at,
        )
        for r in data.fillna("").itertuples()
    )


def summaries(home: Path) -> dict[str, dict]:
    found = {}
    for path in (home / "reports").rglob("*.summary.json"):
        summary = json.loads(path.read_text(encoding="utf-8"))
        found[f"{summary['offer_source']}/{summary['name']}"] = summary
    return found


def check(home: Path, url: str) -> None:
    assert exported(home, url) == EXPECTED
    # The seed's example, in the account's clock: what the tracker's logs show.
    local = {r[1]: r[7] for r in exported(home, url, local_time=True)}
    assert local["seed-1"] == "2026-07-01T14:00:00-04:00"
    done = summaries(home)
    silent = done["affnet/silent-defaults.csv"]
    assert (silent["state"], silent["reason_code"]) == ("quarantined", "unmapped_column")
    assert "'Order Status'" in silent["detail"] or "'Currency Used'" in silent["detail"]
    eunet = done["eunet/export-juli.csv"]
    assert eunet["reasons"] == {"time_reformatted_by_spreadsheet": 1}
    assert eunet["examples"] == {"time_reformatted_by_spreadsheet": [5]}
    assert done["seed/seed.csv"]["times"] == (
        'times without an offset read as UTC (file_times = "utc"); line 2: 2026-07-01 18:00:00'
        " -> 2026-07-01 14:00:00 in the account's zone America/New_York"
    )
    assert done["google/google-ads-offline.csv"]["times"].startswith(
        "times without an offset read in America/New_York (the file's Parameters:TimeZone line)"
    )
    bad = done["seed/all-bad.csv"]
    assert (bad["state"], bad["data_lines"], bad["outcomes"]["rejected"]) == ("applied", 2, 2)
    assert bad["reasons"] == {"unquoted_decimal_comma": 1, "invalid_payout": 1}
    assert bad["warnings"][0].startswith("all_rows_rejected: every one of the 2 data line(s)")
    affnet = done["affnet/conversions_report.csv"]
    assert "ignored column 'Click Date' (ignore_columns)" in affnet["warnings"]
    for extra in ("Offer Name", "Sub ID 2", "IP"):
        assert f"ignored unknown column {extra!r}" in affnet["warnings"]


def test_real_exports_through_the_cli_inbox(tmp_path: Path, warehouse_url: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "conversions.toml").write_text(CONFIG, encoding="utf-8")
    drop_all(home)
    done = run_cli(
        "inbox",
        *("--config", str(home / "conversions.toml"), "--home", str(home)),
        *("--warehouse", warehouse_url),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # the silent-default file is quarantined
    check(home, warehouse_url)
    # The terminal says how each file's times were read, and lists what it ignored.
    assert "read as UTC" in done.stdout
    assert "  warning: ignored unknown columns 'Offer Name', 'Sub ID 2', 'IP'\n" in done.stdout
    assert "  warning: ignored column 'Click Date' (ignore_columns)\n" in done.stdout
    # A file that changed nothing says so loudly, right under its first line.
    assert (
        "seed/all-bad.csv (conversions): applied, 2 data lines\n"
        "  WARNING: all_rows_rejected: every one of the 2 data line(s) was rejected"
    ) in done.stdout
    # The silent-defaults file was quarantined: why, and how to fix it.
    assert "  unmapped_column: " in done.stdout
    assert f"    fix: {CATALOGUE['unmapped_column'].hint}" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 100


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.resetdb()
    return db


def test_real_exports_through_the_inbox_dag(
    airflow_db, tmp_path: Path, warehouse_url: str, monkeypatch
) -> None:
    from tests.airflow.test_airflow_dags import run

    home = tmp_path / "conversions"
    home.mkdir()
    (home / "conversions.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("CONVERSIONS_HOME", str(home))
    monkeypatch.delenv("CONVERSIONS_CONFIG", raising=False)
    monkeypatch.setenv("CONVERSIONS_WAREHOUSE_URL", warehouse_url)
    monkeypatch.delenv("AIRFLOW_CONN_CONVERSIONS_WAREHOUSE", raising=False)
    drop_all(home)
    _, states = run("conversions_inbox")
    assert {s for (task, _), s in states.items() if task == "process_file"} == {"success"}
    check(home, warehouse_url)
