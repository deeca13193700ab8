"""Every name under the data directory, made here and only here.

The data directory (``$CONVERSIONS_HOME``) holds ``inbox/``, ``processing/``, ``archive/``,
``quarantine/`` and ``reports/``. Crash recovery finds what a killed worker left by these names
(day folders, hash prefixes, partial files), so the functions that make a name are the ones that
recognise it: change a prefix or the partial token here and recovery follows.

Files appear complete or not at all: they are written to ``<name>.<token>.partial`` beside the
final name, fsynced and renamed into place (``write_atomic``, ``AtomicFile``).

Reports may also live on object storage (a data directory at an ``s3://`` URL): a report path is
then a universal-pathlib path (``UPath``, Airflow's ``ObjectStoragePath``) rather than a
``pathlib.Path`` (``is_remote``), and the same functions write it through its fsspec file
system. An object appears whole or not at all when its upload completes, so there a partial is
an object of its own, copied to its final name on commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import IO, Any

from pipeline.core.vocabulary import NAME_PATTERN

# Hash prefixes in names: reports carry 12 hex digits of the content hash, archived and
# quarantined files 16 (two different files of one name and day never share a name).
REPORT_HASH_CHARS = 12
STORED_HASH_CHARS = 16
# "<final name>.<8 hex digits>.partial": the random part keeps two writers of one final name
# apart; recovery matches exactly this shape.
_PARTIAL_TOKEN_BYTES = 4
PARTIAL = re.compile(rf".+\.[0-9a-f]{{{2 * _PARTIAL_TOKEN_BYTES}}}\.partial")
PARTIAL_SUFFIX_LENGTH = len(f".{'0' * 2 * _PARTIAL_TOKEN_BYTES}.partial")
NAME_MAX = 255  # bytes in one file name on the usual Linux file systems
# The ledger's content hash of a file over max_file_bytes, which is never read (so never
# hashed); its result and summary say null. No SHA-256 digest is all zeros.
UNHASHED = "0" * 64

_HEX_DIGEST = re.compile(rf"[0-9a-fA-F]{{{REPORT_HASH_CHARS},}}")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 80
_REPORT_SUFFIX, _SUMMARY_SUFFIX = ".rejected.csv", ".summary.json"
_DUPLICATES_SUFFIX = ".duplicates.csv"


@dataclass(frozen=True)
class Layout:
    """The folders of one data directory (``home`` is made absolute on construction)."""

    home: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).absolute())

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def processing(self) -> Path:
        return self.home / "processing"

    @property
    def archive(self) -> Path:
        return self.home / "archive"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def archive_folder(self, received_at: datetime, offer_source: str, kind: str) -> Path:
        """``archive/<received day>/<offer source>/<kind>/``."""
        return self.archive / day(received_at) / offer_source / kind

    def quarantine_folder(self, received_at: datetime, offer_source: str | None) -> Path:
        """``quarantine/<received day>/<offer source, or _unknown>/``."""
        return self.quarantine / day(received_at) / (offer_source or "_unknown")

    def ensure(self, offer_sources: Iterable[str] = ()) -> None:
        """Create every folder, and an inbox folder (plus ``status/``) per offer source.

        Never through a link, nor over a file, a sender put in the inbox under such a folder's
        name (a link pointing anywhere, dangling or a loop; a file; a FIFO): it is left to
        ``scan``, which lists it for quarantine, and the next run creates the real folder.
        """
        for folder in (self.inbox, self.processing, self.archive, self.quarantine, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
        for name in offer_sources:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"not a valid offer source folder name: {name!r}")
            for folder in (self.inbox / name, self.inbox / name / "status"):
                try:
                    folder.mkdir()
                except FileExistsError:
                    if not stat.S_ISDIR(folder.lstat().st_mode):
                        break


# --- names ---------------------------------------------------------------------------------


def is_remote(path: Any) -> bool:
    """Whether ``path`` is on object storage (a ``UPath`` with its fsspec file system)."""
    return not isinstance(path, PurePath) and hasattr(path, "fs") and hasattr(path, "path")


def is_url(home: object) -> bool:
    """Whether a data directory setting names object storage (``scheme://...``, not a file)."""
    text = str(home)
    return "://" in text and not text.startswith(("file://", "local://"))


def as_path(path: Any) -> Any:
    """``path`` as a path object: an object-storage path as it is, anything else a ``Path``."""
    return path if is_remote(path) else Path(path)


def day(moment: datetime) -> str:
    """The UTC day folder of a received time: ``2026-03-08``."""
    return moment.astimezone(UTC).date().isoformat()


def utc_seconds(moment: datetime | None) -> datetime:
    """``moment`` (default now) in UTC, to the whole second: how received times are kept."""
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0)


