"""Crash safety on an object-storage data directory: a worker SIGKILLed at each step of a
file's way through S3 leaves nothing that a rerun does not finish as one clean run would.

The steps where a kill leaves a distinct state behind, each a real SIGKILL that the child sends
itself at exactly that point (a hook installed in that child only): just after a claim row was
taken (a claim held, nothing applied), after the ledger commit and before filing (applied, still
in the inbox), after the archive copy and before the inbox delete (in both places), after the
inbox delete and before the claim row is dropped (a claim of an object that moved on). The
rerun, in the test's own process on this host, adopts the dead pid's claims at once.

Compared with a clean run of the same inbox in a bucket and warehouse of its own: the conversions,
the ledger (one row per file, state and counts), the archive's and the quarantine's names, the
report names; and nothing left behind: an empty inbox, no claim row, no partial object.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from sqlalchemy import create_engine, select

from pipeline import export, runner, warehouse
from pipeline.cli import main
from pipeline.config import load
from pipeline.context import Context
from pipeline.datadir.objectstore import ObjectStoreDataDir
from tests.helpers import DATA, POSTGRES_URL, REPO, postgres_schema_url

FILES = {
    "maxbounty/a.csv": "click_id,payout,conversion_time\nm1,5.00,2026-07-01 14:00:00\n"
    "m2,x,2026-07-01 15:00:00\n",
    "maxbounty/status/s.csv": "click_id,status\nm1,declined\n",
    "clickbank/c.csv": "click_id,payout,conversion_time\nc1,7.25,2026-07-01 10:00:00\n",
    "clickbank/edit/d.csv": "click_id,payout,conversion_time\nc2,1.50,2026-07-01 11:00:00\n",
    "nosuch/x.csv": "click_id,payout\nz,1\n",
}

# The child: install the kill at one point, then run `conversions inbox` as the CLI does.
CHILD = """
import os, signal, sys
point, nth = sys.argv[1], int(sys.argv[2])
from pipeline.datadir.objectstore import ObjectStoreDataDir
from pipeline.warehouse import claims
calls = [0]
def die_at(owner, name, after=False):
    real = getattr(owner, name)
    def hooked(*args, **kwargs):
        result = real(*args, **kwargs) if after else None
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result if after else real(*args, **kwargs)
    setattr(owner, name, hooked)
if point == "claimed":
    die_at(claims, "take", after=True)
elif point == "committed":
    die_at(ObjectStoreDataDir, "file_archived")
elif point == "copied":
    die_at(ObjectStoreDataDir, "_leave_inbox")
elif point == "deleted":
    die_at(claims, "drop")
from pipeline.cli import main
sys.exit(main(sys.argv[3:]))
"""

# (point, which call of it): the stray file sorts first and is quarantined without a ledger row;
# its summary is written after its filing (`runner._quarantine`), on a local disk too, so a kill
# at its own filing is not one of these points.
POINTS = [("claimed", 2), ("committed", 1), ("copied", 2), ("deleted", 2)]
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
        ),
    ),
]


class Site:
    """A bucket and a warehouse of its own, with the inbox dropped into it."""

    def __init__(self, tmp: Path, warehouse_url: str, endpoint: str):
        self.bucket = f"crash-{uuid.uuid4().hex[:16]}"
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.s3.create_bucket(Bucket=self.bucket)
        self.home = f"s3://{self.bucket}/home"
        self.url = warehouse_url
        self.config = DATA / "sample.toml"
        for relative, text in FILES.items():
            self.s3.put_object(Bucket=self.bucket, Key=f"home/inbox/{relative}", Body=text.encode())
        self.tmp = tmp

    def run(self, point: str | None = None, nth: int = 0) -> int:
        """A pass of `conversions inbox`: killed at ``point`` in a child process, or (the clean
        run, the rerun) in this one, whose pid is not the dead child's."""
        args = ["inbox", "--config", str(self.config), "--home", self.home, "--warehouse", self.url]
        if point is None:
            return main(args)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, point, str(nth), *args],
            cwd=REPO,
            env=os.environ | {"CONVERSIONS_CLAIM_LEASE_SECONDS": "3600"},
            capture_output=True,
            timeout=180,
        )
        return done.returncode

    def keys(self, folder: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"home/{folder}/"
        )
        return sorted(
            item["Key"][len(f"home/{folder}/") :]
            for page in pages
            for item in page.get("Contents", [])
        )

    def state(self) -> dict:
        engine = create_engine(self.url)
        try:
            data = export.frame(engine, load(self.config))
            f = warehouse.ingested_files.c
            with engine.connect() as conn:
                ledger = sorted(
                    conn.execute(
                        select(
                            f.original_name,
                            f.offer_source,
                            f.kind,
                            f.state,
                            f.data_lines,
                            f.inserted,
                            f.rejected,
                            f.content_hash,
                        )
                    ).all()
                )
                claims = conn.execute(select(warehouse.schema.inbox_claims)).all()
        finally:
            engine.dispose()
        reports = [k.split("/", 1)[1] for k in self.keys("reports")]
        return {
            "conversions": sorted(
                (r.offer_source, r.click_id, r.status, r.payout, r.converted_at)
                for r in data.itertuples()
            ),
            "ledger": ledger,
            "archive": [k.split("/", 1)[1] for k in self.keys("archive")],  # its received day aside
            "quarantine": [k.split("/", 1)[1].split("_", 1)[0] for k in self.keys("quarantine")],
            "reports": sorted({name.split(".")[0] for name in reports}),
            "inbox": self.keys("inbox"),
            "claims": len(claims),
            "partials": [
                k
                for f in ("archive", "reports", "quarantine")
                for k in self.keys(f)
                if k.endswith(".partial")
            ],
        }


