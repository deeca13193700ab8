"""Payouts as exact integers of micro-units (1.25 -> 1_250_000), never binary floats.

Six decimals cover every currency and sub-cent CPC payouts; twelve integer digits cover any
realistic payout. Parsing is vectorised string work, so 0.10 + 0.20 is exactly 0.30 from the
CSV cell to the warehouse and back out of `conversions export`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

SCALE = 1_000_000
_PATTERN = r"^(?P<sign>[+-]?)(?P<units>[0-9]{0,12})(?:\.(?P<frac>[0-9]{0,6}))?$"


def parse_payouts(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Trimmed cells -> (micros as Int64, invalid mask, empty mask), index preserved.

    Accepted: `12`, `12.5`, `-3.25`, `+0.000001`, `.5`. Refused (invalid): decimal commas,
    thousands separators, currency signs, exponents, more than 6 decimals or 12 digits.
    """
    text = values.fillna("").astype("str").str.strip()
    empty = (text == "").to_numpy(dtype=bool)
    # One RE2 pass (pyarrow, in C) decides validity; the value is then plain integer work on
    # the digits with the point removed, scaled by the number of decimals written.
    valid = text.str.fullmatch(_PATTERN).to_numpy(dtype=bool) & ~empty
    valid &= text.str.contains("[0-9]").to_numpy(dtype=bool)
    body = text.where(valid, "0").str.lstrip("+-")
    point = body.str.find(".").to_numpy()
    decimals = np.where(point < 0, 0, body.str.len().to_numpy() - point - 1)
    digits = body.str.replace(".", "", regex=False).replace("", "0")
    micros = digits.astype("int64").to_numpy() * 10 ** (6 - decimals)
    negative = text.str.startswith("-").to_numpy(dtype=bool)
    micros = np.where(negative, -micros, micros)
    result = pd.Series(micros, index=values.index, dtype="Int64").where(valid, pd.NA)
    invalid = pd.Series(~valid & ~empty, index=values.index)
    return result, invalid, pd.Series(empty, index=values.index)


def parse_decimal(text: str) -> int:
    """One decimal string (from the database) -> micros; refuses anything inexact."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {text!r}") from None
    scaled = value.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"more than 6 decimals: {text!r}")
    return int(scaled)


def format_micros(micros: int) -> str:
    """Canonical text: at least two decimals, no trailing zeros beyond them (1.5 -> '1.50')."""
    sign = "-" if micros < 0 else ""
    units, frac = divmod(abs(int(micros)), SCALE)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{units}.{digits}"


def format_series(micros: pd.Series) -> pd.Series:
    """Vectorised `format_micros`; <NA> stays <NA>."""
    present = micros.notna()
    m = micros.fillna(0).astype("int64")
    units = (m.abs() // SCALE).astype("str")
    frac = (m.abs() % SCALE).astype("str").str.zfill(6).str.rstrip("0").str.pad(2, "right", "0")
    sign = pd.Series(np.where(m < 0, "-", ""), index=m.index, dtype="str")
    out = sign + units + "." + frac
    return out.where(present, pd.NA)
