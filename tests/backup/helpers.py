"""Test doubles that are real servers on loopback: moto's S3 server and a fault-injecting HTTP proxy."""

from __future__ import annotations

import http.client
import os
import socket
import socketserver
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from squall_backup.settings import load_settings


def make_data_dir(root: Path, rows: int = 500, blobs: int = 3, payload: int = 200, seed: int = 1) -> Path:
    """A volume shaped like the PDS's: WAL database with squall_meta, secrets (0600), blobs/<did>/<cid>."""
    data = root / "data"
    (data / "secrets").mkdir(parents=True)
    db = sqlite3.connect(data / "pds.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE squall_meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO squall_meta VALUES ('pds_version', '0.1.0-test')")
    db.execute("CREATE TABLE record (uri TEXT PRIMARY KEY, cid TEXT NOT NULL, body BLOB)")
    rnd = os.urandom
    db.executemany("INSERT INTO record VALUES (?, ?, ?)",
                   [(f"at://did:plc:alice/app.bsky.feed.post/{i:06d}", f"bafy{i}", rnd(payload)) for i in range(rows)])
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    for name, value in (("jwt_secret", "jwt-" + rnd(8).hex()), ("plc_rotation_key", rnd(32).hex())):
        p = data / "secrets" / name
        p.write_text(value)
        p.chmod(0o600)
    for i in range(blobs):
        did = "did:plc:alice" if i % 2 == 0 else "did:plc:bob"
        (data / "blobs" / did).mkdir(parents=True, exist_ok=True)
        (data / "blobs" / did / f"bafkrei{seed}x{i:04d}").write_bytes(rnd(1000 + 37 * i))
    return data


def table_rows(db_path: Path, table: str = "record") -> list[tuple]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        con.close()


def settings_for(data: Path, **env: str):
    environ = {"PDS_DATA_DIRECTORY": str(data), "BACKUP_VERIFY_AFTER_UPLOAD": "false", **env}
    return load_settings(environ)


def s3_env(endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    return {"BACKUP_S3_ENDPOINT": endpoint, "BACKUP_S3_BUCKET": bucket, "BACKUP_S3_REGION": "us-east-1",
            "BACKUP_S3_ACCESS_KEY_ID": "testing-key-id", "BACKUP_S3_SECRET_ACCESS_KEY": "testing-secret-value-123",
            "BACKUP_S3_PREFIX": "pds1/", "BACKUP_S3_MAX_ATTEMPTS": "2", "BACKUP_S3_CONNECT_TIMEOUT": "2",
            "BACKUP_S3_READ_TIMEOUT": "5", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- fault-injecting proxy ---------------------------------------------------------------------------

@dataclass
class Policy:
    """What the proxy does with each request: ``pass``, ``error`` (HTTP 500), ``hang`` or ``drop``."""

    mode: str = "pass"
    #: only requests for which this returns True are affected by the fault
    match: object = None
    #: number of matching requests that still pass before the fault starts
    pass_first: int = 0
    log: list = field(default_factory=list)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.policy = Policy()
        self.lock = threading.Lock()
        self.closing = threading.Event()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, match=None, pass_first: int = 0) -> None:
        with self.lock:
            self.policy = Policy(mode, match, pass_first, self.policy.log)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, method: str, path: str) -> str:
        with self.lock:
            p = self.policy
            action = "pass"
            if p.mode != "pass" and (p.match is None or p.match(method, path)):
                if p.pass_first > 0:
                    p.pass_first -= 1
                else:
                    action = p.mode
            p.log.append((method, path, action))
            return action

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        f = conn.makefile("rb")
        try:
            while not self.closing.is_set():
                line = f.readline(65536)
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = []
                while True:
                    h = f.readline(65536)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers.append((k.strip(), v.strip()))
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                if any(k.lower() == "expect" for k, _ in headers):
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = f.read(length) if length else b""
                action = self._decide(method, path)
                if action == "drop":
                    return
                if action == "hang":
                    self.closing.wait(60)
                    return
                if action == "error":
                    msg = b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg)
                    continue
                up = http.client.HTTPConnection(*self.upstream, timeout=30)
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
                # a HEAD answer has no body but announces the object's length
                length = resp.getheader("Content-Length", "0") if method == "HEAD" else str(len(data))
                out.append(f"Content-Length: {length}\r\n\r\n".encode())
                conn.sendall(b"".join(out) + (data if method != "HEAD" else b""))
                up.close()
        except (OSError, ValueError):
            return
        finally:
            f.close()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
