"""What each Airflow task does, as plain functions with no Airflow in them.

The DAGs in ``dags/`` wire these together; the CLI calls the same ``runner`` functions, so a
file is claimed, ingested, archived or quarantined the same way whoever picks it up. Tasks pass
*tickets* (a claim id and where the file came from) and small JSON summaries between them, never
data frames: a mapped task gets one ticket and works on that one file.

Hand-off: the claiming task exits before the mapped tasks start, so its claims carry a lease
(``HAND_OFF``) during which no other run recovers them; each mapped task then takes its claim
over (``datadir.take_over``), and from then on it is judged by that task's process.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import datadir, runner
from pipeline.console import SHORT, printable, render
from pipeline.core.reasons import CATALOGUE
from pipeline.ingest import ingest_file
from pipeline.results import FileResult

HAND_OFF = timedelta(hours=1)
TOP_REASONS = 3
Ticket = dict[str, Any]
Summary = dict[str, Any]


def claim(ctx: runner.Context) -> dict[str, list[Ticket]]:
    """Claim everything waiting; conversion files and status files as two lists.

    The DAG processes all conversion files before any status file, so that a status update
    dropped together with the conversions it updates finds them (mapped tasks of one list run
    in any order; the warehouse lock makes each offer source's files apply one at a time).
    """
    tickets: dict[str, list[Ticket]] = {"conversions": [], "status": []}
    for claimed in runner.claim_waiting(ctx, hand_off=HAND_OFF):
        kind = "status" if claimed.offer_source and claimed.kind == "status" else "conversions"
        tickets[kind].append(
            {
                "claim_id": claimed.claim_id,
                "file": claimed.relative,
                "offer_source": claimed.offer_source,
                "kind": claimed.kind,
                "received_at": claimed.received_at.isoformat(),
            }
        )
    return tickets


def process(ctx: runner.Context, ticket: Mapping[str, Any]) -> Summary:
    """Process one claimed file. Raises on a failure that will pass (the task retries)."""
    claimed = datadir.take_over(ctx.layout, ticket["claim_id"])
    if claimed is None:  # another run recovered it meanwhile and processed it: not ours now
        return {
            "name": Path(ticket["file"]).name,
            "file": ticket["file"],
            "offer_source": ticket.get("offer_source"),
            "kind": ticket.get("kind", "conversions"),
            "state": "taken_over",
            "detail": "another run recovered this claim and processed the file",
        }
    result = runner.process_claimed(ctx, claimed, release_on_failure=False)
    return result.to_dict() | {"file": ticket["file"]}


def select_archived(
    ctx: runner.Context,
    start: date,
    end: date,
    offer_source: str | None = None,
    kind: str | None = None,
) -> list[Ticket]:
    """Archived originals received from ``start`` to ``end`` (UTC dates), oldest first."""
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
        }
        for found in datadir.archived(ctx.layout, start, end, offer_source, kind)
    ]


def replay(
    ctx: runner.Context,
    ticket: Mapping[str, Any],
    *,
    run_id: str,
    mode_override: str | None = None,
    dry_run: bool = True,
    force: bool = False,
) -> Summary:
    """Re-process one archived original through the same ingest as a new file.

    Its reports go to ``reports/replays/<run id>/`` so that the original run's reports stay as
    they were. The original stays in the archive. Without ``force`` a file whose bytes were
    applied before is a ``duplicate_file`` and changes nothing.
    """
    path = Path(ticket["path"])
    if not path.resolve().is_relative_to(ctx.layout.archive.resolve()) or path.is_symlink():
        raise ValueError(f"not an archived file: {path}")
    result = ingest_file(
        path,
        config=ctx.config,
        engine=ctx.engine,
        reports_dir=ctx.layout.reports / "replays" / _safe_run_id(run_id),
        offer_source=ticket["offer_source"],
        kind=ticket["kind"],
        received_at=datetime.fromisoformat(ticket["received_at"]),
        original_name=Path(ticket["file"]).name,
        mode_override=mode_override,
        dry_run=dry_run,
        force=force,
    )
    return result.to_dict() | {"file": ticket["file"]}


def story(summary: Mapping[str, Any]) -> list[str]:
    """The log lines of one file: its outcome, counts, top rejection reasons, report paths."""
    where = printable(str(summary.get("file") or summary.get("name")))  # a name is one line
    lines = [f"{where} ({summary.get('kind')}): {summary['state']}"]
    if summary["state"] in ("applied", "dry_run"):
        outcomes = summary.get("outcomes") or {}
        counts = ", ".join(f"{outcomes.get(key, 0)} {label}" for key, label in SHORT.items())
        lines.append(f"  {summary.get('data_lines', 0)} data lines: {counts}")
    reasons = Counter(summary.get("reasons") or {})
    for code, count in reasons.most_common(TOP_REASONS):
        examples = ", ".join(map(str, (summary.get("examples") or {}).get(code, [])))
        message = CATALOGUE[code].message if code in CATALOGUE else code
        lines.append(f"  rejected {count} x {code} (e.g. lines {examples}): {message}")
    if len(reasons) > TOP_REASONS:
        lines.append(f"  ... and {len(reasons) - TOP_REASONS} more reasons (see the report)")
    if summary.get("reason_code") or summary.get("detail"):
        detail = printable(summary.get("detail") or "")
        lines.append(f"  {summary.get('reason_code') or 'detail'}: {detail}")
    lines += [f"  warning: {warning}" for warning in summary.get("warnings") or []]
    for label, key in (("rejection report", "report_path"), ("summary", "summary_path")):
        if summary.get(key):
            lines.append(f"  {label}: {summary[key]}")
    return lines


def summarise(summaries: Iterable[Mapping[str, Any] | None]) -> Summary:
    """The run's totals: files per state and rows per outcome, plus a table for the log."""
    done = [s for s in summaries if s]  # a mapped task that failed leaves no summary
    known = {f.name for f in fields(FileResult)}
    results = [FileResult(**{k: v for k, v in s.items() if k in known}) for s in done]
    outcomes: Counter[str] = Counter()
    for result in results:
        outcomes.update(result.outcomes)
    return {
        "files": len(done),
        "states": dict(Counter(s["state"] for s in done)),
        "outcomes": dict(outcomes),
        "table": render(results) if results else "no files",
    }


def _safe_run_id(run_id: str) -> str:
    """An Airflow run id (``manual__2026-03-08T10:00:00+00:00``) as one safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).strip("._") or "replay"
