"""The request-log middleware must not turn a failed streamed body into a complete-looking one."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from squall.app import RequestLog
from tests.helpers.net import serve_in_thread


async def broken_stream(request: Request) -> Response:
    async def body():
        yield b"a" * 65536
        raise RuntimeError("storage failed mid-body")

    return StreamingResponse(body(), media_type="application/vnd.ipld.car")


async def broken_before_start(request: Request) -> Response:
    raise RuntimeError("failed before the response")


async def fine(request: Request) -> Response:
    return Response("ok")


@pytest.fixture(scope="module")
def server():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("squall.test.requestlog")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    # As in squall.app: the middleware sits inside Starlette's own error middleware.
    app = Starlette(routes=[Route("/stream", broken_stream), Route("/early", broken_before_start),
                            Route("/fine", fine)], middleware=[Middleware(RequestLog, log=log)])
    with serve_in_thread(app, log_level="critical") as port:
        yield port, records


def test_failure_mid_stream_reaches_the_client_as_an_error(server):
    port, _ = server
    with pytest.raises(httpx.HTTPError):
        with httpx.Client(timeout=10) as c:
            r = c.get(f"http://127.0.0.1:{port}/stream")
            r.read()
            # a body that ended "normally" after a failure would be a silent truncation
            raise AssertionError(f"truncated body delivered as complete ({len(r.content)} bytes)")


def test_failure_before_start_is_a_500_envelope_and_logged(server):
    port, records = server
    r = httpx.get(f"http://127.0.0.1:{port}/early", timeout=10)
    assert r.status_code == 500
    assert r.json() == {"error": "InternalServerError", "message": "Internal Server Error"}
    r = httpx.get(f"http://127.0.0.1:{port}/fine?token=secret", timeout=10)
    assert r.status_code == 200
    # The line is written once the response has been sent, so the client may see it first.
    deadline = time.monotonic() + 5
    while True:
        lines = [rec for rec in records if rec.getMessage() == "request"]
        if any(getattr(rec, "path", None) == "/fine" and getattr(rec, "status", None) == 200 for rec in lines):
            break
        assert time.monotonic() < deadline, [(getattr(r, "path", None), getattr(r, "status", None)) for r in lines]
        time.sleep(0.02)
    assert all("secret" not in str(getattr(rec, "path", "")) for rec in lines)
