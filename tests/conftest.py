"""Fixtures and pytest hooks only: a fresh warehouse on each backend, a config, Airflow's home.

What tests share besides fixtures (paths, configs, checks) is in `tests/helpers.py`.

PostgreSQL tests read `CONVERSIONS_TEST_POSTGRES_URL`. When it is set and the server does not
answer, the tests error (they never skip), so CI cannot go green without PostgreSQL. When it is
not set (a laptop without PostgreSQL), only the PostgreSQL variants are skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import config as config_module
from pipeline import warehouse
from tests.helpers import POSTGRES_URL, REPO, make_config, postgres_schema_url

# Airflow reads its configuration once, when first imported: point it at a throwaway home (an
# SQLite metadata database, this repo's DAG folder) before any test imports it, so the tests
# never touch a real ~/airflow. Tests that start Airflow as subprocesses build their own env.
AIRFLOW_TEST_HOME = Path(tempfile.mkdtemp(prefix="conversions-airflow-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_TEST_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_TEST_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
)


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(AIRFLOW_TEST_HOME, ignore_errors=True)


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not POSTGRES_URL, reason="CONVERSIONS_TEST_POSTGRES_URL is not set"
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def warehouse_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        yield from postgres_schema_url()


@pytest.fixture
def engine(warehouse_url: str):
    eng = warehouse.connect(warehouse_url)
    yield eng
    eng.dispose()


@pytest.fixture
def config() -> config_module.Config:
    return make_config()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API on loopback (moto's server on a free port), for the whole session.

    The standard AWS environment points at it (``AWS_ENDPOINT_URL`` and test credentials), as
    a user's shell would for MinIO: the object-storage data directory reads nothing else.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3_home(moto_endpoint: str) -> str:
    """``s3://<a new bucket>/home``: an empty object-storage data directory of its own."""
    import uuid

    import boto3

    bucket = f"conversions-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/home"
