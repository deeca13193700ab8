"""The inbox runner: claim waiting files, ingest each, file it away.

The CLI's `conversions inbox` and the Airflow DAGs call these functions, so a file travels the
same way whoever picks it up: claimed from the data directory (two workers never get the same
file), ingested by `ingest.ingest_file`, then filed where `core.file_outcome` says (archive,
quarantine, or back to the inbox). A transient failure (the warehouse is down) puts the file
back in the inbox for the next run; a claim left behind by a crashed worker is adopted by the
next run, keeping its received time so the result is the same as if nothing had happened. A
file dropped in a mode folder (``inbox/<offer_source>/<mode>/``) is applied under that mode, as
``conversions ingest --mode`` would apply it (``Claimed.mode``).

The runner knows no path: every name under the data directory is `ctx.datadir`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlalchemy.exc import DBAPIError

from pipeline import warehouse
from pipeline.context import Context
from pipeline.core import file_outcome
from pipeline.core.errors import one_line
from pipeline.core.file_outcome import Refusal
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import OUTCOMES, QUARANTINED
from pipeline.datadir import Claimed, FileChanged
from pipeline.datadir.layout import own_paths, report_paths, sha256_file
from pipeline.ingest import Upload, ingest_file
from pipeline.reports import write_summary
from pipeline.results import FileResult
from pipeline.shutdown import Interrupted

# Failures that will pass: the file goes back to the inbox (or the Airflow task retries).
TRANSIENT = (DBAPIError, warehouse.WarehouseError, OSError)


def claim_waiting(ctx: Context, hand_off: timedelta | None = None) -> list[Claimed]:
    """Adopt claims of crashed runs, then claim everything waiting in the inbox.

    Within an offer source, conversion files come before status files: a status update dropped
    together with the conversions it updates must find them, whatever the file names.
    ``hand_off``: the claims go to other processes (see ``datadir.claims.claim``). A file that
    has not settled yet (``settings.settle_seconds``) is left waiting for a later pass.
    """
    ctx.datadir.ensure(ctx.config.offer_sources)
    claimed = list(ctx.datadir.recover(hand_off=hand_off))
    settle = ctx.config.settings.settle_seconds
    for waiting in ctx.datadir.scan(ctx.config.offer_sources, settle_seconds=settle):
        if ctx.stop.requested:  # stopping: what is claimed goes back, the rest waits
            break
        got = ctx.datadir.claim(waiting, hand_off=hand_off)
        if got is not None:
            claimed.append(got)
    return sorted(claimed, key=lambda c: (c.offer_source or "", c.kind == "status", c.relative))


def process_claimed(
    ctx: Context,
    claimed: Claimed,
    *,
    mode_override: str | None = None,
    dry_run: bool = False,
    release_on_failure: bool = True,
) -> FileResult:
    """Ingest one claimed file and file it away.

    The file's duplicate mode override is ``mode_override`` when given (a run-level override,
    e.g. ``conversions inbox --mode``, wins over the folder's), else ``claimed.mode``: the mode
    folder it was dropped in (``inbox/<offer_source>/<mode>/``), else none (the configured
    modes). Either way the ledger records it as the file's ``duplicate_mode_override``.

    A failure that will pass (the warehouse is down) puts the file back in the inbox for the
    next run, or, with ``release_on_failure=False``, re-raises and leaves the claim where it is:
    an Airflow task does that so that its own retry takes the claim over (``take_over``); once
    its retries are spent, the next run recovers the claim of the dead task. A file that changed
    while it was read (``FileChanged``) always goes back to the inbox, with its received time:
    it must settle there before anyone takes it again, and a retry would not wait for that.
    """
    refusal = file_outcome.refused_claim(
        claimed.offer_source,
        ctx.datadir.not_a_regular_file(claimed),
        ctx.config.offer_sources,
        claimed.relative,
    )
    if refusal is not None and dry_run:  # a rehearsal moves nothing: say what would happen
        ctx.datadir.release(claimed, keep_received=False)
        return FileResult(
            claimed.name,
            claimed.offer_source,
            claimed.kind,
            QUARANTINED,
            reason_code=refusal.code,
            detail=f"{refusal.detail} (dry run: it would be quarantined; left in the inbox)",
        )
    if refusal is not None:
        return _quarantine(ctx, claimed, None, refusal)
    try:
        with ctx.engine.connect() as conn:
            done = warehouse.recorded_by_claim(conn, (*claimed.adopted_from, claimed.claim_id))
    except (DBAPIError, warehouse.WarehouseError) as exc:  # the warehouse is down
        if not release_on_failure:
            raise
        return _release(ctx, claimed, exc)
    if claimed.adopted_from:  # its previous owner died: maybe in the middle of a write
        ctx.datadir.remove_partials(
            claimed, done["content_hash"] if done else None, ctx.config.settings.max_file_bytes
        )
    if done is not None:  # recorded before a crash interrupted the filing away
        return _file_recorded(ctx, claimed, done)
    upload = Upload(
        claimed.path,
        str(claimed.offer_source),
        claimed.kind,
        received_at=claimed.received_at,
        name=claimed.name,
        mode_override=mode_override if mode_override is not None else claimed.mode,
        dry_run=dry_run,
        claim_id=claimed.claim_id,
    )
    try:
        with ctx.stop.interruptible():  # raises at once when the run is stopping
            result = ingest_file(ctx, upload)
    except (FileChanged, Interrupted) as exc:  # a dry run's claim was only a look
        return _release(ctx, claimed, exc, keep_received=not dry_run)
    except TRANSIENT as exc:
        if not release_on_failure:
            raise
        return _release(ctx, claimed, exc)
    except Exception as exc:  # a bug: keep the file safe where a person will look
        refusal = Refusal(file_outcome.INTERNAL_ERROR, one_line(exc))
        return _quarantine(ctx, claimed, sha256_file(claimed.path), refusal)
    _file_away(ctx, claimed, result, dry_run)
    return result


def _file_away(ctx: Context, claimed: Claimed, result: FileResult, dry_run: bool) -> None:
    """Carry out the file's disposition once its result is recorded."""
    where = file_outcome.disposition(result.state, dry_run)
    if where == file_outcome.QUARANTINE:
        code = result.reason_code or "invalid_file"
        ctx.datadir.file_quarantined(claimed, result.content_hash, code, result.detail or "")
    elif where == file_outcome.RETURN_UNPINNED:  # a rehearsal: it stays for the real run
        ctx.datadir.release(claimed, keep_received=False)
    else:
        try:
            ctx.datadir.file_archived(claimed, str(result.content_hash))
        except OSError as exc:  # applied and committed: the next run archives it
            result.warnings.append(
                f"applied, but archiving failed ({one_line(exc)}); "
                "the claim stays in processing/ and a later run archives it without "
                "applying it again"
            )


