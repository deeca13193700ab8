"""Reading conversions back out: `conversions export` and `conversions template`.

Exact payouts as decimal strings (never floats), times as ISO 8601 UTC with `Z`, or in the
account's own time zone with its offset (what the tracker's logs show) under `--local-time`.

Values are written exactly as stored, formula-like text included (an event id `=HYPERLINK(...)`,
a type `@x`): this is a data export for programs, and a neutralising `'` would change the data.
Only the rejection reports, which people open in a spreadsheet, are neutralised (`reports`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import TextIO

import pandas as pd
from sqlalchemy import Engine

from pipeline import warehouse
from pipeline.core import money, time_rule, timezones
from pipeline.core.model import Config, OfferSource
from pipeline.core.vocabulary import MODES

COLUMNS = warehouse.EXPORT_COLUMNS

_TEMPLATES = {
    "conversions": "click_id,payout,conversion_time,conversion_type,status,event_id,currency\r\n"
    "1a2b3c4d5e6f7g8h9i0j,12.50,2026-03-08 14:00:00,Purchase,approved,"
    "ORDER-1001,USD\r\n",
    "status": "click_id,status,conversion_type,event_id\r\n"
    "1a2b3c4d5e6f7g8h9i0j,declined,Purchase,ORDER-1001\r\n",
}


def template(kind: str) -> str:
    return _TEMPLATES[kind]


# The template row's time, which the seed's example reads: 14:00:00 in a New York account's logs.
_EXAMPLE_WALL = datetime(2026, 3, 8, 14, 0, 0)


def template_notes(source: OfferSource, kind: str) -> list[str]:
    """How this offer source reads a file, in a person's words: what `conversions template
    --offer-source NAME` prints beside the CSV (the rules a sender needs and the config lines
    that change them)."""
    account = source.account
    notes = [f"offer source {source.name}: account {account.name} ({account.timezone})"]
    if kind == "conversions":
        rule = time_rule.rule(source.file_times, account.timezone, None)
        file_zone = {"utc": "UTC", "account": account.timezone}.get(
            source.file_times, source.file_times
        )
        advice = time_rule.advice(
            account.timezone,
            _EXAMPLE_WALL,
            timezones.zone(account.timezone),
            timezones.zone(file_zone),
        )
        notes.append(f"times: {rule}; {advice}; a Parameters:TimeZone= first line wins")
        point = "','" if source.decimal_separator == "," else "'.'"
        notes.append(
            f"payouts: {point} is the decimal point (decimal_separator = "
            f'"{source.decimal_separator}"), e.g. '
            + ("12,50 or 1.234,56" if source.decimal_separator == "," else "12.50")
        )
        modes = ", ".join(f"{m}/" for m in MODES)
        notes.append(
            f"modes: {source.duplicate_mode} (duplicate_mode); a file in "
            f"inbox/{source.name}/<mode>/ is applied under that mode ({modes})"
        )
    if source.columns:
        mapped = ", ".join(f'{f} = "{h}"' for f, h in source.columns.items())
        notes.append(f"columns: {mapped} (columns)")
    if source.ignore_columns:
        notes.append(f"ignored on purpose: {', '.join(source.ignore_columns)} (ignore_columns)")
    if source.status_aliases:
        words = ", ".join(f"{w} -> {s}" for w, s in source.status_aliases.items())
        notes.append(f"status words: {words} (status_aliases), besides the built-in ones")
    notes.append(
        f"encoding: {source.encoding} (encoding)"
        if source.encoding
        else "encoding: UTF-8 (with or without BOM) or UTF-16 with BOM"
    )
    return notes


def frames(
    engine: Engine,
    config: Config,
    *,
    offer_source: str | None = None,
    local_time: bool = False,
    chunk_rows: int = 100_000,
) -> Iterator[pd.DataFrame]:
    """The export as text columns, ready to write, one bounded chunk at a time."""
    zones = {name: src.account.timezone for name, src in config.offer_sources.items()}
    with engine.connect() as conn:
        for data in warehouse.export(conn, offer_source, chunk_rows):
            out = data.astype({"payout": "str", "converted_at": "str"})
            out["payout"] = money.format_series(data["payout"])
            out["converted_at"] = timezones.format_utc(data["converted_at"])
            if local_time:
                zone_of_row = data["offer_source"].map(zones)
                for zone in zone_of_row.dropna().unique():
                    mask = zone_of_row == zone
                    out.loc[mask, "converted_at"] = timezones.format_local(
                        data.loc[mask, "converted_at"], zone
                    )
            yield out[COLUMNS]


def frame(
    engine: Engine, config: Config, *, offer_source: str | None = None, local_time: bool = False
) -> pd.DataFrame:
    """The whole export as one frame (tests and small warehouses)."""
    parts = list(frames(engine, config, offer_source=offer_source, local_time=local_time))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in COLUMNS})
    return pd.concat(parts, ignore_index=True)


def write(
    engine: Engine,
    config: Config,
    out: TextIO,
    *,
    offer_source: str | None = None,
    fmt: str = "csv",
    local_time: bool = False,
    chunk_rows: int = 100_000,
) -> int:
    """Write the export as CSV (one header) or JSON lines; returns the number of rows."""
    written = 0
    parts = frames(
        engine, config, offer_source=offer_source, local_time=local_time, chunk_rows=chunk_rows
    )
    for data in parts:
        if fmt == "jsonl":
            data.to_json(out, orient="records", lines=True, force_ascii=False)
        else:
            data.to_csv(out, index=False, header=written == 0, lineterminator="\n")
        written += len(data)
    if fmt != "jsonl" and written == 0:
        out.write(",".join(COLUMNS) + "\n")
    return written


def template_for(source: OfferSource, kind: str) -> str:
    """The template with this offer source's own column names (its ``columns``) in the header,
    so a file written from it reads exactly as the offer source's exports do."""
    header, *rows = template(kind).split("\r\n", 1)
    names = [source.columns.get(field, field) for field in header.split(",")]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(names)
    return out.getvalue() + "".join(rows)
