"""Normalising: raw text cells of one batch -> typed rows, or reasons why not.

Two steps, on purpose. First every column is *parsed* here (trim, case, status aliases, exact
micros with the offer source's decimal separator, UTC instants, the duplicate mode of each row); a
value that cannot be parsed becomes a reason and <NA>, never an exception. Then the typed frame is
*validated* by the pandera schemas in `core/schemas/` with lazy validation, so every failing check
of every row is collected (a failed coercion would otherwise hide a column's other checks): the
required values, the shapes and the offer source's options are checks there. A row is accepted
only if it has no reason at all.

Pure functions over DataFrames and the config: no I/O, no per-row Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors

from pipeline.core import money, schemas, timezones
from pipeline.core import statuses as status_words
from pipeline.core.model import OfferSource
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import IGNORE_BY_EVENT_ID, PAYOUT_MODES

_ORDER = {code: i for i, code in enumerate(CATALOGUE)}


@dataclass(frozen=True)
class Normalised:
    accepted: pd.DataFrame  # typed rows, shaped like schemas.ConversionRows / schemas.StatusRows
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
    future_tolerance_seconds: int,
    mode_override: str | None = None,
    file_zone: str | None = None,
) -> Normalised:
    """Upload rows: parse, decide each row's duplicate mode, validate.

    `file_zone` is the file's `Parameters:TimeZone=` zone, if it has that line: it reads the
    times without an offset, instead of the offer source's `file_times`."""
    cells = cells.reset_index(drop=True)
    reasons: dict[str, np.ndarray] = {}

    payout_text = _text(cells, "payout")
    payout, bad_payout, no_payout = money.parse_payouts(
        payout_text, decimal_separator=source.decimal_separator
    )
    bad = bad_payout.to_numpy()
    comma = np.zeros(len(cells), dtype=bool)
    if source.decimal_separator == "." and bad.any():  # 12,50 read with ".": name the setting
        comma = bad & money.decimal_commas(payout_text).to_numpy()
    reasons["invalid_payout"] = bad & ~comma
    reasons["payout_decimal_comma"] = comma

    times = timezones.to_utc(
        _text(cells, "conversion_time"),
        zone=source.account.timezone,
        file_times=source.file_times,
        file_zone=file_zone,
        time_format=source.time_format,
        nonexistent=source.nonexistent_times,
        ambiguous=source.ambiguous_times,
        not_after=received_at + pd.Timedelta(seconds=future_tolerance_seconds),
    )
    for code in timezones.REASONS:
        reasons[code] = (times.reason == code).fillna(False).to_numpy(dtype=bool)

    ctype = _text(cells, "conversion_type")
    by_type, other = source.modes(mode_override)
    mode = ctype.map(dict(by_type)).astype("str").fillna(other)
    # Not a schema check: the typed payout is <NA> both for an empty cell and for one that did
    # not parse (`invalid_payout`), and only an empty one is missing.
    reasons["missing_payout"] = (no_payout & mode.isin(PAYOUT_MODES)).to_numpy()
    # Not a schema check either: `missing_event_id` reads two columns, and pandera reports a failed
    # dataframe check once per cell of the row, several times slower on a file of such rows.
    event_id = _nullable(_text(cells, "event_id"))
    reasons["missing_event_id"] = (event_id.isna() & (mode == IGNORE_BY_EVENT_ID)).to_numpy()

    typed = pd.DataFrame(
        {
            "line": np.asarray(lines, dtype="int64"),
            "click_id": _nullable(_text(cells, "click_id")),
            "payout": payout,
            "converted_at": times.utc,
            "conversion_type": ctype,
            "status": _status(cells, source),
            "event_id": event_id,
            "currency": _nullable(_text(cells, "currency").str.upper()),
            "mode": mode,
        }
    )
    _validate(schemas.for_offer_source("conversions", source), typed, reasons)
    return _split(typed, reasons)


def statuses(cells: pd.DataFrame, lines: np.ndarray, source: OfferSource) -> Normalised:
    """Status update rows: a click id (plus optional type/event id) and a target status."""
    cells = cells.reset_index(drop=True)
    typed = pd.DataFrame(
        {
            "line": np.asarray(lines, dtype="int64"),
            "click_id": _nullable(_text(cells, "click_id")),
            "conversion_type": _nullable(_text(cells, "conversion_type")),
            "event_id": _nullable(_text(cells, "event_id")),
            "status": _status(cells, source),
        }
    )
    reasons: dict[str, np.ndarray] = {}
    _validate(schemas.for_offer_source("status", source), typed, reasons)
    return _split(typed, reasons)


def _status(cells: pd.DataFrame, source: OfferSource) -> pd.Series:
    """The status column with aliases applied (built-in, then the offer source's): an unknown
    word stays as written, casefolded, for `invalid_status`; an empty cell is <NA>."""
    return _nullable(status_words.canonical(_text(cells, "status"), source.status_aliases))


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
