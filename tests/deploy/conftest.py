"""Fixtures for the deploy/ artefacts: the external tools that check them."""

from __future__ import annotations

import pytest

from tests.tools import require_tool


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")
