"""Ingesting one file: read -> normalise -> resolve duplicates -> apply, all or nothing.

This is the only place that sequences the functional core (`reader`, `normalise`, `duplicates`)
with the edges (`warehouse`, `reports`). The CLI's `ingest`, the inbox runner and the Airflow
tasks all come through `ingest_file`, so every route applies a file the same way.

The whole file is applied in one database transaction together with its ledger row, under the
offer source's merge lock; reports are written before that transaction commits and removed if it
does not, so an applied file always has its report. Every data line ends in exactly one outcome,
and that is checked (the accounting invariant) before anything commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from pipeline import reader, reports, warehouse
from pipeline.core import duplicates, normalise
from pipeline.core.model import Config, OfferSource
from pipeline.core.reasons import describe
from pipeline.core.vocabulary import OUTCOMES
from pipeline.reader import FileRejected
from pipeline.results import FileResult

EXAMPLES_PER_REASON = 3


class AccountingError(RuntimeError):
    """Outcomes did not add up to the file's data lines: a bug, so nothing is applied."""


# The ledger's content hash of a file over max_file_bytes, which is never read (so never
# hashed); its FileResult and summary say null. No SHA-256 digest is all zeros.
UNHASHED = "0" * 64


def _storable(name: str) -> str:
    """A file name as text every database takes: bytes that were not UTF-8 on disk (lone
    surrogates after decoding) become ``\\xNN``."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _DryRun(Exception):
    """Raised inside the transaction to roll back everything a dry run did."""


def ingest_file(
    path: Path,
    *,
    config: Config,
    engine: Engine,
    reports_dir: Path,
    offer_source: str,
    kind: str = "conversions",
    received_at: datetime | None = None,
    original_name: str | None = None,
    mode_override: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    claim_id: str | None = None,
    batch_size: int | None = None,
) -> FileResult:
    """Apply one file (or, with `dry_run`, work out exactly what it would do and roll back).

    Whole-file problems (unreadable, missing column, too large...) return a `quarantined`
    result and change nothing but the ledger. Row problems go to the rejection report.
    """
    path = Path(path)
    started = time.perf_counter()
    received = pd.Timestamp(received_at or datetime.now(UTC)).tz_convert(UTC).floor("s")
    name = original_name or path.name
    result = FileResult(name, offer_source, kind, "quarantined", received_at=received.isoformat())
    source = config.offer_sources.get(offer_source)  # None: removed since; quarantined below
    size = path.stat().st_size  # first: a file over the limit is never read, not even hashed
    if size <= config.settings.max_file_bytes:
        result.content_hash = sha256_file(path)
    csv_path, json_path = reports.report_paths(
        reports_dir, received.to_pydatetime(), name, result.content_hash or UNHASHED
    )
    result.report_path, result.summary_path = str(csv_path), str(json_path)
    ledger = dict(
        content_hash=result.content_hash or UNHASHED,
        original_name=_storable(name),
        offer_source=offer_source,
        kind=kind,
        received_at=received,
        duplicate_mode_override=mode_override,
        forced=force,
        claim_id=claim_id,
    )
    report: reports.RejectionReport | None = None
    written: list[Path] = []  # reports this call made visible; removed if its commit fails
    try:
        if size > config.settings.max_file_bytes:
            raise FileRejected(
                "file_too_large",
                f"the file has {size:,} bytes; the limit "
                f"(settings.max_file_bytes) is {config.settings.max_file_bytes:,}",
            )
        if source is None:
            raise FileRejected(
                "unknown_offer_source",
                f"the offer source {offer_source!r} is not in the configuration (configured: "
                f"{', '.join(sorted(config.offer_sources)) or 'none'})",
            )
        header = reader.read_header(path, kind)
        result.warnings += [f"ignored unknown column {c!r}" for c in header.unknown]
        report = reports.RejectionReport(csv_path, header.names, header.delimiter)
        with warehouse.file_transaction(engine, offer_source) as conn:
            applied_before = warehouse.applied_count(conn, result.content_hash, offer_source, kind)
            if applied_before and not force:
                result.state = "duplicate_file"
                result.detail = (
                    "the same bytes were already applied for this offer source "
                    "and kind; nothing changed (a replay with force re-applies)"
                )
                result.file_id = warehouse.record_file(
                    conn, state="duplicate_file", detail=result.detail, **ledger
                )
                report.discard()
                report = None
                result.report_path = None
                # Its own summary: the file it repeats may have been received the same day
                # under the same name, and that file's summary must stay as it was.
                _, json_path = reports.own_paths(csv_path, json_path, f"duplicate-{result.file_id}")
                result.summary_path = str(json_path)
                warehouse.finish_file(conn, result.file_id, summary_path=result.summary_path)
                _write_summary(result, json_path, started)
                written.append(json_path)
            else:
                _apply_file(
                    conn,
                    path,
                    header,
                    source,
                    result,
                    report,
                    ledger,
                    received=received,
                    mode_override=mode_override,
                    sequence=applied_before + 1,
                    batch_size=batch_size or config.settings.batch_size,
                    future_tolerance=config.settings.future_tolerance_seconds,
                    dry_run=dry_run,
                )
                if dry_run:
                    raise _DryRun
                result.state = "applied"
                if _names_taken(conn, result.content_hash, json_path, result.file_id):
                    # A forced re-apply, or the same bytes for another offer source or kind,
                    # the same day under the same name: the first application keeps its names.
                    csv_path, json_path = reports.own_paths(
                        csv_path, json_path, f"applied-{result.file_id}"
                    )
                    result.report_path, result.summary_path = str(csv_path), str(json_path)
                warehouse.finish_file(
                    conn, result.file_id, state="applied", **_ledger_counts(result)
                )
                written.append(report.commit(csv_path))
                _write_summary(result, json_path, started)
                written.append(json_path)
    except _DryRun:
        result.state = "dry_run"
    except FileRejected as rejected:
        if report is not None:
            report.discard()
            report = None
        result.state, result.reason_code, result.detail = (
            "quarantined",
            rejected.code,
            rejected.detail,
        )
        result.report_path = None
        # Nothing of it applies: no data lines either (batches read before the bad byte counted
        # some), or the quarantined result would break the accounting invariant.
        result.data_lines = 0
        result.outcomes = dict.fromkeys(OUTCOMES, 0)
    except BaseException:
        _unpublish(report, written)  # the transaction did not commit: no report for it
        raise
    if result.state in ("dry_run", "quarantined"):
        # Recorded after the file's transaction; the reports get names of their own (a dry run
        # or a quarantine of bytes applied the same day under the same name must not write over
        # the applied file's), and the ledger row commits only once they are written.
        try:
            with engine.begin() as conn:
                detail = f"{result.reason_code}: {result.detail}" if result.reason_code else None
                counts = _ledger_counts(result) if result.state == "dry_run" else {}
                result.file_id = warehouse.record_file(
                    conn, state=result.state, detail=detail, **ledger, **counts
                )
                tag = "dry-run" if result.state == "dry_run" else "quarantined"
                csv_path, json_path = reports.own_paths(
                    csv_path, json_path, f"{tag}-{result.file_id}"
                )
                if report is not None:
                    result.report_path = str(csv_path)
                result.summary_path = str(json_path)
                warehouse.finish_file(
                    conn,
                    result.file_id,
                    report_path=result.report_path,
                    summary_path=result.summary_path,
                )
                if report is not None:
                    written.append(report.commit(csv_path))
                _write_summary(result, json_path, started)
                written.append(json_path)
        except BaseException:
            _unpublish(report, written)
            raise
    return result


def _names_taken(conn, content_hash: str, json_path: Path, file_id: int | None) -> bool:
    """Whether another ledger row (of these bytes) owns this summary's name."""
    f = warehouse.ingested_files.c
    return (
        conn.execute(
            select(f.file_id)
            .where(f.content_hash == content_hash, f.summary_path == str(json_path))
            .where(f.file_id != file_id)
            .limit(1)
        ).first()
        is not None
    )


