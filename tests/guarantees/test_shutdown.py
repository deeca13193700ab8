"""SIGTERM and SIGINT are a shutdown, not a crash: the run stops between files, puts back what it
has not finished, and a rerun converges to one clean run.

`conversions inbox` (a forked child of the crash test's fork server, a real process) gets a real
SIGTERM at a random moment of a clean run's duration, over the crash test's inbox (a small
offer source with a duplicate, a 12,000-row upload in several batches, a quarantined file and a
status file). After it exits by itself, within the grace and a bound:

- it exited 143 (128 + SIGTERM), or 0/1 when it had finished before the signal; a signal that
  came before the handlers were installed (connecting, nothing claimed yet) ends it as a
  SIGTERM's default does, with nothing claimed;
- nothing is left in ``processing/`` and no ``.partial`` file anywhere;
- every file is either filed away with its ledger row, or back in the inbox: those that had been
  claimed with a record of the received time their claim gave them;
- the log says what the run did about the signal;
- a rerun converges to the clean run, and files put back keep the received time of the claim
  the signal interrupted (`check_converged`, as after a SIGKILL).

Trials alternate ``shutdown_grace_seconds`` between 0 (the file in progress is rolled back at
once) and 1 (it may finish), so both ends of the rule are tried; a SIGINT trial runs too.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.datadir.claims import _RECEIVED_SUFFIX
from tests.guarantees.harness import (
    SEED,
    ForkServer,
    Kill,
    Leftovers,
    Site,
    check_converged,
    leftovers,
)
from tests.guarantees.test_crash import CONFIG, clean_reference, delays, fork_server, inbox_files
from tests.helpers import soak_or

__all__ = ["fork_server"]  # the crash test's fixture, shared

STOP_BOUND_S = 60  # from the signal to the exit: the grace, plus putting files back, plus slack


def _config(grace: int) -> str:
    return CONFIG.replace("[settings]\n", f"[settings]\nshutdown_grace_seconds = {grace}\n", 1)


def _returned(site: Site) -> dict[str, str]:
    """inbox-relative file -> the received time its returned-file record keeps."""
    inbox = site.home / "inbox"
    found = {}
    for record in inbox.rglob(f".*{_RECEIVED_SUFFIX}"):
        name = record.name[1 : -len(_RECEIVED_SUFFIX)]
        relative = (record.parent / name).relative_to(inbox).as_posix()
        found[relative] = json.loads(record.read_text(encoding="utf-8"))["received_at"]
    return found


def _stopped(server: ForkServer, site: Site, delay: float, signum: int) -> tuple[Kill, str]:
    wall = time.time()
    code, elapsed, _ = server.run(site, delay=delay, signum=signum)
    # The whole log: the signal's message comes before the summary, which can be long.
    log = (site.root / "runs.log").read_text(encoding="utf-8", errors="replace")
    left = leftovers(site)
    why = f"{signal.Signals(signum).name} after {delay:.3f} s (exit {code}):\n{log[-3000:]}"
    partials = [f for f in left.files if f.endswith(".partial")]
    assert not left.claims and not partials, f"left in processing/ {left.claims}, {partials}; {why}"
    returned = _returned(site)
    recorded = {(r["offer_source"], r["kind"], r["original_name"]) for r in left.ledger}
    for d in site.files:
        filed = (d.offer_source, d.kind, d.name) in recorded
        assert filed != (d.relative in left.inbox), f"{d.relative}: filed and waiting? {why}"
        if filed:
            assert d.relative not in returned, f"{d.relative}: filed, yet a record; {why}"
    finished = code in (0, 1)
    before_handlers = code == -signum or (  # SIGTERM's default kills; SIGINT's raises
        signum == signal.SIGINT
        and code == 128 + signum
        and f"received {signal.Signals(signum).name}: stopping" not in log
        and "interrupted" in log
    )
    if before_handlers:  # connecting, nothing claimed
        assert not left.ledger and not returned, why
    elif not finished:
        assert code == 128 + signum, why
        assert f"received {signal.Signals(signum).name}: stopping" in log, why
        assert elapsed - delay < STOP_BOUND_S, f"took {elapsed - delay:.1f} s to stop; {why}"
    # What check_converged expects: files put back keep the received time of their claim.
    at_stop = Leftovers(
        left.inbox, {}, dict.fromkeys(returned, "inbox"), returned, left.ledger, left.files
    )
    kill = Kill(
        f"{signal.Signals(signum).name} after {delay:.3f} s",
        elapsed + server.startup,
        finished,
        at_kill=at_stop,
        phase="finished"
        if finished
        else f"stopped, {len(returned)} put back"
        + (", 1 rolled back" if "transaction was rolled back" in log else ""),
        wall=wall + delay,
    )
    return kill, log


@pytest.mark.slow
def test_a_stop_signal_at_a_random_moment_puts_back_what_it_did_not_finish(
    warehouse_url: str, tmp_path: Path, fork_server: ForkServer
) -> None:
    rows = soak_or(12_000, 40_000)
    reference = clean_reference(
        Site(tmp_path / "reference", warehouse_url, inbox_files(rows), _config(0))
    )
    rng = random.Random(SEED)
    count = soak_or(10, 30)
    span = max(reference.duration - fork_server.startup, 0.5)
    outcomes: Counter[str] = Counter()
    for i, delay in enumerate(delays(rng, count, span * 1.05)):
        grace = i % 2
        signum = signal.SIGINT if i == count - 1 else signal.SIGTERM
        site = Site(tmp_path / f"site{i}", warehouse_url, inbox_files(rows), _config(grace))
        site.reset()
        kill, _ = _stopped(fork_server, site, delay, signum)
        outcomes[kill.phase] += 1
        code, _, _ = fork_server.run(site)
        assert code in (0, 1), f"the rerun after {kill} exited {code}"
        check_converged(reference.state, site, [kill], f"stop #{i + 1} of {count}")
    print(f"\n[shutdown] seed {SEED}: {count} stops, {dict(sorted(outcomes.items()))}")
