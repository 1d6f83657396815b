"""Service proxying on the XRPC surface: the catch-all for methods this PDS does not serve, and
``com.atproto.server.getServiceAuth`` (https://atproto.com/specs/xrpc, "Service Proxying",
"Inter-Service Authentication"; behaviour and error names as the reference PDS).

The feature module for ``squall.app``: ``start`` attaches ``ProxyService`` as
``ctx.proxy`` (after the identity service, which resolves ``atproto-proxy`` DIDs),
``fallback`` is the dispatcher's catch-all.

A proxied call, in order: only GET, HEAD and POST; protected (account-management) methods are
refused outright; a method with neither an ``atproto-proxy`` header nor a configured default
service stays MethodNotImplemented; the caller must hold an access token, and a privileged
method (chat) needs a full session or a privileged app password; then the target is resolved
and the call forwarded with a 60-second service token bound to the method. Exceptions, as the
reference: a taken-down session may call ``createReport``; ``getFeed`` signs for the feed
generator; ``registerPush`` / ``unregisterPush`` go to the body's ``serviceDid``; the
read-after-write methods may have their answer rewritten (``squall.proxy.read_after_write``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..atproto import syntax
from ..errors import UpstreamError
from ..proxy import ProxyLimits, ProxyService, bsky, is_privileged, is_protected
from ..proxy import read_after_write as raw
from ..proxy.forwarder import Rewrite
from ..proxy.methods import allows_takendown
from ..auth.permissions import require
from ..proxy.target import Target, default_role
from .dispatch import read_body_capped
from .errors import InvalidRequest, MethodNotImplemented
from .registry import Auth, Method
from .request import XrpcRequest

if TYPE_CHECKING:
    from ..auth.verifier import AuthResult
    from ..context import AppContext

MAX_SERVICE_AUTH_TTL = 3600  # a token requested through getServiceAuth lives at most an hour
MAX_METHODLESS_TTL = 60  # … and at most a minute when it is not bound to a method


async def start(ctx: "AppContext") -> None:
    ctx.proxy = ProxyService(ctx.settings, ctx.db, ctx.identity, log=ctx.log, lexicons=ctx.repo.lexicons,
                             limits=ProxyLimits.from_settings(ctx.settings), observe=ctx.metrics.outbound("proxy"))


async def stop(ctx: "AppContext") -> None:
    await ctx.proxy.close()


def _proxy_header(request: Request) -> str | None:
    values = request.headers.getlist("atproto-proxy")
    if len(values) > 1:
        raise InvalidRequest("invalid proxy header format: more than one atproto-proxy header")
    return values[0] if values else None


async def forward(ctx: "AppContext", request: Request, nsid: str, auth: "AuthResult", target: Target, *,
                  body: AsyncIterable[bytes] | bytes | None = None,
                  body_headers: Mapping[str, str] | None = None, aud: str | None = None, lxm: str | None = None,
                  rewrite: Rewrite | None = None) -> Response:
    """Forward ``request`` to ``target`` on behalf of the authenticated caller (the token's
    audience and method are the target's DID and ``nsid`` unless ``aud`` / ``lxm`` say otherwise)."""
    proxy: ProxyService = ctx.proxy
    assert auth.did is not None
    if auth.permissions is not None:  # an OAuth token: rpc:<nsid>?aud=<service>, before a token is minted
        require(auth.permissions.rpc(nsid, target.ref))
    # The reference's current outbound tokens carry the bare DID as audience; the service id
    # only chose the endpoint.
    token = await proxy.service_token(auth.did, aud or target.did, lxm or nsid)
    return await proxy.forwarder.forward(
        method=request.method, origin=target.origin, nsid=nsid, query=request.url.query,
        incoming=request.headers, authorization=f"Bearer {token}", body=body, body_headers=body_headers,
        rewrite=rewrite,
    )


async def forward_if_other_appview(req: XrpcRequest, nsid: str, *, body: bytes | None = None) -> Response | None:
    """For methods this PDS serves for the configured AppView (preferences): when the client's
    ``atproto-proxy`` header names another service, that service answers instead."""
    header = _proxy_header(req.http)
    if header is None:
        return None
    proxy: ProxyService = req.ctx.proxy
    appview = proxy.targets.configured("appview")
    if appview is not None and header == appview.ref:
        return None
    target = await proxy.targets.from_header(header)
    body_headers = {"content-type": "application/json"} if body is not None else None
    return await forward(req.ctx, req.http, nsid, req.auth, target, body=body, body_headers=body_headers)


# The variable that configures each service role, named when a call for it finds none.
UNSET_SERVICE_VARIABLE = {"appview": "PDS_BSKY_APP_VIEW_URL", "chat": "PDS_BSKY_CHAT_URL",
                          "report": "PDS_REPORT_SERVICE_URL", "mod": "PDS_MOD_SERVICE_URL"}


async def fallback(ctx: "AppContext", request: Request, nsid: str) -> Response | None:
    if request.method not in ("GET", "HEAD", "POST"):
        raise InvalidRequest("XRPC requests only supports GET and POST")
    if is_protected(nsid):
        raise InvalidRequest("Bad token method", "InvalidToken")
    proxy: ProxyService = ctx.proxy
    if nsid in bsky.PUSH_METHODS:
        return await _push(ctx, request, nsid)
    header = _proxy_header(request)
    target = proxy.targets.default(nsid) if header is None else None
    if header is None and target is None:
        variable = UNSET_SERVICE_VARIABLE.get(default_role(nsid) or "")
        if variable is not None:  # a service's namespace, but the service is not configured
            raise MethodNotImplemented(f"{nsid} is answered by a service this PDS is not configured with: "
                                       f"set {variable} and {variable[:-4]}_DID")
        return None  # nobody to ask: MethodNotImplemented
    # Authenticate before resolving anything a header names: an anonymous caller must not be able
    # to make this server fetch DID documents. A taken-down account may still report (appeals).
    policy = Auth.ACCESS_OR_TAKENDOWN if allows_takendown(nsid) else Auth.ACCESS
    auth = await ctx.verifier.verify(policy, request.headers.get("authorization"))
    if is_privileged(nsid) and not auth.is_privileged:
        raise InvalidRequest("Bad token method", "InvalidToken")
    if header is not None:
        target = await proxy.targets.from_header(header)
    assert target is not None and auth.did is not None
    if nsid == bsky.GET_FEED and request.method in ("GET", "HEAD") and "feed" in request.query_params:
        # A custom feed: the token is for its generator, which the AppView calls with it.
        generator = await bsky.feed_generator_did(proxy, auth.did, target, request.query_params["feed"])
        return await forward(ctx, request, nsid, auth, target, aud=generator, lxm=bsky.GET_FEED_SKELETON)
    if nsid in raw.MUNGED and request.method == "GET":
        params = request.query_params
        rewrite = await proxy.read_after_write.rewrite_for(auth.did, nsid, params)
        try:
            return await forward(ctx, request, nsid, auth, target, rewrite=rewrite)
        except UpstreamError as err:
            if nsid != raw.POST_THREAD or err.name != "NotFound":
                raise
            built = await proxy.read_after_write.thread_not_found(auth.did, params, err)
            if built is None:
                raise
            return JSONResponse(built[0], headers={**(err.headers or {}), **built[1]})
    body = request.stream() if request.method == "POST" else None
    return await forward(ctx, request, nsid, auth, target, body=body)


async def _push(ctx: "AppContext", request: Request, nsid: str) -> Response:
    """registerPush / unregisterPush: to the notification service the body names (``aud`` = its
    DID), the AppView when that is the AppView (as the reference, whatever ``atproto-proxy`` says)."""
    if request.method != "POST":
        raise InvalidRequest(f"Incorrect HTTP method ({request.method}) expected POST")
    auth = await ctx.verifier.verify(Auth.ACCESS, request.headers.get("authorization"))
    assert auth.did is not None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise InvalidRequest("Wrong request encoding (Content-Type): expected application/json")
    raw_body = await read_body_capped(request, bsky.MAX_PUSH_BODY)
    body, service_did = bsky.push_body(raw_body)
    proxy: ProxyService = ctx.proxy
    target = await bsky.push_target(proxy, service_did)
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return await forward(ctx, request, nsid, auth, target, body=encoded, aud=service_did,
                         body_headers={"content-type": "application/json"})


# -- com.atproto.server.getServiceAuth --------------------------------------------------------------


def _is_atproto_did(value: str) -> bool:
    if not syntax.is_valid_did(value):
        return False
    if value.startswith("did:plc:"):
        rest = value[len("did:plc:"):]
        return len(rest) == 24 and all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in rest)
    return value.startswith("did:web:")


