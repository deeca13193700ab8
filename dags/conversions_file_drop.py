"""
### Conversions file drop

Runs as soon as a sender drops the marker file `_READY` at the top of the inbox, and processes
the inbox exactly as `conversions_inbox` does, without waiting for its schedule.

**Sender contract**: write the CSV files into `inbox/<offer_source>/` (or `.../status/`), each
under a temporary name (`*.partial`, `*.tmp`) renamed when complete, *then* create `inbox/_READY`.
The triggerer deletes the marker when it fires, so the next batch needs a new one. Senders that
drop no marker are picked up by the scheduled `conversions_inbox`, the safety net.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from pipeline.airflow.taskflow import (
    TAGS,
    claim_files,
    pick,
    process_file,
    process_status_file,
    ready_asset,
    summarise,
)


@dag(
    schedule=[ready_asset()],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=[*TAGS, "event-driven"],
    doc_md=__doc__,
)
def conversions_file_drop() -> None:
    # claim -> pick each kind -> one mapped task per file, status after conversions -> summarise
    claimed = claim_files()
    conversion_files = pick.override(task_id="conversion_files")(claimed, "conversions")
    status_files = pick.override(task_id="status_files")(claimed, "status")
    conversions = process_file.expand(ticket=conversion_files)
    status = process_status_file.expand(ticket=status_files)
    conversions >> status  # a status update finds the conversions dropped with it
    summarise([conversion_files, status_files], [conversions, status])


conversions_file_drop()
