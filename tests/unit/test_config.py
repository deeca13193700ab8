"""Configuration: real TOML files in, typed objects or a ConfigError naming file, key and reason.

Expectations are written out by hand from the TOML text (and the spec's defaults), never read
back from the code under test.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.config import load, parse
from pipeline.core.model import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FUTURE_TOLERANCE_SECONDS,
    DEFAULT_MAX_FILE_BYTES,
    ConfigError,
)

VALID = """
[settings]
batch_size = 1000
max_file_bytes = 1048576
future_tolerance_seconds = 0
warehouse_url = "postgresql+psycopg://user@db/conversions"

[accounts.main]
timezone = "America/New_York"
currency = "USD"

[accounts.gulf]
timezone = "Asia/Dubai"
currency = "AED"

[offer_sources.maxbounty]
account = "main"
duplicate_mode = "ignore"
default_status = "pending"
file_times = "account"
allow_negative_payout = true
click_id_pattern = "^[0-9a-f]{24}$"
nonexistent_times = "shift_forward"
ambiguous_times = "latest"
time_format = "%d/%m/%Y %H:%M"
allowed_conversion_types = ["Lead", "Purchase"]

[offer_sources.maxbounty.conversion_types.Purchase]
duplicate_mode = "increment_payout"

[offer_sources.maxbounty.conversion_types.Lead]
duplicate_mode = "edit"

[offer_sources."click-dealer_2.eu"]
account = "gulf"
file_times = "utc"
"""

# The smallest valid config; error cases below add or change one thing in it.
MINIMAL = """
[accounts.main]
timezone = "America/New_York"

[offer_sources.maxbounty]
account = "main"
"""


def write(tmp_path: Path, text: str, name: str = "conversions.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(path: Path, key: str, *reason: str) -> ConfigError:
    """Load `path`, expect a ConfigError at `key`, and check that the message a user sees
    names the file, the key and each fragment of the reason."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    error = caught.value
    message = str(error)
    assert error.path == str(path)
    assert error.key == key
    if key:
        assert message.startswith(f"{path}: {key}: "), message
    else:
        assert message.startswith(f"{path}: "), message
    for fragment in reason:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return error


# --- valid configs -------------------------------------------------------------------------------


def test_valid_config_round_trip(tmp_path: Path):
    path = write(tmp_path, VALID)
    config = load(path)

    assert config.path == str(path)
    assert set(config.accounts) == {"main", "gulf"}
    main, gulf = config.accounts["main"], config.accounts["gulf"]
    assert (main.name, main.timezone, main.currency) == ("main", "America/New_York", "USD")
    assert (gulf.name, gulf.timezone, gulf.currency) == ("gulf", "Asia/Dubai", "AED")

    assert set(config.offer_sources) == {"maxbounty", "click-dealer_2.eu"}
    mb = config.offer_source("maxbounty")
    assert mb.name == "maxbounty"
    assert mb.account == main
    assert mb.duplicate_mode == "ignore"
    assert mb.default_status == "pending"
    assert mb.file_times == "account"
    assert mb.allow_negative_payout is True
    assert mb.click_id_pattern == "^[0-9a-f]{24}$"
    assert mb.nonexistent_times == "shift_forward"
    assert mb.ambiguous_times == "latest"
    assert mb.time_format == "%d/%m/%Y %H:%M"
    assert mb.allowed_conversion_types == ("Lead", "Purchase")
    assert dict(mb.type_modes) == {"Purchase": "increment_payout", "Lead": "edit"}

    settings = config.settings
    assert settings.batch_size == 1000
    assert settings.max_file_bytes == 1_048_576
    assert settings.future_tolerance_seconds == 0
    assert settings.warehouse_url == "postgresql+psycopg://user@db/conversions"


def test_offer_source_defaults(tmp_path: Path):
    """Everything but `account` is optional; the defaults are the ones the spec documents."""
    cd = load(write(tmp_path, VALID)).offer_source("click-dealer_2.eu")
    assert cd.account.name == "gulf"
    assert cd.duplicate_mode == "ignore"
    assert cd.default_status == "approved"
    assert cd.file_times == "utc"
    assert cd.allow_negative_payout is False
    assert cd.click_id_pattern is None
    assert cd.nonexistent_times == "reject"
    assert cd.ambiguous_times == "reject"
    assert cd.time_format is None
    assert cd.allowed_conversion_types is None
    assert dict(cd.type_modes) == {}