def _unpublish(report: reports.RejectionReport | None, written: list[Path]) -> None:
    """Take back the reports of a result that was not recorded (best effort: re-raising)."""
    if report is not None:
        report.discard()
    for done in written:
        with contextlib.suppress(OSError):
            done.unlink(missing_ok=True)


def _apply_file(
    conn,
    path: Path,
    header: reader.Header,
    source: OfferSource,
    result: FileResult,
    report: reports.RejectionReport,
    ledger: dict[str, Any],
    *,
    received: pd.Timestamp,
    mode_override: str | None,
    sequence: int,
    batch_size: int,
    future_tolerance: int,
    dry_run: bool,
) -> None:
    """Stream the batches through the core into a staging table, then merge it chunk by chunk.

    Memory holds one batch while reading and one merge chunk (rows of whole click ids) while
    merging, whatever the size of the file.
    """
    result.file_id = warehouse.record_file(conn, state="processing", **ledger)
    t0 = time.perf_counter()
    reason_counts: Counter[str] = Counter()
    examples: dict[str, list[int]] = {}
    blank = 0
    stage = warehouse.stage_create(conn, result.kind)
    for batch in reader.read_batches(path, header, batch_size):
        blank += batch.blank_lines
        result.data_lines += len(batch.lines) + len(batch.malformed)
        cells = header.canonical(batch.cells)
        if result.kind == "status":
            part = normalise.statuses(cells, batch.lines, source)
        else:
            part = normalise.conversions(
                cells,
                batch.lines,
                source,
                received_at=received,
                future_tolerance_seconds=future_tolerance,
                mode_override=mode_override,
            )
        warehouse.stage_append(conn, stage, result.kind, part.accepted)
        rejected = _with_cells(part.rejected, batch, header)
        if batch.malformed:
            rejected = pd.concat([_malformed(batch, header), rejected], ignore_index=True)
            rejected = rejected.sort_values("line", kind="stable", ignore_index=True)
        _reject(conn, result, report, rejected, reason_counts, examples)
    if blank:
        result.warnings.append(f"skipped {blank} blank line(s)")
    result.timings["read_validate_s"] = round(time.perf_counter() - t0, 3)

    t1 = time.perf_counter()
    late: list[pd.DataFrame] = []
    for rows in warehouse.staged_chunks(conn, stage, result.kind, batch_size):
        resolution = _resolve(conn, rows, source, result, received, sequence)
        if not dry_run:
            warehouse.apply(conn, resolution, file_id=result.file_id, offer_source=source.name)
        outcome = resolution.outcomes["outcome"]
        late.append(resolution.outcomes.loc[outcome == "rejected", ["line", "reason_code"]])
        for name, count in outcome[outcome != "rejected"].value_counts().items():
            result.outcomes[str(name)] += int(count)
    warehouse.stage_drop(conn, stage)
    late_rows = pd.concat(late, ignore_index=True) if late else pd.DataFrame()
    if len(late_rows):
        late_rows = late_rows.sort_values("line", ignore_index=True)
        _reject(
            conn,
            result,
            report,
            _cells_for_lines(path, header, batch_size, late_rows),
            reason_counts,
            examples,
        )
    result.reasons = dict(reason_counts.most_common())
    result.examples = examples
    result.timings["merge_s"] = round(time.perf_counter() - t1, 3)
    total = sum(result.outcomes.values())
    if total != result.data_lines:
        raise AccountingError(
            f"{result.name}: outcomes add up to {total}, but the file has {result.data_lines} "
            f"data lines ({result.outcomes}); nothing was applied"
        )


