"""The data directory on a local (or network-mounted) file system: claims are renames."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path

from pipeline.datadir import claims, filing
from pipeline.datadir.claims import Claimed, Waiting
from pipeline.datadir.filing import Archived
from pipeline.datadir.layout import Layout


class LocalDataDir:
    """`DataDir` over one folder; every operation is the function of the same name in
    ``claims`` or ``filing``, bound to this folder's ``Layout``."""

    def __init__(self, home: Path | str | Layout):
        self.layout = home if isinstance(home, Layout) else Layout(Path(home))

    def __repr__(self) -> str:
        return f"LocalDataDir({str(self.layout.home)!r})"

    @property
    def location(self) -> str:
        return str(self.layout.home)

    @property
    def reports(self) -> Path:
        return self.layout.reports

    def ensure(self, offer_sources: Iterable[str] = ()) -> None:
        self.layout.ensure(offer_sources)

    def recover(self, hand_off: timedelta | None = None) -> list[Claimed]:
        return claims.recover(self.layout, hand_off=hand_off)

    def scan(self, offer_sources: Collection[str], settle_seconds: float = 0) -> list[Waiting]:
        return claims.scan(self.layout, offer_sources, settle_seconds)

    def claim(self, waiting: Waiting, hand_off: timedelta | None = None) -> Claimed | None:
        return claims.claim(self.layout, waiting, hand_off=hand_off)

    def take_over(self, claim_id: str) -> Claimed | None:
        return claims.take_over(self.layout, claim_id)

    def release(self, claimed: Claimed, keep_received: bool = True) -> Path:
        return claims.release(self.layout, claimed, keep_received=keep_received)

    def not_a_regular_file(self, claimed: Claimed) -> str | None:
        return claims.not_a_regular_file(claimed.path)

    def file_archived(self, claimed: Claimed, content_hash: str) -> Path:
        return filing.file_archived(self.layout, claimed, content_hash)

    def file_quarantined(
        self, claimed: Claimed, content_hash: str | None, code: str, detail: str
    ) -> Path:
        return filing.file_quarantined(self.layout, claimed, content_hash, code, detail)

    def archived(
        self, start: date, end: date, offer_source: str | None = None, kind: str | None = None
    ) -> list[Archived]:
        return filing.archived(self.layout, start, end, offer_source, kind)

    @contextlib.contextmanager
    def local_copy(self, path: Path) -> Iterator[Path]:
        """A file of a local data directory is local already: the file itself."""
        yield Path(path)

    def is_archived(self, path: Path) -> bool:
        path = Path(path)
        return path.resolve().is_relative_to(self.layout.archive.resolve()) and (
            not path.is_symlink()
        )

    def remove_partials(
        self, claimed: Claimed, content_hash: str | None, max_file_bytes: int
    ) -> None:
        filing.remove_partials(self.layout, claimed, content_hash, max_file_bytes)
