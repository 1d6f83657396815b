"""HTTP → XRPC: one route ``/xrpc/{nsid}`` that finds the method, authenticates, reads the input
with a size cap, checks the parameters and JSON input against the method's Lexicon, runs the
handler and renders its result or error envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import jsonin, ratelimit
from ..atproto import syntax
from ..proxy.methods import is_protected
from ..auth import permissions
from ..auth.policy import Auth
from ..atproto.lexicon import LexiconValidationError
from .errors import InvalidRequest, MethodNotImplemented, PayloadTooLarge, RateLimitExceeded, XRPCError
from .request import XrpcRequest

if TYPE_CHECKING:
    from ..atproto.lexicon import MethodSchema
    from ..context import AppContext
    from .registry import Method

# Called for NSIDs the PDS does not serve itself (service proxying, issue #6). Returns None to
# fall through to MethodNotImplemented.
Fallback = Callable[["AppContext", Request, str], Awaitable[Response | None]]


def error_response(err: XRPCError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def check_declared_length(request: Request, limit: int, message: str | None = None) -> None:
    """Refuse a body whose declared Content-Length is over ``limit`` before reading any of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise InvalidRequest("Invalid content-length") from None
    if size > limit:
        raise PayloadTooLarge(message or f"Request body exceeds {limit} bytes")


async def read_body_capped(request: Request, limit: int) -> bytes:
    check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_inputs(schema: "MethodSchema", method: "Method", request: Request, body: Any) -> dict[str, Any]:
    """The call's typed parameters, after checking them and the JSON input against the Lexicon.

    The messages are the reference's: a parameter error reads ``Error: Params/limit can not be
    greater than 100`` (it stringifies the error), an input error ``Input/repo must be a valid did``.
    """
    args: dict[str, Any] = {}
    if schema.has_params:
        try:
            args = schema.validate_params(request.query_params.multi_items())
        except LexiconValidationError as exc:
            raise _invalid(method, exc, f"Error: {exc}") from None
    if isinstance(body, dict) and schema.has_input_schema:
        try:
            schema.validate_input(body)
        except LexiconValidationError as exc:
            raise _invalid(method, exc, str(exc)) from None
    return args


async def call_handler(ctx: "AppContext", method: "Method", request: Request, auth: Any, body: Any) -> Any:
    """Run a method's handler for a caller other than the XRPC route (the admin dashboard's forms),
    after the same Lexicon check of its input, so a handler can always trust ``req.body``/``req.args``."""
    schema = ctx.registry.schema(method.nsid)
    args = _check_inputs(schema, method, request, body) if schema is not None else {}
    return await method.handler(XrpcRequest(ctx=ctx, method=method, http=request, auth=auth, body=body, args=args))


def _invalid(method: "Method", exc: LexiconValidationError, message: str) -> InvalidRequest:
    # A method that declares InvalidHandle answers a handle that is not even handle syntax with it,
    # as it does a handle it refuses for other reasons (reserved, too short, wrong domain).
    if exc.format == "handle" and "InvalidHandle" in method.errors:
        return InvalidRequest(message, "InvalidHandle")
    return InvalidRequest(message)


def _appview_ref(ctx: "AppContext") -> str:
    """The audience of app-view methods this PDS answers itself, for ``rpc:`` permissions."""
    proxy = getattr(ctx, "proxy", None)
    target = proxy.targets.configured("appview") if proxy is not None else None
    return target.ref if target is not None else "*"


def _json_result(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=200)
    try:
        # orjson: the same compact UTF-8 text as JSONResponse, several times faster (issue #21).
        body = orjson.dumps(result)
    except TypeError:  # what orjson does not take (an integer over 64 bits, a non-string key)
        return JSONResponse(result)
    return Response(body, media_type="application/json")


