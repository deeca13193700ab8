"""Shared by the claims and filing tests: a sample data directory and files dropped into it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine, select

from pipeline import warehouse
from pipeline.context import Context
from pipeline.core.model import Config
from pipeline.datadir import Claimed, Layout, LocalDataDir, Waiting, claims
from pipeline.datadir.objectstore import ObjectStoreDataDir

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


# --- either data directory: a local folder or a bucket of the moto server --------------------

DATA_DIRECTORIES = ["local", "s3"]


def context_on(
    request: pytest.FixtureRequest, config: Config, engine: Engine, tmp_path: Path
) -> Context:
    """A context on the data directory ``request.param`` names: ``local`` (a folder under
    ``tmp_path``) or ``s3`` (a new bucket of the moto server; the claims rows of ``engine``)."""
    if request.param == "s3":
        home = request.getfixturevalue("s3_home")
        return Context(config, engine, ObjectStoreDataDir(home, engine))
    return Context(config, engine, LocalDataDir(tmp_path / "home"))


def on_s3(ctx: Context) -> bool:
    return isinstance(ctx.datadir, ObjectStoreDataDir)


def put_in_inbox(ctx: Context, relative: str, content: str) -> None:
    """A sender's drop: a file in the inbox folder, or an object under the inbox prefix."""
    if on_s3(ctx):
        bucket, prefix = ctx.datadir.base.split("/", 1)
        boto3.client("s3").put_object(
            Bucket=bucket, Key=f"{prefix}/inbox/{relative}", Body=content.encode()
        )
    else:
        path = ctx.datadir.layout.inbox / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode())


def stored(ctx: Context, folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` of the data directory, read back without the code under
    test (the file system, or boto3), by its path below ``folder``."""
    if not on_s3(ctx):
        base = ctx.datadir.layout.home / folder
        return {
            p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }
    bucket, prefix = ctx.datadir.base.split("/", 1)
    s3 = boto3.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/{folder}/"
    ):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(f"{prefix}/{folder}/") :]] = body
    return found


def read_written(ctx: Context, written: str) -> bytes:
    """A file a run wrote (a report, a summary), by the path or ``s3://`` URL it gave."""
    if written.startswith("s3://"):
        bucket, key = written[len("s3://") :].split("/", 1)
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(written).read_bytes()


def claims_held(ctx: Context) -> int:
    """Claims held now: claim folders in ``processing/``, or rows of ``inbox_claims``."""
    if not on_s3(ctx):
        folder = ctx.datadir.layout.processing
        return len(list(folder.iterdir())) if folder.exists() else 0
    with ctx.engine.connect() as conn:
        return len(conn.execute(select(warehouse.schema.inbox_claims)).all())
