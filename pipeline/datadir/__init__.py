"""The data directory: the inbox, claims, the archive, the quarantine and the reports.

Everything under ``$CONVERSIONS_HOME`` is named by this package and by nothing else:

- ``layout``: the folders and every name in them (day folders, hash prefixes, report and
  partial names), atomic writes, hashing;
- ``claims``: scan the inbox, claim a file, release it, recover a dead worker's claims;
- ``filing``: archive or quarantine a processed file, list the archive, remove leftover partials.

The runner and the Airflow tasks reach it through the ``DataDir`` interface below, so a second
storage backend implements that interface and nothing above it changes. ``LocalDataDir`` is the
local file system's implementation (rename claims); ``objectstore.ObjectStoreDataDir`` is object
storage's (``s3://``: claims are warehouse rows, the claimed bytes are spooled to a local file).
Where a local data directory gives a ``Path`` (``reports``, what filing returns), object
storage gives a universal-pathlib path of the store (``layout.is_remote``), which the report
writers write through. ``objectstore`` is imported only where it is used (runtime), with fsspec.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

from pipeline.datadir.claims import READY_MARKER, Claimed, FileChanged, Waiting
from pipeline.datadir.filing import Archived
from pipeline.datadir.layout import UNHASHED, Layout
from pipeline.datadir.local import LocalDataDir

__all__ = [
    "READY_MARKER",
    "UNHASHED",
    "Archived",
    "Claimed",
    "DataDir",
    "FileChanged",
    "Layout",
    "LocalDataDir",
    "Waiting",
]


class DataDir(Protocol):
    """What a run does with the data directory, whatever stores it."""

    @property
    def location(self) -> str:
        """Where it is, for logs (a path or a URL, never a secret)."""
        ...

    @property
    def reports(self) -> Path:
        """The folder of rejection reports and summaries (on object storage, its UPath)."""
        ...

    def ensure(self, offer_sources: Iterable[str] = ()) -> None:
        """Create what a run needs: the folders, an inbox per offer source."""

    def recover(self, hand_off: timedelta | None = None) -> list[Claimed]:
        """Adopt the claims of workers that died."""
        ...

    def scan(self, offer_sources: Collection[str], settle_seconds: float = 0) -> list[Waiting]:
        """The inbox's waiting files, in a deterministic order.

        ``inbox/<offer_source>/`` holds conversion files, ``.../status/`` status files and
        ``.../<mode>/`` (one of ``vocabulary.MODES``) conversion files applied under that mode
        (``Waiting.mode``, then ``Claimed.mode``); anything else is listed with no offer source,
        for quarantine.

        With ``settle_seconds``, only files that have not changed for that long (a sender may
        write in place); ``claim`` then takes such a file only if it is unchanged since the
        scan. A backend without modification times uses what stands for them (an object's
        size and ETag, and when it was last written).
        """
        ...

    def claim(self, waiting: Waiting, hand_off: timedelta | None = None) -> Claimed | None:
        """Own a waiting file; None if another worker took it first."""
        ...

    def take_over(self, claim_id: str) -> Claimed | None:
        """Adopt a claim handed to this process (an Airflow task), or None if it is gone."""
        ...

    def release(self, claimed: Claimed, keep_received: bool = True) -> Path:
        """Put a claimed file back in the inbox (a failure that will pass), in the folder it
        came from (a mode folder's file keeps its mode)."""
        ...

    def not_a_regular_file(self, claimed: Claimed) -> str | None:
        """Why a claimed entry is never opened (a link, a FIFO), or None."""
        ...

    def file_archived(self, claimed: Claimed, content_hash: str) -> Path:
        """Move a processed file to the archive (its sidecar keeps ``Claimed.mode``)."""
        ...

    def file_quarantined(
        self, claimed: Claimed, content_hash: str | None, code: str, detail: str
    ) -> Path:
        """Move a file rejected as a whole to the quarantine, with its reason."""
        ...

    def archived(
        self, start: date, end: date, offer_source: str | None = None, kind: str | None = None
    ) -> list[Archived]:
        """Archived originals received from ``start`` to ``end``, for replays."""
        ...

    def is_archived(self, path: Path) -> bool:
        """Whether ``path`` is an archived original (a replay reads nothing else)."""
        ...

    def local_copy(self, path: Path) -> AbstractContextManager[Path]:
        """A file of the data directory (an archived original, for a replay) as a local file
        the reader can open and seek: on a disk the file itself; from object storage a copy
        streamed to a spool file, removed when the block ends."""
        ...

    def remove_partials(
        self, claimed: Claimed, content_hash: str | None, max_file_bytes: int
    ) -> None:
        """Remove what a worker killed mid-write left of this file."""
