"""The merge as the warehouse runs it against the specification it implements.

The warehouse path resolves a file chunk by chunk: its rows staged locally in partitions by a
hash of the click id, what the warehouse holds for them looked up batch by batch as the file is
read and handed out with the chunks, the writes running on a thread of their own
(`warehouse.Stage`, `warehouse.Background`). The specification is `core.duplicates.resolve`
over a whole file at once, against the conversions that exist before it (DOMAIN.md's rules,
worked by hand in `tests/unit/test_duplicates.py`).

Here hypothesis builds short sequences of files for one offer source (few click ids, so keys
collide within and across files; every duplicate mode, a per-type mode, event ids, empty payouts,
statuses and times, a run's mode override per file), applies them through the real
`ingest.ingest_file` at random batch sizes (1 row per chunk up to the whole file) on SQLite and
PostgreSQL, and replays the same files in
memory: the file's accepted rows (read and normalised as `ingest` does: those steps have their
own oracle in `test_fuzz.py`) resolved in one call, the existing side computed with pandas from
the replayed table. Both must end with the same conversions, the same history rows and the same
outcome counts for every file.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pipeline import ingest, reader, warehouse
from pipeline.context import Context
from pipeline.core import duplicates, normalise
from pipeline.core.vocabulary import MODES, MUTABLE_FIELDS
from pipeline.datadir import LocalDataDir
from tests.helpers import POSTGRES_URL, make_config, postgres_schema_url, soak_or

RECEIVED = pd.Timestamp("2026-11-20 12:00:00", tz="UTC")
_SOURCES = itertools.count()
CLICKS = ["c1", "c2", "c3", "Ä4", "c5"]  # a non-ASCII id: the chunks' order is by code point

row = st.fixed_dictionaries(
    {
        "click_id": st.sampled_from(CLICKS),
        "payout": st.sampled_from(["", "1.00", "2.50", "0.01", "10"]),
        "conversion_type": st.sampled_from(["", "", "Purchase", "Lead"]),
        "event_id": st.sampled_from(["", "", "e1", "e2"]),
        "status": st.sampled_from(["", "approved", "pending", "declined"]),
        "conversion_time": st.sampled_from(["", "2026-11-01 10:00:00", "2026-11-02 09:30:00"]),
    }
)
files = st.lists(st.lists(row, min_size=1, max_size=25), min_size=1, max_size=3)
options = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(list(MODES)),
        "purchase_mode": st.sampled_from([None, *MODES]),
        "batch_sizes": st.lists(st.sampled_from([1, 2, 3, 7, 50_000]), min_size=3, max_size=3),
        # A run's override: another mode for a later file over the same keys (create_new's
        # several conversions of a key, then edits that move the most recent one's time).
        "overrides": st.lists(st.sampled_from([None, None, *MODES]), min_size=3, max_size=3),
    }
)
COLUMNS = ["click_id", "payout", "conversion_type", "event_id", "status", "conversion_time"]


def _csv(rows: list[dict[str, str]]) -> str:
    return ",".join(COLUMNS) + "\n" + "".join(",".join(r[c] for c in COLUMNS) + "\n" for r in rows)


def _accepted(path: Path, config, name: str, override: str | None) -> tuple[pd.DataFrame, int]:
    """The file's accepted rows and how many were rejected, read as `ingest` reads them."""
    source = config.offer_sources[name]
    header = reader.read_header(path, "conversions", max_columns=100, source=source)
    accepted, rejected = [], 0
    for batch in reader.read_batches(path, header, 50_000):
        part = normalise.conversions(
            header.canonical(batch.cells),
            batch.lines,
            source,
            received_at=RECEIVED,
            future_tolerance_seconds=config.settings.future_tolerance_seconds,
            mode_override=override,
            file_zone=header.time_zone,
        )
        accepted.append(part.accepted)
        rejected += len(part.rejected) + len(batch.malformed)
    return pd.concat(accepted, ignore_index=True), rejected


