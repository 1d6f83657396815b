"""Hostile input gets a 400 envelope, never a 5xx (issue #20, findings 2, 3 and 6).

- JSON nested past any real record (json.loads raises RecursionError, not ValueError) to the XRPC
  dispatcher, to the admin token routes' own JSON reader and to the OAuth endpoints.
- A client that drops the connection halfway through its body is one log line, no traceback.
- PAR does not quote why a client-metadata fetch failed.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.helpers.accounts import create_account
from tests.helpers.oauth_client import OAuthClient

DEEP = 50_000  # far past the interpreter's recursion limit


def deep_json(depth: int = DEEP) -> bytes:
    return b'{"repo":"x","collection":"app.bsky.feed.post","record":' + b"[" * depth + b"]" * depth + b"}"


@pytest.fixture(scope="module")
def user(c):
    return create_account(c, "hostile")


def assert_envelope_400(r) -> dict:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    return body


@pytest.mark.parametrize("depth", [DEEP, 500])
def test_deeply_nested_json_to_a_method_is_400(c, user, depth):
    # 500 levels parse, but no record may nest past DAG-CBOR's 128: refused before any handler.
    r = c.post("/xrpc/com.atproto.repo.createRecord", content=deep_json(depth),
               headers={**user["headers"], "Content-Type": "application/json"})
    body = assert_envelope_400(r)
    assert "nested" in body["message"]


def test_deeply_nested_json_to_a_public_procedure_is_400(c):
    r = c.post("/xrpc/com.atproto.server.createSession", content=b"[" * DEEP,
               headers={"Content-Type": "application/json"})
    assert_envelope_400(r)


def test_deeply_nested_json_to_the_admin_json_reader_is_400(c, admin):
    # this route reads at most 4 KB: 3,000 levels fit, and json.loads gives up at ~1,000
    r = c.post("/xrpc/_admin/account-delete-token", content=b'{"did":' + b"[" * 3000, auth=admin,
               headers={"Content-Type": "application/json"})
    assert_envelope_400(r)


def test_deeply_nested_json_to_oauth_par_is_400(c):
    # under the form cap of 64 KB
    r = c.post("/oauth/par", content=b'{"client_id":' + b"[" * 30000 + b"]" * 30000 + b"}",
               headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"] == "invalid_request"


def test_par_does_not_quote_the_fetch_error(c):
    # Nothing listens on port 9: httpx's ConnectError text ("All connection attempts failed",
    # "[Errno 111] Connection refused") would tell a prober what the address did.
    client = OAuthClient(http=c, client_id="http://127.0.0.1:9/client-metadata.json",
                         redirect_uri="http://127.0.0.1:9/callback")
    client.discover()
    r = client.par()
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_client_metadata"
    assert body["error_description"] == "The client metadata could not be fetched"


def _half_body(port: int, path: str, headers: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 50000\r\n\r\n".encode()
                  + b'{"repo": "' + b"a" * 1000)
        time.sleep(0.3)
    # closed with 49 KB still owed (under every cap, so the server waits for it)


def test_client_disconnect_mid_body_is_one_line_without_traceback(pds, user):
    before = len(pds.logs())
    auth = f"Authorization: {user['headers']['Authorization']}\r\nContent-Type: application/json\r\n"
    _half_body(pds.port, "/xrpc/com.atproto.repo.createRecord", auth)
    _half_body(pds.port, "/oauth/par", "Content-Type: application/x-www-form-urlencoded\r\n")
    deadline = time.time() + 5
    lines: list[str] = []
    while time.time() < deadline:
        lines = [line for line in pds.logs()[before:].splitlines() if "client_disconnected" in line]
        if len(lines) >= 2:
            break
        time.sleep(0.1)
    new = pds.logs()[before:]
    assert "Traceback" not in new and "unhandled error" not in new, new[-3000:]
    assert len(lines) == 2, new[-3000:]
    for line in lines:
        event = json.loads(line)
        assert event["level"].lower() in ("info", "debug"), event


def test_a_lone_surrogate_in_json_is_400(c, user):
    # found by tests/service/test_fuzz.py: "\ud800" parses to a str that cannot be stored or encoded
    for path in ("/xrpc/app.bsky.actor.putPreferences", "/xrpc/com.atproto.repo.createRecord"):
        r = c.post(path, content=b'{"preferences": [], "repo": "\\ud800", "record": {"text": "\\udc00"}}',
                   headers={**user["headers"], "Content-Type": "application/json"})
        body = assert_envelope_400(r)
        assert "Unicode" in body["message"], body
