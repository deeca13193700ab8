"""Throughput of the file-drop DAG on the CeleryExecutor: 40 files with one worker, then two.

A script, not a test: nothing is asserted beyond "every file applied", the times are printed.
Each round starts a fresh deployment on this machine, exactly as the end-to-end test does
(`tests/airflow/test_celery_executor.py`: api-server, scheduler, dag-processor, triggerer and
N `airflow celery worker` processes, metadata and warehouse in fresh PostgreSQL databases, Redis
as the broker with a queue of its own), drops the same 40 files of three offer sources plus
`inbox/_READY`, and measures from the marker to the run's success. Nobody is killed.

With `--s3` the data directory is a bucket on moto's S3 server (started here, on loopback),
`CONVERSIONS_HOME=s3://aws_default@<bucket>/conversions` through an Airflow connection, and the
bucket's notifications on moto's SQS wake the DAG (the test's `S3DataDirectory`): the time runs
from the last upload (the uploads notify as they go) to the end of the last run; the
notifications may make more than one run, counted in the output.

    .venv/bin/python benchmarks/bench_celery.py                  # 1 worker, then 2
    .venv/bin/python benchmarks/bench_celery.py --s3             # the same, the inbox on S3
    .venv/bin/python benchmarks/bench_celery.py --workers 2 --files 80 --concurrency 2

Needs `CONVERSIONS_TEST_POSTGRES_URL` (or `--postgres-url`) and Redis
(`CONVERSIONS_TEST_REDIS_URL`, default redis://127.0.0.1:6379/11). The machine's load average
is printed with each round: on a shared machine it moves the numbers more than anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _round(
    n_workers: int, n_files: int, postgres_url: str, broker: str, s3_endpoint: str | None
) -> dict:
    from tests.airflow import test_celery_executor as e2e
    from tests.guarantees.test_concurrency import ledger, make_files, write_config

    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    suffix = uuid.uuid4().hex[:10]
    names = {"metadata": f"airflow_bench_{suffix}", "warehouse": f"conversions_bench_{suffix}"}
    base = make_url(postgres_url).set(drivername="postgresql+psycopg")
    urls = {k: base.set(database=v).render_as_string(hide_password=False) for k, v in names.items()}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="bench_celery_") as tmp_name:
            tmp = Path(tmp_name)
            config = write_config(tmp / "cfg")
            files = make_files(tmp / "originals", e2e.SEED, n_files, e2e.POOL)
            data = (
                e2e.S3DataDirectory(e2e.Bucket.create(s3_endpoint), tmp / "tmp")
                if s3_endpoint
                else e2e.LocalDataDirectory(tmp / "datadir")
            )
            data.prepare()
            with e2e._deployment(tmp, urls, broker, data, config) as d:
                workers = [f"w{i + 1}" for i in range(n_workers)]
                e2e._start(d, workers)
                load_before = os.getloadavg()[0]
                data.drop(files)
                data.wake()
                woke = time.monotonic()
                d.wait_for("the run to finish", lambda: e2e._run_state(d, n_files), 1800)
                seconds = time.monotonic() - woke
                state = e2e._run_state(d, n_files)
                runs = len(d.query("SELECT 1 FROM dag_run WHERE dag_id = :d", d=e2e.DAG_ID))
                hosts = sorted({ti.hostname for ti in d.task_instances()})
            rows = ledger(urls["warehouse"])
            applied = sum(1 for r in rows if r["state"] == "applied")
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return {
        "workers": n_workers,
        "data": "s3 (moto)" if s3_endpoint else "local",
        "runs": runs,
        "files": n_files,
        "state": state,
        "applied": applied,
        "seconds": round(seconds, 1),
        "files_per_minute": round(n_files / seconds * 60, 1),
        "hosts": hosts,
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
    }


@contextmanager
def _moto(wanted: bool) -> Iterator[str | None]:
    """moto's S3 and SQS on a free loopback port for the whole benchmark (None: not wanted).
    This process reads the bucket with the AWS environment; Airflow gets a connection."""
    if not wanted:
        yield None
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=1, help="task slots per worker")
    parser.add_argument(
        "--s3", action="store_true", help="the inbox in a bucket on moto's S3, woken by SQS"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CONVERSIONS_TEST_POSTGRES_URL")
        or "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    )
    args = parser.parse_args(argv)
    os.environ["CONVERSIONS_TEST_POSTGRES_URL"] = args.postgres_url  # read by the test module
    from tests.airflow import test_celery_executor as e2e

    e2e.CONCURRENCY = args.concurrency
    results = []
    with _moto(args.s3) as s3_endpoint:
        for n in args.workers:
            result = _round(n, args.files, args.postgres_url, e2e.REDIS_URL, s3_endpoint)
            results.append(result)
            print(
                f"{n} worker(s) x {args.concurrency} slots, {result['data']} inbox: "
                f"{args.files} files in {result['seconds']} s ({result['files_per_minute']} "
                f"files/min), {result['runs']} run(s) {result['state']}, {result['applied']} "
                f"applied, hosts {result['hosts']}, load {result['load_before']} -> "
                f"{result['load_after']}",
                flush=True,
            )
    if len(results) > 1:
        base = results[0]["seconds"]
        for r in results[1:]:
            print(
                f"{r['workers']} workers against {results[0]['workers']}: "
                f"{base / r['seconds']:.2f}x as fast"
            )
    return 0 if all(r["state"] == "success" and r["applied"] == r["files"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
