"""Claims on real folders (datadir.claims): scan, claim (raced by processes), release,
recover and adopt."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.datadir import Claimed, Layout, claims, filing
from tests.integration.datadir_helpers import (
    HASH,
    REPO,
    SOURCES,
    claim_file,
    drop,
    read_json,
    waiting,
)


def edit_claim(claimed: Claimed, **changes) -> None:
    """Make a claim look as if another (dead, remote, old) worker had made it."""
    path = claimed.path.parent / "claim.json"
    path.write_text(json.dumps(read_json(path) | changes))


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(done.stdout)  # the process has exited and was reaped


def python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


# --- layout and scan -----------------------------------------------------------------------


def test_layout_is_absolute_and_ensure_creates_every_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = Layout(Path("var"))
    assert layout.home == tmp_path / "var"
    layout.ensure(["maxbounty"])
    for folder in ("inbox/maxbounty/status", "processing", "archive", "quarantine", "reports"):
        assert (tmp_path / "var" / folder).is_dir()
    with pytest.raises(ValueError):
        layout.ensure(["../escape"])


def test_scan_classifies_every_kind_of_entry(layout, tmp_path):
    for relative in [
        "maxbounty/a.csv",
        "maxbounty/c.txt",  # any extension is read
        "maxbounty/status/b.csv",
        "clickbank/d.csv",
        "root.csv",
        "unknown/x.csv",
        "unknown/status/y.csv",
        "maxbounty/deep/z.csv",
        "maxbounty/status/deeper/w.csv",
        "maxbounty/edit/e.csv",  # a mode folder: conversions under that mode
        "clickbank/increment_payout/i.csv",
        "maxbounty/edt/m.csv",  # a misspelt mode: quarantined, never left waiting
        "maxbounty/edit/deeper/n.csv",
        "unknown/edit/u.csv",
        # skipped: hidden, editor and upload temp files, the ready marker
        "maxbounty/.hidden.csv",
        "maxbounty/~$locked.csv",
        "maxbounty/upload.csv.partial",
        "maxbounty/x.tmp",
        "maxbounty/X.TMP",
        "maxbounty/x.part",
        "maxbounty/x.crdownload",
        "maxbounty/_READY",
        "maxbounty/status/_READY",
        "_READY",
        "maxbounty/.sync/inner.csv",  # inside a hidden folder
    ]:
        drop(layout, relative)
    secret = tmp_path / "secret.csv"
    secret.write_text("not yours")
    (layout.inbox / "maxbounty" / "link.csv").symlink_to(secret)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.csv").write_text("x")
    (layout.inbox / "maxbounty" / "dirlink").symlink_to(outside)
    os.mkfifo(layout.inbox / "clickbank" / "pipe.csv")

    found = claims.scan(layout, SOURCES)

    assert [(w.relative, w.offer_source, w.kind, w.mode) for w in found] == [
        ("clickbank/d.csv", "clickbank", "conversions", None),
        ("clickbank/increment_payout/i.csv", "clickbank", "conversions", "increment_payout"),
        ("clickbank/pipe.csv", None, "conversions", None),  # not a regular file: never opened
        ("maxbounty/a.csv", "maxbounty", "conversions", None),
        ("maxbounty/c.txt", "maxbounty", "conversions", None),
        ("maxbounty/deep/z.csv", None, "conversions", None),
        ("maxbounty/dirlink", None, "conversions", None),  # a link, never descended into
        ("maxbounty/edit/deeper/n.csv", None, "conversions", None),
        ("maxbounty/edit/e.csv", "maxbounty", "conversions", "edit"),
        ("maxbounty/edt/m.csv", None, "conversions", None),
        ("maxbounty/link.csv", None, "conversions", None),
        ("maxbounty/status/b.csv", "maxbounty", "status", None),
        ("maxbounty/status/deeper/w.csv", None, "conversions", None),
        ("root.csv", None, "conversions", None),
        ("unknown/edit/u.csv", None, "conversions", None),
        ("unknown/status/y.csv", None, "status", None),
        ("unknown/x.csv", None, "conversions", None),
    ]
    assert all(w.path == layout.inbox / w.relative for w in found)


def test_a_link_in_a_mode_folder_is_never_opened_nor_given_a_mode(layout, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("not yours")
    (layout.inbox / "maxbounty" / "edit").mkdir()
    (layout.inbox / "maxbounty" / "edit" / "link.csv").symlink_to(secret)
    [found] = claims.scan(layout, SOURCES)
    assert (found.relative, found.offer_source, found.mode) == (
        "maxbounty/edit/link.csv",
        None,
        None,
    )


def test_scan_of_a_missing_inbox_is_empty(tmp_path):
    assert claims.scan(Layout(tmp_path / "nothing"), SOURCES) == []


# --- claim -----------------------------------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    """Give a file the mtime of a delivery made ``seconds`` ago."""
    old = datetime.now().timestamp() - seconds
    os.utime(path, (old, old))


def test_scan_with_settle_lists_a_file_only_once_it_stopped_changing(layout):
    fresh = drop(layout, "maxbounty/fresh.csv")
    old = drop(layout, "maxbounty/old.csv")
    age(old, 10)
    link = layout.inbox / "maxbounty" / "link.csv"
    link.symlink_to(fresh)  # never opened: quarantined at once, settled or not
    assert {w.relative for w in claims.scan(layout, SOURCES, settle_seconds=5)} == {
        "maxbounty/old.csv",
        "maxbounty/link.csv",
    }
    # Without settling (0), and once the fresh file's mtime is 5 s old, it is listed too.
    assert len(claims.scan(layout, SOURCES, settle_seconds=0)) == 3
    later = datetime.now().timestamp() + 5.5
    assert len(claims.scan(layout, SOURCES, settle_seconds=5, now=later)) == 3
    [seen] = [w for w in claims.scan(layout, SOURCES, 5) if w.relative == "maxbounty/old.csv"]
    assert seen.seen == (old.stat().st_size, old.stat().st_mtime_ns)


def test_a_future_mtime_is_judged_by_the_ctime(layout):
    path = drop(layout, "maxbounty/a.csv")
    ahead = datetime.now().timestamp() + 3600  # another host's clock, or a preserved time
    os.utime(path, (ahead, ahead))  # sets the ctime to now
    assert claims.scan(layout, SOURCES, settle_seconds=5) == []
    later = datetime.now().timestamp() + 6
    assert [w.relative for w in claims.scan(layout, SOURCES, 5, now=later)] == ["maxbounty/a.csv"]


def test_claim_leaves_a_file_that_changed_since_the_scan_waiting(layout):
    path = drop(layout, "maxbounty/a.csv")
    age(path, 10)
    [found] = claims.scan(layout, SOURCES, settle_seconds=5)
    with path.open("ab") as sender:  # still writing in place
        sender.write(b"abd,2.00\n")
    age(path, 10)  # even with an old mtime: the size differs from the scan's
    assert claims.claim(layout, found) is None
    assert path.read_bytes() == b"click_id,payout\nabc,1.00\nabd,2.00\n"
    assert list(layout.processing.iterdir()) == []
    [again] = claims.scan(layout, SOURCES, settle_seconds=5)
    claimed = claims.claim(layout, again)
    assert claimed is not None and claimed.path.read_bytes().endswith(b"abd,2.00\n")


def test_claim_moves_the_file_and_records_who_and_when(layout):
    now = datetime(2026, 3, 8, 23, 59, 59, 999_999, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/status/b.csv", now=now)

    assert claimed.path == layout.processing / claimed.claim_id / "b.csv"
    assert claimed.path.read_bytes() == b"click_id,payout\nabc,1.00\n"
    assert not (layout.inbox / "maxbounty/status/b.csv").exists()
    assert (claimed.relative, claimed.offer_source, claimed.kind) == (
        "maxbounty/status/b.csv",
        "maxbounty",
        "status",
    )
    assert claimed.received_at == datetime(2026, 3, 8, 23, 59, 59, tzinfo=UTC)
    assert len(claimed.claim_id) == 32
    record = read_json(claimed.path.parent / "claim.json")
    st = os.lstat(claimed.path)
    assert record == {
        "claim_id": claimed.claim_id,
        "relative": "maxbounty/status/b.csv",
        "offer_source": "maxbounty",
        "kind": "status",
        "received_at": "2026-03-08T23:59:59+00:00",
        "claimed_at": "2026-03-08T23:59:59+00:00",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "file": "b.csv",
        "adopted_from": [],
        "handed_off_until": None,
        # The file's device, inode, size and mtime: kept by the rename into the claim folder.
        "identity": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns],
    }
    assert sorted(p.name for p in claimed.path.parent.iterdir()) == ["b.csv", "claim.json"]


def test_a_claim_from_a_mode_folder_carries_and_records_its_mode(layout):
    now = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/edit/e.csv", now=now)
    assert (claimed.relative, claimed.offer_source, claimed.kind, claimed.mode) == (
        "maxbounty/edit/e.csv",
        "maxbounty",
        "conversions",
        "edit",
    )
    assert claimed.name == "e.csv"
    record = read_json(claimed.path.parent / "claim.json")
    assert (record["relative"], record["mode"]) == ("maxbounty/edit/e.csv", "edit")
    # A plain file's record has no mode at all (as before mode folders existed).
    assert "mode" not in read_json(claim_file(layout, "maxbounty/a.csv").path.parent / "claim.json")


def test_claim_of_a_file_already_taken_returns_none_and_leaves_no_folder(layout):
    drop(layout, "maxbounty/a.csv")
    first = waiting(layout, "maxbounty/a.csv")
    assert claims.claim(layout, first) is not None
    assert claims.claim(layout, first) is None
    assert len(list(layout.processing.iterdir())) == 1


def test_claim_refuses_naive_times(layout):
    drop(layout, "maxbounty/a.csv")
    with pytest.raises(ValueError, match="timezone"):
        claims.claim(layout, waiting(layout, "maxbounty/a.csv"), now=datetime(2026, 1, 1))


def test_a_file_named_claim_json_does_not_replace_the_claim_record(layout):
    claimed = claim_file(layout, "maxbounty/claim.json", content=b"click_id\nx\n")
    assert claimed.path.name == "_claim.json"
    assert claimed.path.read_bytes() == b"click_id\nx\n"
    assert read_json(claimed.path.parent / "claim.json")["relative"] == "maxbounty/claim.json"
    archived = filing.file_archived(layout, claimed, HASH)
    assert archived.name == f"{HASH[:16]}_claim.json"


CLAIM_ALL = """
import json, sys, time
from pathlib import Path
from pipeline.datadir import Layout
from pipeline.datadir.claims import claim, scan
layout, go = Layout(Path(sys.argv[1])), Path(sys.argv[2])
found = scan(layout, {"maxbounty"})
while not go.exists():
    time.sleep(0.001)
