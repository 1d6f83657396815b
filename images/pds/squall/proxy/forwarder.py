"""Forwarding one XRPC call upstream and streaming the answer back, within bounds.

Only an allow-list of request headers travels upstream: the caller's own credentials, cookies,
``x-forwarded-*`` and everything else a client or a reverse proxy may have added stay here; the
upstream sees the service-auth token this PDS minted instead. Only an allow-list of response
headers comes back (as the reference PDS: content headers, ``atproto-repo-rev``,
``atproto-content-labelers``, ``retry-after``, plus the upstream's ``ratelimit-*`` advice).

Every outbound connection goes through the shared SSRF guard (``squall.net``): https and public
addresses only unless dev mode. Bodies are streamed both ways, never buffered whole: the request
body is counted against ``max_request_bytes`` as it passes, the response against
``max_response_bytes`` and ``total_timeout`` (the guard enforces both), and any single wait
(connecting, the response headers, the next body chunk) against its own timeout.

Upstream failures become the reference's XRPC errors: unreachable or refused destination → 502
``UpstreamFailure``, no answer in time → 504 ``UpstreamTimeout``, a response larger than allowed →
502 ``UpstreamFailure``; an upstream error response keeps its status and its ``{error, message}``
(a 500 becomes 502 ``UpstreamFailure``, as the reference).

Once the status line has been sent a failure can only cut the response short. So that a cut is
never mistaken for a whole body: a response with a declared length is relayed with that length
(a short body is then visible to the client); one without is read ahead up to ``buffer_bytes``
and, when it ends within that (the usual case), sent with its exact length, a failure meanwhile
still being a clean error; only a longer one is streamed as it comes, and a failure past that
point raises ``UpstreamStreamError`` to abort the connection.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import zlib
from dataclasses import dataclass
from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping

import httpx
from starlette.responses import Response, StreamingResponse

from ..net import ForbiddenDestination, OutboundPolicy, ResponseTooLarge, make_client
from ..errors import DomainError, InvalidRequest, PayloadTooLarge, UpstreamError, UpstreamFailure, UpstreamTimeout

REQUEST_HEADERS = ("accept-language", "atproto-accept-labelers", "x-bsky-topics")
REQUEST_BODY_HEADERS = ("content-type", "content-encoding", "content-length")
RESPONSE_CONTENT_HEADERS = ("content-length", "content-encoding", "content-type", "content-language")
RESPONSE_HEADERS = ("atproto-repo-rev", "atproto-content-labelers", "retry-after", "ratelimit-limit",
                    "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")

MAX_ERROR_BODY = 64 * 1024  # an error envelope is small; more is not read, let alone parsed
# An answer read-after-write may rewrite is buffered (decoded) up to this; a larger one streams as is.
MAX_REWRITE_BYTES = 4 * 1024 * 1024
REWRITABLE_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")  # others are relayed as they came

# read-after-write: given a 200 answer's headers, None (stream it) or a Munge for its JSON body;
# a Munge returns None (leave the body alone) or (new body, extra response headers).
Munge = Callable[[Any], Awaitable["tuple[Any, dict[str, str]] | None"]]
Rewrite = Callable[[httpx.Headers], Awaitable["Munge | None"]]

# Default XRPC error names by status, for upstream errors that carry no envelope.
_STATUS_NAMES = {
    400: "InvalidRequest", 401: "AuthenticationRequired", 403: "Forbidden", 404: "XRPCNotSupported",
    406: "NotAcceptable", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 429: "RateLimitExceeded",
    500: "InternalServerError", 501: "MethodNotImplemented", 502: "UpstreamFailure",
    503: "NotEnoughResources", 504: "UpstreamTimeout",
}
_STATUS_MESSAGES = {
    400: "Invalid Request", 401: "Authentication Required", 403: "Forbidden", 404: "XRPC Not Supported",
    406: "Not Acceptable", 413: "Payload Too Large", 415: "Unsupported Media Type",
    429: "Rate Limit Exceeded", 500: "Internal Server Error", 501: "Method Not Implemented",
    502: "Upstream Failure", 503: "Not Enough Resources", 504: "Upstream Timeout",
}


@dataclass(frozen=True)
class ProxyLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 15.0  # waiting for the response headers, or between two body chunks
    total_timeout: float = 60.0  # the whole response body
    max_response_bytes: int = 10 * 1024 * 1024  # as the reference's proxy
    max_request_bytes: int = 10 * 1024 * 1024
    # A response without a declared length is read ahead this far before anything is sent.
    buffer_bytes: int = 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> "ProxyLimits":
        """PDS_PROXY_HEADERS_TIMEOUT, PDS_PROXY_BODY_TIMEOUT (ms) and PDS_PROXY_MAX_RESPONSE_SIZE."""
        return cls(read_timeout=settings.proxy_headers_timeout / 1000,
                   total_timeout=settings.proxy_body_timeout / 1000,
                   max_response_bytes=settings.proxy_max_response_size)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """One client serves every user: a cookie an upstream sets for one must never ride along on
    another's request, so none is kept."""

    def set_ok(self, cookie, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def return_ok(self, cookie, request) -> bool:  # type: ignore[no-untyped-def]
        return False


class UpstreamStreamError(Exception):
    """The upstream failed after the response had started; the connection to the client is cut."""


def request_headers(incoming: Mapping[str, str], *, with_body: bool) -> dict[str, str]:
    """The allow-listed request headers to forward (a fresh dict: nothing else passes)."""
    out = {"accept-encoding": incoming.get("accept-encoding") or "identity"}
    names = REQUEST_HEADERS + (REQUEST_BODY_HEADERS if with_body else ())
    for name in names:
        value = incoming.get(name)
        if value is not None:
            out[name] = value
    return out


def response_headers(upstream: httpx.Headers, *, content: bool = True) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in (RESPONSE_CONTENT_HEADERS if content else ()) + RESPONSE_HEADERS:
        values = upstream.get_list(name)
        if values:
            out[name] = ",".join(values)
    return out


def _decode_error_body(raw: bytes, encoding: str | None) -> bytes | None:
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip", "deflate"):
        # Bounded inflation: a small compressed body must not expand into gigabytes here.
        try:
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
            return inflater.decompress(raw, MAX_ERROR_BODY)
        except zlib.error:
            try:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, MAX_ERROR_BODY)
            except zlib.error:
                return None
    return None