def _resolve(
    conn,
    rows: pd.DataFrame,
    source: OfferSource,
    result: FileResult,
    received: pd.Timestamp,
    sequence: int,
) -> duplicates.Resolution:
    if result.kind == "status":
        matches = warehouse.status_matches(conn, source.name, rows)
        return duplicates.resolve_status(rows, matches)
    keys = rows[["click_id", "conversion_type"]].assign(key_event=duplicates.key_event(rows))
    existing = warehouse.existing_for(conn, source.name, keys)
    defaults = duplicates.Defaults(
        status=source.default_status, currency=source.account.currency, converted_at=received
    )
    tag = f"{source.name}\n{result.kind}\n{result.content_hash}\n{sequence}"
    prefix = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return duplicates.resolve(rows, existing, defaults, prefix)


def _with_cells(rejected: pd.DataFrame, batch: reader.Batch, header: reader.Header) -> pd.DataFrame:
    """Attach the original cells (as written) to rejected rows of a batch."""
    if rejected.empty:
        return rejected.assign(**{name: pd.Series(dtype="str") for name in header.cell_names})
    position = np.searchsorted(batch.lines, rejected["line"].to_numpy())
    cells = batch.cells[list(header.cell_names)].iloc[position].reset_index(drop=True)
    return pd.concat([rejected.reset_index(drop=True), cells], axis=1)


