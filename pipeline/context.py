"""What a run works with besides the file: the config, the warehouse, the data directory.

Built once per run by ``runtime`` (CLI and Airflow alike) and handed down to the runner and the
ingest, which take it whole rather than a dozen loose arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