def parse_error_envelope(raw: bytes, headers: httpx.Headers) -> tuple[str | None, str | None]:
    ctype = headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        return None, None
    body = _decode_error_body(raw, headers.get("content-encoding"))
    if body is None:
        return None, None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(value, dict):
        return None, None
    error, message = value.get("error"), value.get("message")
    return (error if isinstance(error, str) and error else None,
            message if isinstance(message, str) and message else None)


class Forwarder:
    def __init__(self, policy: OutboundPolicy, limits: ProxyLimits = ProxyLimits(), *,
                 log: logging.Logger | None = None, observe: Any = None):
        self.limits = limits
        self.log = log or logging.getLogger("squall.proxy")
        self.client = make_client(policy, timeout=limits.total_timeout, max_response_bytes=limits.max_response_bytes,
                                  observe=observe)
        self.client.cookies.jar = http.cookiejar.CookieJar(policy=_NoCookies())
        self._timeout = httpx.Timeout(connect=limits.connect_timeout, read=limits.read_timeout,
                                      write=limits.read_timeout, pool=limits.connect_timeout)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _capped(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > self.limits.max_request_bytes:
                raise PayloadTooLarge(f"Request body exceeds {self.limits.max_request_bytes} bytes")
            yield chunk

    async def forward(self, *, method: str, origin: str, nsid: str, query: str, incoming: Mapping[str, str],
                      authorization: str | None, body: AsyncIterable[bytes] | bytes | None = None,
                      body_headers: Mapping[str, str] | None = None, rewrite: "Rewrite | None" = None) -> Response:
        """Send ``method /xrpc/<nsid>?<query>`` to ``origin`` and relay the answer.

        ``incoming`` are the client's request headers (only the allow-list is read). A streamed
        ``body`` keeps the client's content headers; a bytes ``body`` is sent with
        ``body_headers`` (the caller re-encoded it). ``rewrite`` (read-after-write) sees the
        headers of a 200 answer and may ask for its JSON body, to be rewritten; every other
        answer streams as usual.
        """
        url = f"{origin}/xrpc/{nsid}" + (f"?{query}" if query else "")
        streamed = body is not None and not isinstance(body, (bytes, bytearray))
        headers = request_headers(incoming, with_body=streamed)
        if body is not None and not streamed:
            headers.update({k.lower(): v for k, v in (body_headers or {}).items()})
        if authorization is not None:
            headers["authorization"] = authorization
        content: Any = None
        if streamed:
            declared = incoming.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise InvalidRequest("Invalid content-length")
                if int(declared) > self.limits.max_request_bytes:
                    raise PayloadTooLarge(f"Request body exceeds {self.limits.max_request_bytes} bytes")
            content = self._capped(body)  # type: ignore[arg-type]
        elif body is not None:
            content = bytes(body)
        request = self.client.build_request(method, url, headers=headers, content=content, timeout=self._timeout)
        try:
            upstream = await self.client.send(request, stream=True)
        except DomainError:
            raise
        except httpx.HTTPError as exc:
            raise self._map(exc, nsid, origin) from None

        if upstream.status_code >= 400:
            raise await self._error(upstream)
        if rewrite is not None and upstream.status_code == 200:
            try:
                munge = await rewrite(upstream.headers)
            except BaseException:
                await upstream.aclose()
                raise
            if munge is not None:
                return await self._rewritten(upstream, nsid, origin, munge)
        headers = response_headers(upstream.headers)
        if "content-length" in headers:
            # The length travels with the response, so a body cut short is detectable downstream.
            return StreamingResponse(self._relay(upstream, aiter(upstream.aiter_raw()), nsid),
                                     status_code=upstream.status_code, headers=headers)
        # No declared length: read ahead up to ``buffer_bytes``. A response that ends within it
        # (most do) goes out with its exact length, and a failure meanwhile is still a clean 502.
        chunks = aiter(upstream.aiter_raw())
        head: list[bytes] = []
        size = 0
        try:
            while size < self.limits.buffer_bytes:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    headers["content-length"] = str(size)
                    return Response(b"".join(head), status_code=upstream.status_code, headers=headers)
                head.append(chunk)
                size += len(chunk)
        except httpx.HTTPError as exc:
            await upstream.aclose()
            raise self._map(exc, nsid, origin) from None
        except BaseException:
            await upstream.aclose()
            raise
        return StreamingResponse(self._relay(upstream, chunks, nsid, head), status_code=upstream.status_code,
                                 headers=headers)

    def _map(self, exc: httpx.HTTPError, nsid: str, origin: str) -> DomainError:
        if isinstance(exc, ForbiddenDestination):
            self.log.warning("proxy destination refused: %s", exc, extra={"nsid": nsid})
            return UpstreamFailure("Upstream service unreachable: its address is not allowed "
                                   "(only https and public addresses)")
        if isinstance(exc, ResponseTooLarge):
            self.log.warning("upstream response too large: %s", exc, extra={"nsid": nsid})
            return UpstreamFailure("Upstream response too large")
        if isinstance(exc, httpx.TimeoutException):
            self.log.warning("upstream timed out: %s", exc, extra={"nsid": nsid, "origin": origin})
            return UpstreamTimeout("Upstream service timed out")
        self.log.warning("upstream unreachable: %s", exc, extra={"nsid": nsid, "origin": origin})
        return UpstreamFailure("Upstream service unreachable")

    async def _error(self, upstream: httpx.Response) -> UpstreamError:
        raw = bytearray()
        try:
            async for chunk in upstream.aiter_raw():
                raw.extend(chunk)
                if len(raw) > MAX_ERROR_BODY:
                    raw.clear()  # too big to be an envelope; answer with the status alone
                    break
        except httpx.HTTPError:
            raw.clear()
        finally:
            await upstream.aclose()
        name, message = parse_error_envelope(bytes(raw), upstream.headers)
        status = upstream.status_code
        if status == 500:
            status = 502
            name = name or "UpstreamFailure"
            message = message or "Upstream Failure"
        if not 400 <= status <= 599:
            status = 502
        default_name = _STATUS_NAMES.get(status, "InvalidRequest" if status < 500 else "UpstreamFailure")
        return UpstreamError(status, name or default_name, message or _STATUS_MESSAGES.get(status, default_name),
                             response_headers(upstream.headers, content=False))

    async def _relay(self, upstream: httpx.Response, chunks: AsyncIterator[bytes], nsid: str,
                     head: list[bytes] | None = None) -> AsyncIterator[bytes]:
        try:
            for chunk in head or ():
                yield chunk
            async for chunk in chunks:
                yield chunk
        except httpx.HTTPError as exc:
            self.log.warning("upstream response cut short: %s", exc, extra={"nsid": nsid})
            raise UpstreamStreamError(f"upstream response for {nsid} failed midway: {exc}") from None
        finally:
            await upstream.aclose()

    # -- read-after-write: a bounded, buffered JSON answer ----------------------------------------

    async def _rewritten(self, upstream: httpx.Response, nsid: str, origin: str, munge: "Munge") -> Response:
        """Read the (decoded) body up to ``MAX_REWRITE_BYTES`` and let ``munge`` rewrite it. A body
        that is larger, not JSON, or that ``munge`` leaves alone goes back as it came (decoded)."""
        headers = response_headers(upstream.headers, content=False)
        ctype = upstream.headers.get("content-type") or "application/json"
        declared = upstream.headers.get("content-length")
        encoding = (upstream.headers.get("content-encoding") or "identity").strip().lower()
        if (declared is not None and declared.isdigit() and int(declared) > MAX_REWRITE_BYTES) \
                or encoding not in REWRITABLE_ENCODINGS:
            return StreamingResponse(self._relay(upstream, aiter(upstream.aiter_raw()), nsid),
                                     status_code=200, headers=response_headers(upstream.headers))
        chunks = aiter(upstream.aiter_bytes())
        body = bytearray()
        try:
            while len(body) <= MAX_REWRITE_BYTES:
                try:
                    body.extend(await anext(chunks))
                except StopAsyncIteration:
                    break
            else:
                # Too big to rewrite: the rest streams, decoded, after what was read.
                return StreamingResponse(self._relay(upstream, chunks, nsid, [bytes(body)]), status_code=200,
                                         headers={**headers, "content-type": ctype})
        except httpx.HTTPError as exc:
            await upstream.aclose()
            raise self._map(exc, nsid, origin) from None
        except BaseException:
            await upstream.aclose()
            raise
        await upstream.aclose()
        result = None
        if "json" in ctype.lower():
            try:
                value = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                value = None
            if value is not None:
                result = await munge(value)
        if result is None:
            return Response(bytes(body), status_code=200, headers={**headers, "content-type": ctype})
        new_body, extra = result
        out = json.dumps(new_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return Response(out, status_code=200, headers={**headers, **extra, "content-type": "application/json"})

    async def get_json(self, *, origin: str, nsid: str, params: Mapping[str, Any], authorization: str) -> Any:
        """A small upstream query made by this PDS itself (read-after-write, custom feeds): the
        parsed JSON answer, or the upstream's error raised as ``UpstreamError``."""
        url = f"{origin}/xrpc/{nsid}"
        request = self.client.build_request("GET", url, params=dict(params), timeout=self._timeout,
                                            headers={"authorization": authorization, "accept": "application/json"})
        try:
            upstream = await self.client.send(request, stream=True)
        except DomainError:
            raise
        except httpx.HTTPError as exc:
            raise self._map(exc, nsid, origin) from None
        if upstream.status_code >= 400:
            raise await self._error(upstream)
        body = bytearray()
        try:
            async for chunk in upstream.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_REWRITE_BYTES:
                    raise UpstreamFailure("Upstream response too large")
        except httpx.HTTPError as exc:
            raise self._map(exc, nsid, origin) from None
        finally:
            await upstream.aclose()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamFailure(f"Upstream answered {nsid} with something other than JSON") from None

    async def post_json(self, *, origin: str, nsid: str, body: bytes, authorization: str) -> Response:
        """Send a JSON procedure this PDS composed (push registration) and relay the answer."""
        return await self.forward(method="POST", origin=origin, nsid=nsid, query="", incoming={},
                                  authorization=authorization, body=body,
                                  body_headers={"content-type": "application/json"})
