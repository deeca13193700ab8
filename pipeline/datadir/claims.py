"""Claims: find waiting files in the inbox, claim them, give them back, recover dead workers'.

A file travels ``inbox/ -> processing/<claim_id>/ -> archive/`` (or ``quarantine/``, or back to
the inbox when processing failed for a reason that will pass). Each step is one rename inside the
data directory, so a file is always in exactly one place, and of two workers renaming the same
file exactly one succeeds: the other gets FileNotFoundError. That is the whole locking scheme;
there is no lock file to go stale.

A claim folder holds ``claim.json`` (who claimed the file, when, from where) beside the file, so a
worker that died mid-file leaves enough behind for ``recover`` to hand the file to another one.

Symlinks are never followed: a link in the inbox could point anywhere (``/etc/passwd``, another
customer's folder). They are moved as links, to quarantine, and never opened.

A file in a mode folder, ``inbox/<offer_source>/<mode>/`` (``mode`` one of the six duplicate
modes, ``vocabulary.MODES``), is a conversion file applied under that mode: its ``Waiting`` and
``Claimed`` carry ``mode``, claim.json records it (so recovery and ``take_over`` keep it), and
``release`` puts the file back into the same folder (``relative`` names it).

A sender may write a file in place, under its final name, instead of renaming a temp file into
the inbox: such a file is claimed only once it has settled (``scan``'s ``settle_seconds``), and a
file that still changed after it was read raises ``FileChanged`` before its transaction commits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.core.vocabulary import KINDS, MODES, NAME_PATTERN
from pipeline.datadir.layout import Layout, read_json, utc_seconds, write_json

CLAIM_FILE = "claim.json"
READY_MARKER = "_READY"
# Names of files still being written by an uploader, browser, editor or sync tool.
_TEMP_SUFFIXES = (".partial", ".tmp", ".part", ".crdownload")
_RECEIVED_SUFFIX = ".received.json"  # ".<name>.received.json": a returned file's record

log = logging.getLogger(__name__)


class FileChanged(OSError):
    """A file's bytes changed after they were read: a sender is still writing it in place.

    Raised before the file's transaction commits, so nothing of it is applied; an OSError
    because, like a full disk, it passes: the runner puts the file back in the inbox with its
    received time, and a later pass takes it once it has settled.
    """

    def __init__(self, name: str):
        super().__init__(
            f"{name} changed while it was read (a sender still writing it?); nothing of it was "
            "applied, and it will be taken again once it has settled"
        )


@dataclass(frozen=True)
class Waiting:
    """A file in the inbox, not yet claimed."""

    path: Path
    relative: str  # inbox-relative, posix style: "maxbounty/status/a.csv"
    offer_source: str | None  # None: not in a configured offer source folder (quarantine it)
    kind: str  # "conversions" or "status"
    # (size, mtime_ns) as the scan saw them, when it checked that the file had settled: the
    # claim takes the file only if they are still the same.
    seen: tuple[int, int] | None = None
    # The duplicate mode of its folder (``inbox/<offer_source>/<mode>/``), or None.
    mode: str | None = None
    # On object storage: the object's (ETag, size), which with its key is the identity a
    # claim holds (``objectstore``); None on a local disk.
    version: tuple[str, int] | None = None


@dataclass(frozen=True)
class Claimed:
    """A file this process owns, inside its claim folder ``processing/<claim_id>/``."""

    path: Path
    claim_id: str
    relative: str
    offer_source: str | None
    kind: str
    received_at: datetime  # UTC, whole seconds; the first claim's time, kept across recovery
    # Earlier claim ids of this file, oldest first, when it was adopted after a crash: work
    # recorded under an old id (e.g. in the warehouse ledger) still belongs to this file.
    adopted_from: tuple[str, ...] = ()
    # The duplicate mode of the folder it was dropped in (``inbox/<offer_source>/<mode>/``),
    # applied as the file's mode override; None for a file directly in its offer source's
    # folder (the configured modes) and for status files, which take no mode.
    mode: str | None = None

    def __post_init__(self) -> None:
        # These fields become folder names in archive/ and quarantine/, and may come back from
        # a claim.json on disk: refuse anything that could point outside the data directory.
        if not _is_safe_relative(self.relative):
            raise ValueError(f"not a safe inbox-relative path: {self.relative!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r} (expected one of: {', '.join(KINDS)})")
        if self.offer_source is not None and not NAME_PATTERN.match(self.offer_source):
            raise ValueError(f"not a valid offer source name: {self.offer_source!r}")
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        if self.mode is not None and (self.mode not in MODES or self.kind != "conversions"):
            raise ValueError(
                f"not a duplicate mode of a conversion file: {self.mode!r} ({self.kind}; "
                f"modes: {', '.join(MODES)})"
            )

    @property
    def name(self) -> str:
        """The file's name as the user dropped it."""
        return PurePosixPath(self.relative).name