def _malformed(batch: reader.Batch, header: reader.Header) -> pd.DataFrame:
    """Malformed rows keep their cells by position; extra cells stay in the last column."""
    width = len(header.names)
    keep = [i for i, name in enumerate(header.names) if name in header.cell_names]
    rows = []
    for line, cells in batch.malformed:  # rare by nature; the common path has no such loop
        cells = list(cells) + [""] * (width - len(cells))
        if len(cells) > width:
            cells = [*cells[: width - 1], header.delimiter.join(cells[width - 1 :])]
        rows.append([line, "malformed_row", *(cells[i] for i in keep)])
    return pd.DataFrame(rows, columns=["line", "reason_code", *header.cell_names])


def _cells_for_lines(
    path: Path, header: reader.Header, batch_size: int, wanted: pd.DataFrame
) -> pd.DataFrame:
    """Second pass for rows the merge rejected: only their cells are needed, so re-read."""
    parts = []
    lines = wanted["line"].to_numpy()
    for batch in reader.read_batches(path, header, batch_size):
        hit = np.isin(batch.lines, lines)
        if hit.any():
            parts.append(
                batch.cells.loc[hit, list(header.cell_names)].assign(line=batch.lines[hit])
            )
    cells = pd.concat(parts, ignore_index=True)
    return wanted.merge(cells, on="line", how="left").sort_values("line", ignore_index=True)


def _reject(
    conn,
    result: FileResult,
    report: reports.RejectionReport,
    rejected: pd.DataFrame,
    reason_counts: Counter[str],
    examples: dict[str, list[int]],
) -> None:
    if rejected.empty:
        return
    result.outcomes["rejected"] += len(rejected)
    codes = rejected["reason_code"].str.split("|")
    exploded = pd.DataFrame({"line": rejected["line"], "code": codes}).explode("code")
    reason_counts.update(exploded["code"].value_counts().to_dict())
    for code, group in exploded.groupby("code", sort=False):
        have = examples.setdefault(str(code), [])
        have.extend(int(x) for x in group["line"].head(EXAMPLES_PER_REASON - len(have)))
    texts = {
        u: "; ".join(describe(c) for c in u.split("|")) for u in rejected["reason_code"].unique()
    }
    described = rejected["reason_code"].map(texts)
    cell_columns = [c for c in rejected.columns if c not in ("line", "reason_code")]
    out = rejected[["line", *cell_columns, "reason_code"]].assign(reason=described)
    report.write(out)
    warehouse.record_rejections(
        conn,
        result.file_id,
        pd.DataFrame(
            {
                "line": rejected["line"],
                "reason_code": rejected["reason_code"],
                "cells": rejected[cell_columns].fillna("").to_dict("records"),
            }
        ),
    )


def _ledger_counts(result: FileResult) -> dict[str, int]:
    return {
        "data_lines": result.data_lines,
        **result.outcomes,
        "report_path": result.report_path,
        "summary_path": result.summary_path,
    }


def _write_summary(result: FileResult, path: str | Path, started: float) -> None:
    result.timings["total_s"] = round(time.perf_counter() - started, 3)
    reports.write_summary(Path(path), result.to_dict())
