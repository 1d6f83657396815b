"""com.atproto.identity.* and the identity routes outside /xrpc.

XRPC: resolveHandle (public), updateHandle and getRecommendedDidCredentials (access token).
Routes chosen by the ``Host`` header, because one PDS answers for its own hostname and for every
hosted handle (Caddy passes the name the client asked for):

* ``/.well-known/atproto-did`` — the DID of the hosted handle named by Host (handle resolution by
  HTTPS, https://atproto.com/specs/handle), 404 otherwise;
* ``/.well-known/did.json`` — the service's did:web document when Host is the PDS hostname, a
  local did:web account's document when Host is that account's handle, 404 otherwise;
* ``/tls-check?domain=`` — Caddy's on-demand TLS "ask": 200 only for the hostname and existing
  hosted handles, so nobody can make the proxy request certificates for arbitrary names.

updateHandle on a did:web account is refused unless the handle is unchanged: the DID *is*
``did:web:<handle>``, so a new name would need a new DID (see ``squall.identity.web``).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..accounts.events import wake_firehose
from ..atproto import syntax
from ..atproto.crypto import load_keypair
from ..identity import web
from ..identity.handles import HandleError, check_handle
from ..identity.service import (
    HandleChangeRefused,
    IdentityRejected,
    IdentityService,
    IdentityUnavailable,
)
from ..ratelimit import DAY, MINUTE, KeyBy, RateLimit
from ..store import accounts as accounts_store
from .errors import InvalidRequest, UpstreamFailure
from .registry import Auth, Method
from .request import XrpcRequest


class HandleNotFound(InvalidRequest):
    default_name = "HandleNotFound"
    default_text = "Unable to resolve handle"


def _service(req_or_ctx: Any) -> IdentityService:
    ctx = getattr(req_or_ctx, "ctx", req_or_ctx)
    return ctx.identity


# -- XRPC ----------------------------------------------------------------------------------------


async def resolve_handle(req: XrpcRequest) -> dict[str, Any]:
    did = await _service(req).resolve_handle(req.args["handle"])
    if did is None:
        raise HandleNotFound()
    return {"did": did}


async def update_handle(req: XrpcRequest) -> None:
    ctx = req.ctx
    try:
        checked = check_handle(req.body["handle"], list(ctx.settings.service_handle_domains))
    except HandleError as exc:
        raise InvalidRequest(str(exc), exc.name) from None
    account = await accounts_store.get_handle(ctx.db, req.did)
    if account is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    await change_handle(ctx, req.did, account["handle"], checked)


async def change_handle(ctx: Any, did: str, current_handle: str | None, checked: Any) -> None:
    """Move ``did`` to the checked handle: availability, proof for an external domain, the PLC op
    when the handle changes, then the account row and the ``#identity`` event. Shared by the user's
    updateHandle and the admin's updateAccountHandle (which may pass reserved names)."""
    service = ctx.identity
    handle = checked.handle
    holder = await service.local_did_for_handle(handle)
    if holder is not None and holder != did:
        raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable")
    if checked.service_domain is None and holder != did:
        claimed = await service.handles.resolve(handle)
        if claimed != did:
            raise InvalidRequest("External handle did not resolve to DID")
    if current_handle != handle:
        try:
            await service.update_handle(did, handle)
        except HandleChangeRefused as exc:
            raise InvalidRequest(str(exc)) from None
        except IdentityRejected as exc:
            raise UpstreamFailure(f"PLC directory refused the handle update: {exc}") from None
        except IdentityUnavailable as exc:
            raise UpstreamFailure(f"PLC directory is unavailable: {exc}") from None
    try:
        await service.set_handle(did, handle)
    except sqlite3.IntegrityError:
        raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable") from None
    except LookupError:
        raise InvalidRequest("Account not found", "AccountNotFound") from None
    await wake_firehose(ctx)


async def get_recommended_did_credentials(req: XrpcRequest) -> dict[str, Any]:
    row = await accounts_store.get_signing_key(req.ctx.db, req.did)
    if row is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    key = load_keypair(row["signing_key_alg"], row["signing_key"]).public_key
    return _service(req).recommended_did_credentials(row["handle"], key)


METHODS = (
    Method("com.atproto.identity.resolveHandle", "query", resolve_handle, Auth.NONE,
           errors=("HandleNotFound",)),
    Method("com.atproto.identity.updateHandle", "procedure", update_handle, Auth.ACCESS,
           errors=("InvalidHandle", "HandleNotAvailable", "UnsupportedDomain"), max_body=4096,
           rate_limits=(RateLimit("update-handle-5m", 10, 5 * MINUTE, KeyBy.DID),
                        RateLimit("update-handle-day", 50, DAY, KeyBy.DID))),
    Method("com.atproto.identity.getRecommendedDidCredentials", "query", get_recommended_did_credentials,
           Auth.ACCESS),
)


# -- routes outside /xrpc --------------------------------------------------------------------------


def request_host(request: Request) -> str:
    """The Host header's name, lower-case, without port ('' when absent or malformed)."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def routes(app: Any, get_ctx: Callable[[], Any]) -> None:
    @app.get("/.well-known/atproto-did")
    async def atproto_did(request: Request) -> Response:
        host = request_host(request)
        did = await _service(get_ctx()).local_did_for_handle(host) if syntax.is_valid_handle(host) else None
        if did is None:
            return PlainTextResponse("User not found", status_code=404)
        return PlainTextResponse(did)

    @app.get("/.well-known/did.json")
    async def did_json(request: Request) -> Response:
        ctx = get_ctx()
        settings = ctx.settings
        host = request_host(request)
        if host == settings.hostname:
            if settings.service_did.startswith("did:web:") and web.host_of(settings.service_did).split(":")[0] == host:
                return JSONResponse(web.service_document(settings.service_did, settings.public_url))
            return PlainTextResponse("Not found", status_code=404)
        if syntax.is_valid_handle(host):
            did = f"did:web:{host}"
            doc = await _service(ctx).resolve_did(did) if await _is_local(ctx, did) else None
            if doc is not None:
                return JSONResponse(doc)
        return PlainTextResponse("Not found", status_code=404)

    @app.get("/tls-check")
    async def tls_check(request: Request) -> Response:
        ctx = get_ctx()
        domain = request.query_params.get("domain", "").strip().lower().rstrip(".")
        if not domain:
            return PlainTextResponse("missing domain", status_code=400)
        if domain == ctx.settings.hostname:
            return PlainTextResponse("ok")
        if syntax.is_valid_handle(domain) and await _service(ctx).local_did_for_handle(domain) is not None:
            return PlainTextResponse("ok")
        return PlainTextResponse("unknown domain", status_code=404)


async def _is_local(ctx: Any, did: str) -> bool:
    return await accounts_store.account_exists(ctx.db, did)
