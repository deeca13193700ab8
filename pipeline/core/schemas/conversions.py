"""Pandera schema for conversion upload rows, after `pipeline.core.normalise` typed them.

Parsing (text -> Decimal micros, text -> UTC instant) happens before validation, so a value that
cannot be parsed becomes a reason of its own and <NA> here instead of a failed coercion that would
hide this column's other checks. Each check is named after the reason code it reports.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from pipeline.core.currencies import ISO_4217
from pipeline.core.schemas.rows import FileRows
from pipeline.core.vocabulary import MODES

_CONTROL = r"[\x00-\x1f\x7f]"


class ConversionRows(FileRows):
    """One upload row: what it names (click, type, event), what it sets, and its duplicate mode."""

    payout: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    converted_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs={"unit": "us", "tz": "UTC"}
    )
    currency: Series[str] = pa.Field(nullable=True)
    mode: Series[str] = pa.Field(isin=list(MODES))

    @pa.check("currency")
    def invalid_currency(cls, currency: Series[str]) -> Series[bool]:
        return currency.isna() | currency.isin(ISO_4217)

    @pa.check("conversion_type")
    def invalid_conversion_type(cls, conversion_type: Series[str]) -> Series[bool]:
        bad = conversion_type.str.len().gt(64) | conversion_type.str.contains(_CONTROL)
        return ~bad.fillna(False).astype(bool)

    @pa.check("event_id")
    def invalid_event_id(cls, event_id: Series[str]) -> Series[bool]:
        bad = event_id.str.len().gt(255) | event_id.str.contains(_CONTROL)
        return ~bad.fillna(False).astype(bool)
