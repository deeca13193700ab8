"""The columns every row of a file has, conversion upload or status update, and their checks.

A row names a conversion by its click id (plus, optionally, its type and event id) and may set a
status. `conversions.ConversionRows` and `status.StatusRows` extend this model, as pandera's docs
make variants, by inheritance. Every check's name is the reason code it reports, so the validation
errors map straight to the catalogue in `pipeline.core.reasons`. A check takes its name from its
method (pandera 0.35 loses a `name=` given to a shared model's check when a second subclass is
built), and checks of a required value set `ignore_na=False`, as pandera passes empty cells
otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from pipeline.core.vocabulary import STATUSES

CLICK_ID = r"^[A-Za-z0-9._~-]{1,128}$"
# A number in scientific notation: what a spreadsheet makes of a long numeric click id.
MANGLED = r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$"


def click_id_passes(click_id: pd.Series, matched: pd.Series) -> pd.Series:
    """The verdict of a pattern check on click ids: a click id passes if it `matched`, and also if
    it is empty or a spreadsheet's number, which have reasons of their own (one cell, one reason).
    Only the cells that did not match are tested for being a number: usually none."""
    ok = np.array(click_id.isna() | matched.fillna(False), dtype=bool)
    unmatched = ~ok
    if unmatched.any():
        ok[unmatched] = click_id[unmatched].str.fullmatch(MANGLED).to_numpy(dtype=bool)
    return pd.Series(ok, index=click_id.index)


def click_id_check(pattern: str) -> pa.Check:
    """An offer source's own `click_id_pattern`, searched for in each click id."""
    return pa.Check(
        lambda s: click_id_passes(s, s.str.contains(pattern, regex=True)), name="invalid_click_id"
    )


class FileRows(pa.DataFrameModel):
    """What a row of either kind carries: its line, the conversion it names, a status."""

    line: Series[int] = pa.Field(unique=True, ge=1)
    click_id: Series[str] = pa.Field(nullable=True)
    conversion_type: Series[str] = pa.Field(nullable=True)
    event_id: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(nullable=True)

    @pa.check("click_id", ignore_na=False)
    def missing_click_id(cls, click_id: Series[str]) -> Series[bool]:
        return click_id.notna()

    @pa.check("click_id")
    def click_id_mangled_by_spreadsheet(cls, click_id: Series[str]) -> Series[bool]:
        return ~click_id.str.fullmatch(MANGLED).fillna(False).astype(bool)

    @pa.check("click_id")
    def invalid_click_id(cls, click_id: Series[str]) -> Series[bool]:
        return click_id_passes(click_id, click_id.str.fullmatch(CLICK_ID))

    @pa.check("status")
    def invalid_status(cls, status: Series[str]) -> Series[bool]:
        return status.isna() | status.isin(STATUSES)

    class Config:
        strict = True
        coerce = False
