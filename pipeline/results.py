"""What happened to one file: the result every route (CLI, inbox, Airflow, replay) returns.

Small and JSON-able, so an Airflow task can pass it on as its XCom, and the summary JSON beside
each file's report is this record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core import file_outcome
from pipeline.core.vocabulary import OUTCOMES


@dataclass
class FileResult:
    """What happened to one file; small and JSON-able, so Airflow tasks can pass it on."""

    name: str
    offer_source: str | None
    kind: str
    state: str
    content_hash: str | None = None
    data_lines: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # How times without an offset were read, with an example from the file (README "Times").
    times: str | None = None
    detail: str | None = None
    reason_code: str | None = None
    report_path: str | None = None
    summary_path: str | None = None
    # Every ignored duplicate with the conversion it duplicated (only when there are some).
    duplicates_path: str | None = None
    file_id: int | None = None
    received_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def all_rows_rejected(self) -> bool:
        """Read (applied or a dry run), with data lines, every one of them rejected: nothing of
        the file applied. The CLI exits 1 for such a file; not a field, so not in ``to_dict``."""
        return file_outcome.all_rows_rejected(
            self.state, self.data_lines, self.outcomes.get("rejected", 0)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
