"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest

from pipeline.datadir import Layout
from tests.integration.datadir_helpers import SOURCES


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "var")
    layout.ensure(sorted(SOURCES))
    return layout
