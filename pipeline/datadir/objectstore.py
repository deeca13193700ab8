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
import time
from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

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


class ObjectStoreDataDir:
    """`DataDir` over a bucket and prefix, its claims in the warehouse of ``engine``."""

    def __init__(self, url: str, engine: Engine, lease: timedelta = DEFAULT_LEASE):
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
        self._spool = Path(tempfile.mkdtemp(prefix="conversions-spool-"))

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

    def ensure(self, offer_sources: Iterable[str] = ()) -> None:
        """Object storage has no folders to make; the offer source names are checked, as
        the local backend checks them."""
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
        return self._staged_or_dropped(row) if row is not None else None

    def recover(self, hand_off: timedelta | None = None) -> list[Claimed]:
        """Adopt the claims whose owner is gone (lease over, or a dead pid on this host)."""
        recovered = []
        for row in claim_rows.stale(self.engine, self.store):
            adopted = claim_rows.adopt(self.engine, row, self.lease, hand_off)
            claimed = self._staged_or_dropped(adopted) if adopted is not None else None
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
        if earlier is None or earlier.get("content_hash") != content_hash:
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

    def _staged_or_dropped(self, row: claim_rows.ClaimRow) -> Claimed | None:
        """The claimed object copied to the spool; None (and the claim dropped) if the object
        is gone or no longer the claimed bytes: it was filed away before a crash, or its
        sender replaced it (the new bytes are another identity, listed by the next scan)."""
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
        try:
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
        return not _PLAIN_MD5.fullmatch(row.etag) or digest.hexdigest() == row.etag

    def _file_away(self, claimed: Claimed, target: str, sidecar: str, record: dict) -> None:
        """Sidecar first, then the object (a server-side copy of exactly the claimed ETag, or
        the spooled bytes when the store refuses that), then out of the inbox."""
        self.fs.pipe_file(sidecar, json_bytes(record))
        row = claim_rows.get(self.engine, claimed.claim_id)
        source = self._key("inbox", claimed.relative)
        try:
            if row is None:
                raise FileNotFoundError(source)
            self.fs.cp_file(source, target, CopySourceIfMatch=f'"{row.etag}"')
        except (OSError, ValueError):  # changed or gone in the inbox: the claimed bytes
            self.fs.put_file(str(claimed.path), target)
        self._leave_inbox(claimed, row)

    def _leave_inbox(self, claimed: Claimed, row: claim_rows.ClaimRow | None = None) -> None:
        """Delete the claimed object from the inbox (never a newer upload under its key),
        then end its claim."""
        row = row or claim_rows.get(self.engine, claimed.claim_id)
        source = self._key("inbox", claimed.relative)
        with contextlib.suppress(FileNotFoundError):
            self.fs.invalidate_cache(source)
            info = self.fs.info(source)
            if row is not None and (_etag(info), int(info["size"])) == (row.etag, row.size):
                self.fs.rm(source)
        claim_rows.drop(self.engine, claimed.claim_id)
        self._unspool(claimed)

    def _read(self, key: str) -> dict | None:
        try:
            data = json.loads(self.fs.cat_file(key))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _unspool(self, claimed: Claimed) -> None:
        shutil.rmtree(self._spool / claimed.claim_id, ignore_errors=True)


def _root(url: str, conn_id: str | None) -> Any:
    """The store's root path: Airflow's ObjectStoragePath when the URL names a connection,
    else universal-pathlib over fsspec, which reads the standard environment."""
    if conn_id:
        from airflow.sdk import ObjectStoragePath  # only where an Airflow connection is named

        return ObjectStoragePath(url)
    from upath import UPath

    return UPath(url)


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