def check_hash(content_hash: str) -> None:
    """A hash becomes part of a file name: a hex digest cannot smuggle in a path."""
    if not _HEX_DIGEST.fullmatch(content_hash):
        raise ValueError(f"content_hash must be a hex digest, got {content_hash!r}")


def stored_prefix(content_hash_or_claim_id: str) -> str:
    """The ``<prefix>_`` an archived or quarantined file's name starts with."""
    return f"{content_hash_or_claim_id[:STORED_HASH_CHARS]}_"


def stored_name(prefix_source: str, name: str, sidecar_suffix: str) -> str:
    """``<hash16>_<name>``, its stem shortened if needed so that its sidecar's name (and the
    sidecar's partial file) still fit the 255-byte name limit."""
    stored = stored_prefix(prefix_source) + name
    stem, suffix = os.path.splitext(stored)
    if len(suffix) > 16:
        stem, suffix = stored, ""
    budget = NAME_MAX - len(os.fsencode(sidecar_suffix)) - PARTIAL_SUFFIX_LENGTH
    while len(os.fsencode(stem + suffix)) > budget:
        stem = stem[:-1]
    return stem + suffix


def report_paths(
    reports_dir: Path, received_at: datetime, original_name: str, content_hash: str
) -> tuple[Path, Path]:
    """Where one input file's rejection report and summary go; creates their day folder.

    The name carries the file's own stem, for people, and the content hash prefix, so two
    different files with the same name never overwrite each other's reports.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    check_hash(content_hash)
    folder = as_path(reports_dir) / day(received_at)
    if not is_remote(folder):  # object storage has no folders to make
        folder.mkdir(parents=True, exist_ok=True)
    base = report_prefix(original_name, content_hash)
    return folder / f"{base}{_REPORT_SUFFIX[1:]}", folder / f"{base}{_SUMMARY_SUFFIX[1:]}"


def duplicates_path(report_path: Path) -> Path:
    """The list of a result's ignored duplicates, beside its rejection report:
    ``<stem>.<hash12>[.<tag>].duplicates.csv``. Not a report to fix and drop back in (its rows
    were applied as the mode says), so it is named apart and has no `reason_code` column."""
    name = as_path(report_path).name.removesuffix(_REPORT_SUFFIX)
    return as_path(report_path).with_name(f"{name}{_DUPLICATES_SUFFIX}")


def report_prefix(original_name: str, content_hash: str) -> str:
    """``<safe stem>.<hash12>.``: what every report and summary of these bytes and name
    starts with, whatever result tag follows."""
    return f"{safe_stem(original_name)}.{content_hash[:REPORT_HASH_CHARS].lower()}."


def own_paths(csv_path: Path, json_path: Path, tag: str) -> tuple[Path, Path]:
    """The report and summary names of one more result for the same day, name and bytes.

    ``report_paths`` gives the names of the file's application; a dry run, a quarantine, a
    duplicate drop or a forced re-apply of the same bytes received the same day under the same
    name gets ``<stem>.<hash12>.<tag>.rejected.csv`` / ``.summary.json`` beside them (``tag``
    names the result, e.g. ``dry-run-42``), so it never writes over the applied file's.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", tag):
        raise ValueError(f"not a report tag: {tag!r}")
    return (
        csv_path.with_name(csv_path.name.removesuffix(_REPORT_SUFFIX) + f".{tag}{_REPORT_SUFFIX}"),
        json_path.with_name(
            json_path.name.removesuffix(_SUMMARY_SUFFIX) + f".{tag}{_SUMMARY_SUFFIX}"
        ),
    )