def _is_service_audience(value: str) -> bool:
    did, sep, fragment = value.partition("#")
    if sep and (not fragment or "#" in fragment or any(c.isspace() for c in fragment)):
        return False
    return _is_atproto_did(did)


async def get_service_auth(req: XrpcRequest) -> dict[str, Any]:
    aud = req.args["aud"]  # the Lexicon's did format is loosened for did#service_id (LOOSENED_FORMATS)
    if not _is_service_audience(aud):
        raise InvalidRequest("aud must be a valid atproto DID or did#serviceId reference")
    lxm = req.args.get("lxm")
    exp = req.args.get("exp")
    if lxm is not None and is_privileged(lxm) and not req.auth.is_privileged:
        raise InvalidRequest(f"insufficient access to request a service auth token for the following method: {lxm}")
    if exp is not None:
        remaining = exp - time.time()
        if remaining < 0:
            raise InvalidRequest("expiration is in past", "BadExpiration")
        if remaining > MAX_SERVICE_AUTH_TTL:
            raise InvalidRequest("cannot request a token with an expiration more than an hour in the future",
                                 "BadExpiration")
        if lxm is None and remaining > MAX_METHODLESS_TTL:
            raise InvalidRequest("cannot request a method-less token with an expiration more than a minute "
                                 "in the future", "BadExpiration")
    if lxm is not None and is_protected(lxm):
        raise InvalidRequest(f"cannot request a service auth token for the following protected method: {lxm}")
    if req.auth.permissions is not None:  # an OAuth token: only what rpc: permissions allow is minted
        require(req.auth.permissions.rpc(lxm or "*", aud))
    proxy: ProxyService = req.ctx.proxy
    return {"token": await proxy.service_token(req.did, aud, lxm, exp=exp)}


METHODS = (
    Method("com.atproto.server.getServiceAuth", "query", get_service_auth, Auth.ACCESS,
           errors=("BadExpiration",)),
)
