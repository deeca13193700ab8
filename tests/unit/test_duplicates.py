"""Duplicate resolution against tables worked out by hand from README "Duplicate postback modes"."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core.duplicates import Defaults, empty_existing, resolve, resolve_status

RECEIVED = pd.Timestamp("2026-07-01 12:00:00", tz="UTC")
DEFAULTS = Defaults(status="approved", currency="USD", converted_at=RECEIVED)
T0 = pd.Timestamp("2026-06-01 10:00:00", tz="UTC")


def micros(text: str | None):
    if text is None:
        return pd.NA
    units, _, frac = text.partition(".")
    sign = -1 if units.startswith("-") else 1
    return sign * (abs(int(units)) * 1_000_000 + int((frac + "000000")[:6]))


def rows(*specs, mode: str = "ignore") -> pd.DataFrame:
    """specs: (line, click_id, payout_text, extra-dict)."""
    records = []
    for spec in specs:
        line, click, payout, *extra = spec
        rec = {
            "line": line,
            "click_id": click,
            "conversion_type": "",
            "event_id": None,
            "payout": micros(payout),
            "status": None,
            "converted_at": pd.NaT,
            "currency": None,
            "mode": mode,
        }
        rec.update(extra[0] if extra else {})
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    return df.astype(
        {
            "line": "int64",
            "payout": "Int64",
            "click_id": "str",
            "conversion_type": "str",
            "event_id": "str",
            "status": "str",
            "currency": "str",
            "mode": "str",
        }
    ).assign(
        converted_at=lambda d: pd.to_datetime(d["converted_at"], utc=True).astype(
            "datetime64[us, UTC]"
        )
    )


def existing(*specs) -> pd.DataFrame:
    """specs: (click_id, conversion_id, payout_text, n_existing, extra)."""
    base = empty_existing()
    records = []
    for click, cid, payout, n, *extra in specs:
        rec = {
            "click_id": click,
            "conversion_type": "",
            "key_event": "",
            "n_existing": n,
            "conversion_id": cid,
            "payout": micros(payout),
            "status": "pending",
            "converted_at": T0,
            "currency": "USD",
            "event_id": None,
        }
        rec.update(extra[0] if extra else {})
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=base.columns).astype(base.dtypes.to_dict())


def outcomes(res) -> dict[int, str]:
    return {
        int(r.line): (r.outcome if pd.isna(r.reason_code) else f"{r.outcome}:{r.reason_code}")
        for r in res.outcomes.itertuples()
    }


def inserted(res) -> dict[str, tuple]:
    return {
        r.conversion_id: (r.click_id, r.payout, r.status, r.duplicate_status)
        for r in res.inserts.itertuples()
    }


def test_ignore_keeps_the_first_row_of_a_key():
    res = resolve(
        rows((2, "A", "1.00"), (3, "A", "2.00"), (4, "B", "3.00")), empty_existing(), DEFAULTS, "f"
    )
    assert outcomes(res) == {2: "inserted", 3: "ignored_duplicate", 4: "inserted"}
    assert inserted(res) == {
        "f-2": ("A", 1_000_000, "approved", "unknown"),
        "f-4": ("B", 3_000_000, "approved", "unknown"),
    }
    assert res.updates.empty
    assert list(res.history["action"]) == ["insert", "insert"]


def test_an_ignored_duplicate_names_the_conversion_it_duplicates():
    """Line 3 duplicates the warehouse's `old`; line 5 duplicates line 4's new `f-4`; rows
    that insert or are edits name nothing."""
    res = resolve(
        rows((2, "B", "1.00"), (3, "A", "2.00"), (4, "C", "3.00"), (5, "C", "4.00")),
        existing(("A", "old", "9.00", 1)),
        DEFAULTS,
        "f",
    )
    named = {int(r.line): r.duplicate_of for r in res.outcomes.itertuples()}
    assert {k: v for k, v in named.items() if not pd.isna(v)} == {3: "old", 5: "f-4"}
    edits = resolve(
        rows((2, "A", "1.00"), mode="edit"), existing(("A", "old", "9.00", 1)), DEFAULTS, "f"
    )
    assert edits.outcomes["duplicate_of"].isna().all()


def test_ignore_against_the_warehouse():
    res = resolve(
        rows((2, "A", "1.00"), (3, "B", "2.00")), existing(("A", "old", "9.00", 1)), DEFAULTS, "f"
    )
    assert outcomes(res) == {2: "ignored_duplicate", 3: "inserted"}


def test_create_new_inserts_every_row():
    res = resolve(
        rows((2, "A", "1.00"), (3, "A", "1.00"), mode="create_new"),
        existing(("A", "old", "9.00", 1)),
        DEFAULTS,
        "f",
    )
    assert outcomes(res) == {2: "inserted", 3: "inserted"}
    assert {v[3] for v in inserted(res).values()} == {"unknown"}


def test_new_or_repeated_marks_the_first_new_and_the_rest_repeated():
    res = resolve(
        rows((2, "A", "1.00"), (3, "A", "1.00"), (4, "B", "1.00"), mode="new_or_repeated"),
        existing(("B", "old", "9.00", 1)),
        DEFAULTS,
        "f",
    )
    assert {k: v[3] for k, v in inserted(res).items()} == {
        "f-2": "new",
        "f-3": "repeated",
        "f-4": "repeated",
    }


def test_edit_takes_non_empty_fields_in_file_order():
    res = resolve(
        rows((2, "A", None, {"status": "declined"}), (3, "A", "7.00"), mode="edit"),
        existing(("A", "X", "5.00", 2)),
        DEFAULTS,
        "f",
    )
    assert outcomes(res) == {2: "updated", 3: "updated"}
    assert res.inserts.empty
    final = res.updates.set_index("conversion_id").loc["X"]
    assert (final["payout"], final["status"], final["converted_at"]) == (7_000_000, "declined", T0)
    h = res.history.set_index("line")
    assert (h.loc[2, "old_payout"], h.loc[2, "new_payout"]) == (5_000_000, 5_000_000)
    assert (h.loc[2, "old_status"], h.loc[2, "new_status"]) == ("pending", "declined")
    assert (h.loc[3, "old_payout"], h.loc[3, "new_payout"]) == (5_000_000, 7_000_000)
    assert (h.loc[3, "old_status"], h.loc[3, "new_status"]) == ("declined", "declined")


def test_edit_in_an_empty_warehouse_needs_a_payout_to_create():
    res = resolve(
        rows(
            (2, "A", None, {"status": "declined"}),
            (3, "A", "4.00"),
            (4, "A", None, {"currency": "EUR"}),
            mode="edit",
        ),
        empty_existing(),
        DEFAULTS,
        "f",
    )
    assert outcomes(res) == {2: "rejected:missing_payout", 3: "inserted", 4: "updated"}
    ins = res.inserts.set_index("conversion_id").loc["f-3"]
    assert (ins["payout"], ins["status"], ins["currency"]) == (4_000_000, "approved", "EUR")
    assert ins["converted_at"] == RECEIVED
    h = res.history.set_index("line")
    assert h.loc[3, "action"] == "insert" and h.loc[3, "new_currency"] == "USD"
    assert (h.loc[4, "old_currency"], h.loc[4, "new_currency"]) == ("USD", "EUR")


def test_increment_payout_is_exact():
    res = resolve(
        rows((2, "A", "0.10"), (3, "A", "0.20"), mode="increment_payout"),
        empty_existing(),
        DEFAULTS,
        "f",
    )
    assert outcomes(res) == {2: "inserted", 3: "incremented"}
    assert inserted(res)["f-2"][1] == 300_000
    h = res.history.set_index("line")
    assert (h.loc[3, "old_payout"], h.loc[3, "new_payout"]) == (100_000, 300_000)


def test_increment_against_the_warehouse_keeps_other_fields():
    res = resolve(
        rows((2, "A", "1.50", {"status": "declined"}), (3, "A", "2.25"), mode="increment_payout"),
        existing(("A", "X", "5.00", 1)),
        DEFAULTS,
        "f",
    )
    assert outcomes(res) == {2: "incremented", 3: "incremented"}
    final = res.updates.set_index("conversion_id").loc["X"]
    assert (final["payout"], final["status"]) == (8_750_000, "pending")


def test_an_increment_keeps_an_empty_field_empty():
    """DOMAIN: the conversion "keeps its data". X has no event id; the increments bring one,
    and X keeps none, in its final state and in every history row. (A base's empty field
    once took the first value a *later* increment carried, so a row's history depended on
    rows after it.)"""
    res = resolve(
        rows(
            (2, "A", "1.00"),
            (3, "A", "2.00", {"event_id": "e2"}),
            (4, "B", "1.00"),
            (5, "B", "2.00"),
            (6, "B", "3.00", {"event_id": "e3"}),
            mode="increment_payout",
        ),
        existing(("A", "X", "5.00", 1)),
        DEFAULTS,
        "f",
    )
    assert outcomes(res) == {2: "incremented", 3: "incremented", 4: "inserted"} | {
        5: "incremented",
        6: "incremented",
    }
    final = res.updates.set_index("conversion_id").loc["X"]
    assert final["payout"] == 8_000_000 and pd.isna(final["event_id"])
    new = res.inserts.set_index("conversion_id").loc["f-4"]
    assert new["payout"] == 6_000_000 and pd.isna(new["event_id"])
    h = res.history.set_index("line")
    assert h.loc[[3, 5, 6], ["old_event_id", "new_event_id"]].isna().all().all()


def test_ignore_by_event_id_keys_on_the_event():
    r = rows(
        (2, "A", "1.00", {"event_id": "e1"}),
        (3, "A", "1.00", {"event_id": "e1"}),
        (4, "A", "1.00", {"event_id": "e2"}),
        mode="ignore_by_event_id",
    )
    ex = existing(("A", "X", "1.00", 1, {"key_event": "e2", "event_id": "e2"}))
    res = resolve(r, ex, DEFAULTS, "f")
    assert outcomes(res) == {2: "inserted", 3: "ignored_duplicate", 4: "ignored_duplicate"}


def test_rows_arrive_in_any_order_but_apply_in_line_order():
    r = rows((5, "A", "2.00"), (3, "A", "1.00"), mode="edit")
    res = resolve(r, empty_existing(), DEFAULTS, "f")
    assert outcomes(res) == {3: "inserted", 5: "updated"}
    assert inserted(res)["f-3"][1] == 2_000_000


def test_empty_input():
    res = resolve(rows((2, "A", "1.00")).iloc[0:0], empty_existing(), DEFAULTS, "f")
    assert res.outcomes.empty and res.inserts.empty and res.updates.empty


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, "rejected:unknown_conversion"),
        (2, "rejected:ambiguous_conversion"),
        (1, "status_updated"),
    ],
)
def test_status_none_one_many(n, expected):
    r = pd.DataFrame(
        {
            "line": [2],
            "click_id": ["A"],
            "conversion_type": [None],
            "event_id": [None],
            "status": ["declined"],
        }
    )
    m = pd.DataFrame(
        {
            "line": [2],
            "n_matches": [n],
            "conversion_id": ["X" if n == 1 else None],
            "current_status": ["approved" if n == 1 else None],
        }
    )
    res = resolve_status(r, m)
    assert outcomes(res) == {2: expected}


def test_status_rows_on_one_conversion_apply_in_order():
    r = pd.DataFrame(
        {
            "line": [2, 3],
            "click_id": ["A", "A"],
            "conversion_type": [None, None],
            "event_id": [None, None],
            "status": ["declined", "approved"],
        }
    )
    m = pd.DataFrame(
        {
            "line": [2, 3],
            "n_matches": [1, 1],
            "conversion_id": ["X", "X"],
            "current_status": ["pending", "pending"],
        }
    )
    res = resolve_status(r, m)
    assert res.updates.to_dict("records") == [{"conversion_id": "X", "status": "approved"}]
    assert list(zip(res.history["old_status"], res.history["new_status"], strict=True)) == [
        ("pending", "declined"),
        ("declined", "approved"),
    ]
