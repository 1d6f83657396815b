"""A ``squall serve`` for the benchmarks: a subprocess on a free loopback port with a temporary data
directory, the same ``PdsProcess`` the service tests use (tests/helpers/pds.py); and the plain
HTTP client the benchmarks measure with.

The benchmarks run as ``.venv/bin/python bench/<name>.py`` from the repository root, so the script's
directory (bench/) is on ``sys.path`` but the root is not; importing this module puts it there.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.pds import PdsProcess  # noqa: E402

__all__ = ["ROOT", "Client", "PdsProcess", "bench_server"]

START_TIMEOUT = 30.0  # seconds; a cold start (imports, migrations, key generation) on a slow machine


@contextmanager
def bench_server(prefix: str = "squall-bench-", *, env: dict[str, str] | None = None,
                 keep: bool = False) -> Iterator[PdsProcess]:
    """A started server (log level ``warning`` unless ``env`` says otherwise), stopped on exit; its
    data directory is removed unless ``keep``."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    pds = PdsProcess(tmp / "data", env_extra={"PDS_LOG_LEVEL": "warning", **(env or {})})
    try:
        pds.start(timeout=START_TIMEOUT)
        try:
            yield pds
        finally:
            pds.stop(timeout=20)
    finally:
        if keep:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


class Client:
    """One kept-alive HTTP/1.1 connection to a loopback server (``http.client``: the cheapest
    client, so the measurements are the server's); JSON in, the raw body out, non-200 raises."""

    def __init__(self, port: int, timeout: float = 60):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> bytes:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {payload[:300]!r}")
        return payload

    def close(self) -> None:
        self.conn.close()
