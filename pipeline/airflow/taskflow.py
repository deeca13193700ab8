"""The TaskFlow tasks the three DAGs wire together: thin ``@task`` wrappers over ``steps``.

Only DAG files import this module (it imports Airflow). It is imported every time a DAG file is
parsed, so its top level imports Airflow's SDK and nothing of the engine: ``steps``, ``runtime``
and through them pandas, pandera and the warehouse are imported inside the task bodies, as in
Airflow's object-storage tutorial. Each task opens its own warehouse connection and closes it:
tasks may run in different processes or on different machines.

Secrets: the warehouse URL comes from the Airflow connection ``conversions_warehouse`` when there
is one (Airflow masks its password in task logs), else from $CONVERSIONS_WAREHOUSE_URL or the
config, whose password is registered with Airflow's masker too. Nothing here logs a URL other
than ``runtime.redacted``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, AssetWatcher, Connection, get_current_context, task
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

if TYPE_CHECKING:
    from pipeline.airflow.steps import FileResultDict, RunTotals, Ticket
    from pipeline.context import Context

CONNECTION_ID = "conversions_warehouse"
SCHEDULE = os.environ.get("CONVERSIONS_SCHEDULE") or "*/10 * * * *"
READY_POKE_SECONDS = float(os.environ.get("CONVERSIONS_READY_POKE_SECONDS") or 5)
TAGS = ["conversions"]

# Downstream DAGs schedule on this; one event per applied file (through the alias, so that a
# file that was quarantined or already applied emits nothing).
CONVERSIONS = Asset("conversions")
APPLIED = AssetAlias("conversions_applied")

log = logging.getLogger(__name__)


def ready_asset() -> Asset:
    """The asset whose events wake the file-drop DAG (see conversions_file_drop).

    Its watcher is chosen by configuration: the sender's ``_READY`` marker in the inbox (the
    standard provider's ``DirectoryFileDeleteTrigger``; the default), or, when
    ``CONVERSIONS_WAKEUP_SQS_QUEUE`` names an SQS queue, the bucket's event notifications on
    that queue (the amazon provider's ``SqsSensorTrigger``). Either is a wake-up only: the run
    scans the inbox and takes what is waiting, so a lost or duplicated event loses nothing.

    Called when the file-drop DAG is parsed, so it imports only what names the inbox (no
    pandas, no warehouse); the triggers' providers are only needed by that DAG.
    """
    queue = (os.environ.get("CONVERSIONS_WAKEUP_SQS_QUEUE") or "").strip()
    watcher = _bucket_notification_watcher(queue) if queue else _ready_marker_watcher()
    return Asset("conversions_inbox_ready", watchers=[watcher])


def _ready_marker_watcher() -> AssetWatcher:
    from airflow.providers.standard.triggers.file import DirectoryFileDeleteTrigger

    from pipeline import datadir, runtime

    home = runtime.airflow_home()
    if isinstance(home, str):  # object storage: a local folder watcher would watch nothing
        raise ValueError(
            f"CONVERSIONS_HOME is object storage ({home.split('://')[0]}://...): the file-drop DAG "
            "cannot watch for an inbox/_READY marker there. Set CONVERSIONS_WAKEUP_SQS_QUEUE to "
            "the queue of the bucket's event notifications (README, 'Event-driven runs from a "
            "bucket'), or pause this DAG and let conversions_inbox's schedule take the files"
        )
    trigger = DirectoryFileDeleteTrigger(
        directory=str(datadir.Layout(home).inbox),
        filename=datadir.READY_MARKER,
        poke_interval=READY_POKE_SECONDS,
    )
    return AssetWatcher(name="conversions_ready_marker", trigger=trigger)


def _bucket_notification_watcher(queue: str) -> AssetWatcher:
    """A watcher on the SQS queue that the bucket's ``s3:ObjectCreated:*`` notifications for
    the inbox prefix go to (README, "Event-driven runs from a bucket")."""
    if not queue.startswith(("https://", "http://")):
        raise ValueError(
            f"CONVERSIONS_WAKEUP_SQS_QUEUE must be the queue's URL "
            f"(https://sqs.<region>.amazonaws.com/<account>/<name>), not {queue!r}"
        )
    try:
        from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
    except ImportError as exc:
        raise RuntimeError(
            "CONVERSIONS_WAKEUP_SQS_QUEUE is set, but the amazon provider is not installed: "
            "pip install 'apache-airflow-providers-amazon[aiobotocore]' (or unset it to wake "
            f"on the inbox's _READY marker): {exc}"
        ) from exc
    trigger = SqsSensorTrigger(
        sqs_queue=queue,
        aws_conn_id=os.environ.get("CONVERSIONS_WAKEUP_AWS_CONN_ID") or "aws_default",
        max_messages=10,  # SQS's most per call; a burst of uploads is one event
        waiter_delay=max(1, round(READY_POKE_SECONDS)),
    )
    return AssetWatcher(name="conversions_bucket_notification", trigger=trigger)


def warehouse_url() -> str | None:
    """The URL of the ``conversions_warehouse`` connection, or None if it is not defined."""
    from pipeline import runtime

    try:
        conn = Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        return None
    return runtime.url_of(conn)


@contextmanager
def _context() -> Iterator[Context]:
    from pipeline import runtime
    from pipeline.progress import PeriodicLines

    # A line every PERIOD_SECONDS while a file runs: rows done of about how many, rows/s, time left.
    ctx = runtime.airflow_context(warehouse_url()).with_progress(
        PeriodicLines(lambda line: log.info("%s", line))
    )
    for warning in ctx.config.warnings:
        log.warning("config: %s", warning)
    password = ctx.engine.url.password
    if password:
        mask_secret(str(password))
    log.info(
        "warehouse %s, data directory %s",
        runtime.redacted(str(ctx.engine.url)),
        ctx.datadir.location,
    )
    try:
        with ctx.stop.handling(log.warning):  # SIGTERM: see pipeline.shutdown
            yield ctx
    finally:
        ctx.engine.dispose()
        close = getattr(ctx.datadir, "close", None)  # object storage: its local spool
        if close is not None:
            close()


def _log_story(result: Mapping[str, Any], home: str | None = None) -> None:
    from pipeline.airflow import steps

    for line in steps.story(result, home):
        log.info("%s", line)


@task(multiple_outputs=False)
def claim_files(*, triggering_asset_events: Any = None) -> dict[str, list[Ticket]]:
    """Claim every waiting file (atomic rename, or a claim row on object storage); conversion
    files and status files apart. A run woken by an event first lets what woke it settle."""
    from pipeline.airflow import steps

    with _context() as ctx:
        _let_the_wake_up_settle(ctx, triggering_asset_events)
        claimed = steps.claim(ctx)
    for kind, tickets in claimed.items():
        log.info("claimed %d %s file(s): %s", len(tickets), kind, [t["file"] for t in tickets])
    return claimed


def _let_the_wake_up_settle(ctx: Context, events: Any) -> None:
    """Wait until the newest event that woke this run is ``settle_seconds`` old.

    A bucket notification arrives a second or two after its upload (a ``_READY`` marker just
    after the rename of files written moments ago), and the scan takes only files written
    ``settle_seconds`` ago (a sender may write in place, or write a key again): a run that
    scanned at once would leave the very file that woke it for the next schedule. So, when the
    inbox holds a file too fresh to take, wait; nothing too fresh (files that waited long
    enough), no wait. Bounded by ``settle_seconds``; SIGTERM ends it early (the claim then puts
    everything back). A scheduled run has no triggering events and does not wait.
    """
    settle = ctx.config.settings.settle_seconds
    if not settle or not events:
        return
    stamps = [_utc(event.timestamp) for asset in events for event in events[asset]]
    if not stamps:
        return
    until = max(stamps) + timedelta(seconds=settle)
    wait = min(float(settle), (until - datetime.now(UTC)).total_seconds())
    if wait <= 0:
        return
    sources = ctx.config.offer_sources
    fresh = len(ctx.datadir.scan(sources)) - len(ctx.datadir.scan(sources, settle_seconds=settle))
    if fresh <= 0:
        return
    log.info(
        "woken by an event at %s, %d file(s) written under %s s ago: waiting %.1f s",
        max(stamps),
        fresh,
        settle,
        wait,
    )
    deadline = time.monotonic() + wait
    while not ctx.stop.requested and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, left))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@task
def pick(claimed: dict[str, list[Ticket]], kind: str) -> list[Ticket]:
    """One list of claim_files' result (Airflow maps over a task's whole return value only)."""
    return claimed[kind]


def _process(ticket: Ticket, outlet_events: Any) -> FileResultDict:
    from pipeline.airflow import steps

    get_current_context()["conversions_file"] = ticket["file"]  # names the mapped task in the UI
    with _context() as ctx:
        result = steps.process(ctx, ticket)
        home = ctx.datadir.location
    _log_story(result, home)
    if result["state"] == "applied":
        outlet_events[APPLIED].add(
            CONVERSIONS,
            extra={
                key: result.get(key)
                for key in ("file", "offer_source", "kind", "file_id", "content_hash", "outcomes")
            },
        )
    return result


_PROCESS = dict(
    multiple_outputs=False,  # a dict return is one XCom, not one per key
    retries=2,
    retry_delay=timedelta(seconds=30),
    outlets=[APPLIED],
    map_index_template="{{ conversions_file }}",
)


@task(**_PROCESS)
def process_file(ticket: Ticket, *, outlet_events: Any = None) -> FileResultDict:
    """Ingest one conversion file and archive or quarantine it; retried on its own."""
    return _process(ticket, outlet_events)


@task(trigger_rule="all_done", **_PROCESS)
def process_status_file(ticket: Ticket, *, outlet_events: Any = None) -> FileResultDict:
    """Ingest one status file, after every conversion file of this run (whatever their fate)."""
    return _process(ticket, outlet_events)


@task(trigger_rule="all_done", multiple_outputs=False)
def summarise(
    tickets: list[Sequence[Ticket] | None], results: list[Sequence[FileResultDict] | None]
) -> RunTotals:
    """Log the run's table and totals, and fail the run if a file's task failed.

    This is the DAG's last task and runs whatever happened upstream, so it must carry a failure
    on: a file whose task failed (after its retries) has no result. Quarantined files are not
    failures; they are reported, and their senders fix them.
    """
    from pipeline.airflow import steps

    if any(group is None for group in tickets):  # the claiming/selecting task failed
        raise RuntimeError("no files were claimed or selected: see the first task's log")
    done = [item for group in results for item in _items(group)]
    wanted = [item for group in tickets for item in _items(group)]
    total = steps.totals(done)
    log.info("run summary:\n%s", total.pop("table"))
    log.info("files by state %s; rows by outcome %s", total["states"], total["outcomes"])
    if total.get("all_rows_rejected"):
        log.warning(
            "all_rows_rejected: %d file(s) had every data line rejected (see their reports)",
            total["all_rows_rejected"],
        )
    processed = {result.get("file") for result in done}
    failed = [ticket["file"] for ticket in wanted if ticket["file"] not in processed]
    if failed:
        raise RuntimeError(
            f"{len(failed)} file(s) could not be processed (see their task logs): {failed}"
        )
    return total


def _items(group: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    # Indexing up to len() reads each stored value once; iterating would also ask for one past
    # the end, which Airflow logs as an error. A mapped task that failed stores nothing.
    return [group[i] for i in range(len(group))] if group else []


@task
def select_archived(params: dict[str, Any] | None = None) -> list[Ticket]:
    """The archived originals the replay's params select, oldest first."""
    from pipeline.airflow import steps

    params = params or {}
    with _context() as ctx:
        found = steps.archived_tickets(
            ctx,
            date.fromisoformat(params["start_date"]),
            date.fromisoformat(params["end_date"]),
            params.get("offer_source") or None,
            params.get("kind") or None,
        )
    log.info("replaying %d archived file(s): %s", len(found), [t["file"] for t in found])
    return found


@task(retries=0, multiple_outputs=False)
def replay_files(
    tickets: list[Ticket],
    *,
    params: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> RunTotals:
    """Re-process the selected files one after another, oldest first, in one task.

    Not one mapped task per file, unlike the inbox: a replay exists to reproduce an order (with
    ``edit``, the last file wins), and mapped tasks run in whatever order Airflow picks. Never
    retried: a forced re-apply that failed after its commit must not apply twice. A failure
    stops the replay at that file; the files before it stay applied (each file is its own
    transaction), and the log says which they were.
    """
    from pipeline.airflow import steps

    params = params or {}
    results = []
    with _context() as ctx:
        for ticket in tickets:
            result = steps.replay(
                ctx,
                ticket,
                run_id=run_id or "replay",
                mode_override=params.get("duplicate_mode") or None,
                dry_run=bool(params.get("dry_run", True)),
                force=bool(params.get("force", False)),
            )
            _log_story(result, ctx.datadir.location)
            results.append(result)
    total = steps.totals(results)
    log.info("replay summary:\n%s", total.pop("table"))
    return total
