"""Status words: what networks write for a conversion's status -> one of `STATUSES`.

Networks rarely write our four words. The built-in aliases below cover the common ones, and an
offer source adds its own (`status_aliases`, keys already trimmed and casefolded by the loader);
a source's alias wins over a built-in one. Matching is case-insensitive (casefolded), after
trimming, with any run of whitespace inside read as one space (`ON  HOLD` is `on hold`). A word
no table knows is left as written, casefolded, for the schema's `invalid_status` check.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from pipeline.core.vocabulary import STATUSES

# The built-in aliases (word -> status), as the `invalid_status` reason lists them.
STATUS_ALIASES: Mapping[str, str] = {
    "approve": "approved",
    "accepted": "approved",
    "confirmed": "approved",
    "hold": "pending",
    "on hold": "pending",
    "waiting": "pending",
    "decline": "declined",
    "rejected": "declined",
    "reject": "declined",
    "denied": "declined",
    "chargeback": "declined",
    "reversed": "declined",
}


def words(text: pd.Series) -> pd.Series:
    """Cells as the alias tables key them: trimmed, casefolded, inner whitespace as one space."""
    return text.str.strip().str.casefold().str.replace(r"\s+", " ", regex=True)


def canonical(text: pd.Series, aliases: Mapping[str, str] | None = None) -> pd.Series:
    """Status cells -> our status words where a table knows the word, else the word itself
    (casefolded; "" stays ""). `aliases` are the offer source's own. Index and dtype kept."""
    table = {status: status for status in STATUSES} | dict(STATUS_ALIASES)
    table |= {" ".join(word.casefold().split()): status for word, status in (aliases or {}).items()}
    # A status column holds a handful of distinct words: fold and look up each once.
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    folded = words(pd.Series(uniques, dtype=text.dtype))
    mapped = folded.map(table)
    canon = mapped.where(mapped.notna(), folded).astype(text.dtype).array
    out = pd.Series(canon.take(codes, allow_fill=True), index=text.index)
    return out.astype(text.dtype)
