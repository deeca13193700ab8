"""Duplicate resolution: what each accepted row of a file does to the warehouse.

A pure function over two tables: the file's accepted rows (in file order, with line numbers) and,
for each duplicate key those rows touch, what the warehouse already holds. It returns the plan
(conversions to insert, conversions to update, history rows) and one outcome per line. No I/O:
`warehouse` fetches the existing side and applies the plan, and tests can work examples by hand.

The rules (README "Duplicate postback modes"; each mode's action in `vocabulary.LATER_ROW_ACTION`)
read as if rows applied one at a time, but they only ever look at two things per key: whether the
key existed before the file, and which row of the file first carries a payout. So every decision
is a vector operation over rows grouped by key, never a loop:

- `create_new`, `new_or_repeated`: every row with a payout inserts.
- `ignore`, `ignore_by_event_id`, `edit`, `increment_payout`: if the key exists, every row acts on
  the existing (most recent) conversion; otherwise the first row with a payout inserts, rows
  before it are rejected (`missing_payout`: nothing exists yet to apply them to) and rows after
  it act on the conversion it inserted.

Edits take each row's non-empty fields in file order (a forward fill), increments add payouts (a
cumulative sum); history rows record the state before and after every row.

Money is int64 micro-units (1.25 == 1_250_000): integer arithmetic is exact and vectorises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.vocabulary import (
    EDIT,
    IGNORE,
    IGNORE_BY_EVENT_ID,
    INCREMENT,
    INSERT,
    LATER_ROW_ACTION,
    MUTABLE_FIELDS,
    NEW,
    NEW_OR_REPEATED,
    OUTCOME_OF,
    REJECT,
    REPEATED,
    STATUS_UPDATE,
    UNKNOWN,
)

KEY = ["click_id", "conversion_type", "key_event"]
_FIELDS = list(MUTABLE_FIELDS)  # a list, so that it selects columns
HISTORY_COLUMNS = ["conversion_id", "line", "action"] + [
    f"{side}_{f}" for f in _FIELDS for side in ("old", "new")
]
MAX_PAYOUT_MICROS = 10**18 - 1  # 999999999999.999999, the most NUMERIC(18, 6) holds


@dataclass(frozen=True)
class Defaults:
    """What an inserted conversion gets for the fields its row left empty."""

    status: str
    currency: str
    converted_at: pd.Timestamp  # the file's received time


@dataclass(frozen=True)
class Resolution:
    # line, outcome, reason_code (<NA> unless rejected), duplicate_of (for an ignored duplicate,
    # the id of the conversion it duplicates; <NA> otherwise)
    outcomes: pd.DataFrame
    inserts: (
        pd.DataFrame
    )  # conversion_id, line, click_id, conversion_type, duplicate_status, MUTABLE_FIELDS
    updates: pd.DataFrame  # conversion_id, MUTABLE_FIELDS (final values of existing conversions)
    history: pd.DataFrame  # HISTORY_COLUMNS


def empty_existing() -> pd.DataFrame:
    """The `existing` table for a warehouse that holds none of the file's keys."""
    return pd.DataFrame(
        {
            "click_id": pd.Series(dtype="str"),
            "conversion_type": pd.Series(dtype="str"),
            "key_event": pd.Series(dtype="str"),
            "n_existing": pd.Series(dtype="int64"),
            "conversion_id": pd.Series(dtype="str"),
            "payout": pd.Series(dtype="Int64"),
            "status": pd.Series(dtype="str"),
            "converted_at": pd.Series(dtype="datetime64[us, UTC]"),
            "currency": pd.Series(dtype="str"),
            "event_id": pd.Series(dtype="str"),
        }
    )


def key_event(rows: pd.DataFrame) -> pd.Series:
    """The event id is part of the duplicate key only under `ignore_by_event_id`."""
    return rows["event_id"].where(rows["mode"] == IGNORE_BY_EVENT_ID, "").fillna("")


