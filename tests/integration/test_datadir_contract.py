"""The `DataDir` contract: what the runner and the Airflow tasks rely on, through the interface
alone, for every implementation (today the local file system; a second backend joins the
`IMPLEMENTATIONS` list and must pass the same tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.datadir import DataDir, LocalDataDir

RECEIVED = datetime(2026, 3, 8, 22, 30, tzinfo=UTC)
HASH = "cd" * 32
SOURCES = ("maxbounty", "clickbank")
CONTENT = b"click_id,payout\nabc,1.00\n"

# name -> (make a data directory under a folder, drop a file into its inbox)
IMPLEMENTATIONS: dict[str, tuple[Callable[[Path], DataDir], Callable[[DataDir, str, bytes], None]]]
IMPLEMENTATIONS = {
    "local": (
        lambda root: LocalDataDir(root / "home"),
        lambda d, relative, data: _write(d.layout.inbox / relative, data),
    ),
}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request, tmp_path):
    make, drop = IMPLEMENTATIONS[request.param]
    datadir = make(tmp_path)
    datadir.ensure(SOURCES)
    return datadir, lambda relative, data=CONTENT: drop(datadir, relative, data)


def test_a_waiting_file_is_claimed_once(store):
    datadir, drop = store
    drop("maxbounty/a.csv")
    drop("maxbounty/status/s.csv")
    drop("nosuch/x.csv")
    drop("maxbounty/edit/e.csv")
    drop("maxbounty/edt/m.csv")
    found = {w.relative: (w.offer_source, w.kind, w.mode) for w in datadir.scan(SOURCES)}
    assert found == {
        "maxbounty/a.csv": ("maxbounty", "conversions", None),
        "maxbounty/status/s.csv": ("maxbounty", "status", None),
        "maxbounty/edit/e.csv": ("maxbounty", "conversions", "edit"),  # a mode folder
        "maxbounty/edt/m.csv": (None, "conversions", None),  # no mode: quarantined
        "nosuch/x.csv": (None, "conversions", None),  # listed, so it gets quarantined
    }
    [waiting] = [w for w in datadir.scan(SOURCES) if w.relative == "maxbounty/a.csv"]
    first = datadir.claim(waiting)
    assert first is not None and first.path.read_bytes() == CONTENT
    assert datadir.claim(waiting) is None  # the second claimer loses
    assert "maxbounty/a.csv" not in {w.relative for w in datadir.scan(SOURCES)}
    assert datadir.not_a_regular_file(first) is None


def test_a_released_file_waits_again_with_its_received_time(store):
    datadir, drop = store
    drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting)
    datadir.release(claimed)
    [again] = datadir.scan(SOURCES)
    reclaimed = datadir.claim(again)
    assert reclaimed.received_at == claimed.received_at
    assert reclaimed.claim_id != claimed.claim_id


def test_a_mode_folders_file_keeps_its_folder_mode_and_received_time_when_released(store):
    datadir, drop = store
    drop("maxbounty/edit/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting, hand_off=timedelta(hours=1))
    assert (claimed.relative, claimed.mode) == ("maxbounty/edit/a.csv", "edit")
    taken = datadir.take_over(claimed.claim_id)
    assert (taken.mode, taken.received_at) == ("edit", claimed.received_at)
    datadir.release(taken)
    [again] = datadir.scan(SOURCES)
    assert (again.relative, again.mode) == ("maxbounty/edit/a.csv", "edit")
    reclaimed = datadir.claim(again)
    assert (reclaimed.mode, reclaimed.received_at) == ("edit", claimed.received_at)
    target = datadir.file_archived(reclaimed, HASH)
    [archived] = datadir.archived(date(2000, 1, 1), date(2099, 1, 1))
    assert (archived.path, archived.relative, archived.mode) == (
        target,
        "maxbounty/edit/a.csv",
        "edit",
    )
    assert archived.received_at == claimed.received_at


def test_a_handed_off_claim_is_taken_over_and_not_recovered_meanwhile(store):
    datadir, drop = store
    drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting, hand_off=timedelta(hours=1))
    assert datadir.recover() == []  # its lease holds
    taken = datadir.take_over(claimed.claim_id)
    assert taken.relative == "maxbounty/a.csv" and claimed.claim_id in taken.adopted_from
    assert datadir.take_over(claimed.claim_id).claim_id != taken.claim_id  # a retry finds it
    assert datadir.take_over("0" * 32) is None


def test_archived_files_are_listed_for_replays_in_received_order(store):
    datadir, drop = store
    for name, hex_digit in (("b.csv", "b"), ("a.csv", "a")):
        drop(f"maxbounty/{name}")
        [waiting] = datadir.scan(SOURCES)
        claimed = datadir.claim(waiting)
        target = datadir.file_archived(claimed, hex_digit * 64)
        assert datadir.is_archived(target)
        time.sleep(1.05)  # received times are whole seconds: b is received a second before a
    listed = datadir.archived(date(2026, 1, 1), date(2099, 1, 1), "maxbounty")
    assert [a.relative for a in listed] == ["maxbounty/b.csv", "maxbounty/a.csv"]
    assert [a.content_hash for a in listed] == ["b" * 64, "a" * 64]
    assert [a.mode for a in listed] == [None, None]  # not from a mode folder
    assert datadir.archived(date(2026, 1, 1), date(2099, 1, 1), "clickbank") == []
    assert datadir.scan(SOURCES) == []


def test_a_quarantined_file_leaves_the_inbox_and_is_not_archived(store):
    datadir, drop = store
    drop("nosuch/x.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting)
    target = datadir.file_quarantined(claimed, None, "unknown_offer_source", "why")
    assert target.exists() and not datadir.is_archived(target)
    assert datadir.scan(SOURCES) == []
    assert datadir.archived(date(2000, 1, 1), date(2099, 1, 1)) == []


def test_reports_live_in_the_data_directory(store):
    datadir, _ = store
    assert datadir.reports.is_dir()
    assert datadir.location  # something to show in a log