@pytest.fixture(scope="module")
def references() -> dict[str, dict]:
    """The clean run's state, once per backend (every kill is compared with it)."""
    return {}


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path, moto_endpoint, references) -> Iterator[tuple[str, dict]]:
    """A warehouse URL for the killed run, and the clean run's state on the same backend."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'killed.db'}"])
        clean: Iterator[str] = iter([f"sqlite:///{tmp_path / 'clean.db'}"])
    else:
        urls, clean = postgres_schema_url(), postgres_schema_url()
    if request.param not in references:
        site = Site(tmp_path, next(clean), moto_endpoint)
        assert site.run() == 1  # one file is quarantined (no such offer source)
        state = site.state()
        assert state["inbox"] == [] and state["claims"] == 0
        assert len(state["ledger"]) == len(FILES) - 1  # a stray file gets no ledger row
        references[request.param] = state
    yield next(urls), references[request.param]
    for rest in (clean, urls):  # drops the PostgreSQL schemas
        for _ in rest:
            pass


@pytest.mark.parametrize(("point", "nth"), POINTS, ids=[p for p, _ in POINTS])
def test_a_kill_at_each_step_then_a_rerun_converges_to_the_clean_run(
    point, nth, backend, moto_endpoint, tmp_path
):
    url, reference = backend
    site = Site(tmp_path, url, moto_endpoint)
    assert site.run(point, nth) == -signal.SIGKILL
    left = site.state()
    if point == "claimed":  # claims held, nothing applied
        assert left["claims"] == nth and left["ledger"] == [] and len(left["inbox"]) == len(FILES)
    elif point == "committed":  # a file applied, still in the inbox, its claim held
        assert len(left["ledger"]) >= 1 and left["claims"] >= 1 and len(left["inbox"]) >= 1
    elif point == "copied":  # a file archived and still in the inbox
        assert (
            left["archive"] and len(left["inbox"]) + len(left["quarantine"]) // 2 >= len(FILES) - 1
        )
    else:  # a file out of the inbox, its claim row not dropped yet
        assert left["claims"] >= 1 and len(left["inbox"]) < len(FILES)
    assert site.run() in (0, 1)
    assert site.state() == reference


# --- leases: a live worker keeps its claim, a frozen one loses it ---------------------------------

# A worker whose file takes long: `conversions inbox` with every ingest delayed (in this child
# only) by argv[1] seconds, before the file's transaction opens.
SLOW_CHILD = """
import sys, time
from pipeline import runner
real = runner.ingest_file
def slow(ctx, upload):
    time.sleep(float(sys.argv[1]))
    return real(ctx, upload)
runner.ingest_file = slow
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""
LEASE_S = 1.5


def claim_rows(url: str) -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(warehouse.schema.inbox_claims)).mappings()]
    finally:
        engine.dispose()


def test_a_live_workers_claim_outlasting_its_lease_is_kept_and_a_frozen_ones_adopted(
    backend, moto_endpoint, tmp_path
):
    """A claim held three leases long by a live worker (its file is slow) is never adopted:
    its heartbeat renews the lease. Frozen (SIGSTOP: alive, so its pid says nothing, but
    silent, like a worker on a partitioned host), it stops renewing, and once the lease is over
    the next pass adopts the claim and applies the file, once. Without the renewal the first
    adoption comes after one lease (the test fails: checked by removing the heartbeat)."""
    url, _ = backend
    site = Site(tmp_path, url, moto_endpoint)
    # Only files that reach the (slow) ingest: the stray one would be quarantined at once.
    site.s3.delete_object(Bucket=site.bucket, Key="home/inbox/nosuch/x.csv")
    waiting = len(FILES) - 1
    lease = timedelta(seconds=LEASE_S)
    args = ["inbox", "--config", str(site.config), "--home", site.home, "--warehouse", url]
    worker = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, "30", *args],
        cwd=REPO,
        env=os.environ | {"CONVERSIONS_CLAIM_LEASE_SECONDS": str(LEASE_S)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    engine = warehouse.connect(url)
    try:
        deadline = time.monotonic() + 60
        while len(claim_rows(url)) < waiting:  # it claims everything, then works
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker never claimed the inbox"
            time.sleep(0.1)
        held = {r["claim_id"] for r in claim_rows(url)}
        other = ObjectStoreDataDir(site.home, engine, lease=lease)  # another worker's passes
        until = time.monotonic() + 3 * LEASE_S
        while time.monotonic() < until:  # three leases long: never adopted
            assert other.recover() == []
            time.sleep(0.2)
        rows = claim_rows(url)
        assert {r["claim_id"] for r in rows} == held  # the same claims, the same owner
        assert all(_utc(r["lease_until"]) > datetime.now(UTC) for r in rows)

        os.killpg(worker.pid, signal.SIGSTOP)  # frozen: alive, silent
        time.sleep(LEASE_S + 1)
        adopted = other.recover()
        assert len(adopted) == len(held)
        assert {c.adopted_from[-1] for c in adopted} == held
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        ctx = Context(load(site.config), engine, other)
        results = [runner.process_claimed(ctx, claimed) for claimed in adopted]
        assert [r.state for r in results] == ["applied"] * waiting
        assert claim_rows(url) == [] and site.keys("inbox") == []
        f = warehouse.ingested_files.c
        with engine.connect() as conn:
            states = conn.execute(select(f.state)).scalars().all()
        assert states == ["applied"] * waiting  # each once
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        engine.dispose()


def _utc(value) -> datetime:
    return warehouse.UTCDateTime().process_result_value(value, None)
