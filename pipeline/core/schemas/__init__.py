"""Pandera schemas of the rows a file carries, one model per kind, and an offer source's variant.

`rows.FileRows` holds the columns and checks both kinds share; `conversions.ConversionRows` and
`status.StatusRows` extend it. The options an offer source sets (a stricter click id, negative
payouts, the allowed conversion types) are added by `for_offer_source`, the one place for them.
"""

from __future__ import annotations

import pandera.pandas as pa

from pipeline.core.model import OfferSource
from pipeline.core.schemas.conversions import ConversionRows
from pipeline.core.schemas.rows import FileRows, click_id_check
from pipeline.core.schemas.status import StatusRows

ROWS: dict[str, type[FileRows]] = {"conversions": ConversionRows, "status": StatusRows}


def for_offer_source(kind: str, source: OfferSource) -> pa.DataFrameSchema:
    """The rows of `kind` (one of KINDS) plus the rules the offer source configures.

    Its click_id_pattern applies to both kinds. The sign of the payout and the allowed types
    apply to uploads only: a status update sets no payout, and its type only picks among the
    conversions already stored (a type no conversion has is `unknown_conversion`).
    """
    schema = ROWS[kind].to_schema()
    extra: dict[str, list[pa.Check]] = {}
    if source.click_id_pattern:
        extra["click_id"] = [click_id_check(source.click_id_pattern)]
    if kind == "conversions" and not source.allow_negative_payout:
        extra["payout"] = [pa.Check(lambda s: s.isna() | (s >= 0), name="negative_payout")]
    if kind == "conversions" and source.allowed_conversion_types is not None:
        allowed = ["", *source.allowed_conversion_types]
        extra["conversion_type"] = [
            pa.Check(lambda s: s.isna() | s.isin(allowed), name="unknown_conversion_type")
        ]
    return schema.update_columns(
        {col: {"checks": [*schema.columns[col].checks, *checks]} for col, checks in extra.items()}
    )


__all__ = ["ROWS", "ConversionRows", "FileRows", "StatusRows", "for_offer_source"]
