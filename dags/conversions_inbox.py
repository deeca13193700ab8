"""
### Conversions inbox

Every ten minutes (set `CONVERSIONS_SCHEDULE` to change it), claim the conversion files waiting
in the inbox and process each one as its own mapped task: validate, convert times to UTC, apply
the offer source's duplicate mode, merge into the warehouse in one transaction, archive the
original and write its rejection report; a file rejected as a whole goes to quarantine with its
reason. Status files run after the conversion files of the same pass.

- **Inbox**: `$CONVERSIONS_HOME/inbox/<offer_source>/` (conversions) and `.../status/`.
- **Reports**: `$CONVERSIONS_HOME/reports/<received date>/`; see the task logs for each file's
  counts, top rejection reasons and report paths.
- **Warehouse**: the `conversions_warehouse` connection, else `$CONVERSIONS_WAREHOUSE_URL`, else
  the config. Files of one offer source merge one at a time (a warehouse lock); different offer
  sources merge in parallel.
- A failed task retries on its own; a file whose task never succeeds is recovered by a later run.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from pipeline.airflow.taskflow import (
    SCHEDULE,
    TAGS,
    claim_files,
    pick,
    process_file,
    process_status_file,
    summarise,
)


@dag(
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    doc_md=__doc__,
)
def conversions_inbox() -> None:
    # claim -> pick each kind -> one mapped task per file, status after conversions -> summarise
    claimed = claim_files()
    conversion_files = pick.override(task_id="conversion_files")(claimed, "conversions")
    status_files = pick.override(task_id="status_files")(claimed, "status")
    conversions = process_file.expand(ticket=conversion_files)
    status = process_status_file.expand(ticket=status_files)
    conversions >> status  # a status update finds the conversions dropped with it
    summarise([conversion_files, status_files], [conversions, status])


conversions_inbox()
