"""`[core] hostname_callable` for the Celery end-to-end test: the name its worker was given.

Two `airflow celery worker` processes on one machine would otherwise record the same host name
on every task instance (`socket.getfqdn()`), and the test could not tell which worker ran what.
Each worker's environment sets ``CONVERSIONS_TEST_WORKER_HOSTNAME``; its tasks inherit it.
"""

from __future__ import annotations

import os


def name() -> str:
    return os.environ["CONVERSIONS_TEST_WORKER_HOSTNAME"]
