"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Iterator[Path]:
    """Token-id and vocabulary caches go to a session folder, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TINYLM_CACHE")
    os.environ["TINYLM_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TINYLM_CACHE", None)
    else:
        os.environ["TINYLM_CACHE"] = old
