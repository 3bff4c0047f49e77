"""Running the app: `serve` (what `tinylm serve` calls) and `running` (a server on a loopback port in a background
thread, for tests and scripts)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from tinylm.inference.predictor import Predictor, RuntimeName
from tinylm.runtime import configure_threads
from tinylm.serving.app import create_app
from tinylm.serving.settings import ServeSettings


def serve(
    model: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: RuntimeName = "torch",
    device: str | None = None,
    onnx_path: str | os.PathLike | None = None,
    settings: ServeSettings | None = None,
    access_log: bool = False,
) -> None:
    """Load the model folder (plain or committee) and serve it until interrupted."""
    configure_threads()
    predictor = Predictor.load(model, runtime, device=device, onnx_path=onnx_path)
    # Access logs are off by default: at hundreds of requests per second they cost a noticeable share of a core.
    uvicorn.run(create_app(predictor, settings), host=host, port=port, access_log=access_log,
                log_level="info", timeout_graceful_shutdown=5)


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` on a free port of `host` in a daemon thread; yields the base URL, stops the server on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="tinylm-server")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
