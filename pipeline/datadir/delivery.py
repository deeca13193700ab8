"""Files the page receives: staged for a Check first, then delivered into the inbox.

The page plays a sender, and keeps the sender contract (README "Senders"): an upload is
written under a temporary name (``layout.partial_path``), fsynced and only then given its
final name, so the inbox never shows half a file; the final name is taken with a hard link,
which fails when a file of that name is already waiting instead of replacing it. Then the
``_READY`` marker wakes the file-drop DAG.

A checked upload waits in ``page/<token>.csv`` (``STAGING``) until the person applies it, so
Apply sends exactly the bytes the Check first read. Uploaded names never become paths: the
name a person's browser sends is reduced to one safe file name (``inbox_name``), and a token is
32 hex digits or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.vocabulary import KINDS, MODES, NAME_PATTERN
from pipeline.datadir.claims import READY_MARKER
from pipeline.datadir.layout import Layout, partial_path

STAGING = "page"  # the data directory's folder of uploads checked but not yet applied
_TOKEN = re.compile(r"[0-9a-f]{32}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 200
_CHUNK = 1 << 20


class TooLarge(ValueError):
    """An upload passed ``max_file_bytes``; nothing of it is kept."""

    def __init__(self, limit: int):
        super().__init__(
            f"the file is larger than the limit of {limit:,} bytes (settings.max_file_bytes); "
            "nothing was kept: split it into smaller files"
        )
        self.limit = limit


class NameTaken(FileExistsError):
    """A file of this name is already waiting in that inbox folder."""


@dataclass(frozen=True)
class Staged:
    """An upload on disk: where, how big, and its content hash (the ledger's)."""

    token: str
    path: Path
    size: int
    content_hash: str


def inbox_name(original: str) -> str:
    """The name an uploaded file gets in the inbox: the last part of what the browser sent, with
    every character outside ``A-Za-z0-9._-`` replaced by ``_``, never hidden, ending in
    ``.csv``. Raises ValueError for a name that is not a CSV file's."""
    name = original.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = _UNSAFE.sub("_", name).lstrip(".-")
    if not name.lower().endswith(".csv") or len(name) <= len(".csv"):
        raise ValueError(f"{original!r} is not a .csv file: save the sheet as CSV and pick it")
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 4] + ".csv"
    return name


def inbox_folder(layout: Layout, offer_source: str, kind: str, mode: str | None) -> Path:
    """``inbox/<offer_source>/``, its ``status/`` or a mode folder ``<mode>/``."""
    if not NAME_PATTERN.match(offer_source):
        raise ValueError(f"not a valid offer source name: {offer_source!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
    if mode is not None and (mode not in MODES or kind != "conversions"):
        raise ValueError(f"not a duplicate mode of a conversion file: {mode!r}")
    folder = layout.inbox / offer_source
    if kind == "status":
        return folder / "status"
    return folder / mode if mode else folder


def _staging(layout: Layout) -> Path:
    folder = layout.home / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stage(layout: Layout, chunks: Iterable[bytes], max_bytes: int) -> Staged:
    """Write an upload's chunks to the staging folder under a temporary name, counting and
    hashing them; past ``max_bytes`` the partial file is removed and `TooLarge` raised."""
    token = secrets.token_hex(16)
    final = _staging(layout) / f"{token}.csv"
    digest = hashlib.sha256()
    _write_new(final, chunks, max_bytes, digest)
    return Staged(token, final, final.stat().st_size, digest.hexdigest())


def staged(layout: Layout, token: str) -> Path | None:
    """The staged upload of ``token``, or None (unknown, gone, or not a token at all)."""
    if not _TOKEN.fullmatch(token or ""):
        return None
    path = layout.home / STAGING / f"{token}.csv"
    return path if path.is_file() and not path.is_symlink() else None


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def deliver(layout: Layout, chunks: Iterable[bytes], folder: Path, name: str) -> Path:
    """Write ``chunks`` into ``folder`` (an ``inbox_folder``) as ``name``: temporary name,
    fsync, then a no-clobber link to the final name; then the ready marker. Raises `NameTaken`
    when a file of that name is already waiting (nothing is written then)."""
    if not folder.resolve().is_relative_to(layout.inbox.resolve()) or "/" in name:
        raise ValueError(f"not an inbox folder and name: {folder}/{name}")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    if final.exists():
        raise NameTaken(f"a file named {name} is already waiting in the inbox")
    partial = partial_path(final)
    _write_new(partial, chunks, None, None, rename=False)
    try:
        os.link(partial, final, follow_symlinks=False)
    except FileExistsError:
        raise NameTaken(f"a file named {name} is already waiting in the inbox") from None
    finally:
        discard(partial)
    _fsync_folder(folder)
    (layout.inbox / READY_MARKER).touch()
    return final


def file_chunks(path: Path) -> Iterable[bytes]:
    """A file's bytes in 1 MiB blocks (never whole)."""
    with open(path, "rb") as source:
        while block := source.read(_CHUNK):
            yield block


def _write_new(
    target: Path,
    chunks: Iterable[bytes],
    max_bytes: int | None,
    digest: Any,
    rename: bool = True,
) -> None:
    """Write to a temporary name beside ``target`` and rename it there (``rename``), or write
    ``target`` itself as the temporary file (the caller links it into place)."""
    partial = partial_path(target) if rename else target
    size = 0
    try:
        with open(partial, "xb") as out:
            for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLarge(max_bytes)
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if rename:
            os.replace(partial, target)
    except BaseException:
        discard(partial)
        raise


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