def _existing(state: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per duplicate key of `rows`: how many conversions of `state` it matches, and the most
    recent (latest time, then highest id), from the rule's words rather than the SQL."""
    keys = rows[["click_id", "conversion_type"]].assign(key_event=duplicates.key_event(rows))
    out = []
    for key in keys.drop_duplicates().itertuples(index=False):
        hit = state[
            (state["click_id"] == key.click_id)
            & (state["conversion_type"] == key.conversion_type)
            & ((key.key_event == "") | (state["event_id"] == key.key_event))
        ]
        if hit.empty:
            continue
        latest = hit.sort_values(["converted_at", "conversion_id"]).iloc[-1]
        out.append(
            {
                "click_id": key.click_id,
                "conversion_type": key.conversion_type,
                "key_event": key.key_event,
                "n_existing": len(hit),
                "conversion_id": latest["conversion_id"],
                **{f: latest[f] for f in MUTABLE_FIELDS},
            }
        )
    template = duplicates.empty_existing()
    if not out:
        return template
    return pd.DataFrame(out).astype(template.dtypes.to_dict())


def _replay(state: pd.DataFrame, resolution: duplicates.Resolution) -> pd.DataFrame:
    kept = ["conversion_id", "click_id", "conversion_type", "duplicate_status", *MUTABLE_FIELDS]
    if len(resolution.inserts):
        inserts = resolution.inserts[kept].astype(state.dtypes.to_dict())
        state = pd.concat([state, inserts] if len(state) else [inserts], ignore_index=True)
    if len(resolution.updates):
        changed = state.set_index("conversion_id")
        final = resolution.updates.set_index("conversion_id")
        for f in MUTABLE_FIELDS:  # the final values of the conversions the file changed
            if f in final.columns:
                column = changed[f].copy()
                column.loc[final.index] = final[f].to_numpy()
                changed[f] = column
        state = changed.reset_index()
    return state


def _comparable(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    def cell(value):
        if value is None or value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
            return None
        if isinstance(value, datetime):
            return pd.Timestamp(value).tz_convert("UTC").isoformat()
        return value if isinstance(value, str) else int(value)

    return sorted(
        (tuple(cell(v) for v in values) for values in frame[columns].itertuples(index=False)),
        key=repr,
    )


def _check(engine, tmp_path: Path, sequence, opts) -> None:
    name = f"df{next(_SOURCES)}"
    source_options = {"duplicate_mode": opts["mode"], "file_times": "utc"}
    if opts["purchase_mode"]:
        source_options["conversion_types"] = {"Purchase": {"duplicate_mode": opts["purchase_mode"]}}
    config = make_config(**{name: source_options})
    source = config.offer_sources[name]
    kept = ["conversion_id", "click_id", "conversion_type", "duplicate_status", *MUTABLE_FIELDS]
    state = duplicates.empty_existing().assign(duplicate_status=pd.Series(dtype="str"))[kept]
    expected_history = []
    for number, rows in enumerate(sequence):
        path = tmp_path / f"{name}_{number}.csv"
        path.write_text(_csv(rows), encoding="utf-8")
        result = ingest.ingest_file(
            Context(config, engine, LocalDataDir(tmp_path / "home")),
            ingest.Upload(
                path,
                name,
                "conversions",
                received_at=RECEIVED.to_pydatetime(),
                batch_size=opts["batch_sizes"][number],
                reports_dir=tmp_path / "reports",
                mode_override=opts["overrides"][number],
            ),
        )
        if result.state == "duplicate_file":  # the same bytes as an earlier file: skipped
            assert rows in sequence[:number], result
            continue
        assert result.state == "applied", result
        accepted, rejected = _accepted(path, config, name, opts["overrides"][number])
        defaults = duplicates.Defaults(
            status=source.default_status, currency=source.account.currency, converted_at=RECEIVED
        )
        prefix = ingest._id_prefix(source, result, 1)
        resolution = duplicates.resolve(accepted, _existing(state, accepted), defaults, prefix)
        state = _replay(state, resolution)
        expected_history.append(resolution.history.assign(file_id=result.file_id))
        counts = resolution.outcomes["outcome"].value_counts().to_dict()
        counts["rejected"] = counts.get("rejected", 0) + rejected
        counts = {k: v for k, v in counts.items() if v}
        assert {k: v for k, v in result.outcomes.items() if v} == counts, (number, counts, result)

    with engine.connect() as conn:
        # Through the tables' own types: payouts as int micro-units, times as UTC datetimes.
        stored, history = (
            pd.DataFrame(conn.execute(select(t)).all(), columns=list(t.columns.keys()))
            for t in (warehouse.conversions, warehouse.conversion_history)
        )
    stored = stored[stored["offer_source"] == name]
    history = history[history["conversion_id"].isin(stored["conversion_id"])]
    columns = ["conversion_id", "click_id", "conversion_type", "duplicate_status", *MUTABLE_FIELDS]
    assert _comparable(stored, columns) == _comparable(state, columns)
    wanted = pd.concat(expected_history, ignore_index=True)
    history_columns = ["file_id", *duplicates.HISTORY_COLUMNS]
    for side in ("old", "new"):
        column = history[f"{side}_payout"]
        history[f"{side}_payout"] = column.map(
            lambda v: None if v is None or pd.isna(v) else int(v)
        )
    assert _comparable(history, history_columns) == _comparable(wanted, history_columns)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_engine(request, tmp_path_factory):
    """One warehouse for all examples of a test (each example has its own offer source)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('differential') / 'warehouse.db'}"
        engine = warehouse.connect(url)
        yield engine
        engine.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("CONVERSIONS_TEST_POSTGRES_URL is not set")
    for url in postgres_schema_url():
        engine = warehouse.connect(url)
        yield engine
        engine.dispose()


@settings(
    max_examples=soak_or(25, 800),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=files, opts=options)
def test_the_chunked_merge_equals_the_whole_file_resolution(
    shared_engine, tmp_path_factory, sequence, opts
):
    _check(shared_engine, tmp_path_factory.mktemp("files"), sequence, opts)
