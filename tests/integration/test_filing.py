"""Filing away on real folders (datadir.filing): the archive with its sidecars, the quarantine
with its reasons, and the archive listing replays read."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.core.reasons import CATALOGUE
from pipeline.datadir import claims, filing
from tests.integration.datadir_helpers import HASH, claim_file, read_json, waiting

# --- archive and quarantine ---------------------------------------------------------------


def test_archive_files_the_original_with_a_sidecar(layout):
    # 22:00 in New York on March 8 is March 9 in UTC: the archive uses UTC dates.
    now = datetime(2026, 3, 8, 22, 0, 0, tzinfo=ZoneInfo("America/New_York"))
    claimed = claim_file(layout, "maxbounty/status/b.csv", now=now)

    path = filing.file_archived(layout, claimed, HASH)

    assert path == layout.archive / "2026-03-09/maxbounty/status" / f"{HASH[:16]}_b.csv"
    assert path.read_bytes() == b"click_id,payout\nabc,1.00\n"
    sidecar = read_json(path.with_name(path.name + ".json"))
    archived_at = sidecar.pop("archived_at")
    assert datetime.fromisoformat(archived_at).tzinfo is not None
    assert sidecar == {
        "claim_id": claimed.claim_id,
        "relative": "maxbounty/status/b.csv",
        "offer_source": "maxbounty",
        "kind": "status",
        "received_at": "2026-03-09T02:00:00+00:00",
        "content_hash": HASH,
    }
    assert list(layout.processing.iterdir()) == []  # the claim folder is gone


def test_archiving_the_same_bytes_again_replaces_the_identical_copy(layout):
    now = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    first = filing.file_archived(layout, claim_file(layout, "maxbounty/a.csv", now=now), HASH)
    second = filing.file_archived(layout, claim_file(layout, "maxbounty/a.csv", now=now), HASH)
    assert first == second
    assert sorted(p.name for p in first.parent.iterdir()) == [
        f"{HASH[:16]}_a.csv",
        f"{HASH[:16]}_a.csv.json",
    ]


def test_archive_refuses_files_without_offer_source_and_bad_hashes(layout):
    claimed = claim_file(layout, "root.csv")
    with pytest.raises(ValueError, match="quarantine"):
        filing.file_archived(layout, claimed, HASH)
    claimed = claim_file(layout, "maxbounty/a.csv")
    with pytest.raises(ValueError, match="hex"):
        filing.file_archived(layout, claimed, "../../../tmp/x")
    assert claimed.path.exists()  # nothing moved


def test_archive_shortens_names_too_long_for_the_file_system(layout):
    name = "é" * 120 + ".csv"  # 244 bytes: fine in the inbox, too long with a prefix
    claimed = claim_file(layout, f"maxbounty/{name}")
    path = filing.file_archived(layout, claimed, HASH)
    assert path.suffix == ".csv" and len(os.fsencode(path.name + ".json.12345678.partial")) <= 255
    assert read_json(path.with_name(path.name + ".json"))["relative"] == f"maxbounty/{name}"


def test_quarantine_moves_a_symlink_as_a_link_and_never_touches_its_target(layout, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (layout.inbox / "maxbounty" / "link.csv").symlink_to(secret)
    found = waiting(layout, "maxbounty/link.csv")
    assert found.offer_source is None
    now = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    claimed = claims.claim(layout, found, now=now)
    assert claimed is not None and claimed.path.is_symlink()

    path = filing.file_quarantined(layout, claimed, None, "unknown_offer_source", "a symbolic link")

    assert path == layout.quarantine / "2026-03-08/_unknown" / f"{claimed.claim_id[:16]}_link.csv"
    assert path.is_symlink() and os.readlink(path) == str(secret)
    assert secret.read_text() == "do not read"
    assert not (layout.inbox / "maxbounty" / "link.csv").is_symlink()
    reason = read_json(path.with_name(path.name + ".reason.json"))
    assert reason.pop("quarantined_at")
    assert reason == {
        "code": "unknown_offer_source",
        "message": CATALOGUE["unknown_offer_source"].message,
        "hint": CATALOGUE["unknown_offer_source"].hint,
        "detail": "a symbolic link",
        "relative": "maxbounty/link.csv",
        "offer_source": None,
        "kind": "conversions",
        "claim_id": claimed.claim_id,
        "received_at": "2026-03-08T12:00:00+00:00",
        "content_hash": None,
    }
    assert list(layout.processing.iterdir()) == []


def test_quarantine_of_a_known_offer_source_uses_the_hash(layout):
    now = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    claimed = claim_file(layout, "maxbounty/status/b.csv", now=now)
    path = filing.file_quarantined(layout, claimed, HASH, "missing_required_column", "no click_id")
    assert path == layout.quarantine / "2026-03-08/maxbounty" / f"{HASH[:16]}_b.csv"
    assert read_json(path.with_name(path.name + ".reason.json"))["content_hash"] == HASH
    with pytest.raises(ValueError, match="unknown reason code"):
        filing.file_quarantined(layout, claim_file(layout, "maxbounty/c.csv"), None, "nope", "")


# --- archived ---------------------------------------------------------------------------------


def test_archived_lists_a_date_range_in_received_order(layout):
    def archive(relative: str, when: datetime, content: bytes) -> Path:
        claimed = claim_file(layout, relative, now=when, content=content)
        return filing.file_archived(layout, claimed, content.hex().ljust(64, "0"))

    day = datetime(2026, 3, 8, tzinfo=UTC)
    archive("maxbounty/before.csv", day - timedelta(seconds=1), b"1")
    archive("maxbounty/late.csv", day + timedelta(hours=20), b"2")
    archive("clickbank/early.csv", day + timedelta(hours=1), b"3")
    archive("maxbounty/status/s.csv", day + timedelta(hours=2), b"4")
    archive("maxbounty/data.json", day + timedelta(days=1, hours=23, minutes=59), b"5")
    archive("maxbounty/after.csv", day + timedelta(days=2), b"6")

    found = filing.archived(layout, date(2026, 3, 8), date(2026, 3, 9))
    assert [(a.relative, a.received_at.hour) for a in found] == [
        ("clickbank/early.csv", 1),
        ("maxbounty/status/s.csv", 2),
        ("maxbounty/late.csv", 20),
        ("maxbounty/data.json", 23),  # an uploaded .json is listed once, by its sidecar
    ]
    first = found[0]
    assert first.path.read_bytes() == b"3"
    assert (first.offer_source, first.kind, first.content_hash) == (
        "clickbank",
        "conversions",
        "33".ljust(64, "0"),
    )
    only = filing.archived(layout, date(2026, 3, 8), date(2026, 3, 9), "maxbounty", "status")
    assert [a.relative for a in only] == ["maxbounty/status/s.csv"]
    assert filing.archived(layout, date(2026, 3, 8), date(2026, 3, 9), "clickbank", "status") == []
    assert filing.archived(layout, date(2026, 3, 11), date(2026, 3, 12)) == []