def resolve(
    rows: pd.DataFrame, existing: pd.DataFrame, defaults: Defaults, id_prefix: str
) -> Resolution:
    """Decide the outcome of every row and the resulting warehouse changes.

    `rows`: line, click_id, conversion_type ('' = default), event_id, payout (Int64 micros),
    status, converted_at (NaT = empty cell), currency, mode; any order, lines unique.
    `existing`: per duplicate key the warehouse already holds, `n_existing` and the most recent
    conversion's id and MUTABLE_FIELDS (see `empty_existing`). New conversions get the id
    `f"{id_prefix}-{line}"`, which makes a rerun of the same file reproduce the same ids.
    """
    r = rows.sort_values("line", kind="stable").reset_index(drop=True)
    r["key_event"] = key_event(r)
    key, found = _key_codes(r, existing)  # one integer per duplicate key; its existing row
    r = _with_existing(r, existing, found)
    exists = r["n_existing"].to_numpy() > 0
    has_payout = r["payout"].notna().to_numpy()
    line = r["line"].to_numpy()

    first_paid = line.astype("float64")
    first_paid[~has_payout] = np.nan
    fpl = pd.Series(first_paid).groupby(key, sort=False).transform("min").to_numpy()

    after = _mapped(r["mode"], LATER_ROW_ACTION)  # what a row of an existing key does
    inserts_all = after == INSERT
    before_first = np.isnan(fpl) | (line < fpl)
    action = np.select(
        [inserts_all, exists, before_first, line == fpl],
        [np.where(has_payout, INSERT, REJECT), after, REJECT, INSERT],
        default=after,
    ).astype(object)
    action[(action == INCREMENT) & ~has_payout] = REJECT
    overflow = _overflowing_increments(r, action, exists, line == fpl, key)
    action[overflow] = REJECT
    r["action"] = action

    r["conversion_id"] = _ids(id_prefix, line, action == INSERT)
    first_id = _ids(id_prefix, np.nan_to_num(fpl, nan=-1).astype("int64"), ~np.isnan(fpl))
    r["target_id"] = r["ex_conversion_id"].where(exists, first_id)

    inserted = _inserted_values(r, key, defaults)
    edits, edit_final = _fold(r, inserted, EDIT)
    increments, increment_final = _fold(r, inserted, INCREMENT)
    final = pd.concat([edit_final, increment_final], ignore_index=True)

    new_targets = _isin(final["conversion_id"], inserted["conversion_id"])
    inserts = _apply_final(inserted, final[new_targets])
    updates = final[~new_targets].reset_index(drop=True)

    insert_history = _history(inserted, INSERT, old=None)
    changes = [frame for frame in (edits, increments) if len(frame)]
    if changes:  # ordered by conversion: into line order with the inserts
        history = pd.concat([insert_history, *changes], ignore_index=True)
        history = history.sort_values("line", kind="stable", ignore_index=True)
    else:  # inserts alone are in line order already
        history = insert_history

    outcomes = pd.DataFrame(
        {
            "line": r["line"],
            "outcome": _mapped(r["action"], OUTCOME_OF),
            "reason_code": pd.Series(
                np.where(
                    r["action"] == REJECT,
                    np.where(overflow, "payout_out_of_range", "missing_payout"),
                    None,
                ),
                dtype="str",
            ),
            "duplicate_of": r["target_id"].where(r["action"] == IGNORE).astype("str"),
        }
    )
    return Resolution(outcomes, inserts, updates, history)


