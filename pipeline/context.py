"""What a run works with besides the file: the config, the warehouse, the data directory.

Built once per run by ``runtime`` (CLI and Airflow alike) and handed down to the runner and the
ingest, which take it whole rather than a dozen loose arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pipeline.progress import Progress
from pipeline.shutdown import Stop

if TYPE_CHECKING:  # types only: importing them here would drag in SQLAlchemy for DAG parsing
    from sqlalchemy import Engine

    from pipeline.core.model import Config
    from pipeline.datadir import DataDir


@dataclass(frozen=True)
class Context:
    """Everything a run needs besides the file."""

    config: Config
    engine: Engine
    datadir: DataDir
    # Set by SIGTERM/SIGINT while a CLI command or an Airflow task handles them; never set
    # where nobody installed the handlers.
    stop: Stop = field(default_factory=Stop)
    # Told of each file's rows as batches are done (`pipeline.progress`); by default nobody.
    progress: Progress = field(default_factory=Progress)

    def with_progress(self, progress: Progress) -> Context:
        """This context (the same engine, data directory and stop) telling ``progress``."""
        return replace(self, progress=progress)
