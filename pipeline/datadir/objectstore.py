"""The data directory on object storage (``s3://bucket/prefix``; ``gs://`` and the other
fsspec stores through the same code): claims are warehouse rows, not renames.

The same folders as on a local disk, as key prefixes: ``inbox/``, ``archive/``,
``quarantine/``, ``reports/``. What differs is the claim. A store has no atomic rename (a move
is a copy and a delete), so a claimed object stays where the sender put it, and who owns it is
a row of the warehouse's ``inbox_claims`` (``pipeline.warehouse.claims``), keyed by the object's
identity: its key, ETag and size. The scan skips objects whose identity is claimed; filing away
copies the object (server side, only if its ETag is still the claimed one) and then deletes it
from the inbox, then drops the row. A new upload under the same key is another identity, so it
is a new file, claimed anew.

The claimed bytes are streamed once to a local spool file (in 8 MiB blocks, never whole in
memory, their MD5 checked against a single-part ETag and their length against the size), and
the reader, the hashing and every re-read work on that copy: the bytes applied are exactly the
claimed object's, even if the sender overwrites the key meanwhile. Reports are written to the
store directly (``layout.AtomicFile`` writes through the path's file system).

Credentials: inside Airflow, a connection id in the URL (``s3://aws_default@bucket/prefix``)
goes through Airflow's ``ObjectStoragePath`` and that connection; without one, fsspec's own
credentials chain reads the standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO or moto, ``AWS_DEFAULT_REGION``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

from pipeline.core.model import ConfigError
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import MODES, NAME_PATTERN
from pipeline.datadir.claims import (
    Claimed,
    Waiting,
    _classify,
    _is_ignored,
    _is_safe_relative,
    _payload_name,
)
from pipeline.datadir.filing import Archived
from pipeline.datadir.layout import (
    PARTIAL,
    UNHASHED,
    check_hash,
    day,
    json_bytes,
    report_prefix,
    sha256_file,
    stored_name,
    stored_prefix,
    utc_seconds,
)
from pipeline.warehouse import claims as claim_rows

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(hours=6)  # as long as the local backend trusts another host's claim
_BLOCK = 8 << 20  # bytes read from the store at a time
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")


class _Heartbeat:
    """Keeps the leases of the claims this process holds alive while it works on them.

    A claim's lease is what tells another host that its owner is gone; a worker on a file
    that takes longer than the lease would otherwise be taken for dead and its file adopted
    and applied a second time (harmlessly, by the ledger's duplicate check, but not without
    work and noise). So while a claim is held, a daemon thread renews its lease every third of
    the lease (``claims.renew``); a frozen or partitioned worker stops renewing, and its claims
    are adopted once the lease runs out. The thread runs only while something is held. A
    renewal that fails (the warehouse away, SQLite's one writer busy) is tried again at the
    next beat; a claim found adopted meanwhile is logged and dropped from the beat.
    """

    def __init__(self, engine: Engine, lease: timedelta):
        self.engine, self.lease = engine, lease
        self.interval = min(max(lease.total_seconds() / 3, 0.1), 600.0)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.lost: set[str] = set()  # claims adopted by another process while held here

    def hold(self, claim_id: str) -> None:
        with self._lock:
            self._held.add(claim_id)
            if self._thread is None:
                # The thread holds the heartbeat weakly: a data directory nobody uses any more
                # (a finished run's, a test's) stops renewing instead of beating forever.
                self._thread = threading.Thread(
                    target=_beat, args=(weakref.ref(self),), name="conversions-lease", daemon=True
                )
                self._thread.start()

    def end(self, claim_id: str) -> None:
        with self._lock:
            self._held.discard(claim_id)

    def beat(self) -> bool:
        """One renewal of everything held; False (and the thread ends) when nothing is."""
        with self._lock:
            ids = set(self._held)
            if not ids:
                self._thread = None
                return False
        try:
            owned = claim_rows.renew(self.engine, ids, self.lease)
        except Exception as exc:  # tried again at the next beat
            log.warning("renewing %d claim lease(s) failed: %s", len(ids), exc)
            return True
        with self._lock:
            gone = (ids - owned) & self._held
            self._held -= gone
            self.lost |= gone
        for claim_id in sorted(gone):
            log.warning("claim %s was adopted by another worker (its lease ran out)", claim_id)
        return True


def _beat(ref: weakref.ref[_Heartbeat]) -> None:
    """The heartbeat's thread: a beat every ``interval`` while the heartbeat lives and holds
    something."""
    while True:
        heartbeat = ref()
        if heartbeat is None:
            return
        interval = heartbeat.interval
        del heartbeat  # not held across the sleep
        time.sleep(interval)
        heartbeat = ref()
        if heartbeat is None or not heartbeat.beat():
            return
        del heartbeat


class ObjectStoreDataDir:
    """`DataDir` over a bucket and prefix, its claims in the warehouse of ``engine``."""

    def __init__(
        self,
        url: str,
        engine: Engine,
        lease: timedelta = DEFAULT_LEASE,
        max_file_bytes: int | None = None,
    ):
        """``max_file_bytes`` (the config's ``settings.max_file_bytes``): a claimed object
        larger than that is never downloaded (see `_staged_or_dropped`)."""
        parts = urlsplit(url)
        if not parts.scheme or not parts.hostname:
            raise ValueError(f"not an object storage URL (scheme://bucket/prefix): {url!r}")
        if parts.password is not None:
            raise ValueError(
                "credentials do not go in the data directory URL: use an Airflow connection "
                "(s3://<conn_id>@bucket/prefix) or the standard AWS environment variables"
            )
        self.url = url.rstrip("/")
        # Who holds a claim must not depend on how a worker spelled the URL: the store is the
        # location without its connection id.
        self.store = f"{parts.scheme}://{parts.hostname}{parts.path}".rstrip("/")
        self.root = _root(self.url, conn_id=parts.username)
        self.fs = self.root.fs
        self.base = f"{parts.hostname}{parts.path}".rstrip("/")
        self.engine = engine
        self.lease = lease
        self.max_file_bytes = max_file_bytes
        self._spool = Path(tempfile.mkdtemp(prefix="conversions-spool-"))
        self._unread: set[str] = set()  # claims whose spool file is a placeholder (too large)
        self._md5: dict[str, str] = {}  # claim id -> the MD5 of its spooled bytes
        self.heartbeat = _Heartbeat(engine, lease)  # renews the leases of what it holds

    def __repr__(self) -> str:
        return f"ObjectStoreDataDir({self.url!r})"

    def close(self) -> None:
        """Remove this process's spool with whatever is left in it. A claim handed to another
        process (Airflow's claim_files to a mapped task) is never filed here, so its copy would
        stay on this machine's disk for good, one per file ever claimed."""
        shutil.rmtree(self._spool, ignore_errors=True)

    @property
    def location(self) -> str:
        return self.url

    @property
    def reports(self) -> Any:
        return self.root / "reports"

    def check_bucket(self) -> None:
        """A ConfigError, naming the URL, when the bucket does not exist or these credentials
        cannot see it: said once at start, not as a failure of every file."""
        bucket = self.base.split("/", 1)[0]
        try:
            found = self.fs.exists(bucket)
        except PermissionError as exc:
            raise ConfigError(
                self.url, "", f"the bucket {bucket!r} cannot be read with these credentials ({exc})"
            ) from None
        if not found:
            raise ConfigError(
                self.url,
                "",
                f"no such bucket {bucket!r} (or these credentials cannot see it): create it, or "
                "correct the bucket in --home, $CONVERSIONS_HOME or the config's home",
            )

    def ensure(self, offer_sources: Iterable[str] = ()) -> None:
        """Object storage has no folders to make: the bucket must exist (`check_bucket`);
        the offer source names are checked, as the local backend checks them."""
        self.check_bucket()
        for name in offer_sources:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"not a valid offer source folder name: {name!r}")

    # --- claims ---------------------------------------------------------------------------

    def scan(self, offer_sources: Collection[str], settle_seconds: float = 0) -> list[Waiting]:
        """The inbox's objects not claimed now, sorted by key (see `DataDir.scan`).

        An object's identity is its (key, ETag, size); with ``settle_seconds`` only objects
        last written that long ago are listed (an object is whole once written, but a sender
        may write a key more than once). Keys no path can hold (``a//b``, ``..``) are logged
        and left where they are: no claim can name them safely.
        """
        known = set(offer_sources)
        inbox = self._key("inbox")
        self.fs.invalidate_cache()
        try:
            listing = self.fs.find(inbox, detail=True)
        except FileNotFoundError:
            listing = {}
        held = claim_rows.held(self.engine, self.store)
        present: set[tuple[str, str, int]] = set()
        found: list[Waiting] = []
        now = time.time()
        for key, info in listing.items():
            if info.get("type", "file") != "file" or not key.startswith(inbox + "/"):
                continue
            relative = key[len(inbox) + 1 :]
            if any(_is_ignored(part) for part in relative.split("/")):
                continue
            if not _is_safe_relative(relative):
                log.warning("inbox object %r has a key no claim can name; left as it is", key)
                continue
            identity = (relative, _etag(info), int(info["size"]))
            present.add(identity)
            if identity in held:
                continue
            if settle_seconds > 0 and _written_at(info) > now - settle_seconds:
                log.debug("%s was written under %ss ago: left waiting", relative, settle_seconds)
                continue
            offer_source, kind, mode = _classify(relative, known)
            found.append(
                Waiting(
                    PurePosixPath(key),  # type: ignore[arg-type]  # a key, never opened
                    relative,
                    offer_source,
                    kind,
                    mode=mode,
                    version=identity[1:],
                )
            )
        claim_rows.forget_returned(self.engine, self.store, present)
        return sorted(found, key=lambda waiting: waiting.relative)

    def claim(self, waiting: Waiting, hand_off: timedelta | None = None) -> Claimed | None:
        if waiting.version is None:
            raise ValueError(f"{waiting.relative}: not listed by an object store's scan")
        row = claim_rows.take(
            self.engine,
            store=self.store,
            object_key=waiting.relative,
            etag=waiting.version[0],
            size=waiting.version[1],
            offer_source=waiting.offer_source,
            kind=waiting.kind,
            mode=waiting.mode,
            received_at=utc_seconds(None),
            lease=self.lease,
            hand_off=hand_off,
        )
        return self._staged_or_dropped(row, fetch=hand_off is None) if row is not None else None

    def recover(self, hand_off: timedelta | None = None) -> list[Claimed]:
        """Adopt the claims whose owner is gone (lease over, or a dead pid on this host)."""
        recovered = []
        for row in claim_rows.stale(self.engine, self.store):
            adopted = claim_rows.adopt(self.engine, row, self.lease, hand_off)
            fetch = hand_off is None
            claimed = self._staged_or_dropped(adopted, fetch) if adopted is not None else None
            if claimed is not None:
                recovered.append(claimed)
        return recovered

    def take_over(self, claim_id: str) -> Claimed | None:
        if not re.fullmatch(r"[0-9a-f]{32}", claim_id):
            raise ValueError(f"not a claim id: {claim_id!r}")
        row = claim_rows.find(self.engine, self.store, claim_id)
        adopted = claim_rows.adopt(self.engine, row, self.lease) if row is not None else None
        return self._staged_or_dropped(adopted) if adopted is not None else None

    def release(self, claimed: Claimed, keep_received: bool = True) -> Any:
        """The object never left the inbox: only the claim ends (see `claims.give_back`)."""
        claim_rows.give_back(self.engine, claimed.claim_id, keep_received)
        self._unspool(claimed)
        return self.root / "inbox" / claimed.relative

    def not_a_regular_file(self, claimed: Claimed) -> str | None:
        return None  # an object is bytes: no links, FIFOs or devices

    # --- filing ---------------------------------------------------------------------------

    def file_archived(self, claimed: Claimed, content_hash: str) -> Any:
        if claimed.offer_source is None:
            raise ValueError(f"{claimed.relative}: no offer source; quarantine it instead")
        check_hash(content_hash)
        folder = self._archive_folder(claimed)
        target = f"{folder}/{stored_name(content_hash, claimed.name, '.json')}"
        earlier = self._read(target + ".json")
        # A sidecar alone is what a kill between its write and the file's leaves: not a copy.
        if (
            earlier is None
            or earlier.get("content_hash") != content_hash
            or not self.fs.exists(target)
        ):
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
            self._file_away(claimed, target, target + ".json", sidecar)
        else:  # the same bytes are archived here already: keep the first copy
            self._leave_inbox(claimed)
        return self._path(target)

    def file_quarantined(
        self, claimed: Claimed, content_hash: str | None, code: str, detail: str
    ) -> Any:
        reason = CATALOGUE.get(code)
        if reason is None:
            raise ValueError(f"unknown reason code {code!r} (see pipeline.core.reasons)")
        if content_hash is not None:
            check_hash(content_hash)
        folder = self._key(
            "quarantine", day(claimed.received_at), claimed.offer_source or "_unknown"
        )
        name = stored_name(content_hash or claimed.claim_id, claimed.name, ".reason.json")
        target = f"{folder}/{name}"
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
        self._file_away(claimed, target, target + ".reason.json", sidecar)
        return self._path(target)

    def archived(
        self, start: date, end: date, offer_source: str | None = None, kind: str | None = None
    ) -> list[Archived]:
        archive = self._key("archive")
        try:
            keys = set(self.fs.find(archive))
        except FileNotFoundError:
            return []
        found = []
        for key in sorted(keys):
            parts = key[len(archive) + 1 :].split("/")
            if len(parts) != 4 or not key.endswith(".json") or key[: -len(".json")] not in keys:
                continue
            try:
                received_day = date.fromisoformat(parts[0])
            except ValueError:
                continue
            if not start <= received_day <= end or (offer_source not in (None, parts[1])):
                continue
            if kind not in (None, parts[2]):
                continue
            record = self._read(key)
            try:
                mode = record.get("mode") if record else None
                if record is None or (mode is not None and mode not in MODES):
                    continue
                found.append(
                    Archived(
                        path=self._path(key[: -len(".json")]),
                        relative=record["relative"],
                        offer_source=record["offer_source"],
                        kind=record["kind"],
                        received_at=datetime.fromisoformat(record["received_at"]),
                        content_hash=record["content_hash"],
                        mode=mode,
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
        return sorted(found, key=lambda a: (a.received_at, a.relative))

    @contextlib.contextmanager
    def local_copy(self, path: Any) -> Iterator[Path]:
        """An object of this store (an archived original, for a replay) as a local file:
        streamed to the spool in blocks (never whole in memory), removed afterwards. The
        reader, the hashing and the re-reads need a file they can open and seek."""
        key = getattr(path, "path", None) or _strip_scheme(str(path))
        local = self._spool / f"copy-{uuid.uuid4().hex}" / PurePosixPath(str(key)).name
        try:
            _stream(self.fs, str(key), local)
            yield local
        finally:
            shutil.rmtree(local.parent, ignore_errors=True)

    def is_archived(self, path: Any) -> bool:
        key = getattr(path, "path", None) or _strip_scheme(str(path))
        return str(key).startswith(self._key("archive") + "/") and ".." not in str(key)

    def remove_partials(
        self, claimed: Claimed, content_hash: str | None, max_file_bytes: int
    ) -> None:
        """Remove the partial objects a worker killed mid-write left of this file (as
        `filing.remove_partials` does on a disk)."""
        reports = self._key("reports", day(claimed.received_at))
        archive = self._archive_folder(claimed)
        quarantine = self._key("quarantine", day(claimed.received_at), str(claimed.offer_source))
        found = []
        for folder in (reports, archive, quarantine):
            with contextlib.suppress(FileNotFoundError):
                found += [
                    (folder, key)
                    for key in self.fs.ls(folder, detail=False, refresh=True)
                    if PARTIAL.fullmatch(key.rsplit("/", 1)[-1])
                ]
        if not found:
            return
        if content_hash is None:
            too_large = claimed.path.stat().st_size > max_file_bytes
            content_hash = UNHASHED if too_large else sha256_file(claimed.path)
        prefixes = {
            reports: report_prefix(claimed.name, content_hash),
            archive: stored_prefix(content_hash),
            quarantine: stored_prefix(content_hash),
        }
        for folder, key in found:
            if key.rsplit("/", 1)[-1].startswith(prefixes[folder]):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(key)

    # --- inside ---------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def _path(self, key: str) -> Any:
        return self.root / key[len(self.base) + 1 :]

    def _archive_folder(self, claimed: Claimed) -> str:
        return self._key(
            "archive", day(claimed.received_at), str(claimed.offer_source), claimed.kind
        )

    def _staged_or_dropped(self, row: claim_rows.ClaimRow, fetch: bool = True) -> Claimed | None:
        """The claimed object copied to the spool; None (and the claim dropped) if the object
        is gone or no longer the claimed bytes: it was filed away before a crash, or its
        sender replaced it (the new bytes are another identity, listed by the next scan).

        ``fetch=False`` (a claim handed off to another process, as Airflow's ``claim_files``
        does): only the identity is checked, nothing is downloaded; the process that takes the
        claim over (`take_over`) downloads it. Downloading it here too fetched every object
        twice, and one task fetched all of a pass's objects before any file could start."""
        claimed = Claimed(
            path=self._spool / row.claim_id / _payload_name(PurePosixPath(row.object_key).name),
            claim_id=row.claim_id,
            relative=row.object_key,
            offer_source=row.offer_source,
            kind=row.kind,
            received_at=utc_seconds(row.received_at),
            adopted_from=row.adopted_from,
            mode=row.mode,
        )
        # Renewed from now on (a big download may outlast the lease too); `_unspool` ends it,
        # whichever way the file goes.
        self.heartbeat.hold(row.claim_id)
        try:
            if not fetch:
                same = self._is_claimed_identity(row)
            elif self.max_file_bytes is not None and row.size > self.max_file_bytes:
                same = self._placeholder(claimed.path, row)
            else:
                same = self._download(self._key("inbox", row.object_key), claimed.path, row)
        except BaseException:
            claim_rows.give_back(self.engine, row.claim_id, keep_received=True)
            self._unspool(claimed)
            raise
        if not same:
            claim_rows.drop(self.engine, row.claim_id)
            self._unspool(claimed)
            return None
        return claimed

    def _placeholder(self, local: Path, row: claim_rows.ClaimRow) -> bool:
        """A sparse local file of the object's size, never a byte of it: a file over
        ``max_file_bytes`` is quarantined unread (``file_too_large``, decided by its size), as
        on a local disk, and filing it away copies the object inside the store. False if the
        object is no longer the claimed identity."""
        if not self._is_claimed_identity(row):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "wb") as out:
            out.truncate(row.size)
        self._unread.add(row.claim_id)
        return True

    def _is_claimed_identity(self, row: claim_rows.ClaimRow) -> bool:
        """Whether the inbox object is still the claimed one (its ETag and size)."""
        try:
            self.fs.invalidate_cache(self._key("inbox", row.object_key))
            info = self.fs.info(self._key("inbox", row.object_key))
        except FileNotFoundError:
            return False
        return (_etag(info), int(info["size"])) == (row.etag, row.size)

    def _download(self, key: str, local: Path, row: claim_rows.ClaimRow) -> bool:
        """Stream the object to ``local``; False if it is not the claimed identity."""
        local.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.md5(usedforsecurity=False), 0
        try:
            with self.fs.open(key, "rb", block_size=_BLOCK, cache_type="none") as src:
                if _etag(getattr(src, "details", {}) or {}) not in ("", row.etag):
                    return False
                with open(local, "wb") as out:
                    for block in iter(lambda: src.read(_BLOCK), b""):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        except FileNotFoundError:
            return False
        if size != row.size:
            return False
        self._md5[row.claim_id] = digest.hexdigest()
        return not _PLAIN_MD5.fullmatch(row.etag) or digest.hexdigest() == row.etag

    def _file_away(self, claimed: Claimed, target: str, sidecar: str, record: dict) -> None:
        """Sidecar first, then the object (a server-side copy of exactly the claimed ETag, or
        the spooled bytes when the store refuses that), then out of the inbox.

        The copy's condition (``x-amz-copy-source-if-match``) is not honoured by every store
        (moto ignores it): a sender's new upload under the key just before the copy would be
        archived under the claimed bytes' hash. So the copy is checked (`_copied_as_claimed`)
        and replaced with the spooled bytes when it is not the claimed object."""
        self.fs.pipe_file(sidecar, json_bytes(record))
        row = claim_rows.get(self.engine, claimed.claim_id)
        source = self._key("inbox", claimed.relative)
        unread = claimed.claim_id in self._unread  # never downloaded: nothing to upload
        try:
            if row is None:
                raise FileNotFoundError(source)
            self.fs.cp_file(source, target, CopySourceIfMatch=f'"{row.etag}"')
            copied = self._copied_as_claimed(target, row, claimed.claim_id)
        except (OSError, ValueError):  # changed or gone in the inbox: the claimed bytes
            copied = False
        if not copied and unread:
            log.warning(
                "%s was replaced in the inbox before it was filed away; its claimed bytes "
                "(over max_file_bytes, never downloaded) are gone: only its record is kept",
                claimed.relative,
            )
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(target)  # whatever a store copied regardless, it is not the file
        elif not copied:
            self.fs.put_file(str(claimed.path), target)
        self._leave_inbox(claimed, row)

    def _copied_as_claimed(self, target: str, row: claim_rows.ClaimRow, claim_id: str) -> bool:
        """Whether the object copied to ``target`` is the claimed one: its size, and its ETag
        the claimed ETag or the MD5 of the spooled bytes (a copy of a multipart upload gets
        a single-part ETag). A placeholder's (never downloaded) multipart ETag cannot be
        checked: the copy condition is trusted there."""
        self.fs.invalidate_cache(target)
        info = self.fs.info(target)
        if int(info["size"]) != row.size:
            return False
        etag = _etag(info)
        if etag == row.etag or etag == self._md5.get(claim_id):
            return True
        return claim_id in self._unread and not _PLAIN_MD5.fullmatch(row.etag)

    def _leave_inbox(self, claimed: Claimed, row: claim_rows.ClaimRow | None = None) -> None:
        """Delete the claimed object from the inbox (never a newer upload under its key),
        then end its claim."""
        row = row or claim_rows.get(self.engine, claimed.claim_id)
        if row is not None:
            self._delete_if_unchanged(self._key("inbox", claimed.relative), row)
        claim_rows.drop(self.engine, claimed.claim_id)
        self._unspool(claimed)

    def _delete_if_unchanged(self, key: str, row: claim_rows.ClaimRow) -> None:
        """Delete ``key`` only if it still holds the claimed bytes (ETag and size).

        A check (HEAD) then a delete leaves a window in which a sender's new upload under the
        same key would be deleted unseen, never claimed: a file lost. So on S3 the delete
        itself is conditional (``If-Match: <ETag>``; 412 when the key holds other bytes now),
        and the store decides atomically. A store that does not take the condition (older
        S3-compatible servers; other fsspec stores) gets the check then the delete, the
        window as narrow as two requests."""
        if hasattr(self.fs, "call_s3"):
            bucket, object_key = key.split("/", 1)
            try:
                self.fs.call_s3(
                    "delete_object", Bucket=bucket, Key=object_key, IfMatch=f'"{row.etag}"'
                )
                self.fs.invalidate_cache(key)
                return
            except FileNotFoundError:  # gone already (filed away before a crash)
                return
            except OSError as exc:
                code = _error_code(exc)
                if code in ("PreconditionFailed", "412"):  # a newer upload: it stays
                    log.info("%s was uploaded again meanwhile: the new object stays", key)
                    return
                if code not in _CONDITION_REFUSED:
                    raise
                log.debug("%s: no conditional delete here (%s): check, then delete", key, code)
        with contextlib.suppress(FileNotFoundError):
            self.fs.invalidate_cache(key)
            info = self.fs.info(key)
            if (_etag(info), int(info["size"])) == (row.etag, row.size):
                self.fs.rm(key)

    def _read(self, key: str) -> dict | None:
        try:
            data = json.loads(self.fs.cat_file(key))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _unspool(self, claimed: Claimed) -> None:
        self.heartbeat.end(claimed.claim_id)
        self._md5.pop(claimed.claim_id, None)
        self._unread.discard(claimed.claim_id)
        shutil.rmtree(self._spool / claimed.claim_id, ignore_errors=True)


def _stream(fs: Any, key: str, local: Path) -> int:
    """Copy the object ``key`` to the file ``local``, ``_BLOCK`` bytes at a time; its size.
    FileNotFoundError if there is no such object."""
    local.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with fs.open(key, "rb", block_size=_BLOCK, cache_type="none") as src, open(local, "wb") as out:
        for block in iter(lambda: src.read(_BLOCK), b""):
            out.write(block)
            size += len(block)
    return size


@contextlib.contextmanager
def spooled(url: str) -> Iterator[Path]:
    """The object at ``url`` (``s3://bucket/key``, credentials from the standard environment,
    or an Airflow connection named in it) as a local temporary file, streamed in blocks and
    removed afterwards: what ``conversions ingest s3://...`` reads, e.g. to replay an
    archived original. FileNotFoundError if there is no such object."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname or parts.password is not None:
        raise ValueError(f"not an object URL without credentials (scheme://bucket/key): {url!r}")
    path = _root(url, conn_id=parts.username)
    folder = Path(tempfile.mkdtemp(prefix="conversions-copy-"))
    try:
        local = folder / (PurePosixPath(parts.path).name or "object")
        _stream(path.fs, path.path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _root(url: str, conn_id: str | None) -> Any:
    """The store's root path: Airflow's ObjectStoragePath when the URL names a connection,
    else universal-pathlib over fsspec, which reads the standard environment."""
    if conn_id:
        from airflow.sdk import ObjectStoragePath  # only where an Airflow connection is named

        return ObjectStoragePath(url)
    from upath import UPath

    return UPath(url)


# What a store that does not implement a conditional DeleteObject answers to ``If-Match``.
_CONDITION_REFUSED = frozenset({"NotImplemented", "InvalidArgument", "InvalidRequest", "501"})


def _error_code(exc: BaseException) -> str:
    """The S3 error code behind an s3fs OSError (s3fs keeps the botocore error as its cause)."""
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code") or "")


def _etag(info: dict) -> str:
    return str(info.get("ETag") or info.get("etag") or info.get("VersionId") or "").strip('"')


def _written_at(info: dict) -> float:
    written = info.get("LastModified") or info.get("mtime") or info.get("updated")
    if isinstance(written, datetime):
        return written.astimezone(UTC).timestamp()
    if isinstance(written, str):
        return datetime.fromisoformat(written.replace("Z", "+00:00")).timestamp()
    return float(written or 0)


def _strip_scheme(text: str) -> str:
    parts = urlsplit(text)
    return f"{parts.hostname}{parts.path}" if parts.scheme else text


def _mode_of(claimed: Claimed) -> dict[str, str]:
    return {"mode": claimed.mode} if claimed.mode is not None else {}