def _overflowing_increments(
    r: pd.DataFrame, action: np.ndarray, exists: np.ndarray, inserts: np.ndarray, key: np.ndarray
) -> np.ndarray:
    """Increments that would take their conversion's payout past NUMERIC(18, 6), in file order.

    Such a row is rejected (`payout_out_of_range`) and the conversion keeps its payout, so later
    rows of the key go on from there. A float running sum finds the keys that come near the
    limit (rare); only those are added up exactly, row by row.
    """
    increment = action == INCREMENT
    overflow = np.zeros(len(r), dtype=bool)
    if not increment.any():
        return overflow
    payout = r["payout"].fillna(0).to_numpy(dtype=np.int64)
    existing = r["ex_payout"].astype("Int64").fillna(0).to_numpy(dtype=np.int64)
    first = pd.Series(np.where(inserts, payout, 0)).groupby(key).transform("sum").to_numpy()
    base = np.where(exists, existing, first)
    steps = pd.Series(np.where(increment, payout, 0).astype("float64"))
    approx = np.abs(base.astype("float64") + steps.groupby(key).cumsum().to_numpy())
    for near in np.unique(key[increment & (approx > MAX_PAYOUT_MICROS * 0.999)]):
        rows = np.flatnonzero((key == near) & increment)
        total = int(base[rows[0]])
        for i in rows:
            if abs(total + int(payout[i])) > MAX_PAYOUT_MICROS:
                overflow[i] = True
            else:
                total += int(payout[i])
    return overflow


def _inserted_values(r: pd.DataFrame, key: np.ndarray, defaults: Defaults) -> pd.DataFrame:
    """The rows that insert, with defaults filled in and their duplicate status."""
    ins_mask = (r["action"] == INSERT).to_numpy()
    columns = ["conversion_id", "line", "click_id", "conversion_type", *_FIELDS]
    ins = r.loc[ins_mask, columns].reset_index(drop=True)
    rank = pd.Series(key[ins_mask]).groupby(key[ins_mask], sort=False).cumcount().to_numpy()
    fresh = (r["n_existing"].to_numpy()[ins_mask] == 0) & (rank == 0)
    ins.insert(
        4,
        "duplicate_status",
        np.where(
            r["mode"].to_numpy()[ins_mask] == NEW_OR_REPEATED,
            np.where(fresh, NEW, REPEATED),
            UNKNOWN,
        ),
    )
    ins["status"] = ins["status"].fillna(defaults.status)
    ins["currency"] = ins["currency"].fillna(defaults.currency)
    ins["converted_at"] = ins["converted_at"].fillna(defaults.converted_at)
    return ins


