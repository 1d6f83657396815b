"""HTTP → XRPC: one route ``/xrpc/{nsid}`` that finds the method, authenticates, reads the input
with a size cap, runs the handler and renders its result or error envelope."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..atproto import syntax
from .errors import InvalidRequest, MethodNotImplemented, PayloadTooLarge, XRPCError
from .request import XrpcRequest

if TYPE_CHECKING:
    from ..context import AppContext

# Called for NSIDs the PDS does not serve itself (service proxying, issue #6). Returns None to
# fall through to MethodNotImplemented.
Fallback = Callable[["AppContext", Request, str], Awaitable[Response | None]]


def error_response(err: XRPCError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def read_body_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        except ValueError:
            raise InvalidRequest("Invalid content-length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_result(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=200)
    return JSONResponse(result)


async def dispatch(ctx: "AppContext", request: Request, nsid: str, fallback: Fallback | None) -> Response:
    method = ctx.registry.get(nsid)
    if method is None:
        if fallback is not None and syntax.is_valid_nsid(nsid):
            proxied = await fallback(ctx, request, nsid)
            if proxied is not None:
                return proxied
        raise MethodNotImplemented()

    http_method = request.method
    if method.kind == "query" and http_method not in ("GET", "HEAD"):
        raise InvalidRequest(f"Incorrect HTTP method ({http_method}) expected GET")
    if method.kind == "procedure" and http_method != "POST":
        raise InvalidRequest(f"Incorrect HTTP method ({http_method}) expected POST")

    auth = await ctx.verifier.verify(method.auth, request.headers.get("authorization"))

    body: Any = None
    if method.kind == "procedure" and method.input == "json":
        raw = await read_body_capped(request, method.max_body)
        if raw:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise InvalidRequest("Wrong request encoding (Content-Type): expected application/json")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise InvalidRequest("Request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise InvalidRequest("Request body must be a JSON object")
        else:
            body = {}
    elif method.kind == "procedure" and method.input is None:
        raw = await read_body_capped(request, method.max_body)

    req = XrpcRequest(ctx=ctx, method=method, http=request, auth=auth, params=request.query_params, body=body)
    result = await method.handler(req)
    return _json_result(result)
