"""The `DataDir` contract: what the runner and the Airflow tasks rely on, through the interface
alone, for every implementation: the local file system (rename claims) and object storage (a
real S3 API, moto's server on loopback; claims in the warehouse, on SQLite and PostgreSQL).

Claim once, release, hand-off and take-over, lease expiry and adoption (a dead owner on this
host, a claim of another host judged by its age), two workers racing for the same files, the
archive, the quarantine and the reports. The races hold on the claim itself (a rename, or the
warehouse's unique index): moto's conditional writes are not atomic and are not used."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipeline import warehouse
from pipeline.datadir import Claimed, DataDir, LocalDataDir, claims
from pipeline.datadir.layout import report_paths
from pipeline.reports import write_summary
from tests.helpers import POSTGRES_URL, postgres_schema_url

RECEIVED = datetime(2026, 3, 8, 22, 30, tzinfo=UTC)
HASH = "cd" * 32
SOURCES = ("maxbounty", "clickbank")
CONTENT = b"click_id,payout\nabc,1.00\n"


# One data directory per implementation, through the interface, plus what only a test does to
# it: drop a file as a sender would, and make a claim's owner look dead or long gone.
@dataclass
class Store:
    datadir: DataDir
    put: Callable[[str, bytes], None]
    owner_dead: Callable[[Claimed], None]  # the claimer's process exited (this host)
    owner_elsewhere: Callable[[Claimed, timedelta], None]  # claimed on another host, so long ago
    make_another: Callable[[], DataDir]  # a second worker's view of the same data directory

    def drop(self, relative: str, data: bytes = CONTENT) -> None:
        self.put(relative, data)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


def _local(tmp_path: Path) -> Store:
    datadir = LocalDataDir(tmp_path / "home")

    def record(claimed: Claimed) -> Path:
        return datadir.layout.processing / claimed.claim_id / claims.CLAIM_FILE

    def rewrite(claimed: Claimed, **values) -> None:
        data = json.loads(record(claimed).read_text(encoding="utf-8"))
        record(claimed).write_text(json.dumps(data | values), encoding="utf-8")

    return Store(
        datadir,
        lambda relative, data: _write(datadir.layout.inbox / relative, data),
        lambda claimed: rewrite(claimed, pid=_dead_pid(), handed_off_until=None),
        lambda claimed, age: rewrite(
            claimed,
            host="another-host.invalid",
            claimed_at=(datetime.now(UTC) - age).isoformat(),
            handed_off_until=None,
        ),
        lambda: LocalDataDir(tmp_path / "home"),
    )


def _s3(url: str, engine) -> Store:
    from pipeline.datadir.objectstore import ObjectStoreDataDir

    datadir = ObjectStoreDataDir(url, engine)

    def update(claimed: Claimed, **values) -> None:
        table = warehouse.schema.inbox_claims
        with engine.begin() as conn:
            conn.execute(
                table.update().where(table.c.claim_id == claimed.claim_id).values(**values)
            )

    def elsewhere(claimed: Claimed, age: timedelta) -> None:
        claimed_at = datetime.now(UTC) - age
        update(
            claimed,
            owner_host="another-host.invalid",
            claimed_at=claimed_at,
            lease_until=claimed_at + datadir.lease,
            handed_off_until=None,
        )

    return Store(
        datadir,
        lambda relative, data: datadir.fs.pipe_file(datadir._key("inbox", relative), data),
        lambda claimed: update(claimed, owner_pid=_dead_pid(), handed_off_until=None),
        elsewhere,
        lambda: ObjectStoreDataDir(url, engine),
    )


IMPLEMENTATIONS = [
    "local",
    "s3-sqlite",
    pytest.param(
        "s3-postgresql",
        marks=pytest.mark.skipif(
            not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
        ),
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "local":
        made = _local(tmp_path)
        made.datadir.ensure(SOURCES)
        yield made
        return
    s3_home = request.getfixturevalue("s3_home")
    if request.param == "s3-sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'warehouse.db'}"])
    else:
        urls = postgres_schema_url()
    url = next(urls)
    engine = warehouse.connect(url)
    try:
        made = _s3(s3_home, engine)
        made.datadir.ensure(SOURCES)
        yield made
    finally:
        engine.dispose()
        for _ in urls:  # drops the PostgreSQL schema
            pass


def test_a_waiting_file_is_claimed_once(store):
    datadir, drop = store.datadir, store.drop
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
    assert first is not None and Path(first.path).read_bytes() == CONTENT
    assert datadir.claim(waiting) is None  # the second claimer loses
    assert "maxbounty/a.csv" not in {w.relative for w in datadir.scan(SOURCES)}
    assert datadir.not_a_regular_file(first) is None


def test_a_released_file_waits_again_with_its_received_time(store):
    datadir, drop = store.datadir, store.drop
    drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting)
    datadir.release(claimed)
    [again] = datadir.scan(SOURCES)
    reclaimed = datadir.claim(again)
    assert reclaimed.received_at == claimed.received_at
    assert reclaimed.claim_id != claimed.claim_id


def test_a_mode_folders_file_keeps_its_folder_mode_and_received_time_when_released(store):
    datadir, drop = store.datadir, store.drop
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
    datadir, drop = store.datadir, store.drop
    drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting, hand_off=timedelta(hours=1))
    assert datadir.recover() == []  # its lease holds
    taken = datadir.take_over(claimed.claim_id)
    assert taken.relative == "maxbounty/a.csv" and claimed.claim_id in taken.adopted_from
    assert datadir.take_over(claimed.claim_id).claim_id != taken.claim_id  # a retry finds it
    assert datadir.take_over("0" * 32) is None


def test_archived_files_are_listed_for_replays_in_received_order(store):
    datadir, drop = store.datadir, store.drop
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


def test_a_sidecar_without_its_file_is_not_an_archived_copy(store):
    """A kill between the sidecar's write and the file's (the sidecar goes first) leaves the
    sidecar alone; the rerun that files the same claimed bytes away must still archive them,
    not take the sidecar for an earlier copy and drop the original."""
    datadir, drop = store.datadir, store.drop
    drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    target = datadir.file_archived(datadir.claim(waiting), HASH)
    target.unlink()  # what the kill left: the sidecar only
    assert not target.exists()
    drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    again = datadir.file_archived(datadir.claim(waiting), HASH)
    assert str(again) == str(target) and again.read_bytes() == CONTENT
    assert datadir.scan(SOURCES) == []
    [listed] = datadir.archived(date(2000, 1, 1), date(2099, 1, 1), "maxbounty")
    assert listed.content_hash == HASH


def test_a_quarantined_file_leaves_the_inbox_and_is_not_archived(store):
    datadir, drop = store.datadir, store.drop
    drop("nosuch/x.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting)
    target = datadir.file_quarantined(claimed, None, "unknown_offer_source", "why")
    assert target.exists() and not datadir.is_archived(target)
    assert datadir.scan(SOURCES) == []
    assert datadir.archived(date(2000, 1, 1), date(2099, 1, 1)) == []


def test_reports_live_in_the_data_directory(store):
    datadir = store.datadir
    _, summary = report_paths(datadir.reports, RECEIVED, "a.csv", HASH)
    assert str(summary).startswith(str(datadir.reports) + "/2026-03-08/a.cdcdcdcdcdcd.")
    write_summary(summary, {"state": "applied"})
    assert json.loads(summary.read_text(encoding="utf-8")) == {"state": "applied"}
    assert str(datadir.reports).startswith(datadir.location)  # and a location to log


def test_a_dead_workers_claim_is_adopted_once_with_its_received_time(store):
    datadir = store.datadir
    store.drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting)
    assert datadir.recover() == []  # its owner (this process) is alive
    store.owner_dead(claimed)
    [adopted] = datadir.recover()
    assert (adopted.relative, adopted.received_at) == (claimed.relative, claimed.received_at)
    assert adopted.adopted_from == (claimed.claim_id,) and adopted.claim_id != claimed.claim_id
    assert Path(adopted.path).read_bytes() == CONTENT
    assert store.make_another().recover() == []  # adopted once: this process owns it now
    assert datadir.scan(SOURCES) == []
    datadir.file_archived(adopted, HASH)
    assert datadir.recover() == [] and datadir.scan(SOURCES) == []


def test_another_hosts_claim_is_adopted_only_once_its_lease_is_over(store):
    datadir = store.datadir
    store.drop("maxbounty/a.csv")
    [waiting] = datadir.scan(SOURCES)
    claimed = datadir.claim(waiting)
    store.owner_elsewhere(claimed, timedelta(hours=1))  # a live worker elsewhere, mid-file
    assert datadir.recover() == []
    store.owner_elsewhere(claimed, timedelta(hours=7))  # past the 6-hour lease
    [adopted] = datadir.recover()
    assert adopted.relative == "maxbounty/a.csv" and claimed.claim_id in adopted.adopted_from


def test_racing_workers_claim_every_file_exactly_once(store):
    names = [f"maxbounty/f{i:02d}.csv" for i in range(24)]
    for name in names:
        store.drop(name, name.encode() + b"\n")
    workers = [store.make_another() for _ in range(4)]
    start = threading.Barrier(len(workers), timeout=60)
    taken: list[str] = []
    errors: list[BaseException] = []

    def work(datadir: DataDir) -> None:
        try:
            start.wait()
            for _ in range(len(names) + 1):  # bounded: each round takes one file at least
                listed = datadir.scan(SOURCES)
                if not listed:
                    return
                got = [c for c in (datadir.claim(w) for w in listed) if c is not None]
                taken.extend(c.relative for c in got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert Counter(taken) == Counter(names)  # every file once, none twice