class _Limits:
    """The rate limits of one request: consumed in two phases, reported as one set of headers."""

    def __init__(self, ctx: "AppContext", request: Request):
        self.limiter: ratelimit.RateLimiter | None = ctx.ratelimit
        self.ip = ""
        self.statuses: list[ratelimit.RateLimitStatus] = []
        if self.limiter is not None:
            self.ip = ratelimit.client_ip(request, ctx.settings.trust_proxy_headers)
            if self.limiter.bypassed(self.ip):
                self.limiter = None

    def consume(self, limits: Iterable[ratelimit.RateLimit], *, did: str | None = None,
                identifier: str | None = None, cost: int = 1) -> None:
        if self.limiter is None:
            return
        for limit in limits:
            key = ratelimit.limit_key(limit, ip=self.ip, did=did, identifier=identifier)
            self.statuses.append(self.limiter.consume(limit, key, cost))
        status = ratelimit.tightest(self.statuses)
        if status is not None and status.exceeded:
            raise RateLimitExceeded(headers=status.headers(self.limiter.now()))

    def headers(self) -> dict[str, str]:
        status = ratelimit.tightest(self.statuses)
        if status is None or self.limiter is None:
            return {}
        return status.headers(self.limiter.now())


async def dispatch(ctx: "AppContext", request: Request, nsid: str, fallback: Fallback | None) -> Response:
    limits = _Limits(ctx, request)
    method = ctx.registry.get(nsid)
    # Per-IP limits are consumed before anything else: before authentication, so that wrong
    # passwords (a user's, or the admin's: admin requests are not exempt, or the admin password
    # could be guessed without limit) count, and before the body is read. Limits keyed by the
    # caller or by the login identifier need authentication or the body, so come after them.
    limits.consume((ratelimit.GLOBAL_IP,))
    if method is None:
        if fallback is not None and syntax.is_valid_nsid(nsid):
            proxied = await fallback(ctx, request, nsid)
            if proxied is not None:
                return proxied  # the upstream's own rate-limit headers, if any, pass through as sent
        raise MethodNotImplemented()
    if is_protected(nsid) and "atproto-proxy" in request.headers:
        # As the reference: a request addressed to another service is refused for the methods
        # that must only ever reach this PDS, even those it serves itself.
        raise InvalidRequest("Bad token method", "InvalidToken")
    try:
        response = await _call(ctx, request, method, limits)
    except XRPCError as err:
        err.headers = {**limits.headers(), **err.headers}
        raise
    response.headers.update(limits.headers())
    return response


async def _call(ctx: "AppContext", request: Request, method: "Method", limits: _Limits) -> Response:
    limits.consume([limit for limit in method.rate_limits if limit.key.before_auth])

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
                body = jsonin.loads(raw)
            except (jsonin.JsonTooDeep, jsonin.InvalidUnicode) as exc:
                raise InvalidRequest(f"Request body is not acceptable: {exc}") from None
            except (ValueError, UnicodeDecodeError):
                raise InvalidRequest("Request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise InvalidRequest("Request body must be a JSON object")
        else:
            body = {}
    elif method.kind == "procedure" and method.input is None:
        raw = await read_body_capped(request, method.max_body)

    identifier = body.get("identifier") if isinstance(body, dict) else None
    cost = method.rate_cost(body) if callable(method.rate_cost) else method.rate_cost
    limits.consume([limit for limit in method.rate_limits if not limit.key.before_auth],
                   did=auth.did, identifier=identifier if isinstance(identifier, str) else None, cost=cost)

    schema = ctx.registry.schema(method.nsid)
    args = _check_inputs(schema, method, request, body) if schema is not None else {}
    if auth.permissions is not None and not auth.permissions.generic and method.auth not in (Auth.NONE,
                                                                                              Auth.OPTIONAL):
        permissions.check_call(auth.permissions, permissions.Call(
            nsid=method.nsid, body=body, content_type=request.headers.get("content-type", ""),
            appview=_appview_ref(ctx)))

    req = XrpcRequest(ctx=ctx, method=method, http=request, auth=auth, body=body, args=args)
    result = await method.handler(req)
    return _json_result(result)
