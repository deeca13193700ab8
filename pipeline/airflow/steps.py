"""What each task does, with no Airflow in it: plain functions the TaskFlow tasks call.

``pipeline.airflow.taskflow`` wraps these in ``@task`` and the DAGs in ``dags/`` wire those
together; the CLI calls the same ``runner`` functions, so a file is claimed, ingested, archived or
quarantined the same way whoever picks it up. Tasks pass *tickets* (a claim id, where the file
came from and its ``mode``: the duplicate mode of its mode folder, or None) and each file's
result as a small JSON dict between them, never data frames: a mapped task gets one ticket and
works on that one file. Only task bodies import this module, so it may import the whole
engine; parsing a DAG does not.

Hand-off: the claiming task exits before the mapped tasks start, so its claims carry a lease
(``HAND_OFF``) during which no other run recovers them; each mapped task then takes its claim
over (``DataDir.take_over``), and from then on it is judged by that task's process.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import runner
from pipeline.console import block, summary_lines
from pipeline.context import Context
from pipeline.core import file_outcome
from pipeline.core.vocabulary import FAILED, TAKEN_OVER
from pipeline.ingest import Upload, ingest_file
from pipeline.results import FileResult
from pipeline.shutdown import Interrupted, Stopped

HAND_OFF = timedelta(hours=1)
Ticket = dict[str, Any]
"""A claimed (or archived) file as tasks pass it: JSON only, so it can be an XCom."""
FileResultDict = dict[str, Any]
"""One file's ``FileResult.to_dict()`` plus its ``file`` (inbox-relative): a task's XCom."""
RunTotals = dict[str, Any]
"""A run's files per state, rows per outcome and its summary for the log (``totals``)."""


def claim(ctx: Context) -> dict[str, list[Ticket]]:
    """Claim everything waiting; conversion files and status files as two lists.

    The DAG processes all conversion files before any status file, so that a status update
    dropped together with the conversions it updates finds them (mapped tasks of one list run
    in any order; the warehouse lock makes each offer source's files apply one at a time).
    A ticket's ``mode`` is the duplicate mode of the folder the file was dropped in
    (``inbox/<offer_source>/<mode>/``), or None.
    """
    tickets: dict[str, list[Ticket]] = {"conversions": [], "status": []}
    claimed_files = runner.claim_waiting(ctx, hand_off=HAND_OFF)
    if ctx.stop.requested:  # nobody will process these: back to the inbox (none is started)
        for claimed in claimed_files:  # handed-off claims are not downloaded: only given back
            ctx.datadir.release(claimed)
        raise Stopped(
            f"stopped by {ctx.stop.name} while claiming; {len(claimed_files)} claimed file(s) "
            "put back in the inbox with their received times"
        )
    for claimed in claimed_files:
        kind = "status" if claimed.offer_source and claimed.kind == "status" else "conversions"
        tickets[kind].append(
            {
                "claim_id": claimed.claim_id,
                "file": claimed.relative,
                "offer_source": claimed.offer_source,
                "kind": claimed.kind,
                "received_at": claimed.received_at.isoformat(),
                "mode": claimed.mode,
            }
        )
    return tickets


def process(ctx: Context, ticket: Mapping[str, Any]) -> FileResultDict:
    """Process one claimed file. Raises on a failure that will pass (the task retries), and
    `Stopped` when a stop signal rolled it back and put it back in the inbox (a file that
    finished within the grace is a success: it is recorded and filed away).

    The file is applied under the ticket's ``mode`` (its mode folder's): the claim taken over
    records it too (claim.json), and that record is what counts, so a retry, or a ticket written
    before tickets had a mode, applies the file the same way."""
    claimed = ctx.datadir.take_over(ticket["claim_id"])
    if claimed is None:  # another run recovered it meanwhile and processed it: not ours now
        return {
            "name": Path(ticket["file"]).name,
            "file": ticket["file"],
            "offer_source": ticket.get("offer_source"),
            "kind": ticket.get("kind", "conversions"),
            "mode": ticket.get("mode"),
            "state": TAKEN_OVER,
            "detail": file_outcome.TAKEN_OVER_DETAIL,
        }
    result = runner.process_claimed(ctx, claimed, release_on_failure=False)
    if ctx.stop.requested and result.state == FAILED:  # rolled back and put back in the inbox
        raise Stopped(f"{ticket['file']}: {result.detail}")
    return result.to_dict() | {"file": ticket["file"]}


