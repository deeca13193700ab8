"""Pandera schema for conversion upload rows, after `pipeline.core.normalise` typed them.

Parsing (text -> Decimal micros, text -> UTC instant) happens before validation, so a value that
cannot be parsed becomes a reason of its own and <NA> here instead of a failed coercion that would
hide this column's other checks. Every check's name is the reason code it reports, so the
validation errors map straight to the catalogue in `pipeline.core.reasons`.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from pipeline.core.currencies import ISO_4217
from pipeline.core.model import OfferSource
from pipeline.core.vocabulary import MODES, STATUSES

CLICK_ID = r"^[A-Za-z0-9._~-]{1,128}$"
_CONTROL = r"[\x00-\x1f\x7f]"


class ConversionRows(pa.DataFrameModel):
    """One upload row: what it names (click, type, event) and what it sets."""

    line: Series[int] = pa.Field(unique=True, ge=1)
    click_id: Series[str] = pa.Field(nullable=True)
    payout: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    converted_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs={"unit": "us", "tz": "UTC"}
    )
    conversion_type: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(nullable=True)
    event_id: Series[str] = pa.Field(nullable=True)
    currency: Series[str] = pa.Field(nullable=True)
    mode: Series[str] = pa.Field(isin=list(MODES))

    @pa.check("click_id", name="invalid_click_id", element_wise=False)
    def _click_id(cls, click_id: Series[str]) -> Series[bool]:
        return click_id.isna() | click_id.str.fullmatch(CLICK_ID).fillna(False)

    @pa.check("status", name="invalid_status")
    def _status(cls, status: Series[str]) -> Series[bool]:
        return status.isna() | status.isin(STATUSES)

    @pa.check("currency", name="invalid_currency")
    def _currency(cls, currency: Series[str]) -> Series[bool]:
        return currency.isna() | currency.isin(ISO_4217)

    @pa.check("conversion_type", name="invalid_conversion_type")
    def _type(cls, conversion_type: Series[str]) -> Series[bool]:
        bad = conversion_type.str.len().gt(64) | conversion_type.str.contains(_CONTROL)
        return ~bad.fillna(False).astype(bool)

    @pa.check("event_id", name="invalid_event_id")
    def _event_id(cls, event_id: Series[str]) -> Series[bool]:
        bad = event_id.str.len().gt(255) | event_id.str.contains(_CONTROL)
        return ~bad.fillna(False).astype(bool)

    class Config:
        strict = True
        coerce = False


def for_offer_source(source: OfferSource) -> pa.DataFrameSchema:
    """The model plus the rules an offer source configures (sign, click id pattern, types)."""
    schema = ConversionRows.to_schema()
    extra: dict[str, list[pa.Check]] = {}
    if not source.allow_negative_payout:
        extra["payout"] = [pa.Check(lambda s: s.isna() | (s >= 0), name="negative_payout")]
    if source.click_id_pattern:
        pattern = source.click_id_pattern
        extra["click_id"] = [
            pa.Check(
                lambda s: s.isna() | s.str.contains(pattern, regex=True).fillna(False),
                name="invalid_click_id",
            )
        ]
    if source.allowed_conversion_types is not None:
        allowed = ["", *source.allowed_conversion_types]
        extra["conversion_type"] = [
            pa.Check(lambda s: s.isna() | s.isin(allowed), name="unknown_conversion_type")
        ]
    return schema.update_columns(
        {col: {"checks": [*schema.columns[col].checks, *checks]} for col, checks in extra.items()}
    )