def test_settings_and_currency_defaults(tmp_path: Path):
    config = load(write(tmp_path, MINIMAL))
    assert config.accounts["main"].currency == "USD"
    assert config.settings.batch_size == DEFAULT_BATCH_SIZE == 50_000
    assert config.settings.max_file_bytes == DEFAULT_MAX_FILE_BYTES == 2 * 1024**3
    assert config.settings.future_tolerance_seconds == DEFAULT_FUTURE_TOLERANCE_SECONDS == 300
    assert config.settings.warehouse_url is None


def test_mode_for_run_override_then_type_then_offer_source(tmp_path: Path):
    mb = load(write(tmp_path, VALID)).offer_source("maxbounty")
    assert mb.mode_for("Purchase") == "increment_payout"
    assert mb.mode_for("Lead") == "edit"
    assert mb.mode_for("") == "ignore"  # the default conversion: the offer source's mode
    assert mb.mode_for("Purchase", override="create_new") == "create_new"
    assert mb.mode_for("", override="edit") == "edit"


def test_modes_gives_the_same_precedence_for_a_whole_column(tmp_path: Path):
    mb = load(write(tmp_path, VALID)).offer_source("maxbounty")
    by_type, other = mb.modes()
    assert dict(by_type) == {"Purchase": "increment_payout", "Lead": "edit"}
    assert other == "ignore"
    by_type, other = mb.modes("create_new")
    assert dict(by_type) == {} and other == "create_new"


def test_parse_accepts_an_already_decoded_document():
    raw = {
        "accounts": {"main": {"timezone": "Europe/Berlin", "currency": "EUR"}},
        "offer_sources": {"net": {"account": "main", "duplicate_mode": "create_new"}},
    }
    config = parse(raw, "inline.toml")
    assert config.path == "inline.toml"
    assert config.offer_source("net").duplicate_mode == "create_new"
    assert config.offer_source("net").account.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    "time_format",
    [
        "%d/%m/%Y %H:%M",
        "%m/%d/%Y %I:%M:%S %p",
        "%d.%m.%y",  # a date only: midnight
        "%Y%m%d%H%M%S",
        "%d/%m/%Y %H:%M %z",
        "%Y-%m-%d %H:%M:%S.%f",
        "%b %d %Y %H:%M",
    ],
)
def test_usable_time_formats_are_accepted(tmp_path: Path, time_format: str):
    text = MINIMAL + f"time_format = '{time_format}'\n"
    assert load(write(tmp_path, text)).offer_source("maxbounty").time_format == time_format


def test_unknown_offer_source_lookup_names_the_configured_ones(tmp_path: Path):
    config = load(write(tmp_path, VALID))
    with pytest.raises(ConfigError) as caught:
        config.offer_source("maxbouny")
    assert caught.value.key == "offer_sources.maxbouny"
    assert "maxbounty" in str(caught.value) and "click-dealer_2.eu" in str(caught.value)


# --- refused configs ----------------------------------------------------------------------------


def test_unknown_time_zone(tmp_path: Path):
    text = MINIMAL.replace("America/New_York", "America/New_Yrok")
    refused(write(tmp_path, text), "accounts.main.timezone", "America/New_Yrok", "time zone")


def test_missing_time_zone(tmp_path: Path):
    text = MINIMAL.replace('timezone = "America/New_York"', 'currency = "USD"')
    refused(write(tmp_path, text), "accounts.main.timezone", "required")


def test_unknown_duplicate_mode(tmp_path: Path):
    text = MINIMAL + 'duplicate_mode = "edt"\n'
    refused(write(tmp_path, text), "offer_sources.maxbounty.duplicate_mode", "'edt'", "mode")


def test_unknown_duplicate_mode_of_a_conversion_type(tmp_path: Path):
    text = MINIMAL + '[offer_sources.maxbounty.conversion_types.Purchase]\nduplicate_mode = "add"\n'
    refused(
        write(tmp_path, text),
        "offer_sources.maxbounty.conversion_types.Purchase.duplicate_mode",
        "'add'",
        "increment_payout",  # the valid choices are listed
    )


