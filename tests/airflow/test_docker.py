"""docker/ stays true without a Docker engine: the compose file and the Dockerfile are parsed and
checked against the repository (paths), pyproject.toml and constraints.txt (versions), the
PostgreSQL init script (credentials) and the project's own config loader.

Compose variables are resolved as on a machine where none is set: `${VAR:-default}` and
`${VAR-default}` take their default, `$$` is a literal `$`, and a variable without a default is
an error (the stack must come up with no .env file).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from pipeline import config as config_module
from pipeline import runtime

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
INIT_SQL_DIR = DOCKER / "postgres-init"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

AIRFLOW_COMMANDS = ("api-server", "scheduler", "dag-processor", "triggerer")
CONNECTION_VAR = "AIRFLOW_CONN_CONVERSIONS_WAREHOUSE"
DATA_DIR = "/opt/airflow/conversions"  # $CONVERSIONS_HOME in the containers
# Bind mounts whose host folder need not exist in a checkout, with why. Nothing else is exempt.
CREATED_AT_RUN_TIME = {
    DATA_DIR: "the data directory (inbox, archive, reports...): Docker creates the host folder "
    "on first start and airflow-init creates its subfolders",
}


# --- reading the files -------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def _interpolate(value: Any, where: str = "compose.yaml") -> Any:
    """Compose's variable substitution, with every variable unset."""
    if isinstance(value, dict):
        return {key: _interpolate(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        if match.group("op") in (":-", "-"):
            return match.group("arg")
        raise AssertionError(f"{where}: ${{{name}}} has no default, so the stack needs a .env")

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))  # resolves <<: merge keys
    assert isinstance(raw, dict) and isinstance(raw.get("services"), dict), "no services"
    return _interpolate(raw)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def _airflow_subcommand(service: dict[str, Any]) -> str | None:
    """`scheduler` for `command: scheduler` (the image's entrypoint adds `airflow`) or
    `airflow scheduler`."""
    words = _command_words(service)
    if words and words[0] == "airflow":
        words = words[1:]
    return words[0] if words else None


def _service_running(services: dict[str, dict[str, Any]], subcommand: str) -> str:
    names = [name for name, s in services.items() if _airflow_subcommand(s) == subcommand]
    assert len(names) == 1, f"expected one service running `airflow {subcommand}`, got {names}"
    return names[0]


def _init_service(services: dict[str, dict[str, Any]]) -> str:
    names = [
        name for name, s in services.items() if "airflow db migrate" in " ".join(_command_words(s))
    ]
    assert len(names) == 1, f"expected one init service running `airflow db migrate`: {names}"
    return names[0]


def _postgres_service(services: dict[str, dict[str, Any]]) -> str:
    names = [n for n, s in services.items() if str(s.get("image", "")).split(":")[0] == "postgres"]
    assert len(names) == 1, f"expected one service on the postgres image, got {names}"
    return names[0]


def _celery_workers(services: dict[str, dict[str, Any]]) -> list[str]:
    """The services running `airflow celery worker` (the `celery` profile)."""
    return [n for n, s in services.items() if _command_words(s)[:2] in (["celery", "worker"],
            ["airflow", "celery"])]  # fmt: skip


def _airflow_services(services: dict[str, dict[str, Any]]) -> list[str]:
    return [
        *(_service_running(services, c) for c in AIRFLOW_COMMANDS),
        _init_service(services),
        *_celery_workers(services),
    ]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, target, *_mode = entry.split(":")
            mounts.append((source, target))
    return mounts


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / Path(source).expanduser()).resolve()


def _container_port(service: dict[str, Any]) -> int:
    ports = service.get("ports") or []
    assert len(ports) == 1, f"expected one published port: {ports}"
    port = ports[0]
    target = port["target"] if isinstance(port, dict) else str(port).rsplit(":", 1)[-1]
    return int(str(target).split("/")[0])


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _dockerfile_base() -> tuple[str, dict[str, str]]:
    """The FROM image with the global ARG defaults substituted, and those defaults."""
    args: dict[str, str] = {}
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], rest.split()[0]
            )
            return image, args
    raise AssertionError("the Dockerfile has no FROM")


def _copy_sources() -> list[str]:
    sources = []
    for keyword, rest in _dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            assert len(words) >= 2, f"{keyword} {rest}"
            sources += words[:-1]
    return sources


def _pyproject_pin(name: str) -> str:
    for dependency in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(dependency)
        if canonicalize_name(requirement.name) == canonicalize_name(name):
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{name} is not pinned in pyproject.toml"
            return specifier.version
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _constraints_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _init_sql() -> str:
    files = sorted(INIT_SQL_DIR.glob("*.sql"))
    assert files, f"no init script in {INIT_SQL_DIR}"
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


