"""Configuration: a TOML file loaded into frozen, typed objects and validated once, at start.

Every mistake is refused before any file is touched, with the file, the key and the reason
(``conversions.toml: offer_sources.maxbounty.duplicate_mode: unknown mode 'edt' ...``), because a
typo found half-way through an inbox would leave some files applied under the wrong rules.
Unknown keys are errors too: a misspelt optional key would otherwise silently do nothing.
"""

from __future__ import annotations

import codecs
import importlib.util
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args, get_type_hints
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import pandas as pd

from pipeline.core.currencies import ISO_4217
from pipeline.core.model import Account, Config, ConfigError, OfferSource, Settings, defaults
from pipeline.core.timezones import check_account_zone, fixed_offset_warning, to_utc
from pipeline.core.vocabulary import (
    AMBIGUOUS_POLICIES,
    DECIMAL_SEPARATORS,
    FILE_TIMES,
    KIND_COLUMNS,
    MODES,
    NAME_PATTERN,
    NONEXISTENT_POLICIES,
    STATUSES,
)

# The keys of each table are the model's fields (whose defaults are the defaults), except that an
# account's and an offer source's name is its table's name, and an offer source's type_modes come
# from its [conversion_types.<type>] tables.
_ACCOUNT_KEYS = {f.name for f in fields(Account)} - {"name"}
_SOURCE_KEYS = {f.name for f in fields(OfferSource)} - {"name", "type_modes"} | {"conversion_types"}
# The offer source's options that name one of a few words: the words, and what an error calls one.
_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "duplicate_mode": (MODES, "mode"),
    "default_status": (STATUSES, "status"),
    "nonexistent_times": (NONEXISTENT_POLICIES, "policy"),
    "ambiguous_times": (AMBIGUOUS_POLICIES, "policy"),
}

# How a wrong type is named to the user, in TOML's words.
_TOML_TYPES = {int: "an integer", str: "a string", bool: "true or false", list: "an array"}

# The sample a `time_format` must read back: a day > 12 and an afternoon hour, so that a format
# without the year or the date, or with %I but no %p, cannot read it back as the same time.
_TIME_FORMAT_SAMPLE = datetime(2024, 1, 31, 13, 45, 30, 123456, tzinfo=UTC)


@dataclass(frozen=True)
class FileConfig(Config):
    """A config as its file gives it: the model's, plus the file's top-level ``home`` (where
    the data directory is: a folder, or ``s3://bucket/prefix``), which only `pipeline.runtime`
    reads (``--home`` and ``$CONVERSIONS_HOME`` win over it). Kept out of the engine's model:
    nothing below the runtime needs to know where its files come from."""

    home: str | None = None


def load(path: str | Path) -> FileConfig:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            path, "", "config file not found (use --config or $CONVERSIONS_CONFIG)"
        ) from None
    except OSError as exc:  # a directory, no permission...
        raise ConfigError(path, "", f"cannot read config file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return parse(raw, path)


def parse(raw: Mapping[str, Any], path: str | Path = "<config>") -> FileConfig:
    """Validate an already-decoded TOML document (tests and the demo build these in code)."""
    reader = _Reader(str(path))
    reader.only_keys(raw, "", {"home", "settings", "accounts", "offer_sources"})
    home = raw.get("home")
    if home is not None:
        if not isinstance(home, str) or not home.strip():
            raise reader.fail(
                "home", f"must be a folder or an s3://bucket/prefix URL, got {home!r}"
            )
        check_home(home, str(path), "home")
    settings = reader.settings(raw.get("settings", {}))
    accounts = {
        name: reader.account(name, table)
        for name, table in reader.table(raw, "", "accounts", required=True).items()
    }
    if not accounts:
        raise ConfigError(path, "accounts", "at least one account is required")
    sources = {
        name: reader.offer_source(name, table, accounts)
        for name, table in reader.table(raw, "", "offer_sources", required=True).items()
    }
    if not sources:
        raise ConfigError(path, "offer_sources", "at least one offer source is required")
    return FileConfig(
        str(path), accounts, sources, settings, warnings=_zone_warnings(accounts), home=home
    )


# Object stores the data directory is tested on, and those fsspec serves through the same code
# once their package is installed (named in the error when it is not).
TESTED_SCHEMES = ("s3",)
_STORE_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}
_STORE_PACKAGES |= {"abfs": "adlfs"}