def scan(
    layout: Layout,
    offer_sources: Collection[str],
    settle_seconds: float = 0,
    now: float | None = None,
) -> list[Waiting]:
    """List the inbox's waiting files, sorted by relative path (a deterministic order).

    Files directly in ``inbox/<offer_source>/`` are conversions, in ``.../status/`` status
    updates, in ``.../<mode>/`` (one of the six duplicate modes) conversions applied under that
    mode (``Waiting.mode``). Anything else that is not a temporary file (see ``_is_ignored``)
    is listed with ``offer_source=None`` so it gets quarantined rather than silently left
    behind: a file at the inbox root or in an unknown or nested folder (a misspelt mode folder
    such as ``edt/`` included: quarantined, never left waiting), and every symlink or other
    non-regular file.

    With ``settle_seconds`` a regular file is listed only once it has not changed for that long
    (see ``_settled``): a sender writing it in place is not done, and half a file would be
    applied as if it were whole. A file still changing is not an error: it is left waiting,
    listed by a later scan. ``now`` is a POSIX time (default: the clock).
    """
    known = set(offer_sources)
    now = time.time() if now is None else now
    found: list[Waiting] = []
    folders = [layout.inbox]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except FileNotFoundError:
            continue
        names = {entry.name for entry in entries}
        for entry in entries:
            if _is_ignored(entry.name):
                _drop_orphan_record(entry, names)
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                folders.append(path)
                continue
            relative = path.relative_to(layout.inbox).as_posix()
            offer_source, kind, mode = _classify(relative, known)
            seen = None
            if not entry.is_file(follow_symlinks=False):  # symlink, FIFO, socket: never opened
                offer_source, mode = None, None
            elif settle_seconds > 0:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # claimed meanwhile by another worker
                    continue
                if not _settled(st, settle_seconds, now):
                    log.debug("%s is still changing: left waiting until it settles", relative)
                    continue
                seen = (st.st_size, st.st_mtime_ns)
            found.append(Waiting(path, relative, offer_source, kind, seen=seen, mode=mode))
    return sorted(found, key=lambda waiting: waiting.relative)


def _settled(st: os.stat_result, settle_seconds: float, now: float) -> bool:
    """Whether a file has not changed for ``settle_seconds``: its mtime is that old.

    Every write moves the mtime to the clock; a sender's tool may also set an old one on
    purpose (``cp -p``, ``rsync -t``, a delivery "made earlier"), which is when it is done. An
    mtime in the future (another host's clock, a preserved future time) says nothing about the
    last write, so there the ctime decides, which the kernel always sets from its own clock.
    """
    cutoff = now - settle_seconds
    if st.st_mtime <= cutoff:
        return True
    return st.st_mtime > now and st.st_ctime <= cutoff


