"""Ingesting one file: read -> normalise -> resolve duplicates -> apply, all or nothing.

This is the only place that sequences the functional core (`reader`, `normalise`, `duplicates`)
with the edges (`warehouse`, `reports`). The CLI's `ingest`, the inbox runner and the Airflow
tasks all come through `ingest_file`, so every route applies a file the same way. What happens
to the file as a whole (quarantined, a duplicate, a dry run, applied) and what its reports are
called is decided by `core.file_outcome`; this module gathers the facts and carries it out.

The whole file is applied in one database transaction together with its ledger row, under the
offer source's merge lock; reports are written before that transaction commits and removed if it
does not, so an applied file always has its report. Every data line ends in exactly one outcome,
and that is checked (the accounting invariant) before anything commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from pipeline import reader, warehouse
from pipeline.context import Context
from pipeline.core import duplicates, file_outcome, money, normalise, time_rule, timezones
from pipeline.core.model import OfferSource
from pipeline.core.reasons import describe
from pipeline.core.vocabulary import (
    APPLIED,
    DRY_RUN,
    DUPLICATE_FILE,
    OUTCOMES,
    PROCESSING,
    QUARANTINED,
)
from pipeline.datadir.layout import (
    UNHASHED,
    duplicates_path,
    own_paths,
    report_origin,
    report_paths,
    safe_stem,
    sha256_file,
)
from pipeline.progress import MERGE, READ, BytesSeen, Progress
from pipeline.reader import FileRejected
from pipeline.reports import RejectionReport, write_duplicates, write_summary
from pipeline.results import FileResult

EXAMPLES_PER_REASON = 3


class AccountingError(RuntimeError):
    """Outcomes did not add up to the file's data lines: a bug, so nothing is applied."""


@dataclass(frozen=True)
class Upload:
    """One file to ingest, and what is known about it besides its bytes."""

    path: Path
    offer_source: str
    kind: str = "conversions"
    received_at: datetime | None = None  # when it was received (default: now)
    name: str | None = None  # the name it was dropped under (default: the path's)
    mode_override: str | None = None  # the run's duplicate mode, over the type's and source's
    dry_run: bool = False
    force: bool = False  # apply even if the same bytes were applied before
    claim_id: str | None = None  # the inbox claim it came from, recorded in the ledger
    reports_dir: Path | None = None  # default: the data directory's reports/
    batch_size: int | None = None  # default: settings.batch_size
    uploaded_by: str | None = None  # the Airflow user who sent it through the page


