"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinylm.data import DataError
from tinylm.data.paths import data_root as find_data_root

# A few hundred real rows of every file of the data folder, in its layout (built from it by
# scripts/build_test_fixtures.py and committed), so the suite runs on a fresh clone.
FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The committed sample of the data folder (tests/fixtures/data): every clone has it, whatever TINYLM_DATA says."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def full_data_root() -> Path:
    """The full data folder (TINYLM_DATA or ../shared/data), for the few tests about its own contents."""
    try:
        return find_data_root()
    except DataError as err:
        pytest.skip(f"needs the full data folder: set TINYLM_DATA=/path/to/shared/data ({err})")


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
