"""The Airflow layer: ``taskflow`` (the ``@task`` wrappers) over ``steps`` (their plain bodies).

Only the DAG files in ``dags/`` (and tests) import this package; nothing else in ``pipeline``
does, so the CLI runs without Airflow installed. This file imports nothing: parsing a DAG must
stay cheap (see tests/airflow/test_dag_contract.py).
"""
