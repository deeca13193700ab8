"""Conversion upload pipeline: CSV files in, exact conversions out, every line accounted for."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("conversions-pipeline")  # one source of truth: pyproject.toml
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
