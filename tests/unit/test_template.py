"""`conversions template --offer-source NAME`: the CSV on stdout, how that source reads a file
on stderr. The seed's example by hand: 2026-03-08 is the day New York moves to daylight time
(GMT-4 from 02:00), so 14:00:00 in its logs is 18:00:00 UTC; Dubai is GMT+4 all year."""

from __future__ import annotations

from pathlib import Path

from pipeline import cli, export
from pipeline.config import parse

CONFIG = """
[accounts.ny]
timezone = "America/New_York"

[accounts.dubai]
timezone = "Asia/Dubai"

[offer_sources.seed]
account = "ny"

[offer_sources.local]
account = "dubai"
file_times = "account"
decimal_separator = ","
columns = { click_id = "Aff Sub" }
ignore_columns = ["Click Date"]
status_aliases = { paid = "approved" }
encoding = "cp1252"
"""


def notes(name: str) -> list[str]:
    import tomllib

    return export.template_notes(parse(tomllib.loads(CONFIG)).offer_sources[name], "conversions")


def test_the_default_reads_utc_as_the_seed_says_and_tells_what_to_write() -> None:
    times = next(n for n in notes("seed") if n.startswith("times:"))
    assert 'read as UTC (file_times = "utc")' in times
    assert "to see 2026-03-08 14:00:00 in the account's logs (America/New_York), write " in times
    assert "write 2026-03-08 18:00:00, or 2026-03-08 14:00:00-04:00 with its offset" in times


def test_an_account_time_source_says_so_with_its_other_settings() -> None:
    said = notes("local")
    times = next(n for n in said if n.startswith("times:"))
    assert "in the account's zone Asia/Dubai" in times
    assert "write 2026-03-08 14:00:00, or 2026-03-08 14:00:00+04:00" in times
    assert any("',' is the decimal point" in n and "1.234,56" in n for n in said)
    assert 'columns: click_id = "Aff Sub" (columns)' in said
    assert "ignored on purpose: Click Date (ignore_columns)" in said
    assert any("paid -> approved" in n for n in said)
    assert "encoding: cp1252 (encoding)" in said


def test_the_cli_prints_the_csv_on_stdout_and_the_rules_on_stderr(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG, encoding="utf-8")
    code = cli.main(["template", "--offer-source", "seed", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0
    assert (
        out.splitlines()[0]
        == "click_id,payout,conversion_time,conversion_type,status,event_id,currency"
    )
    assert "# offer source seed: account ny (America/New_York)" in err
    assert "write 2026-03-08 18:00:00" in err
    assert cli.main(["template", "--offer-source", "nope", "--config", str(config)]) == 2