def archived_tickets(
    ctx: Context,
    start: date,
    end: date,
    offer_source: str | None = None,
    kind: str | None = None,
) -> list[Ticket]:
    """Archived originals received from ``start`` to ``end`` (UTC dates), oldest first; each
    ticket's ``mode`` is the archived file's (its mode folder's when it was dropped, or None)."""
    if end < start:
        raise ValueError(f"the end date {end} is before the start date {start}")
    if offer_source is not None:
        ctx.config.offer_source(offer_source)  # an unknown name is an error, not "no files"
    return [
        {
            "path": str(found.path),
            "file": found.relative,
            "offer_source": found.offer_source,
            "kind": found.kind,
            "received_at": found.received_at.isoformat(),
            "content_hash": found.content_hash,
            "mode": found.mode,
        }
        for found in ctx.datadir.archived(start, end, offer_source, kind)
    ]


def replay(
    ctx: Context,
    ticket: Mapping[str, Any],
    *,
    run_id: str,
    mode_override: str | None = None,
    dry_run: bool = True,
    force: bool = False,
) -> FileResultDict:
    """Re-process one archived original through the same ingest as a new file.

    Its reports go to ``reports/replays/<run id>/`` so that the original run's reports stay as
    they were. The original stays in the archive. Without ``force`` a file whose bytes were
    applied before is a ``duplicate_file`` and changes nothing. Its duplicate mode override is
    the run's ``mode_override`` when given, else the archived file's ``mode`` (the mode folder
    it was dropped in), else none.
    """
    # A string, not a Path: an archive on object storage names its files by URL (s3://...),
    # which a Path would mangle (s3:/...).
    path = ticket["path"]
    if not ctx.datadir.is_archived(path):
        raise ValueError(f"not an archived file: {path}")
    with ctx.datadir.local_copy(path) as local:  # on object storage a streamed copy
        upload = Upload(
            local,
            ticket["offer_source"],
            ticket["kind"],
            received_at=datetime.fromisoformat(ticket["received_at"]),
            name=Path(ticket["file"]).name,
            mode_override=mode_override if mode_override is not None else ticket.get("mode"),
            dry_run=dry_run,
            force=force,
            reports_dir=ctx.datadir.reports / "replays" / _safe_run_id(run_id),
        )
        try:
            with ctx.stop.interruptible():
                result = ingest_file(ctx, upload)
        except Interrupted as exc:  # rolled back; the original stays in the archive
            raise Stopped(f"{ticket['file']}: {exc}; replay it again") from None
    return result.to_dict() | {"file": ticket["file"]}


def story(result: Mapping[str, Any], home: str | Path | None = None) -> list[str]:
    """The log lines of one file: the same plain block the terminal shows (`console.block`):
    its outcome, what was applied, ignored and rejected (top reasons, their fix hints and
    example lines), its warnings (``all_rows_rejected`` first, told from the counts when the
    result carries none) and its reports (paths relative to the data directory ``home``)."""
    return block(result, home)


def totals(results: Iterable[Mapping[str, Any] | None]) -> RunTotals:
    """The run's totals: files per state, rows per outcome, files whose every data line was
    rejected (``all_rows_rejected``), plus the run's summary for the log (``table``: each
    file's block and the total line, as the terminal shows them)."""
    done = [r for r in results if r]  # a mapped task that failed leaves no result
    known = {f.name for f in fields(FileResult)}
    records = [FileResult(**{k: v for k, v in r.items() if k in known}) for r in done]
    outcomes: Counter[str] = Counter()
    for record in records:
        outcomes.update(record.outcomes)
    return {
        "files": len(done),
        "states": dict(Counter(r["state"] for r in done)),
        "outcomes": dict(outcomes),
        "all_rows_rejected": sum(1 for r in records if r.all_rows_rejected),
        "table": "\n".join(summary_lines(done)) if done else "no files",
    }


def _safe_run_id(run_id: str) -> str:
    """An Airflow run id (``manual__2026-03-08T10:00:00+00:00``) as one safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).strip("._") or "replay"
