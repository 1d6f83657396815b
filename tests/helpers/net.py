"""Loopback networking helpers for tests: free ports, waiting for a server to answer, and serving an
ASGI app (a fake upstream, the PLC double) with uvicorn in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, *, timeout: float = 20.0, proc=None) -> None:
    """Poll ``url`` until it answers 2xx; fail early if ``proc`` (a Popen) exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 300:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


class ThreadedServer:
    """``app`` served by uvicorn on 127.0.0.1:``port`` in a daemon thread: a real HTTP server that the
    code under test reaches over TCP. ``config`` goes to ``uvicorn.Config`` (e.g. TLS files, ``ws``)."""

    def __init__(self, app: Any, port: int | None = None, *, name: str = "test-server", **config: Any) -> None:
        self.port = port or free_port()
        self.name = name
        config = {"log_level": "warning", "lifespan": "off", **config}
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **config))
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    @property
    def stopping(self) -> bool:
        return self._server.should_exit

    def start(self, timeout: float = 10.0) -> "ThreadedServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serve_in_thread(app: Any, *, port: int | None = None, **config: Any) -> Iterator[int]:
    """Serve ``app`` for the duration of the block (see ``ThreadedServer``); yields the port."""
    server = ThreadedServer(app, port, **config).start()
    try:
        yield server.port
    finally:
        server.stop()
