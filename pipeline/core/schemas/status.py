"""Pandera schema for status update rows: which conversion (click, optional type and event id)
and the status it moves to. Check names are reason codes, as in `conversions`."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from pipeline.core.model import OfferSource
from pipeline.core.schemas.conversions import CLICK_ID
from pipeline.core.vocabulary import STATUSES


class StatusRows(pa.DataFrameModel):
    line: Series[int] = pa.Field(unique=True, ge=1)
    click_id: Series[str] = pa.Field(nullable=True)
    conversion_type: Series[str] = pa.Field(nullable=True)
    event_id: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(nullable=True)

    @pa.check("click_id", name="invalid_click_id")
    def _click_id(cls, click_id: Series[str]) -> Series[bool]:
        return click_id.isna() | click_id.str.fullmatch(CLICK_ID).fillna(False)

    @pa.check("status", name="invalid_status")
    def _status(cls, status: Series[str]) -> Series[bool]:
        return status.isna() | status.isin(STATUSES)

    class Config:
        strict = True
        coerce = False


def for_offer_source(source: OfferSource) -> pa.DataFrameSchema:
    schema = StatusRows.to_schema()
    if not source.click_id_pattern:
        return schema
    pattern = source.click_id_pattern
    check = pa.Check(
        lambda s: s.isna() | s.str.contains(pattern, regex=True).fillna(False),
        name="invalid_click_id",
    )
    return schema.update_columns(
        {"click_id": {"checks": [*schema.columns["click_id"].checks, check]}}
    )
