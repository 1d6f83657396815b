"""Slow and ambiguous clients on the bare port (issue #20, finding 4), over real sockets against
``squall serve`` with short timeouts (PDS_HTTP_HEADER_TIMEOUT / PDS_HTTP_BODY_TIMEOUT = 2 s).
Each case is bounded: a server that keeps the connection open fails the test within ~8 s."""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

TIMEOUT = 2.0
GIVE_UP = 8.0  # a guarded server answers within ~TIMEOUT; the unguarded one never did


@pytest.fixture(scope="module")
def pds_env() -> dict[str, str]:
    return {"PDS_HTTP_HEADER_TIMEOUT": str(TIMEOUT), "PDS_HTTP_BODY_TIMEOUT": str(TIMEOUT)}


def connect(pds) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", pds.port), timeout=GIVE_UP)
    return s


def read_until_closed(s: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            # the server closed while a byte of ours was still unread in its socket: the kernel
            # answers that with a reset — closed all the same
            return data + b"<closed>"

        if not chunk:
            return data + b"<closed>"
        data += chunk
    return data


def drip(s: socket.socket, payload: bytes, interval: float, deadline: float) -> bytes:
    """Send ``payload`` one byte per ``interval`` until the server answers or closes."""
    for byte in payload:
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        ready, _, _ = select.select([s], [], [], interval)
        if ready or time.monotonic() > deadline:
            break
    return read_until_closed(s, deadline)


def assert_408(answer: bytes, started: float) -> None:
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"RequestTimeout" in answer and answer.endswith(b"<closed>"), answer[-200:]
    assert time.monotonic() - started < TIMEOUT * 3


def test_slowloris_headers_get_408(pds):
    started = time.monotonic()
    with connect(pds) as s:
        request = b"GET /xrpc/com.atproto.server.describeServer HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100
        answer = drip(s, request, 0.5, started + GIVE_UP)  # 2 bytes a second: it never ends in time
    assert_408(answer, started)


def test_a_lying_content_length_gets_408(pds):
    started = time.monotonic()
    with connect(pds) as s:
        s.sendall(b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"identifier\":")
        answer = read_until_closed(s, started + GIVE_UP)
    assert_408(answer, started)


def test_a_lying_chunked_body_gets_408(pds):
    started = time.monotonic()
    with connect(pds) as s:
        s.sendall(b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"ide\r\n")
        answer = read_until_closed(s, started + GIVE_UP)
    assert_408(answer, started)


def test_a_body_dripping_one_byte_a_second_gets_408(pds):
    started = time.monotonic()
    with connect(pds) as s:
        s.sendall(b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        # 0.6 s apart: the server's 2 s window ends between two bytes, not on one
        answer = drip(s, b" " * 100, 0.6, started + GIVE_UP)
    assert_408(answer, started)


def test_a_steady_slow_upload_is_not_cut_off(pds):
    body = b'{"identifier":"nobody.localhost","password":"' + b"x" * 8900 + b'"}'
    with connect(pds) as s:
        s.sendall(b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 1500):  # 3 KB/s for 3 s: slower than the window, faster than 1 KB/s
            s.sendall(body[i:i + 1500])
            time.sleep(0.5)
        answer = read_until_closed(s, time.monotonic() + GIVE_UP)
    # the whole body was read and judged (the padded password is over the limit), not cut off
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Input/password is too long" in answer, answer[:300]


def test_an_idle_connection_is_closed(pds):
    started = time.monotonic()
    with connect(pds) as s:
        answer = read_until_closed(s, started + GIVE_UP)
    assert answer == b"<closed>"  # nothing was asked, so nothing is answered
    assert time.monotonic() - started < TIMEOUT * 3


def test_content_length_with_transfer_encoding_is_refused(pds):
    started = time.monotonic()
    with connect(pds) as s:
        s.sendall(b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"2\r\n{}\r\n0\r\n\r\n")
        answer = read_until_closed(s, started + GIVE_UP)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Transfer-Encoding" in answer and answer.endswith(b"<closed>")


def test_a_malformed_request_gets_a_json_400_naming_the_reason(pds):
    started = time.monotonic()
    with connect(pds) as s:
        s.sendall(b"GET /xrpc/_health HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n")
        answer = read_until_closed(s, started + GIVE_UP)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body.removesuffix(b"<closed>"))
    assert error["error"] == "InvalidRequest" and "header" in error["message"].lower(), error


def test_keep_alive_requests_are_guarded_too(pds):
    started = time.monotonic()
    with connect(pds) as s:
        s.sendall(b"GET /xrpc/_health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = b""
        while b"}" not in first:
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        answer = drip(s, b"GET /xrpc/_health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100, 0.5,
                      started + GIVE_UP)
    assert_408(answer, started)


def test_no_traceback_in_the_log(pds):
    assert "Traceback" not in pds.logs()
