"""Where a run finds its data directory, config and warehouse: one answer for CLI and Airflow.

The CLI takes flags first; Airflow tasks take the ``conversions_warehouse`` connection first.
After that both fall back the same way: environment, then config, then an SQLite file in the
data directory, so a file processed by ``conversions inbox`` and one processed by the DAG land in
the same warehouse when nothing says otherwise.

The data directory may be object storage (``CONVERSIONS_HOME=s3://bucket/prefix``; see
`pipeline.datadir.objectstore`): its claims live in the warehouse, which then cannot default to
an SQLite file in the data directory and must be named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url

from pipeline.context import Context
from pipeline.datadir import LocalDataDir
from pipeline.datadir.layout import is_url
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


def resolve_home(
    arg: str | None, default: str | Path = "var", config: Config | None = None
) -> Path | str:
    """--home, else $CONVERSIONS_HOME, else the config file's ``home``, else ``default``
    (``./var`` for the CLI): a folder, or an object storage URL
    (``s3://[conn_id@]bucket/prefix``), kept as the string it is. A URL that cannot work (an
    unknown scheme, no bucket, credentials in it) is a ConfigError naming where it was set;
    a relative folder in the config file is relative to that file."""
    from_config = getattr(config, "home", None)  # a FileConfig's; a model Config has none
    if arg:
        home: str | Path = _checked(arg, "--home")
    elif os.environ.get("CONVERSIONS_HOME"):
        home = _checked(os.environ["CONVERSIONS_HOME"], "$CONVERSIONS_HOME")
    elif config is not None and from_config:
        home = from_config  # checked by the loader, with the file and the key
        if not is_url(home) and not Path(home).expanduser().is_absolute():
            home = Path(config.path).parent / home
    else:
        home = default
    return str(home) if is_url(home) else Path(home).expanduser().resolve()


def _checked(home: str, where: str) -> str:
    """The loader's check of a data directory URL, for every source of a home. A folder needs
    none, and is not given to it: the check's module imports the engine's (pandas), which the
    DAG files' parse must not (`airflow_home` runs when the file-drop DAG is parsed)."""
    if is_url(home):
        from pipeline.config import check_home

        check_home(home, where)
    return home


def resolve_config_path(arg: str | None, default: str | Path = "conversions.toml") -> Path:
    """--config, else $CONVERSIONS_CONFIG, else ``default``."""
    return Path(arg or os.environ.get("CONVERSIONS_CONFIG") or default)


def resolve_warehouse_url(arg: str | None, config: Config | None, home: Path | str) -> str:
    """The given URL, then $CONVERSIONS_WAREHOUSE_URL, then the config, then SQLite in home."""
    return (
        arg
        or os.environ.get("CONVERSIONS_WAREHOUSE_URL")
        or (config.settings.warehouse_url if config else None)
        or default_warehouse_url(home)
    )


def default_warehouse_url(home: Path | str) -> str:
    if isinstance(home, str):
        from pipeline.core.model import ConfigError  # a ValueError: callers catching it still do

        raise ConfigError(
            home,
            "",
            f"the data directory {home} is object storage, where an SQLite warehouse cannot "
            "live (and where claims are warehouse rows every worker must share): set "
            "CONVERSIONS_WAREHOUSE_URL, --warehouse, settings.warehouse_url or, in Airflow, the "
            "conversions_warehouse connection",
        )
    return f"sqlite:///{home / 'warehouse.db'}"


def claim_lease() -> timedelta:
    """How long an object storage claim is trusted without its owner being seen alive:
    $CONVERSIONS_CLAIM_LEASE_SECONDS, else 6 hours. Longer than any file takes, since a claim
    past its lease is adopted by another worker."""
    from pipeline.datadir.objectstore import DEFAULT_LEASE

    raw = os.environ.get("CONVERSIONS_CLAIM_LEASE_SECONDS")
    if raw is None or raw == "":
        return DEFAULT_LEASE
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise ValueError(f"CONVERSIONS_CLAIM_LEASE_SECONDS must be a positive number, got {raw!r}")
    return timedelta(seconds=seconds)


def open_context(config: Config, home: Path | str, url: str) -> Context:
    """Connect (creating or upgrading the schema) and bundle what a run needs."""
    from pipeline import warehouse  # here, not at the top: a DAG file's parse needs none of it

    if isinstance(home, Path) and url == default_warehouse_url(home):  # a fresh home's default
        home.mkdir(parents=True, exist_ok=True)
    from pipeline.datadir.objectstore import ObjectStoreDataDir  # with its fsspec, when used

    engine = warehouse.connect(url, lock_timeout_s=config.settings.lock_timeout_seconds)
    if isinstance(home, Path):
        datadir: LocalDataDir | ObjectStoreDataDir = LocalDataDir(home)
    else:
        datadir = ObjectStoreDataDir(
            home, engine, lease=claim_lease(), max_file_bytes=config.settings.max_file_bytes
        )
        try:
            datadir.check_bucket()  # a missing bucket is said once, here, not per file
        except BaseException:
            engine.dispose()
            raise
    return Context(config, engine, datadir, Stop(config.settings.shutdown_grace_seconds))


def airflow_home() -> Path | str:
    """The data directory of Airflow tasks: $CONVERSIONS_HOME, else ``$AIRFLOW_HOME/conversions``
    (a worker's working directory means nothing)."""
    return resolve_home(None, _airflow_folder() / "conversions")


def _airflow_folder() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


def airflow_context(warehouse_url: str | None = None) -> Context:
    """The context of an Airflow task: the connection's URL if any, else as the CLI resolves.

    The config is $CONVERSIONS_CONFIG, else ``conversions.toml`` in the data directory.
    """
    from pipeline.config import load  # as above: only a task's body loads the config

    home = airflow_home()
    local = home if isinstance(home, Path) else _airflow_folder() / "conversions"
    config = load(resolve_config_path(None, local / "conversions.toml"))
    if not os.environ.get("CONVERSIONS_HOME") and config.home:  # the config names the home
        home = resolve_home(None, home, config)
    return open_context(config, home, resolve_warehouse_url(warehouse_url, config, home))


def url_of(conn: Any) -> str:
    """`url_from_connection` of an Airflow ``Connection`` (the task SDK's or the api-server's:
    both have these fields), so both sides of Airflow read a connection the same way."""
    return url_from_connection(
        conn.conn_type,
        host=conn.host,
        login=conn.login,
        password=conn.password,
        port=conn.port,
        schema=conn.schema,
        extra=conn.extra_dejson,
    )


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