print(json.dumps([c.relative for w in found if (c := claim(layout, w)) is not None]))
"""


def test_racing_workers_claim_every_file_exactly_once(layout, tmp_path):
    files = [f"maxbounty/f{i:03}.csv" for i in range(50)]
    for relative in files:
        drop(layout, relative, content=relative.encode())
    go = tmp_path / "go"
    workers = [python(CLAIM_ALL, str(layout.home), str(go)) for _ in range(8)]
    go.touch()
    claimed = [json.loads(w.communicate(timeout=60)[0]) for w in workers]

    assert all(w.returncode == 0 for w in workers)
    everything = [relative for got in claimed for relative in got]
    assert sorted(everything) == files  # each file once, none lost, none twice
    folders = list(layout.processing.iterdir())
    assert len(folders) == 50  # losers left no empty claim folders behind
    for folder in folders:
        record = read_json(folder / "claim.json")
        assert (folder / Path(record["relative"]).name).read_bytes() == record["relative"].encode()
    assert list((layout.inbox / "maxbounty").glob("*.csv")) == []


# --- release ------------------------------------------------------------------------------


def test_release_puts_the_file_back(layout):
    claimed = claim_file(layout, "maxbounty/status/b.csv")
    (layout.inbox / "maxbounty" / "status").rmdir()  # even if its folder went away meanwhile
    assert claims.release(layout, claimed) == layout.inbox / "maxbounty/status/b.csv"
    assert (layout.inbox / "maxbounty/status/b.csv").read_bytes() == b"click_id,payout\nabc,1.00\n"
    assert list(layout.processing.iterdir()) == []
    assert [w.relative for w in claims.scan(layout, SOURCES)] == ["maxbounty/status/b.csv"]


def test_release_puts_a_mode_folders_file_back_in_its_folder_with_its_received_time(layout):
    first = datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/increment_payout/p.csv", now=first)
    (layout.inbox / "maxbounty" / "increment_payout").rmdir()  # even if its folder went away
    back = claims.release(layout, claimed)
    assert back == layout.inbox / "maxbounty/increment_payout/p.csv"
    assert sorted(p.name for p in back.parent.iterdir()) == [".p.csv.received.json", "p.csv"]
    [found] = claims.scan(layout, SOURCES)
    assert (found.relative, found.mode) == ("maxbounty/increment_payout/p.csv", "increment_payout")

    again = claims.claim(layout, found, now=first + timedelta(hours=2))

    assert again is not None
    assert (again.received_at, again.mode, again.relative) == (
        first,
        "increment_payout",
        "maxbounty/increment_payout/p.csv",
    )
    assert list(back.parent.iterdir()) == []  # the hidden record went with the claim


def test_a_mode_folders_file_returned_under_another_name_keeps_folder_and_time(layout):
    first = datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/edit/a.csv", now=first, content=b"old")
    drop(layout, "maxbounty/edit/a.csv", content=b"new")
    back = claims.release(layout, claimed)
    assert back == layout.inbox / f"maxbounty/edit/a.returned-{claimed.claim_id[:8]}.csv"
    old = claims.claim(layout, waiting(layout, back.relative_to(layout.inbox).as_posix()))
    assert old is not None and (old.received_at, old.mode) == (first, "edit")


def test_release_never_overwrites_a_file_dropped_meanwhile(layout):
    claimed = claim_file(layout, "maxbounty/a.csv", content=b"old")
    drop(layout, "maxbounty/a.csv", content=b"new")

    back = claims.release(layout, claimed)

    assert back == layout.inbox / f"maxbounty/a.returned-{claimed.claim_id[:8]}.csv"
    assert back.read_bytes() == b"old"
    assert (layout.inbox / "maxbounty/a.csv").read_bytes() == b"new"
    assert list(layout.processing.iterdir()) == []


def test_a_released_file_keeps_its_received_time_when_claimed_again(layout):
    first = datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/a.csv", now=first)
    claims.release(layout, claimed)
    assert [w.relative for w in claims.scan(layout, SOURCES)] == [
        "maxbounty/a.csv"
    ]  # record hidden

    again = claims.claim(layout, waiting(layout, "maxbounty/a.csv"), now=first + timedelta(hours=2))

    assert again is not None and again.received_at == first
    assert sorted(p.name for p in (layout.inbox / "maxbounty").iterdir()) == ["status"]


def test_a_new_upload_under_a_released_files_name_is_received_anew(layout):
    first, later = datetime(2026, 3, 8, 9, 30, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/a.csv", now=first, content=b"old")
    claims.release(layout, claimed)
    (layout.inbox / "maxbounty/a.csv").unlink()  # the sender withdrew it and sent another
    drop(layout, "maxbounty/a.csv", content=b"new")

    again = claims.claim(layout, waiting(layout, "maxbounty/a.csv"), now=later)

    assert again is not None and again.received_at == later


def test_a_file_returned_under_another_name_keeps_its_received_time(layout):
    first = datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/a.csv", now=first, content=b"old")
    drop(layout, "maxbounty/a.csv", content=b"new")
    back = claims.release(layout, claimed)

    old = claims.claim(layout, waiting(layout, back.relative_to(layout.inbox).as_posix()))
    new = claims.claim(layout, waiting(layout, "maxbounty/a.csv"), now=first + timedelta(days=1))

    assert old is not None and old.received_at == first
    assert new is not None and new.received_at == first + timedelta(days=1)


def test_a_returned_files_record_is_dropped_an_hour_after_its_file_left(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")
    claims.release(layout, claimed)
    (layout.inbox / "maxbounty/a.csv").unlink()
    record = layout.inbox / "maxbounty/.a.csv.received.json"
    claims.scan(layout, SOURCES)
    assert record.exists()  # the file may be on its way back (a release in progress)
    old = datetime.now().timestamp() - 3601
    os.utime(record, (old, old))
    claims.scan(layout, SOURCES)
    assert not record.exists()


# --- recover and adopt ------------------------------------------------------------------------

CLAIM_ONE_AND_DIE = """
import os, sys
from datetime import UTC, datetime
from pathlib import Path
from pipeline.datadir import Layout
from pipeline.datadir.claims import claim, scan
layout = Layout(Path(sys.argv[1]))
got = claim(layout, scan(layout, {"maxbounty"})[0], now=datetime(2026, 3, 8, 9, 30, tzinfo=UTC))
print(got.claim_id, flush=True)
os._exit(1)  # a worker that crashed mid-file
"""


def test_recover_adopts_the_claim_of_a_dead_worker(layout):
    drop(layout, "maxbounty/a.csv")
    worker = python(CLAIM_ONE_AND_DIE, str(layout.home))
    old_id = worker.communicate(timeout=60)[0].strip()
    assert worker.returncode == 1

    [recovered] = claims.recover(layout)

    assert recovered.claim_id != old_id
    assert recovered.adopted_from == (old_id,)  # for work recorded under the old id
    assert not (layout.processing / old_id).exists()
    assert recovered.path == layout.processing / recovered.claim_id / "a.csv"
    assert recovered.path.read_bytes() == b"click_id,payout\nabc,1.00\n"
    assert (recovered.relative, recovered.offer_source, recovered.kind) == (
        "maxbounty/a.csv",
        "maxbounty",
        "conversions",
    )
    assert recovered.received_at == datetime(2026, 3, 8, 9, 30, tzinfo=UTC)  # kept
    record = read_json(recovered.path.parent / "claim.json")
    assert (record["claim_id"], record["pid"], record["host"]) == (
        recovered.claim_id,
        os.getpid(),
        socket.gethostname(),
    )
    assert record["received_at"] == "2026-03-08T09:30:00+00:00"
    assert claims.recover(layout) == []  # now owned by this live process


def test_recover_adopts_a_dead_workers_claim_from_a_mode_folder_with_its_mode(layout):
    drop(layout, "maxbounty/edit/a.csv")
    worker = python(CLAIM_ONE_AND_DIE, str(layout.home))
    old_id = worker.communicate(timeout=60)[0].strip()
    assert worker.returncode == 1

    [recovered] = claims.recover(layout)

    assert recovered.adopted_from == (old_id,)
    assert (recovered.relative, recovered.offer_source, recovered.kind, recovered.mode) == (
        "maxbounty/edit/a.csv",
        "maxbounty",
        "conversions",
        "edit",
    )
    assert recovered.received_at == datetime(2026, 3, 8, 9, 30, tzinfo=UTC)  # kept
    record = read_json(recovered.path.parent / "claim.json")
    assert (record["mode"], record["received_at"]) == ("edit", "2026-03-08T09:30:00+00:00")
    back = claims.release(layout, recovered)  # and put back, it goes to its mode folder
    assert back == layout.inbox / "maxbounty/edit/a.csv"
    again = claims.claim(layout, waiting(layout, "maxbounty/edit/a.csv"))
    assert again is not None and (again.mode, again.received_at) == (
        "edit",
        datetime(2026, 3, 8, 9, 30, tzinfo=UTC),
    )


def test_a_claim_record_with_a_bad_mode_is_not_trusted(layout):
    claimed = claim_file(layout, "maxbounty/edit/a.csv")
    edit_claim(claimed, pid=dead_pid(), mode="overwrite")
    assert claims.recover(layout) == []  # not written by this module: judged by age
    old = (datetime.now(UTC) - timedelta(hours=7)).timestamp()
    os.utime(claimed.path.parent, (old, old))
    [recovered] = claims.recover(layout)
    assert (recovered.offer_source, recovered.mode) == (None, None)  # quarantined, not applied


def test_recover_leaves_claims_of_live_workers_alone(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")  # this test process: alive
    assert claims.recover(layout, stale_after=timedelta(0)) == []
    assert claimed.path.exists()


def test_recover_judges_other_hosts_by_age(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")
    now = datetime.now(UTC)
    edit_claim(claimed, host="elsewhere", pid=1, claimed_at=(now - timedelta(hours=1)).isoformat())
    assert claims.recover(layout, now=now) == []
    edit_claim(claimed, claimed_at=(now - timedelta(hours=7)).isoformat())
    [recovered] = claims.recover(layout, now=now)
    assert recovered.relative == "maxbounty/a.csv"
    assert recovered.received_at == claimed.received_at


CLAIM_AND_HAND_OFF = """
import sys
from datetime import timedelta
from pathlib import Path
from pipeline.datadir import Layout
from pipeline.datadir.claims import claim, scan
layout = Layout(Path(sys.argv[1]))
got = claim(layout, scan(layout, {"maxbounty"})[0], hand_off=timedelta(hours=1))
print(got.claim_id, flush=True)
"""


def test_a_handed_off_claim_waits_for_its_processor_then_is_recovered(layout):
    drop(layout, "maxbounty/a.csv")
    claimer = python(CLAIM_AND_HAND_OFF, str(layout.home))  # exits, as an Airflow task does
    claim_id = claimer.communicate(timeout=60)[0].strip()
    assert claimer.returncode == 0

    assert claims.recover(layout) == []  # its claimer is gone, but the hand-off is running
    in_two_hours = datetime.now(UTC) + timedelta(hours=2)
    [recovered] = claims.recover(layout, now=in_two_hours)  # nobody took it over in time
    assert recovered.adopted_from == (claim_id,)


def test_take_over_adopts_a_handed_off_claim_and_finds_it_again_on_retry(layout):
    drop(layout, "maxbounty/a.csv")
    claimer = python(CLAIM_AND_HAND_OFF, str(layout.home))
    claim_id = claimer.communicate(timeout=60)[0].strip()

    first = claims.take_over(layout, claim_id)
    assert first is not None and first.adopted_from == (claim_id,)
    assert first.path.read_bytes() == b"click_id,payout\nabc,1.00\n"
    record = read_json(first.path.parent / "claim.json")
    assert (record["pid"], record["handed_off_until"]) == (os.getpid(), None)

    retry = claims.take_over(layout, claim_id)  # a retry of the task knows only the first id
    assert retry is not None
    assert retry.adopted_from == (claim_id, first.claim_id)
    assert retry.path.read_bytes() == b"click_id,payout\nabc,1.00\n"
    assert sorted(p.name for p in layout.processing.iterdir()) == [retry.claim_id]


def test_take_over_keeps_a_mode_folders_mode(layout):
    drop(layout, "maxbounty/ignore_by_event_id/a.csv")
    claimer = python(CLAIM_AND_HAND_OFF, str(layout.home))
    claim_id = claimer.communicate(timeout=60)[0].strip()
    taken = claims.take_over(layout, claim_id)
    assert taken is not None
    assert (taken.relative, taken.mode) == (
        "maxbounty/ignore_by_event_id/a.csv",
        "ignore_by_event_id",
    )
    assert read_json(taken.path.parent / "claim.json")["mode"] == "ignore_by_event_id"


def test_take_over_of_a_claim_that_is_gone_is_none(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")
    filing.file_archived(layout, claimed, "ab" * 32)
    assert claims.take_over(layout, claimed.claim_id) is None
    with pytest.raises(ValueError):
        claims.take_over(layout, "../etc")


def test_recover_takes_a_folder_without_readable_claim_once_it_is_old(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")
    (claimed.path.parent / "claim.json").write_text("{ half written")
    assert claims.recover(layout) == []  # too fresh to judge
    old = (datetime.now(UTC) - timedelta(hours=7)).timestamp()
    os.utime(claimed.path.parent, (old, old))

    [recovered] = claims.recover(layout)

    # Where it came from is lost: it comes back as a file of no offer source (to quarantine).
    assert (recovered.relative, recovered.offer_source) == ("a.csv", None)
    assert recovered.path.read_bytes() == b"click_id,payout\nabc,1.00\n"


def test_recover_removes_claim_folders_whose_file_already_moved_on(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")
    edit_claim(claimed, pid=dead_pid())
    os.replace(claimed.path, layout.home / "elsewhere.csv")  # e.g. archived, then a crash
    assert claims.recover(layout) == []
    assert list(layout.processing.iterdir()) == []


def test_adopt_twice_only_the_first_wins(layout):
    claimed = claim_file(layout, "maxbounty/a.csv")
    adopted = claims.adopt(layout, claimed)
    assert adopted is not None and adopted.claim_id != claimed.claim_id
    assert adopted == replace(
        claimed,
        claim_id=adopted.claim_id,
        path=layout.processing / adopted.claim_id / "a.csv",
        adopted_from=(claimed.claim_id,),
    )
    assert claims.adopt(layout, claimed) is None


def test_racing_adopters_each_claim_is_adopted_once(layout):
    stale = [claim_file(layout, f"maxbounty/f{i:02}.csv") for i in range(40)]
    start = threading.Barrier(2)
    won: list[list[Claimed]] = [[], []]

    def adopter(mine: list[Claimed]) -> None:
        start.wait()
        mine.extend(a for c in stale if (a := claims.adopt(layout, c)) is not None)

    threads = [threading.Thread(target=adopter, args=(w,)) for w in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    adopted = won[0] + won[1]
    assert sorted(a.relative for a in adopted) == [c.relative for c in stale]
    assert len(list(layout.processing.iterdir())) == 40
    assert all(a.path.exists() for a in adopted)


def test_claimed_refuses_paths_that_leave_the_inbox(layout):
    with pytest.raises(ValueError):
        Claimed(
            layout.processing / "x", "x", "../etc/passwd", None, "conversions", datetime.now(UTC)
        )
    with pytest.raises(ValueError):
        Claimed(layout.processing / "x", "x", "a.csv", "../up", "conversions", datetime.now(UTC))


def test_claimed_refuses_a_mode_that_is_none_of_the_six_or_on_a_status_file(layout):
    now = datetime.now(UTC)
    folder = layout.processing / "x"
    with pytest.raises(ValueError, match="duplicate mode"):
        Claimed(
            folder / "a.csv",
            "x",
            "maxbounty/a.csv",
            "maxbounty",
            "conversions",
            now,
            mode="overwrite",
        )
    with pytest.raises(ValueError, match="duplicate mode"):
        Claimed(
            folder / "a.csv", "x", "maxbounty/status/a.csv", "maxbounty", "status", now, mode="edit"
        )
    ok = Claimed(
        folder / "a.csv", "x", "maxbounty/edit/a.csv", "maxbounty", "conversions", now, mode="edit"
    )
    assert ok.mode == "edit"