def safe_stem(original_name: str) -> str:
    """A file-name stem safe on any file system and in any shell: never a path, never hidden.

    A rejection report dropped back in (``cb.68312183913d.rejected.csv``) has the stem of the
    file it came from (``cb``), so a report's name does not grow with each round of fixing."""
    name = original_name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem = Path(name).stem if name not in ("", ".", "..") else ""
    origin = report_origin(name)
    if origin is not None:
        stem = origin[0]
    stem = _UNSAFE_NAME_CHARS.sub("_", stem).lstrip(".-")[:_MAX_STEM]
    return stem or "file"


_REPORT_NAME = re.compile(
    rf"(?P<stem>.+)\.(?P<hash>[0-9a-f]{{{REPORT_HASH_CHARS}}})(?:\.[A-Za-z0-9_-]+)?\.rejected"
)


def report_origin(name: str) -> tuple[str, str] | None:
    """(stem, hash prefix) of the file a rejection report's name says it came from, or None
    when ``name`` is not named like one of our reports (``<stem>.<hash12>[.<tag>].rejected.*``)."""
    match = _REPORT_NAME.fullmatch(Path(name).stem)
    return (match["stem"], match["hash"]) if match else None


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (see ``PARTIAL``)."""
    return path.with_name(f"{path.name}.{secrets.token_hex(_PARTIAL_TOKEN_BYTES)}.partial")


# --- bytes ---------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The content hash of a file, read in 1 MiB blocks (never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class AtomicFile:
    """A new text file that appears under its final name complete, or not at all.

    Written to a partial file beside ``path``; ``commit`` fsyncs and renames it into place (or
    to another name in the same folder); ``discard`` drops it. Never through a symlink, never
    over an existing partial.
    """

    def __init__(self, path: Path, encoding: str = "utf-8"):
        self.path = as_path(path)
        self._partial = partial_path(self.path)
        if is_remote(self.path):  # an object: invisible until its upload completes on close
            self._file = self._partial.fs.open(
                self._partial.path, "w", encoding=encoding, newline=""
            )
            return
        fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        # Open for as long as the writer writes; closed by commit or discard.
        self._file: IO[str] | None = open(fd, "w", encoding=encoding, newline="")  # noqa: SIM115

    @property
    def file(self) -> IO[str]:
        if self._file is None:
            raise ValueError(f"{self.path}: already committed or discarded")
        return self._file

    def commit(self, path: Path | None = None) -> Path:
        """Make the file visible under its final name (or ``path``, in the same folder)."""
        if path is not None:
            if as_path(path).parent != self.path.parent:
                raise ValueError(f"{path}: a file is committed in the folder it was written in")
            self.path = as_path(path)
        file, self._file = self.file, None
        if is_remote(self.path):
            file.close()  # the partial object is complete; a server-side copy names it
            self.path.fs.mv(self._partial.path, self.path.path)
            return self.path
        with file:
            file.flush()
            os.fsync(file.fileno())
        os.replace(self._partial, self.path)
        return self.path

    def discard(self) -> None:
        """Drop the unfinished file. Safe to call more than once."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()
        if is_remote(self._partial):
            with contextlib.suppress(FileNotFoundError):
                self._partial.fs.rm(self._partial.path)
            return
        self._partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a partial file beside it, fsync, rename over it.

    An object is written with one PUT, which is whole or nothing already."""
    if is_remote(path):
        path.fs.pipe_file(path.path, data)
        return
    partial = partial_path(path)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def json_bytes(data: Mapping[str, Any], default: Callable[[Any], Any] | None = None) -> bytes:
    """Pretty JSON as UTF-8, or ASCII-escaped when a value holds a name that was not UTF-8 on
    disk (a lone surrogate), so the file stays valid JSON either way."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=default) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(data, indent=2, default=default) + "\n").encode("ascii")


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON record atomically."""
    write_atomic(path, json_bytes(data))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None if it is missing, unreadable or not an object."""
    try:
        # Only a regular file: a FIFO dropped under a record's name would block the open.
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
                return None
            data = json.loads(file.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
