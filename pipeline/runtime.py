"""Where a run finds its data directory, config and warehouse: one answer for CLI and Airflow.

The CLI takes flags first; Airflow tasks take the ``conversions_warehouse`` connection first.
After that both fall back the same way: environment, then config, then an SQLite file in the
data directory, so a file processed by ``conversions inbox`` and one processed by the DAG land in
the same warehouse when nothing says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url

from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.shutdown import Stop

if TYPE_CHECKING:
    from pipeline.core.model import Config

# Extras of an Airflow postgres connection that are libpq connection settings.
LIBPQ_EXTRAS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "options",
        "application_name",
        "connect_timeout",
        "target_session_attrs",
    }
)


def resolve_home(arg: str | None, default: str | Path = "var") -> Path:
    """--home, else $CONVERSIONS_HOME, else ``default`` (``./var`` for the CLI)."""
    return Path(arg or os.environ.get("CONVERSIONS_HOME") or default).resolve()


def resolve_config_path(arg: str | None, default: str | Path = "conversions.toml") -> Path:
    """--config, else $CONVERSIONS_CONFIG, else ``default``."""
    return Path(arg or os.environ.get("CONVERSIONS_CONFIG") or default)


def resolve_warehouse_url(arg: str | None, config: Config | None, home: Path) -> str:
    """The given URL, then $CONVERSIONS_WAREHOUSE_URL, then the config, then SQLite in home."""
    return (
        arg
        or os.environ.get("CONVERSIONS_WAREHOUSE_URL")
        or (config.settings.warehouse_url if config else None)
        or default_warehouse_url(home)
    )


def default_warehouse_url(home: Path) -> str:
    return f"sqlite:///{home / 'warehouse.db'}"


def open_context(config: Config, home: Path, url: str) -> Context:
    """Connect (creating or upgrading the schema) and bundle what a run needs."""
    from pipeline import warehouse  # here, not at the top: a DAG file's parse needs none of it

    if url == default_warehouse_url(home):  # the default: a fresh home has no folder yet
        home.mkdir(parents=True, exist_ok=True)
    return Context(
        config,
        warehouse.connect(url, lock_timeout_s=config.settings.lock_timeout_seconds),
        LocalDataDir(home),
        Stop(config.settings.shutdown_grace_seconds),
    )


def airflow_home() -> Path:
    """The data directory of Airflow tasks: $CONVERSIONS_HOME, else ``$AIRFLOW_HOME/conversions``
    (a worker's working directory means nothing)."""
    airflow = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()
    return resolve_home(None, airflow / "conversions")


def airflow_context(warehouse_url: str | None = None) -> Context:
    """The context of an Airflow task: the connection's URL if any, else as the CLI resolves.

    The config is $CONVERSIONS_CONFIG, else ``conversions.toml`` in the data directory.
    """
    from pipeline.config import load  # as above: only a task's body loads the config

    home = airflow_home()
    config = load(resolve_config_path(None, home / "conversions.toml"))
    return open_context(config, home, resolve_warehouse_url(warehouse_url, config, home))


def url_from_connection(
    conn_type: str | None,
    *,
    host: str | None = None,
    login: str | None = None,
    password: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A SQLAlchemy URL from the fields of an Airflow connection.

    ``postgres`` (Airflow's name; ``postgresql`` too) uses psycopg 3, with the libpq settings
    among the extras (``sslmode``, ``options``...); ``sqlite`` takes the file path from the host
    field. ``extra = {"sqlalchemy_url": ...}`` overrides everything, for drivers this does not
    know.
    """
    if extra and extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    kind = (conn_type or "").lower().split("+", 1)[0]
    if kind in ("postgres", "postgresql"):
        url = URL.create(
            "postgresql+psycopg",
            username=login or None,
            password=password or None,
            host=host or None,
            port=port or None,
            database=schema or None,
            query={k: str(v) for k, v in (extra or {}).items() if k in LIBPQ_EXTRAS},
        )
        return url.render_as_string(hide_password=False)
    if kind == "sqlite":
        if not host:
            raise ValueError("an sqlite connection needs the database file path in its host")
        return f"sqlite:///{host}"
    raise ValueError(
        f"connection type {conn_type!r} is not supported: use postgres or sqlite, or put a "
        'SQLAlchemy URL in the extra field as {"sqlalchemy_url": "..."}'
    )


def redacted(url: str) -> str:
    """The URL as it may appear in logs and summaries: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say nothing of it
        return "<unparseable warehouse URL>"