# --- services ----------------------------------------------------------------------------------


def test_compose_has_postgres_init_and_the_four_airflow_components(services):
    for command in AIRFLOW_COMMANDS:
        _service_running(services, command)
    init = _init_service(services)
    assert _postgres_service(services) not in _airflow_services(services)
    for name in (_service_running(services, c) for c in AIRFLOW_COMMANDS):
        assert name != init


def test_airflow_services_wait_for_postgres_and_the_init(services):
    postgres, init = _postgres_service(services), _init_service(services)
    assert services[postgres].get("healthcheck", {}).get("test"), "postgres has no healthcheck"
    assert services[init]["depends_on"][postgres]["condition"] == "service_healthy"
    for command in AIRFLOW_COMMANDS:
        depends = services[_service_running(services, command)].get("depends_on") or {}
        assert depends.get(postgres, {}).get("condition") == "service_healthy", command
        assert depends.get(init, {}).get("condition") == "service_completed_successfully", command


def test_airflow_services_run_the_project_image_built_from_the_repository(services):
    version = PYPROJECT["project"]["version"]
    for name in _airflow_services(services):
        service = services[name]
        build = service.get("build")
        assert isinstance(build, dict), f"{name}: no build section"
        context = _host_path(build["context"])
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        # The Dockerfile's ARG defaults are the one place the versions live.
        overridden = set(build.get("args") or {}) & {"AIRFLOW_VERSION", "PYTHON_VERSION"}
        assert not overridden, f"{name}: build args override {overridden}"
        assert service.get("image") == f"conversions-pipeline:{version}", (
            f"{name}: tag the image with the project's version {version} (pyproject.toml)"
        )


# --- paths -------------------------------------------------------------------------------------


def test_every_path_compose_references_exists(compose, services):
    declared_volumes = set(compose.get("volumes") or {})
    checked = 0
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = _host_path(build["context"] if isinstance(build, dict) else build)
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / (build.get("dockerfile", "Dockerfile"))
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            checked += 2
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert _host_path(path).is_file(), f"{name}: env_file {path}"
            checked += 1
        for source, target in _mounts(service):
            if not _is_bind(source):
                assert source in declared_volumes, f"{name}: volume {source!r} is not declared"
            elif target in CREATED_AT_RUN_TIME:
                # Exempt from existing, but it must stay in var/, which git ignores.
                assert _host_path(source).is_relative_to(ROOT / "var"), (name, source)
            else:
                assert _host_path(source).exists(), f"{name}: {source} (mounted at {target})"
                checked += 1
    assert checked >= 8, "fewer paths than the stack references: is the parsing right?"


def test_every_path_the_dockerfile_copies_exists_and_is_not_ignored():
    sources = _copy_sources()
    assert sources, "the Dockerfile copies nothing"
    patterns = [
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    assert {".git", ".venv"} <= set(patterns), "keep .git and .venv out of the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        path = PurePosixPath(source.rstrip("/"))
        for pattern in patterns:
            assert not fnmatch.fnmatch(str(path), pattern), f"{source} is ignored by {pattern}"
            assert not fnmatch.fnmatch(path.parts[0], pattern), f"{source} is ignored by {pattern}"
    # What `pip install .` needs: the package sources, the build config and the readme.
    copied = {s.rstrip("/") for s in sources}
    needed = {"pyproject.toml", "constraints.txt", PYPROJECT["project"]["readme"]}
    needed |= {include.rstrip("*") for include in _package_roots()}
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"
    assert "dags" in copied


def _package_roots() -> list[str]:
    return PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]


# --- versions ----------------------------------------------------------------------------------


def test_dockerfile_is_the_official_airflow_image_of_the_pinned_version():
    image, args = _dockerfile_base()
    pinned = _pyproject_pin("apache-airflow")
    constraints = _constraints_pins()
    assert constraints[canonicalize_name("apache-airflow")] == pinned, "constraints.txt differs"
    assert constraints.get(canonicalize_name("apache-airflow-core"), pinned) == pinned
    assert args.get("AIRFLOW_VERSION") == pinned, "ARG AIRFLOW_VERSION is not pyproject's pin"
    python = args.get("PYTHON_VERSION", "")
    assert re.fullmatch(r"3\.\d+", python), f"ARG PYTHON_VERSION={python!r}"
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert requires.contains(python), f"Python {python} is outside requires-python {requires}"
    assert image == f"apache/airflow:{pinned}-python{python}"


