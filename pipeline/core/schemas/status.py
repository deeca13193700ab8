"""Pandera schema for status update rows: which conversion (click, optional type and event id)
and the status it moves to, which here is required. Check names are reason codes."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from pipeline.core.schemas.rows import FileRows


class StatusRows(FileRows):
    """A status update row: a conversion to find and the status it moves to."""

    @pa.check("status", ignore_na=False)
    def missing_status(cls, status: Series[str]) -> Series[bool]:
        return status.notna()
