"""Filing a processed file away: the archive (for replays), the quarantine, and what a killed
writer left behind.

``file_archived`` and ``file_quarantined`` are the actions; ``layout.archive`` and
``layout.quarantine`` the folders; ``archived`` lists the archive for replays. Each file filed
away has a sidecar JSON record beside it, written first, so a filed file always has one. A file
from a mode folder (``inbox/<offer_source>/<mode>/``) keeps its ``mode`` in the sidecar (the key
is there only for such a file), so a replay of the archived original can apply it the same way.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import MODES
from pipeline.datadir.claims import Claimed, remove_claim_folder
from pipeline.datadir.layout import (
    PARTIAL,
    UNHASHED,
    Layout,
    check_hash,
    day,
    read_json,
    report_prefix,
    sha256_file,
    stored_name,
    stored_prefix,
    utc_seconds,
    write_json,
)


@dataclass(frozen=True)
class Archived:
    """A processed original in the archive, as recorded by its sidecar."""

    path: Path
    relative: str
    offer_source: str
    kind: str
    received_at: datetime
    content_hash: str
    mode: str | None = None  # the duplicate mode of the folder it was dropped in, or None


def file_archived(layout: Layout, claimed: Claimed, content_hash: str) -> Path:
    """Move a processed file to ``archive/<date>/<offer_source>/<kind>/<hash16>_<name>``.

    The sidecar ``<that name>.json`` is written first, so an archived file always has one.
    The same bytes archived again under the same name the same day keep the earlier copy and
    its sidecar (the first received time, which a replay reproduces) and drop the identical new
    copy (the ledger records that drop); nothing else ever changes in the archive.
    """
    if claimed.offer_source is None:
        raise ValueError(f"{claimed.relative}: no offer source; quarantine it instead")
    check_hash(content_hash)
    folder = layout.archive_folder(claimed.received_at, claimed.offer_source, claimed.kind)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / stored_name(content_hash, claimed.name, ".json")
    earlier = _read_archive_sidecar(target.with_name(target.name + ".json"))
    # A sidecar alone is what a kill between its write and the file's leaves: not a copy.
    if earlier is not None and earlier.content_hash == content_hash and target.exists():
        os.unlink(claimed.path)  # the same bytes are archived here already
        remove_claim_folder(claimed.path.parent)
        return target
    sidecar = {
        "claim_id": claimed.claim_id,
        "relative": claimed.relative,
        "offer_source": claimed.offer_source,
        "kind": claimed.kind,
        "received_at": claimed.received_at.isoformat(),
        "content_hash": content_hash,
        "archived_at": utc_seconds(None).isoformat(),
        **_mode_of(claimed),
    }
    return _file_away(claimed, target, target.with_name(target.name + ".json"), sidecar)


def file_quarantined(
    layout: Layout, claimed: Claimed, content_hash: str | None, code: str, detail: str
) -> Path:
    """Move a file rejected as a whole to ``quarantine/<date>/<offer_source or _unknown>/``.

    Beside it, ``<name>.reason.json`` says why (the reason code, its message and fix hint, and
    the detail). A symlink is moved as the link itself; its target is never touched.
    """
    reason = CATALOGUE.get(code)
    if reason is None:
        raise ValueError(f"unknown reason code {code!r} (see pipeline.core.reasons)")
    if content_hash is not None:
        check_hash(content_hash)
    folder = layout.quarantine_folder(claimed.received_at, claimed.offer_source)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / stored_name(content_hash or claimed.claim_id, claimed.name, ".reason.json")
    sidecar = {
        "code": code,
        "message": reason.message,
        "hint": reason.hint,
        "detail": detail,
        "relative": claimed.relative,
        "offer_source": claimed.offer_source,
        "kind": claimed.kind,
        "claim_id": claimed.claim_id,
        "received_at": claimed.received_at.isoformat(),
        "content_hash": content_hash,
        "quarantined_at": utc_seconds(None).isoformat(),
        **_mode_of(claimed),
    }
    return _file_away(claimed, target, target.with_name(target.name + ".reason.json"), sidecar)


def archived(
    layout: Layout,
    start: date,
    end: date,
    offer_source: str | None = None,
    kind: str | None = None,
) -> list[Archived]:
    """Archived files received from ``start`` to ``end`` (inclusive, UTC dates), for replays.

    Sorted by (received_at, relative): the order they were first received in.
    """
    found: list[Archived] = []
    for day_folder in _subfolders(layout.archive):
        try:
            day = date.fromisoformat(day_folder.name)
        except ValueError:
            continue
        if not start <= day <= end:
            continue
        for source_folder in _subfolders(day_folder, only=offer_source):
            for kind_folder in _subfolders(source_folder, only=kind):
                with os.scandir(kind_folder) as entries:
                    sidecars = [Path(e.path) for e in entries if e.name.endswith(".json")]
                for sidecar in sidecars:
                    record = _read_archive_sidecar(sidecar)
                    if record is not None:
                        found.append(record)
    return sorted(found, key=lambda a: (a.received_at, a.relative))


def remove_partials(
    layout: Layout, claimed: Claimed, content_hash: str | None, max_file_bytes: int
) -> None:
    """Remove what a worker killed mid-write left of this file: ``<name>.<token>.partial``.

    Reports, summaries and sidecars are written to a partial file and renamed into place; a
    worker killed before the rename leaves the partial behind, beside names derived from the
    file's received day, name and content hash, which the adopted claim keeps. (A live worker
    writing a partial of the same bytes, name and day at this very moment would see its rename
    fail, and that file be retried: the worst a coincidence can do.)
    """
    reports = layout.reports / day(claimed.received_at)
    folders = [
        reports,
        layout.archive_folder(claimed.received_at, str(claimed.offer_source), claimed.kind),
        layout.quarantine_folder(claimed.received_at, str(claimed.offer_source)),
    ]
    found = []
    for folder in folders:
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            found += [
                Path(e.path)
                for e in entries
                if PARTIAL.fullmatch(e.name) and e.is_file(follow_symlinks=False)
            ]
    if not found:  # the usual case: no need to hash the file
        return
    if content_hash is None:  # as ingest named them: a file over the limit is never read
        too_large = claimed.path.stat().st_size > max_file_bytes
        content_hash = UNHASHED if too_large else sha256_file(claimed.path)
    prefixes = {
        reports: report_prefix(claimed.name, content_hash),
        folders[1]: stored_prefix(content_hash),
        folders[2]: stored_prefix(content_hash),
    }
    for path in found:
        if path.name.startswith(prefixes[path.parent]):
            path.unlink(missing_ok=True)


def _mode_of(claimed: Claimed) -> dict[str, str]:
    """The sidecar's ``mode`` entry: only for a file from a mode folder."""
    return {"mode": claimed.mode} if claimed.mode is not None else {}


def _file_away(claimed: Claimed, target: Path, sidecar: Path, record: Mapping[str, Any]) -> Path:
    """Sidecar first, then the file (atomically replacing an identical earlier copy)."""
    write_json(sidecar, record)
    os.replace(claimed.path, target)
    remove_claim_folder(claimed.path.parent)
    return target


def _read_archive_sidecar(sidecar: Path) -> Archived | None:
    """The Archived record of a sidecar, or None for any other .json file (an archived upload
    that happens to end in .json, or a sidecar whose file never arrived)."""
    path = sidecar.with_name(sidecar.name[: -len(".json")])
    record = read_json(sidecar)
    try:
        if record is None or not stat.S_ISREG(path.lstat().st_mode):
            return None
        mode = record.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"not a duplicate mode: {mode!r}")
        return Archived(
            path=path,
            relative=record["relative"],
            offer_source=record["offer_source"],
            kind=record["kind"],
            received_at=datetime.fromisoformat(record["received_at"]),
            content_hash=record["content_hash"],
            mode=mode,
        )
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _subfolders(folder: Path, only: str | None = None) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [
                Path(e.path)
                for e in entries
                if e.is_dir(follow_symlinks=False) and (only is None or e.name == only)
            ]
    except FileNotFoundError:
        return []