def check_home(home: str, where: str, key: str = "") -> None:
    """Refuse a data directory URL that cannot work, before anything is opened: an unknown
    scheme, no bucket, credentials in it. ``where`` and ``key`` locate it for the message
    (``conversions.toml: home``, ``$CONVERSIONS_HOME``, ``--home``). A folder passes."""
    if "://" not in home or home.startswith(("file://", "local://")):  # a folder
        return
    parts = urlsplit(home)
    scheme = parts.scheme.lower()
    if scheme not in _STORE_PACKAGES:
        raise ConfigError(
            where,
            key,
            f"unsupported data directory scheme {scheme}:// in {home!r}: use a folder or "
            "s3://bucket/prefix (gs:// with gcsfs installed, az:// with adlfs)",
        )
    if parts.password is not None:
        raise ConfigError(
            where,
            key,
            "credentials do not go in the data directory URL: use an Airflow connection "
            "(s3://<conn_id>@bucket/prefix) or the standard AWS environment variables",
        )
    if not parts.hostname:
        raise ConfigError(where, key, f"no bucket in {home!r} (expected {scheme}://bucket/prefix)")
    if importlib.util.find_spec(_STORE_PACKAGES[scheme]) is None:
        raise ConfigError(
            where, key, f"{scheme}:// needs the {_STORE_PACKAGES[scheme]} package: pip install it"
        )


