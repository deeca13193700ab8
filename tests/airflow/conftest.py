"""Fixtures of the Airflow tests: fresh databases for a real deployment
(`airflow_deployment`)."""

from tests.airflow.airflow_deployment import databases, sigterm_unwinds

__all__ = ["databases", "sigterm_unwinds"]