def test_offer_source_naming_a_missing_account(tmp_path: Path):
    text = MINIMAL.replace('account = "main"', 'account = "mian"')
    refused(write(tmp_path, text), "offer_sources.maxbounty.account", "'mian'", "account")


def test_offer_source_without_account(tmp_path: Path):
    text = MINIMAL.replace('account = "main"', 'duplicate_mode = "edit"')
    refused(write(tmp_path, text), "offer_sources.maxbounty.account", "required")


def test_bad_click_id_regex(tmp_path: Path):
    text = MINIMAL + "click_id_pattern = '^[0-9a-f{24}$'\n"
    refused(write(tmp_path, text), "offer_sources.maxbounty.click_id_pattern", "regular expression")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + 'duplicate_mod = "edit"\n', "offer_sources.maxbounty.duplicate_mod"),
        (
            MINIMAL.replace("timezone", "time_zone"),
            "accounts.main.time_zone",
        ),
        ("[settings]\nbatchsize = 10\n" + MINIMAL, "settings.batchsize"),
        (
            MINIMAL + "[offer_sources.maxbounty.conversion_types.Lead]\nmode = 'edit'\n",
            "offer_sources.maxbounty.conversion_types.Lead.mode",
        ),
        ("[setting]\nbatch_size = 10\n" + MINIMAL, "setting"),
    ],
)
def test_unknown_key_is_refused(tmp_path: Path, text: str, key: str):
    refused(write(tmp_path, text), key, "unknown key")


@pytest.mark.parametrize(
    ("setting", "key", "reason"),
    [
        ('batch_size = "50000"', "settings.batch_size", "integer"),
        ("batch_size = 1.5", "settings.batch_size", "integer"),
        ("batch_size = true", "settings.batch_size", "integer"),  # a bool is not an int
        ('max_file_bytes = "2GB"', "settings.max_file_bytes", "integer"),
        ('future_tolerance_seconds = "300"', "settings.future_tolerance_seconds", "integer"),
        ("warehouse_url = 5", "settings.warehouse_url", "string"),
        ("batch_size = 0", "settings.batch_size", "at least 1"),
        ("max_file_bytes = -1", "settings.max_file_bytes", "at least 1"),
        ("future_tolerance_seconds = -5", "settings.future_tolerance_seconds", "negative"),
    ],
)
def test_bad_settings(tmp_path: Path, setting: str, key: str, reason: str):
    refused(write(tmp_path, f"[settings]\n{setting}\n" + MINIMAL), key, reason)


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ('allow_negative_payout = "yes"', "allow_negative_payout", "true or false"),
        ("duplicate_mode = 1", "duplicate_mode", "string"),
        ('allowed_conversion_types = "Lead"', "allowed_conversion_types", "array"),
        ('allowed_conversion_types = ["Lead", ""]', "allowed_conversion_types", "non-empty"),
        ("allowed_conversion_types = [1, 2]", "allowed_conversion_types", "non-empty"),
        ("conversion_types = 3", "conversion_types", "table"),
    ],
)
def test_wrong_types_in_an_offer_source(tmp_path: Path, line: str, key: str, reason: str):
    refused(write(tmp_path, MINIMAL + line + "\n"), f"offer_sources.maxbounty.{key}", reason)


@pytest.mark.parametrize("currency", ["usd", "XYZ", "US", "€"])
def test_bad_currency(tmp_path: Path, currency: str):
    text = MINIMAL.replace(
        'timezone = "America/New_York"', f'timezone = "America/New_York"\ncurrency = "{currency}"'
    )
    refused(write(tmp_path, text), "accounts.main.currency", repr(currency), "ISO 4217")


@pytest.mark.parametrize("value", ["local", "offer_source", "", "Etc/GMT+4", "EST", "Mars/Base"])
def test_bad_file_times(tmp_path: Path, value: str):
    text = MINIMAL + f'file_times = "{value}"\n'
    refused(write(tmp_path, text), "offer_sources.maxbounty.file_times", repr(value), "account")


@pytest.mark.parametrize("value", ["utc", "account", "Europe/Berlin", "UTC", "GMT+4"])
def test_file_times_takes_the_two_words_or_a_zone(tmp_path: Path, value: str):
    text = MINIMAL + f'file_times = "{value}"\n'
    assert load(write(tmp_path, text)).offer_sources["maxbounty"].file_times == value


