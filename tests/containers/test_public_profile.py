"""The public profile at run time: Caddy asks the PDS (`/tls-check`) before it would obtain a
certificate for a name, and a name the PDS does not know gets no certificate (and no ACME order).

Only refused names are tried: an approved one would make Caddy contact a real ACME CA.
"""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from tests.helpers.net import free_port

from .harness import Engine, Stack, wait_until

pytestmark = pytest.mark.container


def _handshake(port: int, server_name: str) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=server_name):
                return "certificate"
        except ssl.SSLError as exc:
            return f"refused: {exc.reason}"


def _tls_check_requests(stack: Stack) -> list[dict]:
    found = []
    for line in stack.logs("pds").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "request" and entry.get("path") == "/tls-check":
            found.append(entry)
    return found


def test_unknown_names_get_no_certificate(engine: Engine, images, container_workdir):
    https_port, http_port = free_port(), free_port()
    # A public host name turns on the reference installer's AppView, chat, report service and
    # crawler defaults; a test may only reach loopback and its own containers, so they are off here.
    offline = container_workdir / "public-offline.override.yaml"
    offline.write_text("services:\n  pds:\n    environment:\n" + "".join(
        f'      {name}: ""\n' for name in ("PDS_CRAWLERS", "PDS_BSKY_APP_VIEW_URL", "PDS_BSKY_APP_VIEW_DID",
                                          "PDS_BSKY_CHAT_URL", "PDS_BSKY_CHAT_DID", "PDS_REPORT_SERVICE_URL",
                                          "PDS_REPORT_SERVICE_DID")))
    stack = Stack(engine, overrides=[offline], workdir=container_workdir, env={
        "PDS_HOSTNAME": "pds.example.com", "ACME_EMAIL": "ops@example.com",
        "SQUALL_HTTPS_PUBLISH": f"127.0.0.1:{https_port}", "SQUALL_HTTP_PUBLISH": f"127.0.0.1:{http_port}"})
    try:
        stack.up()
        wait_until("the PDS to start", lambda: "squall started" in stack.logs("pds"), timeout=90, interval=1)
        assert "profile public for pds.example.com, *.pds.example.com" in stack.logs("proxy")
        assert _tls_check_requests(stack) == []

        def refused():
            try:
                return _handshake(https_port, "stranger.pds.example.com").startswith("refused")
            except OSError:
                return False  # Caddy not listening yet

        wait_until("a refused handshake for an unknown handle", refused, timeout=60, interval=1)
        asked = wait_until("Caddy's ask to reach the PDS", lambda: _tls_check_requests(stack), timeout=30)
        assert {entry.get("status") for entry in asked} == {404}
        assert _handshake(https_port, "other.example.net").startswith("refused")
    finally:
        stack.down()
