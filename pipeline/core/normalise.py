"""Normalising: raw text cells of one batch -> typed rows, or reasons why not.

Two steps, on purpose. First every column is *parsed* here (trim, case, Decimal micros, UTC
instants, the duplicate mode of each row); a value that cannot be parsed becomes a reason and
<NA>, never an exception. Then the typed frame is *validated* by the pandera schemas in `schemas/`
with lazy validation, so every failing check of every row is collected (a failed coercion would
otherwise hide a column's other checks). A row is accepted only if it has no reason at all.

Pure functions over DataFrames and the config: no I/O, no per-row Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors

from pipeline.core import money, timezones
from pipeline.core.model import OfferSource
from pipeline.core.reasons import CATALOGUE
from pipeline.core.schemas import conversions as conversion_schema
from pipeline.core.schemas import status as status_schema

_MANGLED = r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$"
_ORDER = {code: i for i, code in enumerate(CATALOGUE)}


@dataclass(frozen=True)
class Normalised:
    accepted: (
        pd.DataFrame
    )  # typed rows, shaped like pipeline.core.schemas.conversions / pipeline.core.schemas.status
    rejected: pd.DataFrame  # line, reason_code ('|'-joined, catalogue order)


def _text(cells: pd.DataFrame, column: str) -> pd.Series:
    """A canonical column, trimmed; a column absent from the file reads as empty cells."""
    if column not in cells:
        return pd.Series("", index=cells.index, dtype="str")
    return cells[column].fillna("").astype("str").str.strip()


def _nullable(text: pd.Series) -> pd.Series:
    return text.where(text != "", None).astype("str")


def conversions(
    cells: pd.DataFrame,
    lines: np.ndarray,
    source: OfferSource,
    *,
    received_at: pd.Timestamp,
    future_tolerance_seconds: int = 300,
    mode_override: str | None = None,
) -> Normalised:
    """Upload rows: parse, decide each row's duplicate mode, validate."""
    cells = cells.reset_index(drop=True)
    reasons: dict[str, np.ndarray] = {}

    click = _text(cells, "click_id")
    reasons["missing_click_id"] = (click == "").to_numpy()
    mangled = click.str.fullmatch(_MANGLED).to_numpy(dtype=bool)
    reasons["click_id_mangled_by_spreadsheet"] = mangled

    payout, bad_payout, no_payout = money.parse_payouts(_text(cells, "payout"))
    reasons["invalid_payout"] = bad_payout.to_numpy()

    times = timezones.to_utc(
        _text(cells, "conversion_time"),
        zone=source.account.timezone,
        file_times=source.file_times,
        time_format=source.time_format,
        nonexistent=source.nonexistent_times,
        ambiguous=source.ambiguous_times,
        not_after=received_at + pd.Timedelta(seconds=future_tolerance_seconds),
    )
    for code in timezones.REASONS:
        reasons[code] = (times.reason == code).fillna(False).to_numpy(dtype=bool)

    ctype = _text(cells, "conversion_type")
    mode = ctype.map(dict(source.type_modes)).astype("str").fillna(source.duplicate_mode)
    if mode_override:
        mode = pd.Series(mode_override, index=cells.index, dtype="str")
    event_id = _nullable(_text(cells, "event_id"))
    reasons["missing_payout"] = (
        no_payout & mode.isin(["create_new", "new_or_repeated", "increment_payout"])
    ).to_numpy()
    reasons["missing_event_id"] = (event_id.isna() & (mode == "ignore_by_event_id")).to_numpy()

    typed = pd.DataFrame(
        {
            "line": np.asarray(lines, dtype="int64"),
            "click_id": _nullable(click).where(~mangled, None),
            "payout": payout,
            "converted_at": times.utc,
            "conversion_type": ctype,
            "status": _nullable(_text(cells, "status").str.lower()),
            "event_id": event_id,
            "currency": _nullable(_text(cells, "currency").str.upper()),
            "mode": mode,
        }
    )
    _validate(conversion_schema.for_offer_source(source), typed, reasons)
    return _split(typed, reasons)


def statuses(cells: pd.DataFrame, lines: np.ndarray, source: OfferSource) -> Normalised:
    """Status update rows: a click id (plus optional type/event id) and a target status."""
    cells = cells.reset_index(drop=True)
    click = _text(cells, "click_id")
    status = _text(cells, "status").str.lower()
    mangled = click.str.fullmatch(_MANGLED).to_numpy(dtype=bool)
    reasons = {
        "missing_click_id": (click == "").to_numpy(),
        "click_id_mangled_by_spreadsheet": mangled,
        "missing_status": (status == "").to_numpy(),
    }
    typed = pd.DataFrame(
        {
            "line": np.asarray(lines, dtype="int64"),
            "click_id": _nullable(click).where(~mangled, None),
            "conversion_type": _nullable(_text(cells, "conversion_type")),
            "event_id": _nullable(_text(cells, "event_id")),
            "status": _nullable(status),
        }
    )
    _validate(status_schema.for_offer_source(source), typed, reasons)
    return _split(typed, reasons)


def _validate(schema, typed: pd.DataFrame, reasons: dict[str, np.ndarray]) -> None:
    """Run the pandera schema lazily and add each failed check to `reasons` by its name."""
    try:
        schema.validate(typed, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        unknown = set(cases["check"].astype(str)) - set(CATALOGUE)
        if unknown:  # a structural failure (dtype, unique line...) is a bug, not bad input
            raise AssertionError(f"schema failure outside the catalogue: {cases}") from errors
        for code, group in cases.groupby("check"):
            mask = reasons.setdefault(str(code), np.zeros(len(typed), dtype=bool))
            mask[group["index"].astype("int64").to_numpy()] = True


def _split(typed: pd.DataFrame, reasons: Mapping[str, np.ndarray]) -> Normalised:
    """Accepted rows are those without any reason; the rest carry all their codes."""
    codes = sorted(reasons, key=_ORDER.__getitem__)
    bad = np.zeros(len(typed), dtype=bool)
    for code in codes:
        bad |= reasons[code]
    joined = pd.Series("", index=np.flatnonzero(bad), dtype="str")
    for code in codes:
        hit = reasons[code][bad]
        joined = joined + np.where(hit, code + "|", "")
    rejected = pd.DataFrame(
        {
            "line": typed["line"].to_numpy()[bad],
            "reason_code": joined.str.removesuffix("|").to_numpy(),
        }
    )
    return Normalised(typed[~bad].reset_index(drop=True), rejected)