def test_file_times_defaults_to_utc_as_the_seed_reads_files(tmp_path: Path):
    assert load(write(tmp_path, MINIMAL)).offer_sources["maxbounty"].file_times == "utc"


@pytest.mark.parametrize(
    ("line", "key", "bad"),
    [
        ('nonexistent_times = "shift_backward"', "nonexistent_times", "shift_backward"),
        ('nonexistent_times = "earliest"', "nonexistent_times", "earliest"),
        ('ambiguous_times = "first"', "ambiguous_times", "first"),
        ('ambiguous_times = "shift_forward"', "ambiguous_times", "shift_forward"),
    ],
)
def test_bad_dst_policies(tmp_path: Path, line: str, key: str, bad: str):
    refused(
        write(tmp_path, MINIMAL + line + "\n"),
        f"offer_sources.maxbounty.{key}",
        repr(bad),
        "policy",
    )


def test_bad_default_status(tmp_path: Path):
    text = MINIMAL + 'default_status = "aproved"\n'
    refused(write(tmp_path, text), "offer_sources.maxbounty.default_status", "'aproved'")


@pytest.mark.parametrize(
    "name",
    ["max bounty", "../evil", ".hidden", "-dash", "a/b", "ünïcode", "x" * 65, ""],
)
def test_offer_source_name_must_be_a_safe_folder_name(tmp_path: Path, name: str):
    text = MINIMAL.replace("[offer_sources.maxbounty]", f'[offer_sources."{name}"]')
    refused(write(tmp_path, text), f"offer_sources.{name}", "names must be")


def test_longest_allowed_offer_source_name(tmp_path: Path):
    name = "a" + "b" * 63  # 64 characters
    text = MINIMAL.replace("[offer_sources.maxbounty]", f"[offer_sources.{name}]")
    assert name in load(write(tmp_path, text)).offer_sources


def test_account_name_must_be_a_safe_name(tmp_path: Path):
    text = MINIMAL.replace("[accounts.main]", '[accounts."main account"]')
    refused(write(tmp_path, text), "accounts.main account", "names must be")


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[offer_sources.x]\naccount = "main"\n', "accounts", "missing"),
        ('[accounts.main]\ntimezone = "UTC"\n', "offer_sources", "missing"),
        ("accounts = {}\noffer_sources = {}\n", "accounts", "at least one"),
        ("offer_sources = 3\n" + MINIMAL.split("[offer_sources")[0], "offer_sources", "table"),
    ],
)
def test_missing_or_empty_tables(tmp_path: Path, text: str, key: str, reason: str):
    refused(write(tmp_path, text), key, reason)


def test_toml_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "conversions.toml"
    path.write_text(
        '[accounts.main]\ntimezone = "America/New_York"\ncurrency "USD"\n', encoding="utf-8"
    )
    refused(path, "", "TOML", "line 3")


def test_invalid_utf8_is_refused(tmp_path: Path):
    path = tmp_path / "conversions.toml"
    path.write_bytes(b'[accounts.main]\ntimezone = "Europe/Z\xfcrich"\n')
    refused(path, "", "TOML")


def test_missing_file(tmp_path: Path):
    refused(tmp_path / "nope.toml", "", "not found")


def test_directory_instead_of_file(tmp_path: Path):
    refused(tmp_path, "", "cannot read")


# --- time_format is checked at load time, not per row -------------------------------------------


@pytest.mark.parametrize(
    ("time_format", "reason"),
    [
        ("%Y-%m-%d %H:%M:%Q", "bad directive"),  # unknown directive
        ("%d/%m/%Y %H:%M%", "stray %"),  # dangling %
        ("%d/%m/%Y %d", "not a usable time format"),  # a directive twice (a regex error inside)
        ("%H:%M", "year, month and day"),  # no date: every row would be 1900-01-01
        ("%d/%m %H:%M", "year, month and day"),  # no year
        ("dd/mm/yyyy HH:MM", "year, month and day"),  # no directives at all
        ("%%d/%%m/%%Y", "year, month and day"),  # only escaped percent signs
        ("%d/%m/%Y %I:%M", "%p"),  # 12-hour clock without AM/PM: 13:45 would read as 01:45
    ],
)
def test_unusable_time_format(tmp_path: Path, time_format: str, reason: str):
    text = MINIMAL + f"time_format = '{time_format}'\n"
    refused(write(tmp_path, text), "offer_sources.maxbounty.time_format", reason)