def _file_recorded(ctx: Context, claimed: Claimed, done: dict) -> FileResult:
    """File away a claim whose result the ledger already holds, without processing it again."""
    refusal = None
    if done["state"] == QUARANTINED:
        refusal = file_outcome.refusal_of(done["detail"], CATALOGUE)
        ctx.datadir.file_quarantined(claimed, done["content_hash"], refusal.code, refusal.detail)
    else:
        ctx.datadir.file_archived(claimed, done["content_hash"])
    return FileResult(
        claimed.name,
        claimed.offer_source,
        claimed.kind,
        done["state"],
        content_hash=done["content_hash"],
        file_id=done["file_id"],
        data_lines=done["data_lines"],
        outcomes={o: done[o] for o in OUTCOMES},
        detail=refusal.detail if refusal else done["detail"],
        reason_code=refusal.code if refusal else None,
        report_path=done["report_path"],
        summary_path=done["summary_path"],
        received_at=claimed.received_at.isoformat(),
    )


def _release(
    ctx: Context, claimed: Claimed, exc: BaseException, keep_received: bool = True
) -> FileResult:
    """A failure that will pass (the warehouse is down): the file goes back to the inbox."""
    ctx.datadir.release(claimed, keep_received=keep_received)
    return FileResult(
        claimed.name,
        claimed.offer_source,
        claimed.kind,
        file_outcome.failure_state(transient=True),
        detail=f"{one_line(exc)}; the file was put back in the inbox for the next run",
    )


def _quarantine(
    ctx: Context, claimed: Claimed, content_hash: str | None, refusal: Refusal
) -> FileResult:
    """Quarantine a claimed file that never reached the ledger (not a file, no offer source,
    or a bug), with a summary of its own."""
    result = FileResult(
        claimed.name,
        claimed.offer_source,
        claimed.kind,
        QUARANTINED,
        content_hash=content_hash,
        reason_code=refusal.code,
        detail=refusal.detail,
        received_at=claimed.received_at.isoformat(),
    )
    ctx.datadir.file_quarantined(claimed, content_hash, refusal.code, refusal.detail)
    # Names of its own: bytes applied the same day under the same name keep their summary.
    _, summary = own_paths(
        *report_paths(
            ctx.datadir.reports, claimed.received_at, claimed.name, content_hash or claimed.claim_id
        ),
        str(file_outcome.report_tag(QUARANTINED, claimed.claim_id)),
    )
    result.summary_path = str(summary)
    write_summary(summary, result.to_dict() | {"reason": CATALOGUE[refusal.code].message})
    return result


def run_inbox(
    ctx: Context,
    *,
    mode_override: str | None = None,
    dry_run: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """One pass over the inbox, exactly as the scheduled DAG makes it.

    ``mode_override``, when given, applies to every conversion file of the pass, over the mode
    folders' (see ``process_claimed``).

    A stop signal (``ctx.stop``, see `pipeline.shutdown`) ends the pass early: the file in
    progress finishes or is rolled back and put back, and so is every claim not yet started.
    """
    results = []
    for claimed in claim_waiting(ctx):
        # After a stop signal each remaining claim is put back (or, if a dead run recorded
        # it, filed away) by process_claimed without being started.
        result = process_claimed(ctx, claimed, mode_override=mode_override, dry_run=dry_run)
        results.append(result)
        if on_file:
            on_file(result)
    return results


def exit_code(results: Iterable[FileResult], ctx: Context | None = None) -> int:
    """0 when every file was processed (rows may be rejected), 1 if any was quarantined/failed
    or had every data line rejected (``FileResult.all_rows_rejected``); after a stop signal,
    128 + its number (what a shell reports for a signalled process)."""
    if ctx is not None and ctx.stop.requested:
        return ctx.stop.exit_code
    results = list(results)  # any iterable, read twice
    return file_outcome.exit_code(
        [r.state for r in results], any(r.all_rows_rejected for r in results)
    )
