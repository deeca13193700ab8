"""The inbox runner: claim waiting files, ingest each, archive or quarantine it.

The CLI's `conversions inbox` and the Airflow DAGs call these functions, so a file travels the
same way whoever picks it up: claimed by an atomic rename (two workers never get the same
file), ingested by `ingest.ingest_file`, then archived (applied, dry run, duplicate) or
quarantined (rejected as a whole). A transient failure (the warehouse is down) puts the file
back in the inbox for the next run; a claim left behind by a crashed worker is adopted by the
next run, keeping its received time so the result is the same as if nothing had happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from pipeline import datadir, reports, warehouse
from pipeline.core.model import Config
from pipeline.core.reasons import CATALOGUE
from pipeline.ingest import UNHASHED, ingest_file, sha256_file
from pipeline.results import FileResult


@dataclass(frozen=True)
class Context:
    """Everything a run needs besides the file: config, warehouse, data directory."""

    config: Config
    engine: Engine
    layout: datadir.Layout


def claim_waiting(ctx: Context, hand_off: timedelta | None = None) -> list[datadir.Claimed]:
    """Adopt claims of crashed runs, then claim everything waiting in the inbox.

    Within an offer source, conversion files come before status files: a status update dropped
    together with the conversions it updates must find them, whatever the file names.
    ``hand_off``: the claims go to other processes (see ``datadir.claim``).
    """
    ctx.layout.ensure(ctx.config.offer_sources)
    claimed = list(datadir.recover(ctx.layout, hand_off=hand_off))
    for waiting in datadir.scan(ctx.layout, ctx.config.offer_sources):
        got = datadir.claim(ctx.layout, waiting, hand_off=hand_off)
        if got is not None:
            claimed.append(got)
    return sorted(claimed, key=lambda c: (c.offer_source or "", c.kind == "status", c.relative))


def process_claimed(
    ctx: Context,
    claimed: datadir.Claimed,
    *,
    mode_override: str | None = None,
    dry_run: bool = False,
    release_on_failure: bool = True,
) -> FileResult:
    """Ingest one claimed file and move it to the archive or quarantine.

    A failure that will pass (the warehouse is down) puts the file back in the inbox for the
    next run, or, with ``release_on_failure=False``, re-raises and leaves the claim where it is:
    an Airflow task does that so that its own retry takes the claim over (``datadir.take_over``);
    once its retries are spent, the next run recovers the claim of the dead task.
    """
    name = Path(claimed.relative).name
    # Checked on the claimed entry itself (lstat): the scan saw a regular file, but a sender may
    # have put a link or a FIFO under its name before the claim's rename.
    odd = _not_a_regular_file(claimed.path)
    if claimed.offer_source is None or odd:
        why = odd or (
            "not inside a configured offer source's inbox folder "
            f"(configured: {', '.join(sorted(ctx.config.offer_sources))})"
        )
        return _quarantine(ctx, claimed, None, "unknown_offer_source", why)
    try:
        with ctx.engine.connect() as conn:
            done = warehouse.recorded_by_claim(conn, (*claimed.adopted_from, claimed.claim_id))
    except (DBAPIError, warehouse.WarehouseError) as exc:  # the warehouse is down
        if not release_on_failure:
            raise
        return _release(ctx, claimed, exc)
    if claimed.adopted_from:  # its previous owner died: maybe in the middle of a write
        _remove_partials(ctx, claimed, done["content_hash"] if done else None)
    if done is not None:  # recorded before a crash interrupted the filing away
        return _file_recorded(ctx, claimed, done)
    try:
        result = ingest_file(
            claimed.path,
            config=ctx.config,
            engine=ctx.engine,
            reports_dir=ctx.layout.reports,
            offer_source=claimed.offer_source,
            kind=claimed.kind,
            received_at=claimed.received_at,
            original_name=name,
            mode_override=mode_override,
            dry_run=dry_run,
            claim_id=claimed.claim_id,
        )
    except (DBAPIError, warehouse.WarehouseError, OSError) as exc:
        if not release_on_failure:
            raise
        return _release(ctx, claimed, exc)
    except Exception as exc:  # a bug: keep the file safe where a person will look
        return _quarantine(
            ctx,
            claimed,
            sha256_file(claimed.path),
            "internal_error",
            f"{type(exc).__name__}: {_first_line(exc)}",
        )
    if result.state == "quarantined":
        datadir.quarantine(
            ctx.layout,
            claimed,
            result.content_hash,
            result.reason_code or "invalid_file",
            result.detail or "",
        )
    elif dry_run:  # a rehearsal: the file stays in the inbox for the real run
        datadir.release(ctx.layout, claimed, keep_received=False)
    else:
        try:
            datadir.archive(ctx.layout, claimed, result.content_hash)
        except OSError as exc:  # applied and committed: the next run archives it (see above)
            result.warnings.append(
                f"applied, but archiving failed ({type(exc).__name__}: {_first_line(exc)}); "
                "the claim stays in processing/ and a later run archives it without "
                "applying it again"
            )
    return result


def _file_recorded(ctx: Context, claimed: datadir.Claimed, done: dict) -> FileResult:
    """File away a claim whose result the ledger already holds, without processing it again."""
    code = detail = None
    if done["state"] == "quarantined":  # the ledger's detail is "<reason code>: <detail>"
        code, _, detail = (done["detail"] or "").partition(": ")
        code = code if code in CATALOGUE else "invalid_file"
        datadir.quarantine(ctx.layout, claimed, done["content_hash"], code, detail)
    else:
        datadir.archive(ctx.layout, claimed, done["content_hash"])
    return FileResult(
        Path(claimed.relative).name,
        claimed.offer_source,
        claimed.kind,
        done["state"],
        content_hash=done["content_hash"],
        file_id=done["file_id"],
        data_lines=done["data_lines"],
        outcomes={o: done[o] for o in warehouse.OUTCOMES},
        detail=detail if code else done["detail"],
        reason_code=code,
        report_path=done["report_path"],
        summary_path=done["summary_path"],
        received_at=claimed.received_at.isoformat(),
    )


def _remove_partials(ctx: Context, claimed: datadir.Claimed, content_hash: str | None) -> None:
    """Remove what a worker killed mid-write left of this file: ``<name>.<token>.partial``.

    Reports, summaries and sidecars are written to a partial file and renamed into place; a
    worker killed before the rename leaves the partial behind, beside names derived from the
    file's received day, name and content hash, which the adopted claim keeps. (A live worker
    writing a partial of the same bytes, name and day at this very moment would see its rename
    fail, and that file be retried: the worst a coincidence can do.)
    """
    day = claimed.received_at.astimezone(UTC).date().isoformat()
    source = str(claimed.offer_source)
    folders = [
        ctx.layout.reports / day,
        ctx.layout.archive / day / source / claimed.kind,
        ctx.layout.quarantine / day / source,
    ]
    found = []
    for folder in folders:
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            found += [
                Path(e.path)
                for e in entries
                if _PARTIAL.fullmatch(e.name) and e.is_file(follow_symlinks=False)
            ]
    if not found:  # the usual case: no need to hash the file
        return
    if content_hash is None:  # as ingest_file named them: a file over the limit is never read
        too_large = claimed.path.stat().st_size > ctx.config.settings.max_file_bytes
        content_hash = UNHASHED if too_large else sha256_file(claimed.path)
    report, _ = reports.report_paths(
        ctx.layout.reports, claimed.received_at, Path(claimed.relative).name, content_hash
    )
    prefixes = {
        folders[0]: report.name.removesuffix("rejected.csv"),  # "<stem>.<hash12>."
        folders[1]: f"{content_hash[:16]}_",
        folders[2]: f"{content_hash[:16]}_",
    }
    for path in found:
        if path.name.startswith(prefixes[path.parent]):
            path.unlink(missing_ok=True)


_PARTIAL = re.compile(r".+\.[0-9a-f]{8}\.partial")


def _not_a_regular_file(path: Path) -> str | None:
    """Why `path` is never opened (a link, a FIFO...), or None for a regular file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None  # gone: ingesting it fails as for any vanished file
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link; links in the inbox are never followed"
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}
    what = kinds.get(stat.S_IFMT(mode), "a device")
    return f"not a regular file ({what}); it is never opened"


