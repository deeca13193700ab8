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
    ex = existing.rename(columns={c: f"ex_{c}" for c in ["conversion_id", *_FIELDS]})
    r = r.merge(ex, on=KEY, how="left", validate="many_to_one")
    r["n_existing"] = r["n_existing"].fillna(0).astype("int64")
    exists = r["n_existing"].to_numpy() > 0
    has_payout = r["payout"].notna().to_numpy()
    line = r["line"].to_numpy()

    groups = r.groupby(KEY, sort=False)
    first_paid = line.astype("float64")
    first_paid[~has_payout] = np.nan
    fpl = r.assign(_fp=first_paid).groupby(KEY, sort=False)["_fp"].transform("min").to_numpy()

    after = r["mode"].map(LATER_ROW_ACTION).to_numpy()  # what a row of an existing key does
    inserts_all = after == INSERT
    before_first = np.isnan(fpl) | (line < fpl)
    action = np.select(
        [inserts_all, exists, before_first, line == fpl],
        [np.where(has_payout, INSERT, REJECT), after, REJECT, INSERT],
        default=after,
    ).astype(object)
    action[(action == INCREMENT) & ~has_payout] = REJECT
    overflow = _overflowing_increments(r, action, exists, line == fpl, groups.ngroup().to_numpy())
    action[overflow] = REJECT
    r["action"] = action

    new_id = id_prefix + "-" + r["line"].astype("str")
    r["conversion_id"] = new_id.where(r["action"] == INSERT)
    first_id = id_prefix + "-" + pd.Series(fpl, dtype="float64").astype("Int64").astype("str")
    r["target_id"] = r["ex_conversion_id"].where(exists, first_id)

    inserted = _inserted_values(r, groups, defaults)
    edits, edit_final = _fold(r, inserted, EDIT)
    increments, increment_final = _fold(r, inserted, INCREMENT)
    final = pd.concat([edit_final, increment_final], ignore_index=True)

    new_targets = _isin(final["conversion_id"], inserted["conversion_id"])
    inserts = _apply_final(inserted, final[new_targets])
    updates = final[~new_targets].reset_index(drop=True)

    insert_history = _history(inserted, INSERT, old=None)
    history = pd.concat(
        [frame for frame in (insert_history, edits, increments) if len(frame)] or [insert_history],
        ignore_index=True,
    ).sort_values("line", kind="stable", ignore_index=True)

    outcomes = pd.DataFrame(
        {
            "line": r["line"],
            "outcome": r["action"].map(OUTCOME_OF),
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


def _inserted_values(r: pd.DataFrame, groups, defaults: Defaults) -> pd.DataFrame:
    """The rows that insert, with defaults filled in and their duplicate status."""
    ins_mask = r["action"] == INSERT
    ins = r[ins_mask].copy()
    rank = ins.groupby(KEY, sort=False).cumcount()
    fresh = (ins["n_existing"] == 0) & (rank == 0)
    ins["duplicate_status"] = np.where(
        ins["mode"] == NEW_OR_REPEATED, np.where(fresh, NEW, REPEATED), UNKNOWN
    )
    ins["status"] = ins["status"].fillna(defaults.status)
    ins["currency"] = ins["currency"].fillna(defaults.currency)
    ins["converted_at"] = ins["converted_at"].fillna(defaults.converted_at)
    columns = ["conversion_id", "line", "click_id", "conversion_type", "duplicate_status", *_FIELDS]
    return ins[columns].reset_index(drop=True)


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
        for f in _FIELDS[1:]:
            state[f] = by_target[f].ffill()
        for f in _FIELDS[1:]:  # increments change only the payout; keep the base's fields
            state[f] = state.groupby("target_id", sort=False)[f].transform("first")
    previous = state.groupby("target_id", sort=False)[_FIELDS].shift(1)

    hist = state[is_event].rename(columns={"target_id": "conversion_id"})
    history = _history(hist, action, old=previous[is_event])
    final = state.drop_duplicates("target_id", keep="last").drop(columns="line")
    return history, final.rename(columns={"target_id": "conversion_id"}).reset_index(drop=True)


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