def test_type_override_outside_allowed_types_is_refused(tmp_path: Path):
    """An override for a type that can never occur is a typo that would silently do nothing."""
    text = (
        MINIMAL
        + 'allowed_conversion_types = ["Lead", "Purchase"]\n'
        + '[offer_sources.maxbounty.conversion_types.Purchse]\nduplicate_mode = "edit"\n'
    )
    refused(
        write(tmp_path, text),
        "offer_sources.maxbounty.conversion_types.Purchse",
        "allowed_conversion_types",
    )


def test_config_error_without_a_key_has_no_empty_key_segment():
    error = ConfigError("c.toml", "", "config file not found")
    assert str(error) == "c.toml: config file not found"
    error = ConfigError("c.toml", "accounts.main", "must be a table")
    assert str(error) == "c.toml: accounts.main: must be a table"


# --- account time zones ---------------------------------------------------------------------------


def zone_config(zone: str) -> str:
    return MINIMAL.replace('"America/New_York"', f'"{zone}"')


@pytest.mark.parametrize(
    ("zone", "examples"),
    [
        ("GMT+4", "Asia/Dubai"),
        # New York is UTC-4 in summer, Halifax in winter.
        ("UTC-04:00", "America/New_York or America/Halifax"),
        ("UTC+5:30", "Asia/Kolkata"),
        ("GMT-3", "America/Sao_Paulo or America/Argentina/Buenos_Aires"),
    ],
)
def test_fixed_offset_account_zones_are_accepted_with_a_warning(
    tmp_path: Path, zone: str, examples: str
):
    config = load(write(tmp_path, zone_config(zone)))
    assert config.accounts["main"].timezone == zone  # as written
    assert config.warnings == (
        f"accounts.main.timezone: {zone} is a fixed offset with no daylight saving time; if the "
        f"account follows a city's clock, use its IANA zone (e.g. {examples})",
    )


@pytest.mark.parametrize("zone", ["UTC", "GMT", "America/New_York", "Asia/Kolkata", "Etc/UTC"])
def test_named_zones_have_no_warning(tmp_path: Path, zone: str):
    config = load(write(tmp_path, zone_config(zone)))
    assert config.accounts["main"].timezone == zone
    assert config.warnings == ()


def test_one_warning_per_fixed_offset_account():
    raw = {
        "accounts": {
            "dubai": {"timezone": "GMT+4"},
            "ny": {"timezone": "America/New_York"},
            "india": {"timezone": "UTC+05:30"},
        },
        "offer_sources": {
            "a": {"account": "dubai"},
            "b": {"account": "dubai"},
            "c": {"account": "india"},
        },
    }
    assert parse(raw).warnings == (
        "accounts.dubai.timezone: GMT+4 is a fixed offset with no daylight saving time; if the "
        "account follows a city's clock, use its IANA zone (e.g. Asia/Dubai)",
        "accounts.india.timezone: UTC+05:30 is a fixed offset with no daylight saving time; if "
        "the account follows a city's clock, use its IANA zone (e.g. Asia/Kolkata)",
    )


@pytest.mark.parametrize(
    ("zone", "fragments"),
    [
        ("Etc/GMT+4", ["means UTC-4", "GMT-4", "UTC-04:00", "America/New_York"]),
        ("Etc/GMT-4", ["means UTC+4", "GMT+4", "UTC+04:00", "Asia/Dubai"]),
        ("Etc/GMT+10", ["means UTC-10", "GMT-10", "UTC-10:00", "Pacific/Honolulu"]),
    ],
)
def test_posix_etc_gmt_zones_are_refused(tmp_path: Path, zone: str, fragments: list[str]):
    refused(write(tmp_path, zone_config(zone)), "accounts.main.timezone", repr(zone), *fragments)