def test_dockerfile_installs_the_project_with_its_constraints_as_the_airflow_user():
    instructions = _dockerfile_instructions()
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0].split("&&")[0])
    assert "-c" in words and words[words.index("-c") + 1].endswith("constraints.txt"), words
    # Airflow named at the image's own version (its ENV), so pip cannot move it.
    assert "apache-airflow==${AIRFLOW_VERSION}" in words, words
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] == "airflow", f"the image must end as the airflow user: {users}"


def test_postgres_image_is_pinned(services):
    image = services[_postgres_service(services)]["image"]
    name, _, tag = image.partition(":")
    assert name == "postgres"
    assert re.match(r"\d+", tag), f"{image}: pin at least the major version, never latest"


# --- connections, URLs and config --------------------------------------------------------------


def test_metadata_database_is_the_postgres_service(services):
    postgres = _postgres_service(services)
    pg_env = _environment(services[postgres])
    for name in _airflow_services(services):
        url = urlsplit(_environment(services[name])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert url.scheme.split("+")[0] == "postgresql", (name, url.scheme)
        assert url.hostname == postgres, name
        assert (url.port or 5432) == 5432, name
        assert url.username == pg_env["POSTGRES_USER"], name
        assert unquote(url.password or "") == pg_env["POSTGRES_PASSWORD"], name
        assert url.path.lstrip("/") == pg_env["POSTGRES_DB"], name


def test_warehouse_connection_reaches_the_database_the_init_script_creates(services):
    sql = _init_sql()
    role = re.search(r"CREATE (?:ROLE|USER) (\w+) WITH LOGIN PASSWORD '([^']*)'", sql, re.I)
    database = re.search(r"CREATE DATABASE (\w+) OWNER (\w+)", sql, re.I)
    assert role and database, "the init script creates no warehouse role and database"
    assert database.group(2) == role.group(1)
    postgres = _postgres_service(services)
    # Every Airflow component gets the connection; the scheduler must (LocalExecutor: it runs
    # the tasks), and so must the triggerer and dag-processor, which import the same code.
    for name in _airflow_services(services):
        uri = _environment(services[name]).get(CONNECTION_VAR)
        assert uri, f"{name}: {CONNECTION_VAR} is not set"
        url = urlsplit(uri)
        assert url.scheme in ("postgres", "postgresql"), (name, url.scheme)
        assert (url.hostname, url.port or 5432) == (postgres, 5432), name
        assert (url.username, unquote(url.password or "")) == role.groups(), name
        assert url.path.lstrip("/") == database.group(1), name
        rendered = runtime.url_from_connection(
            url.scheme,
            host=url.hostname,
            login=url.username,
            password=unquote(url.password or ""),
            port=url.port,
            schema=url.path.lstrip("/"),
        )
        assert rendered.startswith("postgresql+psycopg://"), rendered
    scheduler = services[_service_running(services, "scheduler")]
    assert _environment(scheduler)["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"  # by default


def test_execution_api_url_points_at_the_api_server(services):
    api_server = _service_running(services, "api-server")
    assert "--port" not in _command_words(services[api_server])  # so it listens on 8080
    port = _container_port(services[api_server])
    assert port == 8080
    for name in _airflow_services(services):
        url = urlsplit(_environment(services[name])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert (url.scheme, url.hostname, url.port) == ("http", api_server, port), name
        assert url.path == "/execution/", name


def test_components_share_their_secrets(services):
    keys = (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
    )
    values = {
        name: tuple(_environment(services[name]).get(key) for key in keys)
        for name in _airflow_services(services)
    }
    assert len(set(values.values())) == 1, values
    jwt_secret = next(iter(values.values()))[0]
    assert jwt_secret and len(jwt_secret) >= 64, "HS512 wants a JWT secret of 64 bytes or more"


def test_data_directory_and_config_are_mounted_where_the_environment_says(services):
    for name in _airflow_services(services):
        env = _environment(services[name])
        mounts = dict((target, source) for source, target in _mounts(services[name]))
        assert env["CONVERSIONS_HOME"] == DATA_DIR, name
        assert DATA_DIR in mounts, f"{name}: the data directory is not mounted"
        config_source = mounts.get(env["CONVERSIONS_CONFIG"])
        assert config_source, f"{name}: nothing mounted at $CONVERSIONS_CONFIG"
        assert _host_path(config_source) == DOCKER / "conversions.toml", name


def test_docker_config_loads_with_the_projects_loader():
    loaded = config_module.load(DOCKER / "conversions.toml")
    assert loaded.offer_sources, "the sample config has no offer source"
    # The warehouse comes from the connection; a URL here would only mislead.
    assert loaded.settings.warehouse_url is None


# --- the warehouse server's settings ------------------------------------------------------------


def _postgres_settings(services) -> dict[str, str]:
    command = services[_postgres_service(services)].get("command") or []
    assert command[:1] == ["postgres"], "the postgres service runs the server with its settings"
    pairs = command[1:]
    assert pairs[0::2] == ["-c"] * (len(pairs) // 2) and len(pairs) % 2 == 0, pairs
    return dict(pair.split("=", 1) for pair in pairs[1::2])


def test_the_warehouse_settings_are_real_and_the_readme_gives_each_one(services):
    """Each `-c name=value` is a setting PostgreSQL 15 knows and that a server may set (not a
    read-only one), and the README's "Performance" section gives the same value, so the two
    cannot drift apart."""
    from sqlalchemy import create_engine, text

    from tests.helpers import POSTGRES_URL

    settings = _postgres_settings(services)
    assert {"shared_buffers", "max_wal_size"} <= set(settings)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, value in settings.items():
        assert f"`{name}={value}`" in readme, f"README does not give {name}={value}"
    if not POSTGRES_URL:
        pytest.skip("CONVERSIONS_TEST_POSTGRES_URL is not set: names not checked on a server")
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            known = dict(
                conn.execute(
                    text("SELECT name, context FROM pg_settings WHERE name = ANY(:names)"),
                    {"names": list(settings)},
                ).all()
            )
    finally:
        engine.dispose()
    assert set(known) == set(settings), f"unknown to PostgreSQL: {set(settings) - set(known)}"
    assert "internal" not in known.values(), known


# --- the `celery` profile ----------------------------------------------------------------------


def _option(words: list[str], *names: str) -> str | None:
    for i, word in enumerate(words):
        if word in names:
            return words[i + 1]
        for name in names:
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def test_celery_profile_has_redis_and_two_workers_with_their_own_names(services):
    workers = _celery_workers(services)
    assert len(workers) == 2, f"expected two celery workers, got {workers}"
    [redis] = [n for n, s in services.items() if str(s.get("image", "")).split(":")[0] == "redis"]
    tag = services[redis]["image"].partition(":")[2]
    assert re.match(r"\d+", tag), "pin Redis at least at its major version, never latest"
    assert services[redis].get("healthcheck", {}).get("test"), "redis has no healthcheck"
    # Only the profile starts them: the default stack (LocalExecutor) stays as it was.
    for name in [*workers, redis]:
        assert services[name].get("profiles") == ["celery"], name
    for name, service in services.items():
        if name not in (*workers, redis):
            assert not service.get("profiles"), f"{name} should run in every profile"
    hostnames = [_option(_command_words(services[w]), "-H", "--celery-hostname") for w in workers]
    assert all(hostnames) and len(set(hostnames)) == 2, f"worker node names {hostnames}"
    for worker in workers:
        depends = services[worker].get("depends_on") or {}
        assert depends.get(redis, {}).get("condition") == "service_healthy", worker
        assert depends.get(_init_service(services), {}).get("condition") == (
            "service_completed_successfully"
        ), worker
        node = _option(_command_words(services[worker]), "-H", "--celery-hostname")
        ping = " ".join(services[worker]["healthcheck"]["test"])
        assert node.split("@")[0] + "@" in ping, f"{worker}: the healthcheck pings another node"


def test_celery_broker_is_redis_and_results_go_to_the_metadata_database(services):
    [redis] = [n for n, s in services.items() if str(s.get("image", "")).split(":")[0] == "redis"]
    postgres = _postgres_service(services)
    for name in _airflow_services(services):
        env = _environment(services[name])
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port or 6379) == ("redis", redis, 6379)
        backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert backend.startswith("db+postgresql"), f"{name}: results on PostgreSQL: {backend}"
        assert backend.removeprefix("db+") == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert urlsplit(backend.removeprefix("db+")).hostname == postgres
        # Longer than any task, or Redis hands a running task to a second worker.
        timeout = int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"])
        assert timeout >= 3600, name


def test_the_executor_is_chosen_by_one_variable_local_by_default():
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        if "AIRFLOW__CORE__EXECUTOR" in env:
            assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}", name
    text_ = COMPOSE_FILE.read_text(encoding="utf-8")
    assert (
        "AIRFLOW_EXECUTOR=CeleryExecutor docker compose -f docker/compose.yaml --profile celery"
        in text_
    )
