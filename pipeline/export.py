"""Reading conversions back out: `conversions export` and `conversions template`.

Exact payouts as decimal strings (never floats), times as ISO 8601 UTC with `Z`, or in the
account's own time zone with its offset (what the tracker's logs show) under `--local-time`.
"""

from __future__ import annotations

from typing import TextIO

import pandas as pd
from sqlalchemy import Engine

from pipeline import money, timezones, warehouse
from pipeline.config import Config

COLUMNS = [
    "conversion_id",
    "offer_source",
    "click_id",
    "conversion_type",
    "event_id",
    "status",
    "payout",
    "currency",
    "converted_at",
    "duplicate_status",
]

_TEMPLATES = {
    "conversions": "click_id,payout,conversion_time,conversion_type,status,event_id,currency\r\n"
    "1a2b3c4d5e6f7g8h9i0j,12.50,2026-03-08 14:00:00,Purchase,approved,"
    "ORDER-1001,USD\r\n",
    "status": "click_id,status,conversion_type,event_id\r\n"
    "1a2b3c4d5e6f7g8h9i0j,declined,Purchase,ORDER-1001\r\n",
}


def template(kind: str) -> str:
    return _TEMPLATES[kind]


def frame(
    engine: Engine, config: Config, *, offer_source: str | None = None, local_time: bool = False
) -> pd.DataFrame:
    """The export as text columns, ready to write."""
    with engine.connect() as conn:
        data = warehouse.export(conn, offer_source)
    out = data.astype({"payout": "Int64"})
    out["payout"] = money.format_series(data["payout"])
    if local_time:
        zones = data["offer_source"].map(
            {name: src.account.timezone for name, src in config.offer_sources.items()}
        )
        out["converted_at"] = timezones.format_utc(data["converted_at"])
        for zone in zones.dropna().unique():
            mask = zones == zone
            out.loc[mask, "converted_at"] = timezones.format_local(
                data.loc[mask, "converted_at"], zone
            )
    else:
        out["converted_at"] = timezones.format_utc(data["converted_at"])
    return out[COLUMNS]


def write(
    engine: Engine,
    config: Config,
    out: TextIO,
    *,
    offer_source: str | None = None,
    fmt: str = "csv",
    local_time: bool = False,
) -> int:
    data = frame(engine, config, offer_source=offer_source, local_time=local_time)
    if fmt == "jsonl":
        data.to_json(out, orient="records", lines=True, force_ascii=False)
    else:
        data.to_csv(out, index=False, lineterminator="\n")
    return len(data)