def _fold(
    r: pd.DataFrame, inserted: pd.DataFrame, action: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the rows whose `action` is EDIT or INCREMENT to their targets in file order.

    Returns their history rows (recording `action`) and the final state of each target. The
    state starts from the existing conversion or the row that inserted it, then each row's
    non-empty fields replace the state's (edit) or its payout is added (increment).
    """
    events = r[r["action"] == action]
    if events.empty:
        return _history(
            events.iloc[0:0].assign(conversion_id=pd.Series(dtype="str")), action, old=None
        ).iloc[0:0], _final_empty()
    targets = events["target_id"].unique()
    base_existing = r[_isin(r["ex_conversion_id"], targets)].drop_duplicates("ex_conversion_id")
    base_existing = pd.DataFrame(
        {"target_id": base_existing["ex_conversion_id"], "line": -1}
        | {f: base_existing[f"ex_{f}"] for f in _FIELDS}
    )
    base_new = inserted[_isin(inserted["conversion_id"], targets)]
    base_new = base_new[["conversion_id", "line", *_FIELDS]].rename(
        columns={"conversion_id": "target_id"}
    )
    steps = pd.concat(
        [base_existing, base_new, events[["target_id", "line", *_FIELDS]]], ignore_index=True
    ).sort_values(["target_id", "line"], kind="stable", ignore_index=True)
    is_event = steps["line"].isin(events["line"]).to_numpy() & (steps["line"] >= 0).to_numpy()
    by_target = steps.groupby("target_id", sort=False)

    state = steps[["target_id", "line"]].copy()
    if action == EDIT:
        for f in _FIELDS:
            state[f] = by_target[f].ffill()
    else:
        payout = steps["payout"].astype("Int64")
        state["payout"] = payout.groupby(steps["target_id"], sort=False).cumsum()
        for f in _FIELDS[1:]:  # increments change only the payout: the base's fields, empty
            # ones too (skipping those would take a later row's value into earlier rows)
            state[f] = by_target[f].transform("first", skipna=False)
    previous = state.groupby("target_id", sort=False)[_FIELDS].shift(1)

    hist = state[is_event].rename(columns={"target_id": "conversion_id"})
    history = _history(hist, action, old=previous[is_event])
    final = state.drop_duplicates("target_id", keep="last").drop(columns="line")
    return history, final.rename(columns={"target_id": "conversion_id"}).reset_index(drop=True)


def _key_codes(r: pd.DataFrame, existing: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's duplicate key as one integer, and the position in `existing` of that key's
    row (-1: the warehouse holds none). Grouping and joining on integers instead of three text
    columns is what keeps the resolution a few vector passes (hash encoding in pyarrow's C++).
    A key twice in `existing` is a bug upstream, refused like `merge(validate="many_to_one")`.
    """
    n = len(r)
    key = np.zeros(n + len(existing), dtype="int64")
    for column in KEY:
        both = pa.chunked_array(
            [_arrow_text(r[column]), _arrow_text(existing[column])], type=pa.large_string()
        )
        codes = pc.dictionary_encode(both, null_encoding="encode").combine_chunks().indices
        codes = codes.to_numpy(zero_copy_only=False).astype("int64")
        key = pd.factorize(key * (int(codes.max(initial=0)) + 1) + codes)[0]
    ours, theirs = key[:n], key[n:]
    if len(np.unique(theirs)) < len(theirs):
        raise pd.errors.MergeError("existing holds a duplicate key: expected one row per key")
    where = np.full(int(key.max(initial=-1)) + 1, -1, dtype="int64")
    where[theirs] = np.arange(len(theirs))
    return ours, where[ours]


def _with_existing(r: pd.DataFrame, existing: pd.DataFrame, found: np.ndarray) -> pd.DataFrame:
    """The rows with their key's existing conversion as `ex_*` columns (missing where none)."""
    extra = {
        f"ex_{c}": pd.Series(existing[c].array.take(found, allow_fill=True), index=r.index)
        for c in ["conversion_id", *_FIELDS]
    }
    n_existing = existing["n_existing"].to_numpy(dtype="int64")
    extra["n_existing"] = pd.Series(
        np.where(found >= 0, n_existing[np.maximum(found, 0)] if len(n_existing) else 0, 0),
        index=r.index,
        dtype="int64",
    )
    return r.assign(**extra)


def _mapped(values: pd.Series, mapping: dict) -> np.ndarray:
    """`values.map(mapping)` as an object array, looking up each distinct value once."""
    codes, uniques = pd.factorize(values)
    table = np.array([mapping.get(u) for u in uniques] + [None], dtype=object)
    return table[codes]  # code -1 (a missing value) takes the last entry, None


def _ids(prefix: str, lines: np.ndarray, present: np.ndarray) -> pd.Series:
    """`f"{prefix}-{line}"` where `present`, missing elsewhere, built in pyarrow."""
    text = pc.binary_join_element_wise(
        pa.scalar(f"{prefix}-", pa.large_string()),
        pc.cast(pa.array(lines, pa.int64()), pa.large_string()),
        pa.scalar("", pa.large_string()),
    )
    text = pc.if_else(pa.array(present, pa.bool_()), text, pa.scalar(None, pa.large_string()))
    return pd.Series(pd.arrays.ArrowStringArray(text, dtype=pd.StringDtype("pyarrow", np.nan)))


def _arrow_text(values: pd.Series) -> pa.Array:
    return pa.array(values, pa.large_string(), from_pandas=True)


def _isin(values: pd.Series, candidates) -> np.ndarray:
    """`Series.isin` for text ids by a hash set in C (pandas' own isin on arrow strings builds a
    Python list of the candidates, which was a third of a large merge). Nulls match nulls, as in
    pandas."""
    found = pc.is_in(
        pa.array(values, pa.large_string(), from_pandas=True),
        value_set=pa.array(candidates, pa.large_string(), from_pandas=True),
    )
    return found.to_numpy(zero_copy_only=False)


def _final_empty() -> pd.DataFrame:
    return empty_existing()[["conversion_id", *_FIELDS]]


def _apply_final(inserted: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """Inserted conversions that later rows of the same file changed get their final values."""
    if final.empty:
        return inserted
    # By position (ids are unique on both sides): `DataFrame.update` on an id index cost as
    # much as the rest of the resolution for a chunk with a few edited new conversions.
    at = pc.index_in(
        pa.array(final["conversion_id"], pa.large_string(), from_pandas=True),
        value_set=pa.array(inserted["conversion_id"], pa.large_string(), from_pandas=True),
    ).to_numpy(zero_copy_only=False)
    out = inserted.copy()
    for f in _FIELDS:  # like `update`: a missing final value keeps the inserted one
        value = final[f].reset_index(drop=True)
        present = value.notna().to_numpy()
        column = out[f].copy()
        column.iloc[at[present]] = value[present].to_numpy()
        out[f] = column
    return out


def _history(state: pd.DataFrame, action: str, old: pd.DataFrame | None) -> pd.DataFrame:
    out = pd.DataFrame(
        {"conversion_id": state["conversion_id"].to_numpy(), "line": state["line"].to_numpy()}
    )
    out["action"] = action
    for f in _FIELDS:
        new = state[f].reset_index(drop=True)
        out[f"old_{f}"] = (
            old[f].reset_index(drop=True) if old is not None else new.iloc[0:0].reindex(out.index)
        )
        out[f"new_{f}"] = new
    return out[HISTORY_COLUMNS]


def resolve_status(rows: pd.DataFrame, matches: pd.DataFrame) -> Resolution:
    """Status update rows: exactly one matching conversion changes; none or several reject.

    `rows`: line, click_id, conversion_type, event_id, status. `matches`: per line, `n_matches`
    and, where exactly one conversion matched, its `conversion_id` and current `status`.
    Several rows may name the same conversion: they apply in file order.
    """
    r = rows[["line", "status"]].merge(
        matches[["line", "n_matches", "conversion_id", "current_status"]], on="line", how="left"
    )
    r = r.sort_values("line", kind="stable", ignore_index=True)
    n = r["n_matches"].fillna(0).to_numpy()
    ok = n == 1
    reason = np.select([n == 0, n > 1], ["unknown_conversion", "ambiguous_conversion"], None)
    outcomes = pd.DataFrame(
        {
            "line": r["line"],
            "outcome": np.where(ok, OUTCOME_OF[STATUS_UPDATE], OUTCOME_OF[REJECT]),
            "reason_code": pd.Series(reason, dtype="str"),
            "duplicate_of": pd.Series(None, index=r.index, dtype="str"),  # status files ignore none
        }
    )
    applied = r[ok].reset_index(drop=True)
    previous = applied.groupby("conversion_id", sort=False)["status"].shift(1)
    old_status = previous.fillna(applied["current_status"])
    history = pd.DataFrame({"conversion_id": applied["conversion_id"], "line": applied["line"]})
    history["action"] = STATUS_UPDATE
    for f in _FIELDS:
        history[f"old_{f}"] = None
        history[f"new_{f}"] = None
    history["old_status"] = old_status
    history["new_status"] = applied["status"]
    updates = applied.drop_duplicates("conversion_id", keep="last")[["conversion_id", "status"]]
    return Resolution(
        outcomes,
        inserts=pd.DataFrame(columns=["conversion_id"]),
        updates=updates.reset_index(drop=True),
        history=history[HISTORY_COLUMNS],
    )
