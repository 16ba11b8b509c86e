"""Shared test helpers.

Tests that need the real data in ../shared skip with a reason when it is absent, but fail when the
environment variable CI is set (CI always has ../shared beside the clone).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("LLMSIM_SHARED_DIR", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip (fail under CI) when it is missing."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        message = f"shared data not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so shared data must be present)")
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    return shared_path
