"""The frozen configuration the rules take: accounts, offer sources, settings.

`pipeline.config` builds these from TOML and refuses every mistake; the core only reads them.
Defaults are written here once, as the dataclass defaults, and the loader takes them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_BATCH_SIZE = 50_000
DEFAULT_MAX_FILE_BYTES = 2 * 1024**3
DEFAULT_FUTURE_TOLERANCE_SECONDS = 300
DEFAULT_SETTLE_SECONDS = 5
DEFAULT_MAX_LINE_BYTES = 4 * 1024**2
DEFAULT_MAX_COLUMNS = 1_000
DEFAULT_LOCK_TIMEOUT_SECONDS = 60
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 3_600
# Under the 5 s Airflow gives a task between SIGTERM and SIGKILL.
DEFAULT_SHUTDOWN_GRACE_SECONDS = 3


class ConfigError(ValueError):
    """A configuration mistake, located by file and key."""

    def __init__(self, path: str | Path, key: str, reason: str):
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


@dataclass(frozen=True)
class Account:
    name: str
    timezone: str
    currency: str = "USD"


@dataclass(frozen=True)
class OfferSource:
    name: str
    account: Account
    duplicate_mode: str = "ignore"
    default_status: str = "approved"
    # How times without an offset are read: "utc" (the seed's rule), "account" (the account's
    # wall time) or an IANA zone; a file's Parameters:TimeZone line, then a row's own offset,
    # come first.
    file_times: str = "utc"
    allow_negative_payout: bool = False
    click_id_pattern: str | None = None
    nonexistent_times: str = "reject"
    ambiguous_times: str = "reject"
    time_format: str | None = None
    allowed_conversion_types: tuple[str, ...] | None = None
    type_modes: Mapping[str, str] = field(default_factory=dict)
    # field -> the header this source writes for it (matched case-insensitively, trimmed)
    columns: Mapping[str, str] = field(default_factory=dict)
    ignore_columns: tuple[str, ...] = ()  # headers ignored on purpose, never unmapped_column
    decimal_separator: str = "."  # "," for 12,50 and 1.234,56
    encoding: str | None = None  # None: UTF-8, or UTF-16 with a BOM; else a Python codec
    status_aliases: Mapping[str, str] = field(default_factory=dict)  # word -> status

    def modes(self, override: str | None = None) -> tuple[Mapping[str, str], str]:
        """The duplicate-mode precedence, the one place it is written: the run's override wins,
        then the conversion type's own mode, then the offer source's. Returned as the modes of the
        types that have their own, and the mode of every other type, so that `normalise` can
        apply it to a whole column at once."""
        if override:
            return {}, override
        return self.type_modes, self.duplicate_mode

    def mode_for(self, conversion_type: str, override: str | None = None) -> str:
        """The duplicate mode of one conversion type (see `modes`)."""
        by_type, other = self.modes(override)
        return by_type.get(conversion_type, other)


@dataclass(frozen=True)
class Settings:
    batch_size: int = DEFAULT_BATCH_SIZE
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    future_tolerance_seconds: int = DEFAULT_FUTURE_TOLERANCE_SECONDS
    # A file is claimed once its size and modification time have not changed for this long
    # (a sender writing in place is still writing); 0 claims at once.
    settle_seconds: int = DEFAULT_SETTLE_SECONDS
    # The longest line (the header or one record, quoted line breaks included) and the most
    # columns a file may have; past either the file is quarantined, read in bounded memory.
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_columns: int = DEFAULT_MAX_COLUMNS
    # How long a file's merge waits for a lock (another file of the offer source, a person's
    # session on the tables) and how long one statement may run; past either the file goes
    # back to the inbox. 0 waits without a bound.
    lock_timeout_seconds: int = DEFAULT_LOCK_TIMEOUT_SECONDS
    statement_timeout_seconds: int = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    # After SIGTERM or SIGINT, how long the file in progress may take to finish before it is
    # rolled back and put back in the inbox (see `pipeline.shutdown`); 0 rolls it back at once.
    shutdown_grace_seconds: int = DEFAULT_SHUTDOWN_GRACE_SECONDS
    warehouse_url: str | None = None


@dataclass(frozen=True)
class Config:
    path: str
    accounts: Mapping[str, Account]
    offer_sources: Mapping[str, OfferSource]
    settings: Settings = Settings()
    # Things the loader accepted but a person should know (a fixed-offset account zone has no
    # daylight saving time); the CLI prints them and an Airflow task logs them, once per run.
    warnings: tuple[str, ...] = ()

    def offer_source(self, name: str) -> OfferSource:
        try:
            return self.offer_sources[name]
        except KeyError:
            known = ", ".join(sorted(self.offer_sources)) or "none"
            raise ConfigError(
                self.path, f"offer_sources.{name}", f"no such offer source (configured: {known})"
            ) from None


def defaults(model: type) -> dict[str, Any]:
    """The default of every field of a config dataclass that has a plain one: what the loader
    uses for a key the TOML leaves out, so that each default is written once, above."""
    return {f.name: f.default for f in fields(model) if f.default is not MISSING}