class _Reader:
    """Small typed accessors that turn every mistake into a located ConfigError."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason)

    def only_keys(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                full = f"{where}.{key}" if where else key
                raise self.fail(
                    full, f"unknown key (expected one of: {', '.join(sorted(allowed))})"
                )

    def table(
        self, parent: Mapping[str, Any], where: str, key: str, required: bool = False
    ) -> dict[str, Any]:
        full = f"{where}.{key}" if where else key
        if key not in parent:
            if required:
                raise self.fail(full, "missing table")
            return {}
        value = parent[key]
        if not isinstance(value, dict):
            raise self.fail(full, "must be a table")
        return value

    def value(
        self,
        table: Mapping[str, Any],
        where: str,
        key: str,
        kind: type,
        default: Any = None,
        required: bool = False,
    ) -> Any:
        full = f"{where}.{key}"
        if key not in table:
            if required:
                raise self.fail(full, "required")
            return default
        value = table[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.fail(full, f"must be {_TOML_TYPES.get(kind, kind.__name__)}, got {value!r}")
        return value

    def choice(
        self,
        table: Mapping[str, Any],
        where: str,
        key: str,
        choices: tuple[str, ...],
        default: str | None = None,
        required: bool = False,
        what: str = "value",
    ) -> Any:
        value = self.value(table, where, key, str, default, required)
        if value is not None and value not in choices:
            raise self.fail(
                f"{where}.{key}",
                f"unknown {what} {value!r} (expected one of: {', '.join(choices)})",
            )
        return value

    def name(self, where: str, name: str) -> None:
        if not NAME_PATTERN.match(name):
            raise self.fail(
                where,
                "names must be 1-64 characters of A-Za-z0-9_.- (they are "
                "folder names in the inbox)",
            )

    def settings(self, table: Any) -> Settings:
        if not isinstance(table, dict):
            raise self.fail("settings", "must be a table")
        default = defaults(Settings)
        self.only_keys(table, "settings", set(default))
        kinds = get_type_hints(Settings)
        out = Settings(
            **{
                key: self.value(table, "settings", key, _toml_kind(kinds[key]), value)
                for key, value in default.items()
            }
        )
        for key in ("batch_size", "max_file_bytes", "max_line_bytes", "max_columns"):
            if getattr(out, key) < 1:
                raise self.fail(f"settings.{key}", "must be at least 1")
        for key in (
            "future_tolerance_seconds",
            "settle_seconds",
            "lock_timeout_seconds",
            "statement_timeout_seconds",
            "shutdown_grace_seconds",
        ):
            if getattr(out, key) < 0:
                raise self.fail(f"settings.{key}", "must not be negative")
        return out

    def account(self, name: str, table: Any) -> Account:
        where = f"accounts.{name}"
        self.name(where, name)
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self.only_keys(table, where, _ACCOUNT_KEYS)
        zone = self.value(table, where, "timezone", str, required=True)
        try:  # an IANA zone, UTC/GMT or a fixed offset as a person means it (GMT+4)
            check_account_zone(zone)
        except ValueError as exc:
            raise self.fail(f"{where}.timezone", str(exc)) from None
        currency = self.value(table, where, "currency", str, defaults(Account)["currency"])
        if currency not in ISO_4217:
            raise self.fail(f"{where}.currency", f"{currency!r} is not an ISO 4217 code")
        return Account(name, zone, currency)

    def offer_source(self, name: str, table: Any, accounts: Mapping[str, Account]) -> OfferSource:
        where = f"offer_sources.{name}"
        self.name(where, name)
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self.only_keys(table, where, _SOURCE_KEYS)
        default = defaults(OfferSource)

        def one_of(key: str) -> str:
            words, what = _CHOICES[key]
            return self.choice(table, where, key, words, default[key], what=what)

        account_name = self.value(table, where, "account", str, required=True)
        if account_name not in accounts:
            raise self.fail(
                f"{where}.account",
                f"no such account {account_name!r} (configured: {', '.join(sorted(accounts))})",
            )
        pattern = self.value(table, where, "click_id_pattern", str)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.fail(
                    f"{where}.click_id_pattern", f"not a valid regular expression: {exc}"
                ) from None
        time_format = self.value(table, where, "time_format", str)
        if time_format is not None:
            self.time_format(f"{where}.time_format", time_format)
        allowed = self.value(table, where, "allowed_conversion_types", list)
        if allowed is not None:
            if not all(isinstance(t, str) and t for t in allowed):
                raise self.fail(
                    f"{where}.allowed_conversion_types", "must be a list of non-empty type names"
                )
            allowed = tuple(allowed)
        type_modes: dict[str, str] = {}
        types = self.table(table, where, "conversion_types")
        for type_name, type_table in types.items():
            type_where = f"{where}.conversion_types.{type_name}"
            if not isinstance(type_table, dict):
                raise self.fail(type_where, "must be a table")
            self.only_keys(type_table, type_where, {"duplicate_mode"})
            if allowed is not None and type_name not in allowed:
                raise self.fail(
                    type_where,
                    f"{type_name!r} is not one of allowed_conversion_types "
                    f"({', '.join(allowed)}), so this override would never apply",
                )
            mode = self.choice(type_table, type_where, "duplicate_mode", MODES, what="mode")
            if mode:
                type_modes[type_name] = mode
        return OfferSource(
            name=name,
            account=accounts[account_name],
            duplicate_mode=one_of("duplicate_mode"),
            default_status=one_of("default_status"),
            file_times=self.file_times(table, where, default["file_times"]),
            allow_negative_payout=self.value(
                table, where, "allow_negative_payout", bool, default["allow_negative_payout"]
            ),
            click_id_pattern=pattern,
            nonexistent_times=one_of("nonexistent_times"),
            ambiguous_times=one_of("ambiguous_times"),
            time_format=time_format,
            allowed_conversion_types=allowed,
            type_modes=type_modes,
            columns=self.columns(table, where),
            ignore_columns=self.headers(table, where, "ignore_columns"),
            decimal_separator=self.decimal_separator(table, where, default["decimal_separator"]),
            encoding=self.encoding(table, where),
            status_aliases=self.status_aliases(table, where),
        )

    def file_times(self, table: Mapping[str, Any], where: str, default: str) -> str:
        """One of FILE_TIMES, or the zone a network exports in (refused as an account's zone
        would be: `Etc/GMT+4` and abbreviations such as `EST` read otherwise than meant)."""
        value = self.value(table, where, "file_times", str, default)
        if value in FILE_TIMES:
            return value
        try:
            check_account_zone(value)
        except ValueError as exc:
            words = " or ".join(map(repr, FILE_TIMES))
            raise self.fail(
                f"{where}.file_times",
                f"{value!r} is neither {words} nor a time zone (e.g. Europe/Berlin): {exc}",
            ) from None
        return value

    def columns(self, table: Mapping[str, Any], where: str) -> dict[str, str]:
        """field -> header; the fields are the two kinds' columns, and no header twice."""
        key = f"{where}.columns"
        mapping = self.table(table, where, "columns")
        fields_ = sorted({c for columns in KIND_COLUMNS.values() for c in columns})
        seen: dict[str, str] = {}
        for field_, header in mapping.items():
            if field_ not in fields_:
                raise self.fail(
                    f"{key}.{field_}", f"no such field (expected one of: {', '.join(fields_)})"
                )
            if not isinstance(header, str) or not header.strip():
                raise self.fail(f"{key}.{field_}", "must be the header as a non-empty string")
            folded = header.strip().casefold()
            if folded in seen:
                raise self.fail(
                    f"{key}.{field_}",
                    f"the header {header!r} is mapped to {seen[folded]} already",
                )
            seen[folded] = field_
        return dict(mapping)

    def headers(self, table: Mapping[str, Any], where: str, key: str) -> tuple[str, ...]:
        values = self.value(table, where, key, list, [])
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise self.fail(f"{where}.{key}", "must be a list of headers (non-empty strings)")
        mapped = {h.strip().casefold() for h in self.table(table, where, "columns").values()}
        for value in values:
            if value.strip().casefold() in mapped:
                raise self.fail(f"{where}.{key}", f"{value!r} is mapped in columns as well")
        return tuple(values)

    def decimal_separator(self, table: Mapping[str, Any], where: str, default: str) -> str:
        value = self.value(table, where, "decimal_separator", str, default)
        if value not in DECIMAL_SEPARATORS:
            choices = " or ".join(map(repr, DECIMAL_SEPARATORS))
            raise self.fail(
                f"{where}.decimal_separator",
                f"{value!r} is not a decimal separator: use {choices} (',' for 12,50)",
            )
        return value

    def encoding(self, table: Mapping[str, Any], where: str) -> str | None:
        value = self.value(table, where, "encoding", str)
        if value is None:
            return None
        try:
            codecs.lookup(value)
        except LookupError:
            raise self.fail(
                f"{where}.encoding",
                f"unknown encoding {value!r} (e.g. utf-8, cp1252, latin-1, utf-16)",
            ) from None
        return value

    def status_aliases(self, table: Mapping[str, Any], where: str) -> dict[str, str]:
        key = f"{where}.status_aliases"
        aliases = self.table(table, where, "status_aliases")
        for word, status in aliases.items():
            if not word.strip():
                raise self.fail(key, "a word must not be empty")
            if status not in STATUSES:
                raise self.fail(
                    f"{key}.{word}",
                    f"unknown status {status!r} (expected one of: {', '.join(STATUSES)})",
                )
        return {word.strip().casefold(): status for word, status in aliases.items()}

    def time_format(self, key: str, time_format: str) -> None:
        """Refuse a format now rather than fail on every file later: the sample time, written in
        the format, must read back (through the very parser rows go through) as the same time,
        to the format's precision (day, hour, minute, second or microsecond)."""
        example = "a strptime format such as '%d/%m/%Y %H:%M'"
        sample = pd.Timestamp(_TIME_FORMAT_SAMPLE)
        try:
            written = _TIME_FORMAT_SAMPLE.strftime(time_format)
            result = to_utc(
                pd.Series([written]), zone="UTC", file_times="utc", time_format=time_format
            )
        except (ValueError, re.error) as exc:
            reason = str(exc).removeprefix(f"time_format {time_format!r} is not usable: ")
            raise self.fail(key, f"not a usable time format: {reason}; use {example}") from None
        read = result.utc.iloc[0]
        shown = f"{sample:%Y-%m-%d %H:%M:%S}, written in this format as {written!r},"
        if (result.reason == "time_out_of_range").fillna(False).iloc[0]:  # 1900-01-01: no year
            raise self.fail(
                key,
                f"{shown} reads back outside the years 1970 to 2200: the format needs the year, "
                f"month and day; use {example}",
            )
        if pd.isna(read):
            raise self.fail(key, f"{shown} cannot be read back; use {example}")
        if read.normalize() != sample.normalize():
            raise self.fail(
                key,
                f"{shown} reads back as {read:%Y-%m-%d %H:%M:%S}: the format needs the year, "
                f"month and day; use {example}",
            )
        if read not in {sample.floor(unit) for unit in ("D", "h", "min", "s", "us")}:
            raise self.fail(
                key,
                f"{shown} reads back as {read:%Y-%m-%d %H:%M:%S}: the time of day is lost "
                "(%I needs %p)",
            )


def _zone_warnings(accounts: Mapping[str, Account]) -> tuple[str, ...]:
    """One warning per account whose zone is a fixed offset (no daylight saving time)."""
    found = ((name, fixed_offset_warning(account.timezone)) for name, account in accounts.items())
    return tuple(f"accounts.{name}.timezone: {warning}" for name, warning in found if warning)


def _toml_kind(hint: Any) -> type:
    """The TOML type of a field annotated `int`, `str` or `str | None`."""
    return next(kind for kind in (*get_args(hint), hint) if kind is not type(None))


_ZONES: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    return _ZONES
