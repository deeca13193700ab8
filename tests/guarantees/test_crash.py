"""Crash safety (DOMAIN.md §9): after a kill at any moment, a rerun converges to one clean run.

A file is applied in one transaction together with its ledger row, so a worker killed at any
point leaves the warehouse with all of that file's effects or none; the next `conversions inbox`
adopts the dead worker's claims (keeping their received time) and finishes the job. What is
compared with a clean reference run of the same inbox, on each backend:

- the warehouse: `conversions export` of every offer source, which file and line created each
  conversion, the whole change history and the rejected rows (ids and timestamps aside);
- the ledger: one row per file, with its state, counts per outcome, content hash and report
  paths; the received time of a file claimed before the kill is that claim's (recovery keeps
  it), and a file never claimed is received by the rerun;
- the archive and the quarantine (names, bytes, sidecars), the reports (one rejection report and
  one summary per applied file, byte for byte apart from timings), and nothing left behind: an
  empty inbox, no claim folder, no ``.partial`` file anywhere.

How the kills are made. The clean reference run is the real CLI, `python -m pipeline inbox
--config ... --home ... --warehouse URL`, a fresh process. The runs that are killed, and the
reruns, are the same `pipeline.cli.main(["inbox", ...])` in children forked from a fork server
that did the imports once (a second per run saved, and a kill's delay lands in the work rather
than in the imports): each child is a real process in a session and process group of its own,
killed with a real SIGKILL and reaped at once (a zombie would look alive to recovery).

``test_a_kill_at_a_random_moment_...`` kills a run after a random delay spread over the clean
run's duration (seeded: the seed is in every failure message, and ``CONVERSIONS_CRASH_SEED=<n>``
replays it); every fourth kill kills the rerun too. Which phase a kill landed in is read from
what it left behind (claim folders, committed ledger rows, reports and partial files, the
archive); reading/staging and merging run in one open transaction that leaves nothing on disk to
tell them apart, so those two are told apart by the kill's moment against the clean run's own
timings. Some windows are a millisecond wide (between the commit and the archive move, inside a
report's or sidecar's rename, between making a claim folder and writing its claim.json, inside
recovery itself), which no timer hits reliably: ``test_a_kill_at_each_narrow_window_...`` makes
the child SIGKILL itself at exactly those points (a hook around ``os.replace``/``os.mkdir`` or an
inbox function, installed in that child only), and checks that its leftovers read as the phase
meant (every phase but reading/staging and merging, every time). The kill is a real SIGKILL
either way; only its moment is chosen. CONVERSIONS_SOAK=1 runs 20 random kills per backend on a
bigger file and asserts that they hit reading/staging and merging.

The fork server, the kills and the comparison with the clean run are `harness.py`'s; this file
holds the inbox, the phases and the tests.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.guarantees.harness import (
    DATA_DIRECTORIES,
    SEED,
    Dropped,
    ForkServer,
    Kill,
    Leftovers,
    Site,
    State,
    check_converged,
    fork_killed,
    generate,
    leftovers,
    run_clean,
    state_of,
)
from tests.helpers import SAMPLE_CONFIG, SOAK, soak_or

# Several batches and merge chunks per file, so a kill lands between them as well as inside.
CONFIG = SAMPLE_CONFIG.replace("[settings]\n", "[settings]\nbatch_size = 5000\n", 1)
PHASES = (
    "startup",  # before any file was claimed: importing, connecting, upgrading the schema
    "claiming",  # a claim folder without its file yet, or files still waiting beside claims
    "reading+staging",  # a claimed file's transaction is open, before the merge
    "merging",  # the same transaction, merging the staged rows
    "reports written",  # the file's report and summary are final, its transaction not committed
    "committed",  # the ledger row is committed, the file still in its claim folder
    "archiving",  # the archive (or quarantine) holds part of the file's move
    "finished",  # the run ended before the kill
)


# --- the inbox ---------------------------------------------------------------------------------


def generated(rows: int, seed: int) -> bytes:
    """benchmarks/generate.py's upload, its empty times filled in.

    An empty time is the file's received time, which differs between the clean run and a
    crashed one by construction; everything else in the file is as generated.
    """
    raw = generate.HEADER.encode() + b"\n" + b"".join(generate.csv_chunks(rows, seed))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(io.StringIO(raw.decode(), newline="")):
        if len(row) > 2 and row[2] == "":
            row[2] = "2026-10-01 12:00:00"
        writer.writerow(row)
    return out.getvalue().encode()


CLICKBANK = (
    b"click_id,payout,conversion_time,status\n"
    b"c1,7.25,2026-07-01 10:00:00,\n"
    b"c2,3.00,2026-07-01 11:00:00,pending\n"
    b"c1,8.00,2026-07-01 12:00:00,approved\n"  # edit mode: updates c1
    b"c3,x,2026-07-01 10:00:00,\n"  # invalid_payout
)


def inbox_files(rows: int, seed: int = 11) -> list[Dropped]:
    """What a sender drops, in the order a run processes it (per offer source, conversion files
    by name, then status files): another offer source's small file (edit mode, an update and a
    rejection) and the same bytes under another name (a duplicate_file), the generated upload,
    a file quarantined as a whole, and status updates for conversions of the upload (plus one
    that matches nothing, rejected by the merge)."""
    keys = generate.plan(rows, seed).keys[:300]
    clicks = generate.click_ids(keys).to_pylist()
    types = generate.TYPES[generate.conversion_types(keys)]
    statuses = ["declined", "pending", "approved"]
    status_lines = [
        f"{c},{statuses[i % 3]},{t}" for i, (c, t) in enumerate(zip(clicks, types, strict=True))
    ]
    return [
        Dropped("clickbank/cb.csv", CLICKBANK),
        Dropped("clickbank/cb2.csv", CLICKBANK),  # the same bytes again: a duplicate_file
        Dropped("maxbounty/big.csv", generated(rows, seed)),
        Dropped("maxbounty/broken.csv", b"payout,conversion_time\n1.00,2026-07-01 10:00:00\n"),
        Dropped(
            "maxbounty/status/st.csv",
            ("click_id,status,conversion_type\n" + "\n".join(status_lines) + "\n").encode()
            + b"no-such-click,declined,\n",
        ),
    ]


@pytest.fixture(scope="module")
def fork_server(
    tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str
) -> Iterator[ForkServer]:
    """Started after the moto server: its children inherit the AWS environment pointing at it."""
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield server
    server.close()


def phase_of(site: Site, left: Leftovers, elapsed: float, merge_starts: dict[str, float]) -> str:
    """Which phase the kill landed in, read from what it left behind (see the module doc).

    A run claims every waiting file, then processes them one by one in order, so the first file
    (in processing order) that is not filed away yet is the one the kill interrupted.
    """
    if not left.claims and all(d.relative in left.inbox for d in site.files):
        return "startup"
    if any(record is None for record in left.claims.values()):
        return "claiming"  # a claim folder without its claim.json yet
    recorded = {(r["offer_source"], r["kind"], r["original_name"]) for r in left.ledger}
    filed_areas = [f for f in left.files if f.split("/")[0] in ("archive", "quarantine")]
    for d in site.files:
        stored = f"{d.sha256[:16]}_{d.name}"
        filed = any(f.endswith("/" + stored) for f in filed_areas)
        filing = any(f"/{stored}." in f for f in filed_areas)  # its sidecar, final or partial
        named_by_claim = d.relative in left.received
        if d.relative in left.inbox:
            return "claiming"  # waiting while other files are claimed already
        if filed:
            if named_by_claim:
                return "archiving"  # filed away, its claim folder not removed yet
            continue  # done
        if d.relative not in left.claimed:
            return "claiming"  # claim.json written, the file not moved in yet
        if (d.offer_source, d.kind, d.name) in recorded:
            return "archiving" if filing else "committed"
        stem = f"{Path(d.name).stem}.{d.sha256[:12]}."
        final = [f for f in left.files if f.startswith("reports/") and stem in f]
        if any(f.endswith((".summary.json", ".rejected.csv")) for f in final):
            return "reports written"
        return "merging" if elapsed >= merge_starts.get(d.relative, 1e9) else "reading+staging"
    return "finished"


def s3_phase_of(site: Site, left: Leftovers) -> str:
    """The phase of a kill on S3, from what it left (coarser than `phase_of`: a claim is a
    row, and the object stays in the inbox until it is filed away)."""
    if not left.claims and not left.ledger and len(left.inbox) == len(site.files):
        return "startup"
    if not left.ledger and len(left.inbox) == len(site.files):
        return "claiming"
    if not left.claims and not left.inbox:
        return "finished"
    filed = any(f.startswith(("archive/", "quarantine/")) for f in left.files)
    return "archiving" if filed else "processing"


def merge_starts(site: Site, started_wall: float) -> dict[str, float]:
    """When each file's merge began in the clean run, in seconds from the run's start."""
    starts: dict[str, float] = {}
    if site.s3:  # only `phase_of` reads them, and only on a local disk
        return starts
    for d in site.files:
        stem = f"{Path(d.name).stem}.{d.sha256[:12]}.summary.json"
        for path in (site.home / "reports").rglob(stem):
            timings = json.loads(path.read_text(encoding="utf-8")).get("timings", {})
            if "merge_s" in timings:
                starts[d.relative] = path.stat().st_mtime - started_wall - timings["merge_s"]
    return starts


# --- the tests ---------------------------------------------------------------------------------


@dataclass
class Reference:
    state: State
    duration: float
    merge_starts: dict[str, float]


def clean_reference(site: Site) -> Reference:
    site.reset()
    wall = time.time()
    duration, _ = run_clean(site, "the clean reference run")
    ref = state_of(site)
    states = Counter(r["state"] for r in ref.parts["ledger"])
    assert states == {"applied": 3, "duplicate_file": 1, "quarantined": 1}, ref.parts["ledger"]
    assert ref.parts["left behind"] == [], ref.parts["left behind"]
    assert len(ref.parts["quarantine"]) == 2, ref.parts["quarantine"]  # the file and its reason
    # A rejection report for each applied file (each has rejected rows), a summary for each file.
    names = Counter(k.rsplit(".", 2)[-2] for k in ref.parts["reports"])
    # big.csv ignores repeated click ids (mode ignore): its duplicates are listed too.
    assert names == {"rejected": 3, "summary": 5, "duplicates": 1}, sorted(ref.parts["reports"])
    return Reference(ref, duration, merge_starts(site, wall))


def crash(site: Site, reference: Reference, kill: Kill) -> Kill:
    kill.at_kill = leftovers(site)
    if kill.finished:
        kill.phase = "finished"
    elif site.s3:
        kill.phase = s3_phase_of(site, kill.at_kill)
    else:
        kill.phase = phase_of(site, kill.at_kill, kill.elapsed, reference.merge_starts)
    return kill


def delays(rng: random.Random, count: int, duration: float) -> Iterator[float]:
    """``count`` delays spread over [0, duration]: one drawn in each equal slice, shuffled."""
    slices = [duration * (i + rng.random()) / count for i in range(count)]
    rng.shuffle(slices)
    yield from slices


@pytest.fixture(params=DATA_DIRECTORIES)
def s3(request) -> str | None:
    """The data directory: None, a local folder; else the moto endpoint (a bucket per run)."""
    return request.getfixturevalue("moto_endpoint") if request.param == "s3" else None


@pytest.mark.slow
def test_a_kill_at_a_random_moment_then_a_rerun_converges_to_the_clean_run(
    warehouse_url: str, tmp_path: Path, fork_server: ForkServer, s3: str | None
) -> None:
    """On S3 too (a smaller upload, 6,000 rows: every S3 call is a round trip to moto on a
    shared machine); the claims are rows there, on SQLite as on PostgreSQL (one worker)."""
    rows = soak_or(6_000 if s3 else 12_000, 40_000)
    site = Site(tmp_path / "site", warehouse_url, inbox_files(rows), CONFIG, s3=s3)
    reference = clean_reference(site)
    rng = random.Random(SEED)
    count = soak_or(4, 20)
    histogram: Counter[str] = Counter()
    # The clean run's duration without the imports a fork server's child skips.
    span = max(reference.duration - fork_server.startup, 0.5)
    if s3:  # S3's imports (s3fs, aiobotocore) are not the fork server's: time a forked run
        site.reset()
        code, span, _ = fork_server.run(site)
        assert code in (0, 1), code
    for i, delay in enumerate(delays(rng, count, span * 1.05)):
        site.reset()
        kills = [crash(site, reference, fork_killed(fork_server, site, delay=delay))]
        if i % 4 == 0:  # kill the rerun too
            again = rng.uniform(0, span)
            kills.append(crash(site, reference, fork_killed(fork_server, site, delay=again)))
        histogram.update(k.phase for k in kills)
        code, _, _ = fork_server.run(site)
        assert code in (0, 1), f"the rerun after {'; '.join(map(str, kills))} exited {code}"
        check_converged(reference.state, site, kills, f"kill #{i + 1} of {count}")
    backend = make_url(warehouse_url).get_backend_name()
    print(
        f"\n[crash {backend}] seed {SEED}: {sum(histogram.values())} kills survived, clean run "
        f"{reference.duration:.2f} s; phases: {dict(sorted(histogram.items()))}"
    )
    if SOAK:  # the narrow windows (startup included) are the other test's, every time
        missing = set(PHASES) - {"finished"} - NARROW - set(histogram)
        assert not missing, f"phases never hit (seed {SEED}): {missing}; {histogram}"


# Windows too narrow for a timer (or, for startup, too early), each hit by the process killing
# itself exactly there, and the phase its leftovers must read as. The last one kills twice:
# after the commit, then the rerun inside recovery (its claim folder renamed, claim.json not yet
# rewritten).
NARROW = {"startup", "claiming", "reports written", "committed", "archiving"}
BIG, DUPLICATE, BROKEN = "big", "cb2", "broken"
POINTS: list[tuple[list[tuple[str, str]], str]] = [
    ([("connected", "")], "startup"),
    ([("claim-folder", "")], "claiming"),
    ([("claim-recorded", "")], "claiming"),
    ([("report-partial", BIG)], "merging|reading+staging"),
    ([("summary-partial", BIG)], "reports written"),
    ([("summary-written", BIG)], "reports written"),
    ([("committed", BIG)], "committed"),
    ([("committed", DUPLICATE)], "committed"),
    ([("quarantine-recorded", BROKEN)], "committed"),
    ([("sidecar-partial", BIG)], "archiving"),
    ([("archived", BIG)], "archiving"),
    ([("committed", BIG), ("adopting", BIG)], "committed"),
]


# Local only: these windows are the local data directory's own (a claim folder made, claim.json
# written, a report's or sidecar's rename, the archive move, recovery's folder rename). An S3
# data directory's steps (a claim row taken, the commit, the archive copy, the inbox delete, the
# row dropped) are killed at exactly in `test_objectstore_crash.py`.
@pytest.mark.slow
def test_a_kill_at_each_narrow_window_then_a_rerun_converges_to_the_clean_run(
    warehouse_url: str, tmp_path: Path, fork_server: ForkServer
) -> None:
    site = Site(tmp_path / "site", warehouse_url, inbox_files(600), CONFIG)
    reference = clean_reference(site)
    failures = []
    histogram: Counter[str] = Counter()
    for points, expected in POINTS:
        site.reset()
        kills = [crash(site, reference, fork_killed(fork_server, site, hook=p)) for p in points]
        histogram.update(k.phase for k in kills)
        try:
            assert kills[0].phase in expected.split("|"), f"{points}: left {kills[0].at_kill}"
            code, _, _ = fork_server.run(site)
            assert code in (0, 1), f"{points}: the rerun exited {code}"
            check_converged(reference.state, site, kills, f"killed at {points}")
        except AssertionError as exc:
            failures.append(str(exc))
    backend = make_url(warehouse_url).get_backend_name()
    print(f"\n[crash {backend}] narrow windows: {dict(sorted(histogram.items()))}")
    assert not failures, "\n\n".join(failures)
    assert set(histogram) >= NARROW, histogram