def claim(
    layout: Layout,
    waiting: Waiting,
    now: datetime | None = None,
    hand_off: timedelta | None = None,
) -> Claimed | None:
    """Move a waiting file into a new claim folder; None if another worker took it first.

    claim.json is written before the file moves in, so a claim folder holding a file always says
    where that file came from. ``hand_off`` is for a claimer that passes the file to another
    process (an Airflow task claims, mapped tasks process): for that long the claim is not
    recovered even though its claimer has exited, giving the processor time to ``take_over``.

    A file the scan saw settle (``waiting.seen``) is taken only if its size and mtime are still
    the ones the scan saw; otherwise it is still being written, and it is left waiting (None).
    """
    if waiting.seen is not None:
        try:
            st = waiting.path.lstat()
        except FileNotFoundError:
            return None  # another worker claimed it
        if (st.st_size, st.st_mtime_ns) != waiting.seen:
            log.debug("%s changed since the scan: left waiting", waiting.relative)
            return None
    received_at = _returned_received_at(waiting.path) or utc_seconds(now)
    claim_id = uuid.uuid4().hex
    folder = layout.processing / claim_id
    folder.mkdir(parents=True)
    claimed = Claimed(
        path=folder / _payload_name(waiting.path.name),
        claim_id=claim_id,
        relative=waiting.relative,
        offer_source=waiting.offer_source,
        kind=waiting.kind,
        received_at=received_at,
        mode=waiting.mode,
    )
    try:
        _write_claim(claimed, received_at, hand_off, file_at=waiting.path)
        os.rename(waiting.path, claimed.path)
    except FileNotFoundError:  # the file is gone: another worker claimed it
        remove_claim_folder(folder)
        return None
    except BaseException:
        if not os.path.lexists(claimed.path):
            remove_claim_folder(folder)
        raise
    with contextlib.suppress(OSError):  # a name too long to have a record
        _returned_record(waiting.path).unlink(missing_ok=True)
    return claimed


