"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinylm.data import DataError
from tinylm.data.paths import data_root as find_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder (TINYLM_DATA or ../shared/data); tests that need it skip when it is missing."""
    try:
        return find_data_root()
    except DataError as err:
        pytest.skip(f"real data folder not found, set TINYLM_DATA to run data tests ({err})")
