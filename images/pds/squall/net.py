"""Outbound HTTP: the one client factory every part of the PDS uses to reach other hosts.

Handles, DIDs and service URLs come from strangers (a handle's ``.well-known`` file, a did:web
host, a PDS endpoint in someone's DID document), so an outbound request is a way for anyone to make
the PDS knock on doors inside its own network (SSRF). The guard here therefore:

* allows only ``https`` (plain ``http`` only in dev mode);
* resolves the host itself and refuses loopback, private, link-local, shared (CGNAT), multicast,
  reserved and unspecified addresses (all allowed in dev mode, where tests run on loopback);
* connects to the address it checked, not to a second resolution of the name, so a DNS answer
  cannot change between the check and the connection (DNS rebinding). The TLS handshake still
  names the original host (SNI and certificate check) and the ``Host`` header is unchanged;
* bounds every response body and the total time spent reading it, so a hostile server cannot
  stream forever or fill memory;
* ignores proxy environment variables, which would otherwise route around the guard.

Redirects are off unless a caller asks; every hop goes through the same guard.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import httpx

from .version import __version__

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 10.0
USER_AGENT = f"squall/{__version__} (+https://atproto.com)"


class ForbiddenDestination(httpx.TransportError):
    """The URL's scheme or resolved address is not one the PDS may contact."""


class ResponseTooLarge(httpx.TransportError):
    """The response body is larger than the caller's bound."""


@dataclass(frozen=True)
class OutboundPolicy:
    allow_http: bool = False
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> "OutboundPolicy":
        dev = bool(getattr(settings, "dev_mode", False))
        return cls(allow_http=dev, allow_private=dev)


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4-mapped or 6to4/NAT64-embedded v4 address reaches the v4 host: judge that one.
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class _LimitedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request, limit: int, deadline: float):
        self._inner = inner
        self._request = request
        self._limit = limit
        self._deadline = deadline

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise ResponseTooLarge(
                    f"response from {self._request.url.host} exceeds {self._limit} bytes", request=self._request
                )
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout(f"response from {self._request.url.host} took too long",
                                        request=self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that checks the destination and bounds the response (see module doc)."""

    def __init__(self, policy: OutboundPolicy, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 total_timeout: float = DEFAULT_TIMEOUT, resolve_timeout: float = 5.0,
                 observe: Callable[[str], None] | None = None):
        self.policy = policy
        self.observe = observe  # squall.metrics: called with each request's outcome
        self.max_response_bytes = max_response_bytes
        self.total_timeout = total_timeout
        self.resolve_timeout = resolve_timeout
        # Made on the first request: each transport loads its own TLS context (~1 MB of CA data),
        # and a PDS creates several clients at start that may never be used (did:web, no proxy).
        self._inner_transport: httpx.AsyncHTTPTransport | None = None

    @property
    def _inner(self) -> httpx.AsyncHTTPTransport:
        if self._inner_transport is None:
            self._inner_transport = httpx.AsyncHTTPTransport(retries=0)
        return self._inner_transport

    async def _resolve(self, request: httpx.Request) -> str:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.resolve_timeout
                )
            except asyncio.TimeoutError:
                raise httpx.ConnectTimeout(f"resolving {host} timed out", request=request) from None
            except OSError as exc:
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from None
            candidates = []
            for info in infos:
                addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
                if addr not in candidates:
                    candidates.append(addr)
            if not candidates:
                raise httpx.ConnectError(f"{host} has no address", request=request)
        if not self.policy.allow_private:
            # Every address must be public: a name that mixes one public and one private address is
            # a classic way to get the second one tried.
            for addr in candidates:
                if not is_public_address(addr):
                    raise ForbiddenDestination(
                        f"refusing to contact {host}: it resolves to the non-public address {addr}", request=request
                    )
        return str(candidates[0])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.observe is None:
            return await self._handle(request)
        try:
            response = await self._handle(request)
        except (ForbiddenDestination, ResponseTooLarge):
            self.observe("refused")
            raise
        except Exception:
            self.observe("error")
            raise
        self.observe("ok" if response.status_code < 400 else "client_error" if response.status_code < 500
                     else "server_error")
        return response

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        if scheme not in ("https", "http"):
            raise ForbiddenDestination(f"refusing the URL scheme {scheme!r}", request=request)
        if scheme == "http" and not self.policy.allow_http:
            raise ForbiddenDestination(f"refusing plain http to {request.url.host}: https is required",
                                       request=request)
        host = request.url.host
        ip = await self._resolve(request)
        if ip != host:
            # Connect to the checked address; keep the name for SNI, the certificate and Host.
            request.url = request.url.copy_with(host=ip)
            if scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_response_bytes:
            await response.aclose()
            raise ResponseTooLarge(f"response from {host} declares {declared} bytes, over {self.max_response_bytes}",
                                   request=request)
        stream = _LimitedStream(response.stream, request, self.max_response_bytes,
                                time.monotonic() + self.total_timeout)  # type: ignore[arg-type]
        return httpx.Response(status_code=response.status_code, headers=response.headers, stream=stream,
                              extensions=response.extensions)

    async def aclose(self) -> None:
        if self._inner_transport is not None:
            await self._inner_transport.aclose()


def make_client(policy: OutboundPolicy | Any, *, timeout: float = DEFAULT_TIMEOUT,
                max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, follow_redirects: bool = False,
                max_redirects: int = 3, headers: dict[str, str] | None = None,
                observe: Callable[[str], None] | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` behind the SSRF guard.

    ``policy`` is an :class:`OutboundPolicy` or the settings (dev mode allows http and private
    addresses). ``timeout`` bounds connect, each read, and the whole body.
    """
    if not isinstance(policy, OutboundPolicy):
        policy = OutboundPolicy.from_settings(policy)
    transport = GuardedTransport(policy, max_response_bytes=max_response_bytes, total_timeout=timeout,
                                 resolve_timeout=min(timeout, 5.0), observe=observe)
    return httpx.AsyncClient(
        transport=transport,
        # One client serves every user: a Set-Cookie from one upstream must never ride along on
        # another user's request, so the jar refuses all cookies.
        cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
    )
