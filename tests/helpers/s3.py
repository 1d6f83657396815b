"""A real S3 API for tests: moto in server mode on a loopback port, and a fault-injecting proxy.

``S3Server`` runs ``moto.server.ThreadedMotoServer`` (a real HTTP server speaking the S3 API, not
the in-process mock). ``FaultProxy`` sits in front of it and, per request, either forwards it or
injects a fault: an HTTP 500 (``error``), a connection closed without an answer (``drop``) or no
answer until the client gives up (``hang``). Faults can be limited to the next N matching requests
(so retries succeed) or be permanent (so they fail), and can start only after the first few matching
requests went through (a server that dies in the middle of a multipart upload).

Both the PDS blob store tests and the backup sidecar tests use these, so a fault means the same thing
for both suites.
"""

from __future__ import annotations

import http.client
import itertools
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Callable

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "testing-key-id"
SECRET_ACCESS_KEY = "testing-secret-value-123"
REGION = "us-east-1"

_bucket_numbers = itertools.count()


class S3Server:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.address = (host, int(port))

    def client(self, endpoint: str | None = None):
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)

    def new_bucket(self, prefix: str = "squall-blobs") -> str:
        name = f"{prefix}-{next(_bucket_numbers)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.extend(obj["Key"] for obj in page.get("Contents", ()))
        return sorted(out)

    def multipart_uploads(self, bucket: str) -> list[dict]:
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def stop(self) -> None:
        self._server.stop()


Match = Callable[[str, str], bool]  # (method, path with query) -> affected?


@dataclass
class _Fault:
    mode: str  # "error" | "drop" | "hang"
    remaining: int | None  # None: every matching request
    match: Match | None
    pass_first: int = 0  # matching requests that still go through before the fault starts


@dataclass
class FaultProxy:
    """HTTP/1.1 proxy to ``upstream`` (host, port) that injects faults on request."""

    upstream: tuple[str, int]
    hang_seconds: float = 30.0
    log: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: _Fault | None = None
        self._closing = threading.Event()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control ------------------------------------------------------------------------------------------

    def fail(self, count: int, mode: str = "error", match: Match | None = None, *, pass_first: int = 0) -> None:
        """The next ``count`` matching requests (after ``pass_first`` passed) get ``mode``; later ones pass."""
        self._set(_Fault(mode, count, match, pass_first))

    def always(self, mode: str = "error", match: Match | None = None, *, pass_first: int = 0) -> None:
        """Every matching request after the first ``pass_first`` gets ``mode``."""
        self._set(_Fault(mode, None, match, pass_first))

    def clear(self) -> None:
        self._set(None)

    def _set(self, fault: _Fault | None) -> None:
        assert fault is None or fault.mode in ("error", "drop", "hang")
        with self._lock:
            self._fault = fault
            self.log.clear()

    def actions(self, action: str | None = None) -> list[tuple[str, str, str]]:
        with self._lock:
            return [entry for entry in self.log if action is None or entry[2] == action]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # -- serving --------------------------------------------------------------------------------------------

    def _decide(self, method: str, path: str) -> str:
        with self._lock:
            action = "pass"
            f = self._fault
            if f is not None and (f.match is None or f.match(method, path)) and f.remaining != 0:
                if f.pass_first > 0:
                    f.pass_first -= 1
                else:
                    action = f.mode
                    if f.remaining is not None:
                        f.remaining -= 1
            self.log.append((method, path, action))
            return action

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        reader = conn.makefile("rb")
        try:
            while not self._closing.is_set():
                line = reader.readline(65537)
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: list[tuple[str, str]] = []
                while True:
                    h = reader.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers.append((k.strip(), v.strip()))
                lower = {k.lower(): v for k, v in headers}
                if "100-continue" in lower.get("expect", "").lower():
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                length = int(lower.get("content-length", "0"))
                body = reader.read(length) if length else b""
                action = self._decide(method, path)
                if action == "drop":
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if action == "hang":
                    self._closing.wait(self.hang_seconds)
                    return
                if action == "error":
                    msg = b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg)
                    continue
                self._forward(conn, method, path, headers, body)
        except (OSError, ValueError):
            return
        finally:
            reader.close()
            try:
                conn.close()
            except OSError:
                pass

    def _forward(self, conn: socket.socket, method: str, path: str, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        up = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            up.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() != "expect":
                    up.putheader(k, v)
            up.endheaders(body)
            resp = up.getresponse()
            data = resp.read()
            out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n".encode()]
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    out.append(f"{k}: {v}\r\n".encode())
            # A HEAD answer has no body but announces the object's length.
            length = resp.getheader("Content-Length", "0") if method == "HEAD" else str(len(data))
            out.append(f"Content-Length: {length}\r\n\r\n".encode())
            conn.sendall(b"".join(out) + (b"" if method == "HEAD" else data))
        finally:
            up.close()


def is_put_of(prefix: str) -> Match:
    """Match uploads (PUT, including multipart parts) of keys under ``prefix`` in any bucket."""
    def match(method: str, path: str) -> bool:
        key = path.split("?", 1)[0].split("/", 2)[-1] if path.count("/") >= 2 else ""
        return method == "PUT" and key.startswith(prefix)
    return match
