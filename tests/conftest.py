"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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


@contextlib.contextmanager
def _serving(folder: Path, *args: str, startup_s: float) -> Iterator[tuple[str, dict[str, Any]]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TINYLM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tinylm.cli", "serve", str(folder), "--port", str(port), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                info = httpx.get(f"{base}/info", timeout=5).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield base, info
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def tinylm_serve() -> Callable[..., contextlib.AbstractContextManager[tuple[str, dict[str, Any]]]]:
    """`tinylm serve FOLDER ARGS...` as a user starts it, on a free loopback port, one model thread: a context
    manager yielding (base URL, the server's /info) once it answers, and stopping the server after."""
    return _serving
