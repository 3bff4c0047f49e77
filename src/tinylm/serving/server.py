"""Running the app: `serve` (what `tinylm serve` calls) and `running` (a server on a loopback port in a background
thread, for tests and scripts)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from tinylm.folders import classifier_folder
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
    """Load the model folder (plain or committee) and serve it until interrupted.

    What can be checked before the model loads is: the folder must hold a classifier (folders.classifier_folder)
    and the port must be free (it is bound here and handed to the server), each a one-line error otherwise."""
    classifier_folder(model)
    sock = bound_socket(host, port)
    try:
        configure_threads()
        predictor = Predictor.load(model, runtime, device=device, onnx_path=onnx_path)
        # Access logs are off by default: at hundreds of requests per second they cost a noticeable share of a core.
        config = uvicorn.Config(create_app(predictor, settings), host=host, port=port, access_log=access_log,
                                log_level="info", timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, for the server to listen on; a RuntimeError in one line when the port is
    taken or the address is not this machine's."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, OverflowError) as err:
        raise ValueError(f"cannot listen on {host}:{port}: {getattr(err, 'strerror', None) or err}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise RuntimeError(f"{host}:{port} is already in use (another server?); give another --port") from None
        raise RuntimeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


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
