"""The pure core: the domain's rules as plain functions over tables and a config object.

Nothing here touches a file, a database or Airflow, and nothing here imports from outside
``pipeline.core`` (``tests/unit/test_layering.py`` keeps it so). Start with ``vocabulary``.
"""