def _storable(name: str) -> str:
    """A file name as text every database takes: bytes that were not UTF-8 on disk (lone
    surrogates after decoding) become ``\\xNN``."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


class _DryRun(Exception):
    """Raised inside the transaction to roll back everything a dry run did."""


@dataclass
class _Published:
    """The reports of one result as they become visible, so a failed commit takes them back."""

    csv_path: Path
    json_path: Path
    report: RejectionReport | None = None
    written: list[Path] = field(default_factory=list)
    duplicates: pd.DataFrame | None = None  # the ignored duplicates, listed beside the report
    delimiter: str = ","

    def rename(self, tag: str | None) -> None:
        if tag is not None:
            self.csv_path, self.json_path = own_paths(self.csv_path, self.json_path, tag)

    def drop_report(self) -> None:
        if self.report is not None:
            self.report.discard()
            self.report = None

    def commit_report(self, result: FileResult) -> None:
        if self.report is not None:
            self.written.append(self.report.commit(self.csv_path))
        if self.duplicates is not None:
            path = write_duplicates(duplicates_path(self.csv_path), self.duplicates, self.delimiter)
            self.written.append(path)
            result.duplicates_path = str(path)

    def summary(self, result: FileResult, started: float) -> None:
        result.timings["total_s"] = round(time.perf_counter() - started, 3)
        self.written.append(write_summary(self.json_path, result.to_dict()))

    def take_back(self) -> None:
        """Best effort (the caller re-raises): the result these reports describe was not
        recorded."""
        self.drop_report()
        for done in self.written:
            with contextlib.suppress(OSError):
                done.unlink(missing_ok=True)


def ingest_file(ctx: Context, upload: Upload) -> FileResult:
    """Apply one file (or, with `dry_run`, work out exactly what it would do and roll back).

    Whole-file problems (unreadable, missing column, too large...) return a `quarantined`
    result and change nothing but the ledger. Row problems go to the rejection report.
    """
    path = Path(upload.path)
    started = time.perf_counter()
    received = pd.Timestamp(upload.received_at or datetime.now(UTC)).tz_convert(UTC).floor("s")
    name = upload.name or path.name
    settings = ctx.config.settings
    result = FileResult(
        name, upload.offer_source, upload.kind, QUARANTINED, received_at=received.isoformat()
    )
    size = path.stat().st_size  # first: a file over the limit is never read, not even hashed
    ctx.progress.file_started(name, size)
    if size <= settings.max_file_bytes:
        result.content_hash = sha256_file(path)
    published = _Published(
        *report_paths(
            upload.reports_dir or ctx.datadir.reports,
            received.to_pydatetime(),
            name,
            result.content_hash or UNHASHED,
        )
    )
    result.report_path, result.summary_path = str(published.csv_path), str(published.json_path)
    ledger = dict(
        content_hash=result.content_hash or UNHASHED,
        original_name=_storable(name),
        offer_source=upload.offer_source,
        kind=upload.kind,
        received_at=received,
        duplicate_mode_override=upload.mode_override,
        forced=upload.force,
        claim_id=upload.claim_id,
        uploaded_by=upload.uploaded_by,
    )
    try:
        refusal = file_outcome.refused_unread(
            size, settings.max_file_bytes, upload.offer_source, ctx.config.offer_sources
        )
        if refusal is not None:
            raise FileRejected(refusal.code, refusal.detail)
        source = ctx.config.offer_sources[upload.offer_source]
        header = reader.read_header(
            path,
            upload.kind,
            max_line_bytes=settings.max_line_bytes,
            max_columns=settings.max_columns,
            source=source,
        )
        result.warnings += [f"ignored unknown column {c!r}" for c in header.unknown]
        result.warnings += [f"ignored column {c!r} (ignore_columns)" for c in header.ignored]
        published.delimiter = header.delimiter
        published.report = RejectionReport(
            published.csv_path, header.names, header.delimiter, origin=header.origin is not None
        )
        with warehouse.file_transaction(
            ctx.engine,
            upload.offer_source,
            lock_timeout_s=settings.lock_timeout_seconds,
            statement_timeout_s=settings.statement_timeout_seconds,
        ) as conn:
            _apply_or_skip(conn, ctx, upload, header, result, published, ledger, received)
            published.summary(result, started)
            ctx.stop.committing()  # a stop signal no longer rolls it back: the commit is next
    except _DryRun:
        result.state = DRY_RUN
    except FileRejected as rejected:
        published.drop_report()
        result.state, result.reason_code, result.detail = (
            QUARANTINED,
            rejected.code,
            rejected.detail,
        )
        result.report_path = None
        # Nothing of it applies: no data lines either (batches read before the bad byte counted
        # some), or the quarantined result would break the accounting invariant.
        result.data_lines = 0
        result.outcomes = dict.fromkeys(OUTCOMES, 0)
    except BaseException:
        published.take_back()  # the transaction did not commit: no report for it
        ctx.progress.file_finished(None)
        raise
    if result.state in (DRY_RUN, QUARANTINED):
        _record_unapplied(ctx, result, published, ledger, started)
    ctx.progress.file_finished(result)
    return result


def _apply_or_skip(
    conn: Connection,
    ctx: Context,
    upload: Upload,
    header: reader.Header,
    result: FileResult,
    published: _Published,
    ledger: dict[str, Any],
    received: pd.Timestamp,
) -> None:
    """Inside the file's transaction: a duplicate of applied bytes is recorded and skipped;
    anything else is applied (a dry run raises `_DryRun` at the end, to roll it all back). A
    duplicate under another mode override than the applied copy's says that only force
    re-applies it (`file_outcome.duplicate_detail`).

    Before either is recorded as done, the file is hashed again: bytes that changed since the
    hash taken before reading (a sender still writing in place) were not what was read, so
    `FileChanged` rolls it all back and the file is taken again once it has settled."""
    from pipeline.datadir.claims import FileChanged  # the data directory's notion, raised here

    def unchanged() -> None:
        if sha256_file(upload.path) != result.content_hash:
            raise FileChanged(result.name)

    applied_before = warehouse.applied_count(
        conn, result.content_hash, upload.offer_source, upload.kind
    )
    origin = report_origin(result.name) if header.origin else None
    if origin is not None:  # a fixed rejection report: link it to the file it came from
        stem, prefix = origin
        ledger["original_file_id"] = warehouse.original_of(
            conn, upload.offer_source, upload.kind, prefix, lambda name: safe_stem(name) == stem
        )
    state = file_outcome.state_after_ledger_check(applied_before, upload.force, upload.dry_run)
    if state == DUPLICATE_FILE:
        applied_mode = warehouse.applied_mode_override(
            conn, result.content_hash, upload.offer_source, upload.kind, upload.mode_override
        )
        result.state = DUPLICATE_FILE
        result.detail = file_outcome.duplicate_detail(applied_mode, upload.mode_override)
        result.file_id = warehouse.record_file(
            conn, state=DUPLICATE_FILE, detail=result.detail, **ledger
        )
        published.drop_report()
        result.report_path = None
        published.rename(file_outcome.report_tag(DUPLICATE_FILE, result.file_id))
        result.summary_path = str(published.json_path)
        unchanged()
        warehouse.finish_file(conn, result.file_id, summary_path=result.summary_path)
        return
    result.file_id = warehouse.record_file(conn, state=PROCESSING, **ledger)
    run = _FileRun(
        conn,
        upload,
        header,
        ctx.config.offer_sources[upload.offer_source],
        result,
        published.report,
        received,
        sequence=applied_before + 1,
        batch_size=upload.batch_size or ctx.config.settings.batch_size,
        future_tolerance=ctx.config.settings.future_tolerance_seconds,
        progress=ctx.progress,
    )
    run.apply()
    published.duplicates = run.duplicates
    unchanged()
    if state == DRY_RUN:
        raise _DryRun
    result.state = APPLIED
    taken = warehouse.names_taken(conn, result.content_hash, published.json_path, result.file_id)
    published.rename(file_outcome.report_tag(APPLIED, result.file_id, taken))
    result.report_path, result.summary_path = str(published.csv_path), str(published.json_path)
    warehouse.finish_file(conn, result.file_id, state=APPLIED, **_ledger_counts(result))
    published.commit_report(result)


def _record_unapplied(
    ctx: Context,
    result: FileResult,
    published: _Published,
    ledger: dict[str, Any],
    started: float,
) -> None:
    """Record a dry run or a quarantine, after the file's transaction: the reports get names
    of their own (a dry run or a quarantine of bytes applied the same day under the same name
    must not write over the applied file's), and the ledger row commits only once they are
    written."""
    ctx.stop.committing()  # short, and what it records must match the reports
    try:
        with ctx.engine.begin() as conn:
            detail = f"{result.reason_code}: {result.detail}" if result.reason_code else None
            counts = _ledger_counts(result) if result.state == DRY_RUN else {}
            result.file_id = warehouse.record_file(
                conn, state=result.state, detail=detail, **ledger, **counts
            )
            published.rename(file_outcome.report_tag(result.state, result.file_id))
            if published.report is not None:
                result.report_path = str(published.csv_path)
            result.summary_path = str(published.json_path)
            warehouse.finish_file(
                conn,
                result.file_id,
                report_path=result.report_path,
                summary_path=result.summary_path,
            )
            published.commit_report(result)
            published.summary(result, started)
    except BaseException:
        published.take_back()
        raise


class _FileRun:
    """One file's rows through the core, inside its transaction: read and validate in batches
    into the stage (`warehouse.Stage`), then resolve and merge chunk by chunk.

    Memory holds one batch while reading and one merge chunk (rows of whole click ids) while
    merging, whatever the size of the file.
    """

    def __init__(
        self,
        conn: Connection,
        upload: Upload,
        header: reader.Header,
        source: OfferSource,
        result: FileResult,
        report: RejectionReport,
        received: pd.Timestamp,
        *,
        sequence: int,
        batch_size: int,
        future_tolerance: int,
        progress: Progress | None = None,
    ):
        self.conn, self.upload, self.header, self.source = conn, upload, header, source
        self.progress = progress or Progress()
        self.result, self.report, self.received = result, report, received
        self.sequence, self.batch_size, self.future_tolerance = (
            sequence,
            batch_size,
            future_tolerance,
        )
        self.writes = warehouse.Background(conn)  # the file's writes, overlapping the reading
        self.reason_counts: Counter[str] = Counter()
        self.examples: dict[str, list[int]] = {}
        self.duplicates: pd.DataFrame | None = None  # the ignored duplicates, traced

    def apply(self) -> None:
        result = self.result
        t0 = time.perf_counter()
        stage = warehouse.Stage(
            result.kind,
            self.source.name,
            file_bytes=Path(self.upload.path).stat().st_size,
            chunk_rows=self.batch_size,
        )
        with self.writes, stage:
            self._read_into(stage)
            self.writes.finish()
            result.timings["read_validate_s"] = round(time.perf_counter() - t0, 3)
            t1 = time.perf_counter()
            self._merge_from(stage)
        result.reasons = dict(self.reason_counts.most_common())
        result.examples = self.examples
        result.timings["merge_s"] = round(time.perf_counter() - t1, 3)
        total = sum(result.outcomes.values())
        if total != result.data_lines:
            raise AccountingError(
                f"{result.name}: outcomes add up to {total}, but the file has "
                f"{result.data_lines} data lines ({result.outcomes}); nothing was applied"
            )
        if result.data_lines and result.outcomes["rejected"] == result.data_lines:
            result.warnings.insert(
                0,
                f"all_rows_rejected: every one of the {result.data_lines} data line(s) was "
                "rejected, so the file changed nothing; fix the rows in its rejection report "
                "and drop that report back in",
            )

    def _read_into(self, stage: warehouse.Stage) -> None:
        result, header = self.result, self.header
        blank = 0
        example: str | None = None
        seen = BytesSeen(header.encoding, header.delimiter, header.names)
        for batch in reader.read_batches(self.upload.path, header, self.batch_size):
            blank += batch.blank_lines
            result.data_lines += len(batch.lines) + len(batch.malformed)
            cells = header.canonical(batch.cells)
            if result.kind == "status":
                part = normalise.statuses(cells, batch.lines, self.source)
            else:
                part = normalise.conversions(
                    cells,
                    batch.lines,
                    self.source,
                    received_at=self.received,
                    future_tolerance_seconds=self.future_tolerance,
                    mode_override=self.upload.mode_override,
                    file_zone=header.time_zone,
                )
                if example is None:
                    example = _time_example(cells, batch.lines, part.accepted, self.source)
            rejected = _with_cells(part.rejected, batch, header)
            if batch.malformed:
                rejected = pd.concat([_malformed(batch, header), rejected], ignore_index=True)
                rejected = rejected.sort_values("line", kind="stable", ignore_index=True)
            # One write per batch: a second one would wait for the first, and the next batch's
            # reading with it (on the 1M-row file that wait was a third of the read phase).
            self.writes(_stage_batch, stage, part.accepted, result.file_id, self._report(rejected))
            records = len(batch.lines) + len(batch.malformed)
            done = seen.add(batch.cells, records)
            self.progress.advance(READ, result.data_lines, bytes_done=done)
        if blank:
            result.warnings.append(f"skipped {blank} blank line(s)")
        if result.kind == "conversions":
            source = self.source
            rule = time_rule.rule(source.file_times, source.account.timezone, header.time_zone)
            result.times = time_rule.statement(rule, example)

    def _merge_from(self, stage: warehouse.Stage) -> None:
        result = self.result
        late: list[pd.DataFrame] = []
        ignored_rows: list[pd.DataFrame] = []
        staged, merged = result.data_lines - result.outcomes["rejected"], 0
        for rows, found in stage.chunks():
            resolution = _resolve(rows, found, self.source, result, self.received, self.sequence)
            if not self.upload.dry_run:  # encoded here, sent by the writer thread
                writes = warehouse.prepare(
                    self.conn.dialect.name,
                    resolution,
                    file_id=result.file_id,
                    offer_source=self.source.name,
                )
                self.writes(warehouse.write, writes)
            outcome = resolution.outcomes["outcome"]
            late.append(resolution.outcomes.loc[outcome == "rejected", ["line", "reason_code"]])
            if result.kind == "conversions":
                ignored = resolution.outcomes.loc[
                    outcome == "ignored_duplicate", ["line", "duplicate_of"]
                ]
                if len(ignored):
                    ignored_rows.append(ignored.merge(rows, on="line", how="left"))
            for name, count in outcome[outcome != "rejected"].value_counts().items():
                result.outcomes[str(name)] += int(count)
            merged += len(rows)
            self.progress.advance(MERGE, merged, rows_total=staged)
        self.writes.finish()  # the connection is this thread's again
        if ignored_rows:
            self.duplicates = self._traced(pd.concat(ignored_rows, ignore_index=True))
        late_rows = pd.concat(late, ignore_index=True) if late else pd.DataFrame()
        if len(late_rows):
            late_rows = late_rows.sort_values("line", ignore_index=True)
            self._reject(
                _cells_for_lines(self.upload.path, self.header, self.batch_size, late_rows)
            )

    def _reject(self, rejected: pd.DataFrame) -> None:
        ledger = self._report(rejected)
        if ledger is not None:
            self.writes(warehouse.record_rejections, self.result.file_id, ledger)

    def _report(self, rejected: pd.DataFrame) -> pd.DataFrame | None:
        return _report(self.result, self.report, rejected, self.reason_counts, self.examples)

    def _traced(self, ignored: pd.DataFrame) -> pd.DataFrame:
        """The ignored duplicates with the conversion each one duplicates: its id, and the file
        and line that created it (this file's own line when an earlier row of the file did;
        read from the warehouse otherwise, where a dry run's own rows are not)."""
        ignored = ignored.sort_values("line", ignore_index=True)
        prefix = _id_prefix(self.source, self.result, self.sequence) + "-"
        own = ignored["duplicate_of"].str.startswith(prefix).fillna(False)
        found = warehouse.origins(self.conn, ignored.loc[~own, "duplicate_of"])
        traced = ignored.merge(
            found.rename(
                columns={
                    "conversion_id": "duplicate_of",
                    "original_name": "duplicate_of_file",
                    "line": "duplicate_of_line",
                }
            ),
            on="duplicate_of",
            how="left",
        )
        own_line = ignored["duplicate_of"].str.removeprefix(prefix)
        found_line = traced["duplicate_of_line"].astype("Int64").astype("str")
        return traced.assign(
            payout=money.format_series(traced["payout"]),
            duplicate_of_file=traced["duplicate_of_file"].where(~own, self.result.name),
            duplicate_of_line=found_line.where(~own, own_line),
        )


def _resolve(
    rows: pd.DataFrame,
    found: pd.DataFrame,
    source: OfferSource,
    result: FileResult,
    received: pd.Timestamp,
    sequence: int,
) -> duplicates.Resolution:
    """`found`: what the warehouse holds for the chunk (`warehouse.Stage.chunks`)."""
    if result.kind == "status":
        return duplicates.resolve_status(rows, found)
    defaults = duplicates.Defaults(
        status=source.default_status, currency=source.account.currency, converted_at=received
    )
    return duplicates.resolve(rows, found, defaults, _id_prefix(source, result, sequence))


def _id_prefix(source: OfferSource, result: FileResult, sequence: int) -> str:
    """What the ids of a file's new conversions start with: its content, and how many times
    these bytes were applied before (a forced re-apply makes new conversions, not the same)."""
    tag = f"{source.name}\n{result.kind}\n{result.content_hash}\n{sequence}"
    return hashlib.sha256(tag.encode()).hexdigest()[:16]


def _time_example(
    cells: pd.DataFrame, lines: np.ndarray, accepted: pd.DataFrame, source: OfferSource
) -> str | None:
    """The first accepted row of a batch whose time had no offset of its own, as written and
    in the account's clock (`core.time_rule`); None when the batch has none. A few rows are
    looked at, not the batch: the statement needs one."""
    if accepted.empty or "conversion_time" not in cells:
        return None
    first = accepted.iloc[:1000]
    position = np.searchsorted(lines, first["line"].to_numpy())
    written = cells["conversion_time"].iloc[position].fillna("").astype("str").str.strip()
    for text, row in zip(written, first.itertuples(index=False), strict=True):
        if text and not time_rule.has_own_instant(text):
            zone = timezones.zone(source.account.timezone)
            return time_rule.example(
                int(row.line), text, row.converted_at, source.account.timezone, zone
            )
    return None


def _with_cells(rejected: pd.DataFrame, batch: reader.Batch, header: reader.Header) -> pd.DataFrame:
    """Attach the original cells (as written) to rejected rows of a batch.

    The cell columns join in one step: `assign` with a column per header cell inserts them one
    at a time, quadratic in the header's width.
    """
    if rejected.empty:
        empty = pd.DataFrame(index=rejected.index, columns=_kept(header), dtype="str")
        return pd.concat([rejected, empty], axis=1)
    position = np.searchsorted(batch.lines, rejected["line"].to_numpy())
    cells = _kept_cells(batch.cells, header).iloc[position].reset_index(drop=True)
    return pd.concat([rejected.reset_index(drop=True), cells], axis=1)


def _kept(header: reader.Header) -> list[str]:
    """The columns a rejected row keeps: its original line (a re-dropped report), its cells."""
    return (["original_line"] if header.origin else []) + list(header.cell_names)


def _kept_cells(cells: pd.DataFrame, header: reader.Header) -> pd.DataFrame:
    kept = cells[list(header.cell_names)]
    if header.origin is None:
        return kept
    return pd.concat([cells[header.origin].rename("original_line"), kept], axis=1)


_INTEGER_PART = re.compile(r"-?[0-9]{1,3}(?:\.[0-9]{3})*|-?[0-9]+")
_DECIMALS = re.compile(r"[0-9]{1,6}")


def _malformed(batch: reader.Batch, header: reader.Header) -> pd.DataFrame:
    """Malformed rows keep their cells by position; extra cells stay in the last column.

    A comma-separated row with exactly one cell too many whose payout and the next cell read
    as a decimal-comma amount (`12` and `50` of `12,50`) is `unquoted_decimal_comma`, with the
    payout shown joined as the sender wrote it: that, not the shifted columns, is the mistake.
    """
    width = len(header.names)
    cell_names = header.cell_names
    keep = [i for i, name in enumerate(header.names) if not reader.is_report_column(name)]
    payout = header.columns.get("payout")
    origin = header.names.index(header.origin) if header.origin else None
    rows = []
    for line, cells in batch.malformed:  # rare by nature; the common path has no such loop
        code = "malformed_row"
        if (
            payout is not None
            and header.delimiter == ","
            and len(cells) == width + 1
            and _INTEGER_PART.fullmatch(cells[payout].strip())
            and _DECIMALS.fullmatch(cells[payout + 1].strip())
        ):
            code = "unquoted_decimal_comma"
            cells = [*cells[:payout], f"{cells[payout]},{cells[payout + 1]}", *cells[payout + 2 :]]
        cells = list(cells) + [""] * (width - len(cells))
        if len(cells) > width:
            cells = [*cells[: width - 1], header.delimiter.join(cells[width - 1 :])]
        first = [] if origin is None else [cells[origin]]
        rows.append([line, code, *first, *(cells[i] for i in keep)])
    origin_column = [] if origin is None else ["original_line"]
    return pd.DataFrame(rows, columns=["line", "reason_code", *origin_column, *cell_names])


def _cells_for_lines(
    path: Path, header: reader.Header, batch_size: int, wanted: pd.DataFrame
) -> pd.DataFrame:
    """Second pass for rows the merge rejected: only their cells are needed, so re-read."""
    parts = []
    lines = wanted["line"].to_numpy()
    for batch in reader.read_batches(path, header, batch_size):
        hit = np.isin(batch.lines, lines)
        if hit.any():
            parts.append(_kept_cells(batch.cells.loc[hit], header).assign(line=batch.lines[hit]))
    cells = pd.concat(parts, ignore_index=True)
    return wanted.merge(cells, on="line", how="left").sort_values("line", ignore_index=True)


def _stage_batch(
    conn: Connection,
    stage: warehouse.Stage,
    accepted: pd.DataFrame,
    file_id: int,
    rejections: pd.DataFrame | None,
) -> None:
    """A batch's writes, on the writer thread: its accepted rows staged (and looked up), its
    rejected rows recorded."""
    stage.append(conn, accepted)
    if rejections is not None:
        warehouse.record_rejections(conn, file_id, rejections)


def _report(
    result: FileResult,
    report: RejectionReport,
    rejected: pd.DataFrame,
    reason_counts: Counter[str],
    examples: dict[str, list[int]],
) -> pd.DataFrame | None:
    """Count rejected rows, write them to the report, and return what the warehouse records of
    them (`warehouse.record_rejections`); None when there are none."""
    if rejected.empty:
        return None
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
    origin = ["original_line"] if "original_line" in rejected.columns else []
    cell_columns = [c for c in rejected.columns if c not in ("line", "reason_code", *origin)]
    out = rejected[["line", *origin, *cell_columns, "reason_code"]].assign(reason=described)
    report.write(out)
    return pd.DataFrame(
        {
            "line": rejected["line"],
            "reason_code": rejected["reason_code"],
            "cells": rejected[cell_columns].fillna("").to_dict("records"),
        }
    )


def _ledger_counts(result: FileResult) -> dict[str, int]:
    return {
        "data_lines": result.data_lines,
        **result.outcomes,
        "report_path": result.report_path,
        "summary_path": result.summary_path,
    }
