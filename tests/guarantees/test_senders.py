"""Senders as they really are: a file written in place, under its final name, while passes run.

The sender contract asks for a temp name renamed into place, but a sender that writes the final
name directly (flushing as it goes, pausing, stopping mid-line) must never get half a file
applied. Two defences, both tested on real files and a real warehouse (SQLite and PostgreSQL):
a file is claimed only once it has not changed for ``settle_seconds``, and its bytes are hashed
again before its transaction commits, so a file that changed after it was read is not applied
but goes back to the inbox with its received time, and applies whole once it has settled.

Expectations are worked out by hand: row ``i`` is ``u{i:05d}`` with payout ``i.00`` at
2026-01-01 10:00 New York time (maxbounty: ignore, account time), which is 15:00 UTC.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import datadir, export, ingest, runner, warehouse
from pipeline.context import Context
from pipeline.datadir import FileChanged
from pipeline.ingest import Upload, ingest_file
from pipeline.results import FileResult
from tests.helpers import make_config, soak_or

ROWS = 400
SETTLE = 1  # seconds; the writer's longest pause is well under it
DEADLINE = 25.0  # seconds for a whole test: only a file that never settles or loops breaks it
HEADER = b"click_id,conversion_time,payout\n"


def row(i: int) -> bytes:
    return f"u{i:05d},2026-01-01 10:00:00,{i}.00\n".encode()


@pytest.fixture
def ctx(tmp_path, engine) -> Context:
    config = make_config(settings={"settle_seconds": SETTLE})
    context = Context(config, engine, datadir.LocalDataDir(tmp_path / "home"))
    context.datadir.ensure(config.offer_sources)
    return context


def ledger(ctx: Context) -> list[dict]:
    f = warehouse.ingested_files
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(f).order_by(f.c.file_id)).mappings()]


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def archived(ctx: Context) -> list[datadir.Archived]:
    return ctx.datadir.archived(date(2000, 1, 1), date(2100, 1, 1))


def write_in_place(path: Path, done: threading.Event) -> None:
    """A sender writing ``ROWS`` rows under the final name: flushing every few rows, pausing
    (under ``SETTLE``) between them, and stopping mid-line twice, once for 0.6 s."""
    with path.open("wb", buffering=0) as out:
        out.write(HEADER)
        for i in range(1, ROWS + 1):
            line = row(i)
            if i in (99, 250):  # "u00099,2026-01-01 10:00:00,1" of "...,99.00": not a row yet
                cut = line.index(b",", 7) + 2
                out.write(line[:cut])
                time.sleep(0.6 if i == 99 else 0.3)
                out.write(line[cut:])
            else:
                out.write(line)
            if i % 40 == 0:
                time.sleep(0.2)
    done.set()


@pytest.mark.parametrize("trial", range(soak_or(1, 5)))  # the soak repeats the race
def test_a_file_written_in_place_is_applied_once_whole_never_half(ctx, trial):
    path = ctx.datadir.layout.inbox / "maxbounty" / "growing.csv"
    done = threading.Event()
    writer = threading.Thread(target=write_in_place, args=(path, done), daemon=True)
    writer.start()
    results: list[FileResult] = []
    passes_while_writing = 0
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        writing = not done.is_set()
        results += runner.run_inbox(ctx)
        passes_while_writing += writing
        if any(r.state == "applied" for r in results):
            break
        time.sleep(0.05)
    writer.join(timeout=5)
    assert done.is_set()

    content = HEADER + b"".join(row(i) for i in range(1, ROWS + 1))
    assert path.exists() is False
    applied = [r for r in results if r.state == "applied"]
    assert len(applied) == 1, [(r.state, r.data_lines, r.detail) for r in results]
    # Anything else can only be a claim the commit check sent back (never a half apply).
    for other in results:
        assert other.state == "applied" or "changed while it was read" in str(other.detail)
    [result] = applied
    assert (result.data_lines, result.outcomes["inserted"], result.outcomes["rejected"]) == (
        ROWS,
        ROWS,
        0,
    )
    assert result.content_hash == hashlib.sha256(content).hexdigest()
    [row_] = ledger(ctx)
    assert (row_["state"], row_["data_lines"]) == ("applied", ROWS)

    data = export.frame(ctx.engine, ctx.config).sort_values("click_id", ignore_index=True)
    assert list(data["click_id"]) == [f"u{i:05d}" for i in range(1, ROWS + 1)]
    last = data.iloc[-1]
    assert (last["payout"], last["converted_at"]) == ("400.00", "2026-01-01T15:00:00Z")
    assert data.loc[98, "payout"] == "99.00"  # the line cut mid-payout is whole, not "9"

    assert passes_while_writing >= 10  # the passes really ran while the sender wrote
    [kept] = archived(ctx)
    assert kept.path.read_bytes() == content
    assert kept.content_hash == hashlib.sha256(content).hexdigest()
    assert files_under(ctx.datadir.layout.processing) == []
    assert files_under(ctx.datadir.layout.inbox) == []


def append_after_reading(monkeypatch, extra: bytes) -> list[Path]:
    """Make the sender append ``extra`` to the file once its rows were read and merged (inside
    its transaction, before the commit check), the first time only."""
    real_apply = ingest._FileRun.apply
    appended: list[Path] = []

    def apply_then_append(self) -> None:
        real_apply(self)
        if not appended:
            with Path(self.upload.path).open("ab") as sender:
                sender.write(extra)
            appended.append(Path(self.upload.path))

    monkeypatch.setattr(ingest._FileRun, "apply", apply_then_append)
    return appended


def test_a_file_that_changed_after_it_was_read_goes_back_and_applies_whole_later(ctx, monkeypatch):
    layout = ctx.datadir.layout
    path = layout.inbox / "maxbounty" / "late.csv"
    path.write_bytes(HEADER + row(1) + row(2) + b"u00003,,3.00\n")  # u00003: the received time
    old = time.time() - 60
    os.utime(path, (old, old))  # delivered a minute ago: settled
    appended = append_after_reading(monkeypatch, row(4))

    [first] = runner.run_inbox(ctx)
    assert appended  # the hook ran: the sender appended after the rows were read
    assert first.state == "failed"
    assert "late.csv changed while it was read" in str(first.detail)
    assert "taken again once it has settled" in str(first.detail)
    assert "put back in the inbox" in str(first.detail)
    # Nothing applied: no ledger row, no conversion, no report left behind.
    assert ledger(ctx) == []
    assert export.frame(ctx.engine, ctx.config).empty
    assert files_under(layout.reports) == []
    assert files_under(layout.processing) == []
    # Back in the inbox, whole, with its received time on record.
    assert path.read_bytes() == HEADER + row(1) + row(2) + b"u00003,,3.00\n" + row(4)
    record = layout.inbox / "maxbounty" / ".late.csv.received.json"
    received = datetime.fromisoformat(json.loads(record.read_text())["received_at"])

    # It changed just now, so it waits for the settle time; then it applies whole.
    assert runner.run_inbox(ctx) == []
    results: list[FileResult] = []
    started = time.monotonic()
    while not results and time.monotonic() - started < DEADLINE:
        time.sleep(0.1)
        results = runner.run_inbox(ctx)
    [second] = results
    assert (second.state, second.data_lines, second.outcomes["inserted"]) == ("applied", 4, 4)
    assert second.received_at == received.isoformat()
    [entry] = ledger(ctx)
    assert entry["state"] == "applied"
    assert entry["received_at"].replace(tzinfo=UTC) == received
    data = export.frame(ctx.engine, ctx.config).set_index("click_id")
    assert sorted(data.index) == ["u00001", "u00002", "u00003", "u00004"]
    # The empty time is the first claim's received time, not the second's.
    assert data.loc["u00003", "converted_at"] == received.strftime("%Y-%m-%dT%H:%M:%SZ")
    [kept] = archived(ctx)
    assert kept.received_at == received
    assert hashlib.sha256(kept.path.read_bytes()).hexdigest() == kept.content_hash


def test_a_dry_run_of_a_changing_file_rolls_back_and_keeps_no_received_time(ctx, monkeypatch):
    layout = ctx.datadir.layout
    path = layout.inbox / "maxbounty" / "look.csv"
    path.write_bytes(HEADER + row(1))
    old = time.time() - 60
    os.utime(path, (old, old))
    append_after_reading(monkeypatch, row(2))
    [result] = runner.run_inbox(ctx, dry_run=True)
    assert result.state == "failed" and "changed while it was read" in str(result.detail)
    assert ledger(ctx) == []
    assert path.read_bytes() == HEADER + row(1) + row(2)
    assert not (layout.inbox / "maxbounty" / ".look.csv.received.json").exists()


def test_a_direct_ingest_of_a_changing_file_applies_nothing(ctx, monkeypatch, tmp_path):
    path = tmp_path / "direct.csv"
    path.write_bytes(HEADER + row(1))
    append_after_reading(monkeypatch, row(2))
    received = datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(FileChanged, match=r"direct\.csv changed while it was read"):
        ingest_file(ctx, Upload(path, "maxbounty", received_at=received))
    assert ledger(ctx) == []
    assert export.frame(ctx.engine, ctx.config).empty
    assert files_under(ctx.datadir.layout.reports) == []
