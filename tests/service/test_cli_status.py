"""``squall status``, ``account list``, ``invite list``, ``account reset-password`` and ``crawl request``
against a running PDS (and a relay double on loopback)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers.accounts import create_account
from tests.helpers.net import free_port
from tests.service.test_cli import fields, squall


class _Relay(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        _Relay.bodies.append({"path": self.path, **body})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def relay():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Relay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def pds_env(relay):
    return {"PDS_CRAWLERS": relay}


def test_status(pds, c):
    user = create_account(c, "st")
    r = squall(pds, "status")
    assert r.returncode == 0, r.stderr
    out = fields(r.stdout)
    assert out["hostname"] == "localhost"
    assert out["accounts"] == "1 (1 active)"
    assert out["last backup"] == "never"
    seq = c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": user["did"]})
    assert seq.status_code == 200
    data = json.loads(squall(pds, "status", "--json").stdout)
    assert data["accounts"] == {"total": 1, "active": 1}
    assert int(out["firehose seq"]) == data["firehose"]["seq"] >= 1


def test_account_list_and_reset_password(pds, c, admin):
    a = create_account(c, "ls")
    b = create_account(c, "ls")
    r = c.post("/xrpc/com.atproto.admin.updateSubjectStatus", auth=admin, json={
        "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": b["did"]}, "takedown": {"applied": True}})
    assert r.status_code == 200
    r = squall(pds, "account", "list")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[1]: line.split() for line in r.stdout.splitlines()[1:-1]}
    assert lines[a["did"]][0] == a["handle"] and lines[a["did"]][2] == "active"
    assert lines[b["did"]][2] == "takendown"
    assert lines[a["did"]][3] == f"{a['name']}@example.com"

    r = squall(pds, "account", "reset-password", a["handle"])
    assert r.returncode == 0, r.stderr
    new = fields(r.stdout)["password"]
    assert c.post("/xrpc/com.atproto.server.createSession",
                  json={"identifier": a["handle"], "password": new}).status_code == 200
    assert c.post("/xrpc/com.atproto.server.createSession",
                  json={"identifier": a["handle"], "password": "correct horse battery"}).status_code == 401
    r = squall(pds, "account", "reset-password", "nobody.localhost")
    assert r.returncode == 1 and "no account with handle" in r.stderr


def test_invite_list(pds):
    code = squall(pds, "invite", "create", "--uses", "3").stdout.strip()
    r = squall(pds, "invite", "list")
    assert r.returncode == 0, r.stderr
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith(code))
    assert row[1:4] == ["3", "0", "active"]


def test_crawl_request(pds, relay):
    _Relay.bodies.clear()
    r = squall(pds, "crawl", "request")
    assert r.returncode == 0, r.stderr
    assert f"{relay}: ok (HTTP 200)" in r.stdout
    assert _Relay.bodies == [{"path": "/xrpc/com.atproto.sync.requestCrawl", "hostname": "localhost"}]
    dead = f"http://127.0.0.1:{free_port()}"
    r = squall(pds, "crawl", "request", dead)
    assert r.returncode == 1 and f"{dead}: failed" in r.stdout
