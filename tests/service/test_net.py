"""The outbound client's SSRF guard and bounds (squall.net), against a real loopback server."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from squall.net import ForbiddenDestination, OutboundPolicy, ResponseTooLarge, is_public_address, make_client
from tests.helpers.net import serve_in_thread

DEV = OutboundPolicy(allow_http=True, allow_private=True)
PROD = OutboundPolicy()


async def hello(request: Request) -> Response:
    return PlainTextResponse(f"hello from {request.headers.get('host')}")


async def big(request: Request) -> Response:
    return Response(b"x" * 100_000, media_type="application/octet-stream")


async def chunked(request: Request) -> Response:
    async def body():
        for _ in range(100):
            yield b"y" * 1000

    return StreamingResponse(body())


async def drip(request: Request) -> Response:
    async def body():
        for _ in range(50):
            yield b"."
            await asyncio.sleep(0.1)

    return StreamingResponse(body())


async def set_cookie(request: Request) -> Response:
    response = PlainTextResponse("cookie set")
    response.set_cookie("session", "secret-of-user-a")
    return response


async def echo_cookie(request: Request) -> Response:
    return PlainTextResponse(request.headers.get("cookie", ""))


@pytest.fixture(scope="module")
def server():
    app = Starlette(routes=[Route("/hello", hello), Route("/big", big), Route("/chunked", chunked),
                            Route("/drip", drip), Route("/set-cookie", set_cookie),
                            Route("/echo-cookie", echo_cookie)])
    with serve_in_thread(app) as port:
        yield port


async def test_dev_mode_allows_loopback_http(server):
    async with make_client(DEV) as client:
        r = await client.get(f"http://127.0.0.1:{server}/hello")
    assert r.status_code == 200 and r.text == f"hello from 127.0.0.1:{server}"


async def test_cookies_from_one_upstream_are_never_sent_again(server):
    # The client is shared by every user; a cookie one response sets must not reach later requests.
    async with make_client(DEV) as client:
        r = await client.get(f"http://127.0.0.1:{server}/set-cookie")
        assert "set-cookie" in r.headers
        r = await client.get(f"http://127.0.0.1:{server}/echo-cookie")
    assert r.text == ""


async def test_connects_to_checked_address_but_keeps_the_host_name(server):
    # The name is resolved and checked by the guard, the connection goes to that address, and the
    # server still sees the original Host.
    async with make_client(DEV) as client:
        r = await client.get(f"http://localhost:{server}/hello")
    assert r.text == f"hello from localhost:{server}"


async def test_plain_http_is_refused_outside_dev_mode(server):
    async with make_client(PROD) as client:
        with pytest.raises(ForbiddenDestination, match="https is required"):
            await client.get(f"http://127.0.0.1:{server}/hello")
    # http allowed but private addresses not: still refused, for the address this time
    async with make_client(OutboundPolicy(allow_http=True)) as client:
        with pytest.raises(ForbiddenDestination, match="non-public address 127.0.0.1"):
            await client.get(f"http://127.0.0.1:{server}/hello")


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/",
    "https://127.1.2.3:8443/",
    "https://localhost/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://10.0.0.1/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/",
    "https://[fd00::1]/",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://224.0.0.1/",
    "https://[64:ff9b::7f00:1]/",
])
async def test_non_public_destinations_are_refused(url):
    started = time.monotonic()
    async with make_client(PROD) as client:
        with pytest.raises(ForbiddenDestination, match="non-public address"):
            await client.get(url)
    assert time.monotonic() - started < 5  # refused before any connection attempt could time out


async def test_settings_select_the_policy(server):
    class Settings:
        dev_mode = False

    async with make_client(Settings()) as client:
        with pytest.raises(ForbiddenDestination):
            await client.get(f"http://127.0.0.1:{server}/hello")
    Settings.dev_mode = True
    async with make_client(Settings()) as client:
        assert (await client.get(f"http://127.0.0.1:{server}/hello")).status_code == 200


async def test_response_size_is_bounded(server):
    async with make_client(DEV, max_response_bytes=10_000) as client:
        with pytest.raises(ResponseTooLarge):
            await client.get(f"http://127.0.0.1:{server}/big")  # declared Content-Length
        with pytest.raises(ResponseTooLarge):
            await client.get(f"http://127.0.0.1:{server}/chunked")  # no length: counted while reading
        assert len((await client.get(f"http://127.0.0.1:{server}/hello")).content) < 100
    async with make_client(DEV, max_response_bytes=200_000) as client:
        assert len((await client.get(f"http://127.0.0.1:{server}/chunked")).content) == 100_000


async def test_total_read_time_is_bounded(server):
    async with make_client(DEV, timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            await client.get(f"http://127.0.0.1:{server}/drip")  # each read is quick; the whole is not
        assert time.monotonic() - started < 3


def test_is_public_address():
    public = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"]
    private = ["127.0.0.1", "10.1.2.3", "172.31.0.1", "192.168.0.10", "169.254.1.1", "100.100.0.1", "0.0.0.0",
               "255.255.255.255", "224.1.1.1", "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1",
               "64:ff9b::a00:1", "2002:7f00:1::1", "192.0.2.1"]
    for text in public:
        assert is_public_address(ipaddress.ip_address(text)), text
    for text in private:
        assert not is_public_address(ipaddress.ip_address(text)), text
