"""Shared by the claims and filing tests: a sample data directory and files dropped into it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pipeline.datadir import Claimed, Layout, Waiting, claims

HASH = "ab" * 32
SOURCES = {"maxbounty", "clickbank"}
REPO = Path(__file__).resolve().parents[2]


def drop(layout: Layout, relative: str, content: bytes = b"click_id,payout\nabc,1.00\n") -> Path:
    path = layout.inbox / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def waiting(layout: Layout, relative: str) -> Waiting:
    [found] = [w for w in claims.scan(layout, SOURCES) if w.relative == relative]
    return found


def claim_file(layout: Layout, relative: str, now: datetime | None = None, **kw) -> Claimed:
    drop(layout, relative, **kw)
    claimed = claims.claim(layout, waiting(layout, relative), now=now)
    assert claimed is not None
    return claimed


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