@pytest.mark.parametrize(
    ("zone", "hint"),
    [
        ("EST", "America/New_York"),
        ("EDT", "America/New_York"),
        ("PST", "America/Los_Angeles"),
        ("PDT", "America/Los_Angeles"),
        ("CST", "America/Chicago"),
        ("MST", "America/Denver"),
        ("HST", "Pacific/Honolulu"),
        ("CET", "Europe/Paris or Europe/Berlin"),
        ("CEST", "Europe/Paris or Europe/Berlin"),
        ("MET", "Europe/Paris or Europe/Berlin"),
        ("WET", "Europe/Lisbon"),
        ("EET", "Europe/Athens"),
        ("BST", "Europe/London"),
        ("IST", "Asia/Kolkata"),
        ("MSK", "Europe/Moscow"),
        ("est", "America/New_York"),
    ],
)
def test_abbreviations_are_refused_with_the_zone_to_use(tmp_path: Path, zone: str, hint: str):
    refused(
        write(tmp_path, zone_config(zone)),
        "accounts.main.timezone",
        repr(zone),
        "abbreviation",
        f"use the IANA zone {hint}",
    )


@pytest.mark.parametrize("zone", ["GMT+15", "UTC-13:00", "UTC+14:30"])
def test_offsets_no_clock_uses_are_refused(tmp_path: Path, zone: str):
    refused(write(tmp_path, zone_config(zone)), "accounts.main.timezone", repr(zone), "UTC+14:00")


@pytest.mark.parametrize("zone", ["UTC+14:00", "UTC-12:00", "GMT+0"])
def test_offsets_at_the_ends_are_accepted(tmp_path: Path, zone: str):
    assert load(write(tmp_path, zone_config(zone))).accounts["main"].timezone == zone


@pytest.mark.parametrize("zone", ["GMT+4:60", "UTC+", "GMT 4", "Dubai", "+4"])
def test_other_zone_spellings_are_unknown(tmp_path: Path, zone: str):
    refused(write(tmp_path, zone_config(zone)), "accounts.main.timezone", repr(zone), "time zone")


# --- the keys that map a network's own export (issue 12) ----------------------------------------


def test_export_keys_are_read_as_written(tmp_path: Path):
    text = MINIMAL + (
        'columns = { click_id = "Aff Sub", event_id = "Conversion ID" }\n'
        'ignore_columns = ["Click Date", "Sub ID 2"]\n'
        'decimal_separator = ","\n'
        'encoding = "cp1252"\n'
        'status_aliases = { Paid = "approved", " Refunded " = "declined" }\n'
    )
    source = load(write(tmp_path, text)).offer_sources["maxbounty"]
    assert source.columns == {"click_id": "Aff Sub", "event_id": "Conversion ID"}
    assert source.ignore_columns == ("Click Date", "Sub ID 2")
    assert (source.decimal_separator, source.encoding) == (",", "cp1252")
    assert source.status_aliases == {"paid": "approved", "refunded": "declined"}


def test_export_keys_default_to_reading_files_as_before(tmp_path: Path):
    source = load(write(tmp_path, MINIMAL)).offer_sources["maxbounty"]
    assert (source.columns, source.ignore_columns, source.status_aliases) == ({}, (), {})
    assert (source.decimal_separator, source.encoding) == (".", None)


@pytest.mark.parametrize(
    ("line", "key", "fragments"),
    [
        ('columns = { clik_id = "Sub" }', "columns.clik_id", ("no such field", "click_id")),
        ('columns = { click_id = " " }', "columns.click_id", ("non-empty",)),
        (
            'columns = { click_id = "Sub", event_id = "sub" }',
            "columns.event_id",
            ("'sub'", "mapped to click_id"),
        ),
        ('ignore_columns = "Click Date"', "ignore_columns", ("an array",)),
        ('ignore_columns = [""]', "ignore_columns", ("non-empty",)),
        ('decimal_separator = ";"', "decimal_separator", ("';'", "'.'", "','")),
        ('encoding = "klingon"', "encoding", ("'klingon'", "cp1252")),
        ('status_aliases = { paid = "aproved" }', "status_aliases.paid", ("'aproved'",)),
    ],
)
def test_export_key_mistakes_are_refused_where_they_are(tmp_path, line, key, fragments):
    refused(write(tmp_path, MINIMAL + line + "\n"), f"offer_sources.maxbounty.{key}", *fragments)


def test_a_header_both_mapped_and_ignored_is_refused(tmp_path: Path):
    text = MINIMAL + 'columns = { click_id = "Aff Sub" }\nignore_columns = ["aff sub"]\n'
    refused(write(tmp_path, text), "offer_sources.maxbounty.ignore_columns", "'aff sub'", "columns")
