"""Locate the external tools some tests run (promtool, helm).

``scripts/install-tools.sh`` installs them: promtool on PATH (Debian package), helm into a
cache dir outside the repo. In CI (``CI=true``) a missing tool fails the test: a green run
must never hide checks that did not happen. Elsewhere the test is skipped with the command
that installs the tool.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

INSTALL_HINT = "run scripts/install-tools.sh"


def tools_bin_dir() -> Path:
    """The cache dir install-tools.sh puts built tools in (mirrors the script's default)."""
    override = os.environ.get("PRIVACY_PIPELINE_TOOLS_DIR")
    if override:
        return Path(override) / "bin"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "privacy-pipeline" / "tools" / "bin"


def find_tool(name: str) -> str | None:
    """Path of ``name`` on PATH or in the tools cache, or None."""
    on_path = shutil.which(name)
    if on_path:
        return on_path
    cached = tools_bin_dir() / name
    return str(cached) if cached.is_file() and os.access(cached, os.X_OK) else None


def require_tool(name: str) -> str:
    """Path of ``name``; fails the test in CI when missing, skips it elsewhere."""
    path = find_tool(name)
    if path is not None:
        return path
    reason = f"{name} not found on PATH or in {tools_bin_dir()}: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
