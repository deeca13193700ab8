"""
### Conversions replay

Re-processes archived originals, received between two dates (UTC, inclusive), through the same
code as new files, one after another in the order they were first received (one task, so the
order holds; its log tells each file's story). Trigger it by hand with the form:

- **dry_run** (default on): validate and write reports under `reports/replays/<run id>/`; the
  warehouse does not change.
- **duplicate_mode**: override the offer source's mode for every row (for example `edit` to
  correct payouts).
- **force**: re-apply files whose bytes were applied before; without it they are reported as
  `duplicate_file` and change nothing.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag

from pipeline.airflow.taskflow import TAGS, replay_files, select_archived
from pipeline.core.vocabulary import KINDS, MODES, NAME_PATTERN

DATE = {"type": "string", "format": "date"}


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=[*TAGS, "replay"],
    doc_md=__doc__,
    params={
        "start_date": Param(title="Received from (UTC date)", **DATE),
        "end_date": Param(title="Received until (UTC date, inclusive)", **DATE),
        "offer_source": Param(
            None, type=["null", "string"], pattern=NAME_PATTERN.pattern, title="Offer source"
        ),
        "kind": Param("conversions", type="string", enum=list(KINDS), title="Kind of file"),
        "duplicate_mode": Param(
            None, type=["null", "string"], enum=[None, *MODES], title="Duplicate mode override"
        ),
        "dry_run": Param(True, type="boolean", title="Dry run (change nothing)"),
        "force": Param(False, type="boolean", title="Re-apply files already applied"),
    },
)
def conversions_replay() -> None:
    replay_files(select_archived())


conversions_replay()
