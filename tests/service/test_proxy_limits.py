"""The proxy's forwarder on its own, against a real loopback upstream, with small limits: time
limits (504), size limits (502 / cut), request size (413), the SSRF guard outside dev mode, and
the pure pieces (header allow-list, error envelopes, service endpoints)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from squall.net import OutboundPolicy
from squall.proxy import Forwarder, ProxyLimits, UpstreamError, UpstreamStreamError
from squall.proxy.forwarder import parse_error_envelope, request_headers
from squall.proxy.target import endpoint_origin, parse_proxy_header, service_endpoint
from squall.xrpc.errors import InvalidRequest, PayloadTooLarge, UpstreamFailure, UpstreamTimeout
from tests.helpers.fake_services import ConnectionCounter
from tests.helpers.net import serve_in_thread

DEV = OutboundPolicy(allow_http=True, allow_private=True)


async def slow_headers(request: Request) -> Response:
    await asyncio.sleep(2)
    return JSONResponse({})


async def stall_body(request: Request) -> Response:
    async def body():
        yield b"a" * 100
        await asyncio.sleep(2)
        yield b"b" * 100
    return StreamingResponse(body(), headers={"content-length": "200"})


async def drip(request: Request) -> Response:
    async def body():
        for _ in range(40):
            yield b"." * 10
            await asyncio.sleep(0.05)
    return StreamingResponse(body())


async def big(request: Request) -> Response:
    return Response(b"x" * 5000, media_type="application/json")


async def chunked(request: Request) -> Response:
    async def body():
        for _ in range(10):
            yield b"y" * 500
    return StreamingResponse(body(), media_type="application/json")


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"size": len(body), "headers": dict(request.headers)})


@pytest.fixture(scope="module")
def upstream():
    app = Starlette(routes=[Route(f"/xrpc/{name}", fn, methods=["GET", "POST"]) for name, fn in (
        ("x.slow.headers", slow_headers), ("x.stall.body", stall_body), ("x.drip", drip), ("x.big", big),
        ("x.chunked", chunked), ("x.echo", echo))])
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}"


async def call(forwarder: Forwarder, origin: str, nsid: str, *, method: str = "GET", body=None,
               incoming: dict[str, str] | None = None) -> Response:
    return await forwarder.forward(method=method, origin=origin, nsid=nsid, query="", incoming=incoming or {},
                                   authorization=None, body=body)


async def read_all(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.body_iterator])
    return response.body


async def test_no_response_headers_in_time_is_504(upstream):
    forwarder = Forwarder(DEV, ProxyLimits(read_timeout=0.3))
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await call(forwarder, upstream, "x.slow.headers")
        assert info.value.status == 504 and info.value.name == "UpstreamTimeout"
        assert time.monotonic() - started < 1.5
    finally:
        await forwarder.aclose()


async def test_stalled_body_after_headers_is_cut(upstream):
    forwarder = Forwarder(DEV, ProxyLimits(read_timeout=0.3))
    try:
        response = await call(forwarder, upstream, "x.stall.body")
        assert response.status_code == 200 and response.headers["content-length"] == "200"
        with pytest.raises(UpstreamStreamError):
            await read_all(response)
    finally:
        await forwarder.aclose()


async def test_slow_drip_hits_the_total_time_limit(upstream):
    # read ahead covers the whole body: the limit is then a clean 504
    forwarder = Forwarder(DEV, ProxyLimits(total_timeout=0.5))
    try:
        with pytest.raises(UpstreamTimeout):
            await call(forwarder, upstream, "x.drip")
    finally:
        await forwarder.aclose()
    # past the read-ahead the response has started and can only be cut
    forwarder = Forwarder(DEV, ProxyLimits(total_timeout=0.5, buffer_bytes=50))
    try:
        response = await call(forwarder, upstream, "x.drip")
        with pytest.raises(UpstreamStreamError):
            await read_all(response)
    finally:
        await forwarder.aclose()


async def test_declared_oversize_is_502(upstream):
    forwarder = Forwarder(DEV, ProxyLimits(max_response_bytes=1000))
    try:
        with pytest.raises(UpstreamFailure) as info:
            await call(forwarder, upstream, "x.big")
        assert info.value.status == 502 and "too large" in info.value.message
    finally:
        await forwarder.aclose()


async def test_undeclared_oversize(upstream):
    forwarder = Forwarder(DEV, ProxyLimits(max_response_bytes=2000))
    try:
        with pytest.raises(UpstreamFailure):  # within the read-ahead: a clean 502
            await call(forwarder, upstream, "x.chunked")
    finally:
        await forwarder.aclose()
    forwarder = Forwarder(DEV, ProxyLimits(max_response_bytes=2000, buffer_bytes=600))
    try:
        response = await call(forwarder, upstream, "x.chunked")
        with pytest.raises(UpstreamStreamError):
            await read_all(response)
    finally:
        await forwarder.aclose()


async def test_within_limits_passes_whole(upstream):
    forwarder = Forwarder(DEV, ProxyLimits(max_response_bytes=5000, buffer_bytes=600))
    try:
        assert await read_all(await call(forwarder, upstream, "x.big")) == b"x" * 5000
        assert await read_all(await call(forwarder, upstream, "x.chunked")) == b"y" * 5000
    finally:
        await forwarder.aclose()


async def test_request_body_limit(upstream):
    forwarder = Forwarder(DEV, ProxyLimits(max_request_bytes=1000))

    async def stream(n: int):
        for _ in range(n):
            yield b"z" * 100

    try:
        with pytest.raises(PayloadTooLarge):
            await call(forwarder, upstream, "x.echo", method="POST", body=stream(5),
                       incoming={"content-length": "1001"})
        with pytest.raises(PayloadTooLarge):  # no declared length: counted as it streams
            await call(forwarder, upstream, "x.echo", method="POST", body=stream(11))
        with pytest.raises(InvalidRequest):
            await call(forwarder, upstream, "x.echo", method="POST", body=stream(1),
                       incoming={"content-length": "-5"})
        response = await call(forwarder, upstream, "x.echo", method="POST", body=stream(10),
                              incoming={"content-length": "1000", "content-type": "application/octet-stream"})
        assert json.loads(await read_all(response))["size"] == 1000
    finally:
        await forwarder.aclose()


async def test_upstream_error_envelope_and_defaults(upstream):
    forwarder = Forwarder(DEV)
    try:
        with pytest.raises(UpstreamError) as info:
            await call(forwarder, upstream, "x.missing")  # Starlette answers 404 text/plain
        assert info.value.status == 404 and info.value.name == "XRPCNotSupported"
    finally:
        await forwarder.aclose()


# -- the SSRF guard outside dev mode ----------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://127.0.0.1:{port}", "https://localhost:{port}", "https://[::1]:{port}",
                                    "https://10.0.0.1", "https://192.168.1.1", "https://169.254.169.254",
                                    "https://100.64.0.1", "https://[fd00::1]", "https://[::ffff:127.0.0.1]:{port}",
                                    "https://0.0.0.0:{port}", "http://127.0.0.1:{port}", "http://93.184.216.34"])
async def test_guard_refuses_non_public_or_plain_http_destinations(origin):
    counter = ConnectionCounter()
    forwarder = Forwarder(OutboundPolicy(), ProxyLimits(connect_timeout=1.0))
    try:
        with pytest.raises(UpstreamFailure) as info:
            await call(forwarder, origin.format(port=counter.port), "app.bsky.feed.getTimeline")
        assert "not allowed" in info.value.message
        assert counter.count == 0  # refused before any connection was made
    finally:
        await forwarder.aclose()
        counter.close()


# -- pure pieces ------------------------------------------------------------------------------------


def test_request_header_allow_list():
    incoming = httpx.Headers({
        "authorization": "Bearer user", "cookie": "a=b", "x-forwarded-for": "1.2.3.4", "accept-language": "de",
        "atproto-accept-labelers": "did:plc:x", "x-bsky-topics": "t", "content-type": "application/json",
        "content-length": "12", "content-encoding": "gzip", "atproto-proxy": "did:plc:x#y", "host": "pds",
    })
    assert request_headers(incoming, with_body=False) == {
        "accept-encoding": "identity", "accept-language": "de", "atproto-accept-labelers": "did:plc:x",
        "x-bsky-topics": "t"}
    with_body = request_headers(incoming, with_body=True)
    assert set(with_body) == {"accept-encoding", "accept-language", "atproto-accept-labelers", "x-bsky-topics",
                              "content-type", "content-length", "content-encoding"}
    assert request_headers(httpx.Headers({"accept-encoding": "gzip"}), with_body=False) == {"accept-encoding": "gzip"}


def test_error_envelope_parsing():
    json_headers = httpx.Headers({"content-type": "application/json; charset=utf-8"})
    assert parse_error_envelope(b'{"error":"NotFound","message":"gone"}', json_headers) == ("NotFound", "gone")
    assert parse_error_envelope(b'{"error":5,"message":["x"]}', json_headers) == (None, None)
    assert parse_error_envelope(b"[1]", json_headers) == (None, None)
    assert parse_error_envelope(b'{"error":"X"}', httpx.Headers({"content-type": "text/html"})) == (None, None)
    gz = httpx.Headers({"content-type": "application/json", "content-encoding": "gzip"})
    assert parse_error_envelope(gzip.compress(b'{"error":"E","message":"m"}'), gz) == ("E", "m")
    # a compressed bomb is inflated only as far as an envelope could reach
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    assert parse_error_envelope(bomb, gz) == (None, None)
    br = httpx.Headers({"content-type": "application/json", "content-encoding": "br"})
    assert parse_error_envelope(b"\x00\x01", br) == (None, None)


def test_service_endpoints():
    doc = {"id": "did:plc:abc", "service": [
        {"id": "#relative", "type": "X", "serviceEndpoint": "https://a.example/some/path?q=1"},
        {"id": "did:plc:abc#absolute", "type": "X", "serviceEndpoint": "https://b.example:8443"},
        {"id": "did:plc:other#foreign", "type": "X", "serviceEndpoint": "https://c.example"},
        {"id": "#ftp", "type": "X", "serviceEndpoint": "ftp://d.example"},
        {"id": "#userinfo", "type": "X", "serviceEndpoint": "https://user:pw@e.example"},
        {"id": "#object", "type": "X", "serviceEndpoint": {"uri": "https://f.example"}},
        {"id": "#badport", "type": "X", "serviceEndpoint": "https://g.example:99999"},
        {"id": "#v6", "type": "X", "serviceEndpoint": "https://[2001:db8::1]:444/x"},
    ]}
    assert service_endpoint(doc, "relative") == "https://a.example"
    assert service_endpoint(doc, "absolute") == "https://b.example:8443"
    for sid in ("foreign", "ftp", "userinfo", "object", "badport", "missing"):
        assert service_endpoint(doc, sid) is None, sid
    assert service_endpoint(doc, "v6") == "https://[2001:db8::1]:444"
    assert service_endpoint({"id": "did:plc:abc", "service": "nope"}, "relative") is None
    assert endpoint_origin("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


@pytest.mark.parametrize("value", ["#x", "did:plc:abc", "did:plc:abc#", "did:plc:abc#x#y", "did:plc:abc #x",
                                   "nodid#x", "did:plc:abc#\x01", "did:web:a.example#" + "s" * 300])
def test_parse_proxy_header_refuses(value):
    with pytest.raises(InvalidRequest):
        parse_proxy_header(value)


def test_parse_proxy_header_accepts():
    assert parse_proxy_header("did:web:api.bsky.chat#bsky_chat") == ("did:web:api.bsky.chat", "bsky_chat")