def _release(ctx: Context, claimed: datadir.Claimed, exc: BaseException) -> FileResult:
    """A failure that will pass (the warehouse is down): the file goes back to the inbox."""
    datadir.release(ctx.layout, claimed)
    return FileResult(
        Path(claimed.relative).name,
        claimed.offer_source,
        claimed.kind,
        "failed",
        detail=f"{type(exc).__name__}: {_first_line(exc)}; the file was put "
        "back in the inbox for the next run",
    )


def _quarantine(
    ctx: Context, claimed: datadir.Claimed, content_hash: str | None, code: str, detail: str
) -> FileResult:
    name = Path(claimed.relative).name
    result = FileResult(
        name,
        claimed.offer_source,
        claimed.kind,
        "quarantined",
        content_hash=content_hash,
        reason_code=code,
        detail=detail,
        received_at=claimed.received_at.isoformat(),
    )
    datadir.quarantine(ctx.layout, claimed, content_hash, code, detail)
    # Names of its own: bytes applied the same day under the same name keep their summary.
    _, summary = reports.own_paths(
        *reports.report_paths(
            ctx.layout.reports, claimed.received_at, name, content_hash or claimed.claim_id
        ),
        f"quarantined-{claimed.claim_id}",
    )
    result.summary_path = str(summary)
    reports.write_summary(summary, result.to_dict() | {"reason": CATALOGUE[code].message})
    return result


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def run_inbox(
    ctx: Context,
    *,
    mode_override: str | None = None,
    dry_run: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """One pass over the inbox, exactly as the scheduled DAG makes it."""
    results = []
    for claimed in claim_waiting(ctx):
        result = process_claimed(ctx, claimed, mode_override=mode_override, dry_run=dry_run)
        results.append(result)
        if on_file:
            on_file(result)
    return results


def exit_code(results: Iterable[FileResult]) -> int:
    """0 when every file was processed (rows may be rejected), 1 if any was quarantined/failed."""
    return 1 if any(r.state in ("quarantined", "failed") for r in results) else 0
