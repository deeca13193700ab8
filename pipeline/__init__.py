"""Conversion upload pipeline: CSV files in, exact conversions out, every line accounted for."""

__version__ = "0.1.0"