def release(layout: Layout, claimed: Claimed, keep_received: bool = True) -> Path:
    """Put a claimed file back where it was in the inbox (processing failed, try again later).

    Where it was includes its folder: a file from a mode folder goes back into that folder, so
    the next claim applies it under the same mode.

    Never overwrites: if a file of that name was dropped meanwhile, this one comes back as
    ``<stem>.returned-<claim_id[:8]><suffix>``. Returns the inbox path.

    With ``keep_received`` the file keeps its received time: a hidden record beside it (see
    ``_remember_received``) gives the next claim this claim's time, so a retry after a transient
    failure gives the result of a run that never failed (empty conversion times are the
    received time). A dry run's claim was only a look, so it passes False.
    """
    target = _inbox_path(layout, claimed.relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    if keep_received:
        _remember_received(claimed, target, spare=claimed.path.parent / CLAIM_FILE)
    if not _move_no_clobber(claimed.path, target):
        first = target
        target = target.with_name(f"{target.stem}.returned-{claimed.claim_id[:8]}{target.suffix}")
        if keep_received:
            _remember_received(claimed, target, spare=_returned_record(first))
        if not _move_no_clobber(claimed.path, target):
            raise FileExistsError(errno.EEXIST, "cannot release, name taken", str(target))
    remove_claim_folder(claimed.path.parent)
    return target


def recover(
    layout: Layout,
    stale_after: timedelta = timedelta(hours=6),
    now: datetime | None = None,
    hand_off: timedelta | None = None,
) -> list[Claimed]:
    """Adopt the claims of workers that died, so their files can be processed again.

    A claim's owner is gone when it ran on this host and its pid is no longer alive, or, for
    other hosts (whose pids we cannot check), when it was claimed longer than ``stale_after``
    ago. A claim folder without a readable claim.json is taken once it is ``stale_after`` old;
    its file comes back with ``offer_source=None``, since where it came from is unknown.
    Claim folders whose file already moved on (a crash after archiving), and folders holding
    neither a claim.json nor a file (a claimer killed before writing either), are removed.
    """
    now = utc_seconds(now)
    recovered: list[Claimed] = []
    for folder in _claim_folders(layout):
        stale = _stale_claim(folder, stale_after, now)
        adopted = adopt(layout, stale, hand_off) if stale is not None else None
        if adopted is None:
            continue
        if os.path.lexists(adopted.path):
            recovered.append(adopted)
        else:
            remove_claim_folder(adopted.path.parent)
    return recovered


def adopt(layout: Layout, claimed: Claimed, hand_off: timedelta | None = None) -> Claimed | None:
    """Take over a stale claim: rename its folder to a new claim id, then record the new owner.

    Renaming a directory is atomic, so of two recoverers exactly one wins; the other gets None.
    ``hand_off`` as in ``claim``.
    """
    new_id = uuid.uuid4().hex
    try:
        os.rename(layout.processing / claimed.claim_id, layout.processing / new_id)
    except FileNotFoundError:
        return None
    adopted = replace(
        claimed,
        claim_id=new_id,
        path=layout.processing / new_id / claimed.path.name,
        adopted_from=(*claimed.adopted_from, claimed.claim_id),
    )
    _write_claim(adopted, utc_seconds(None), hand_off, file_at=adopted.path)
    return adopted


def take_over(layout: Layout, claim_id: str) -> Claimed | None:
    """Adopt the claim ``claim_id`` handed to this process, or its latest adoption.

    A task that was given a claim (see ``claim``'s ``hand_off``) takes it over before working on
    it, so that from then on the claim is judged by this process's pid. A retry of that task
    finds the claim under the id its previous try adopted it as (``adopted_from`` records the
    lineage). None when the claim is gone: another run recovered and finished it, which is not
    an error, since nothing is processed twice.
    """
    if not re.fullmatch(r"[0-9a-f]{32}", claim_id):
        raise ValueError(f"not a claim id: {claim_id!r}")
    for folder in _claim_folders(layout):
        record = read_json(folder / CLAIM_FILE) or {}
        lineage = record.get("adopted_from") if isinstance(record, dict) else None
        if folder.name != claim_id and claim_id not in (lineage or []):
            continue
        claimed = _recorded_claim(folder, record)
        if claimed is not None:
            return adopt(layout, claimed)
    return None


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` is never opened (a link, a FIFO...), or None for a regular file.

    Checked on the claimed entry itself (lstat): the scan saw a regular file, but a sender may
    have put a link or a FIFO under its name before the claim's rename.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None  # gone: ingesting it fails as for any vanished file
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link; links in the inbox are never followed"
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}
    what = kinds.get(stat.S_IFMT(mode), "a device")
    return f"not a regular file ({what}); it is never opened"


def _is_ignored(name: str) -> bool:
    """Hidden and editor temp files, files still being uploaded, and the ready marker."""
    return (
        name.startswith((".", "~$"))
        or name.lower().endswith(_TEMP_SUFFIXES)
        or name == READY_MARKER
    )


def _classify(relative: str, known: set[str]) -> tuple[str | None, str, str | None]:
    """(offer source, kind, mode) of an inbox-relative path; offer source None: quarantine."""
    parts = relative.split("/")
    if len(parts) == 2 and parts[0] in known:
        return parts[0], "conversions", None
    if len(parts) == 3 and parts[0] in known and parts[1] == "status":
        return parts[0], "status", None
    if len(parts) == 3 and parts[0] in known and parts[1] in MODES:
        return parts[0], "conversions", parts[1]
    return None, "status" if parts[-2:-1] == ["status"] else "conversions", None


def _is_safe_relative(relative: str) -> bool:
    """Relative, posix, and without ``..``: it cannot point outside the inbox."""
    return all(part not in ("", ".", "..") for part in relative.split("/"))


def _inbox_path(layout: Layout, relative: str) -> Path:
    return layout.inbox.joinpath(*relative.split("/"))


def _payload_name(name: str) -> str:
    """The file's name in its claim folder: its own, unless that would replace claim.json."""
    return f"_{name}" if name.lower() == CLAIM_FILE else name


def _move_no_clobber(source: Path, target: Path) -> bool:
    """Move ``source`` to ``target`` unless ``target`` exists; False if it does.

    A hard link fails if the name exists, with no window in which a check and a rename could
    race against a new upload of the same name. ``follow_symlinks=False`` links a symlink itself.
    """
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return False
    os.unlink(source)
    return True


def _returned_record(path: Path) -> Path:
    """Where ``release`` records a returned file's received time: hidden, so never scanned."""
    return path.with_name(f".{path.name}{_RECEIVED_SUFFIX}")


def _identity(st: os.stat_result) -> list[int]:
    # Kept by rename and link (ctime is not); a new upload under the name has another inode.
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _drop_orphan_record(entry: os.DirEntry, names: Collection[str]) -> None:
    """Remove a returned file's record an hour after its file left the inbox without a claim."""
    name = entry.name
    if not (name.startswith(".") and name.endswith(_RECEIVED_SUFFIX)):
        return
    if name[1 : -len(_RECEIVED_SUFFIX)] in names:
        return
    try:
        if time.time() - entry.stat(follow_symlinks=False).st_mtime > 3600:
            os.unlink(entry.path)
    except OSError:
        pass


def _remember_received(claimed: Claimed, target: Path, spare: Path) -> None:
    """Record the received time of a file going back to ``target`` in the inbox.

    When no new file can be written (a full disk: the very failure that sends many files back)
    ``spare``, a record already on disk holding this claim's received time and the file's
    identity (its claim.json), is renamed into place instead: a rename needs no free space.
    Best effort beyond that: without a record the file is simply received again.
    """
    record = _returned_record(target)
    try:
        identity = _identity(claimed.path.lstat())
        write_json(record, {"received_at": claimed.received_at.isoformat(), "file": identity})
        return
    except OSError:  # a full disk, or a name too long for a leading dot and a suffix
        pass
    with contextlib.suppress(OSError):
        os.replace(spare, record)


def _returned_received_at(path: Path) -> datetime | None:
    """The received time ``release`` recorded for exactly this file (same inode, size, mtime)."""
    record = read_json(_returned_record(path))
    try:
        # A record `release` wrote says "file"; a claim.json renamed into place says "identity".
        recorded = record.get("identity", record.get("file")) if record else None
        if recorded != _identity(path.lstat()):
            return None
        received = datetime.fromisoformat(record["received_at"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return utc_seconds(received) if received.tzinfo is not None else None


def _claim_folders(layout: Layout) -> list[Path]:
    try:
        with os.scandir(layout.processing) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def _write_claim(
    claimed: Claimed, claimed_at: datetime, hand_off: timedelta | None, file_at: Path
) -> None:
    """Record the claim; ``file_at`` is where the file is now (its identity is kept too, so
    that ``release`` can turn this record into the returned file's without writing a byte)."""
    until = None if hand_off is None else (claimed_at + hand_off).isoformat()
    try:
        identity = _identity(file_at.lstat())
    except OSError:  # gone: a claim whose file already moved on
        identity = None
    mode = {"mode": claimed.mode} if claimed.mode is not None else {}  # only a mode folder's
    write_json(
        claimed.path.parent / CLAIM_FILE,
        {
            "claim_id": claimed.claim_id,
            "relative": claimed.relative,
            "offer_source": claimed.offer_source,
            "kind": claimed.kind,
            "received_at": claimed.received_at.isoformat(),
            "claimed_at": claimed_at.isoformat(),  # the current owner's; staleness counts from it
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "file": claimed.path.name,
            "adopted_from": list(claimed.adopted_from),
            "handed_off_until": until,  # not recovered before then, though its claimer exited
            "identity": identity,  # the file's, as `_identity` gives it
            **mode,
        },
    )


def _stale_claim(folder: Path, stale_after: timedelta, now: datetime) -> Claimed | None:
    """The claim in ``folder`` if its owner is gone, else None."""
    record = read_json(folder / CLAIM_FILE)
    claimed = _recorded_claim(folder, record) if record is not None else None
    if claimed is None:
        return _unrecorded_claim(folder, stale_after, now)
    host, pid = str(record["host"]), int(record["pid"])
    if record.get("handed_off_until") and now < datetime.fromisoformat(record["handed_off_until"]):
        return None
    if host == socket.gethostname():
        return None if _pid_alive(pid) else claimed
    return claimed if now - datetime.fromisoformat(record["claimed_at"]) >= stale_after else None


def _recorded_claim(folder: Path, record: Mapping[str, Any]) -> Claimed | None:
    """The claim a claim.json describes, or None if it was not written by this module."""
    try:
        file, adopted_from = record["file"], record.get("adopted_from", [])
        if file in (CLAIM_FILE, ".", "..") or "/" in file or not isinstance(adopted_from, list):
            raise ValueError("claim.json was not written by this module")
        lineage = tuple(map(str, adopted_from))
        recorded_id = record.get("claim_id")
        if (
            isinstance(recorded_id, str)
            and re.fullmatch(r"[0-9a-f]{32}", recorded_id)
            and recorded_id not in (folder.name, *lineage)
        ):
            # adopt renames the folder before it rewrites claim.json: an adopter killed in
            # between left the previous owner's record, whose id the ledger may hold.
            lineage = (*lineage, recorded_id)
        claimed = Claimed(
            path=folder / file,
            claim_id=folder.name,  # the folder name is the truth: adopt renames it first
            relative=record["relative"],
            offer_source=record["offer_source"],
            kind=record["kind"],
            received_at=datetime.fromisoformat(record["received_at"]),
            adopted_from=lineage,
            mode=record.get("mode"),
        )
        pid, claimed_at = int(record["pid"]), datetime.fromisoformat(record["claimed_at"])
        until = record.get("handed_off_until")
        if pid <= 0 or claimed_at.tzinfo is None or not isinstance(until, str | None):
            raise ValueError("bad pid, claimed_at or handed_off_until")
        if until is not None and datetime.fromisoformat(until).tzinfo is None:
            raise ValueError("handed_off_until without an offset")
        str(record["host"])
    except (KeyError, TypeError, ValueError):
        return None
    return claimed


def _unrecorded_claim(folder: Path, stale_after: timedelta, now: datetime) -> Claimed | None:
    """A claim folder without a usable claim.json: judged by age, its file's origin unknown."""
    try:
        changed = datetime.fromtimestamp(folder.lstat().st_mtime, UTC).replace(microsecond=0)
        entries = os.listdir(folder)
    except FileNotFoundError:  # another recoverer got there first
        return None
    names = sorted(n for n in entries if n != CLAIM_FILE and not n.endswith(".partial"))
    if not names and CLAIM_FILE not in entries:
        _remove_empty_claim_folder(folder, entries)
        return None
    if now - changed < stale_after:
        return None
    if not names:
        remove_claim_folder(folder)
        return None
    return Claimed(folder / names[0], folder.name, names[0], None, "conversions", changed)


def _remove_empty_claim_folder(folder: Path, entries: Iterable[str]) -> None:
    """Remove a claim folder that never got its claim.json nor its file: its claimer died first.

    Safe at once, whatever its age: a claimer still at work there finds its folder or its
    claim.json partial gone, and its ``claim`` returns None with the file still waiting in the
    inbox (as when another worker took it). Only partials are unlinked and rmdir fails if
    anything else arrived meanwhile, so a claim completed meanwhile is left alone.
    """
    with contextlib.suppress(OSError):
        for name in entries:
            if name.startswith(CLAIM_FILE) and name.endswith(".partial"):
                (folder / name).unlink(missing_ok=True)
        folder.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_claim_folder(folder: Path) -> None:
    """Remove a claim folder with its claim.json (and any leftover claim.json partial).

    Never a user's file: if one is still inside, rmdir fails loudly instead.
    """
    try:
        for name in os.listdir(folder):
            if name == CLAIM_FILE or (name.startswith(CLAIM_FILE) and name.endswith(".partial")):
                (folder / name).unlink(missing_ok=True)
        folder.rmdir()
    except FileNotFoundError:  # already gone (another recoverer, or adopt renamed it)
        pass
