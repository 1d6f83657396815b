"""The relay monitor's admin routes (admin credential only): what the dashboard and ``squall relay``
call, so both run the same code (``squall.relays.service.RelayMonitor``).

  GET  /xrpc/_admin/relays                    the status (``?accounts=true`` adds the accounts ×
                                              relays matrix, ``?relay=URL`` narrows it)
  POST /xrpc/_admin/relays/request-crawl      {"relay"?}: requestCrawl now (every relay by default)
  POST /xrpc/_admin/relays/announce           {"did"}: re-announce an account (#identity, #sync, #account)
  POST /xrpc/_admin/relays/advance-sequence   {"relay", "confirm"}: move our next seq past the
                                              relay's and re-announce; without confirm=true, a plan
  POST /xrpc/_admin/relays/check              {"relay"?, "did"?}: run the checks now
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..atproto import syntax
from ..atproto.errors import InvalidSyntax
from .dispatch import error_response, read_body_capped
from .errors import InvalidRequest, XRPCError
from .registry import Auth

PREFIX = "/xrpc/_admin/relays"
MAX_BODY = 4096


def routes(app: Any, get_ctx: Callable[[], Any]) -> None:
    def admin(handler: Callable[[Any, Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            ctx = get_ctx()
            try:
                await ctx.verifier.verify(Auth.ADMIN, request.headers.get("authorization"))
                if ctx.relays is None:
                    raise InvalidRequest("the relay monitor is not running")
                return JSONResponse(await handler(ctx.relays, request))
            except XRPCError as err:
                return error_response(err)

        return route

    async def status(monitor: Any, request: Request) -> dict[str, Any]:
        accounts = request.query_params.get("accounts", "false")
        if accounts not in ("true", "false"):
            raise InvalidRequest("Params/accounts must be true or false")
        relay = request.query_params.get("relay")
        result = await monitor.status(include_accounts=accounts == "true", relay=relay)
        return result.to_json()

    async def request_crawl(monitor: Any, request: Request) -> dict[str, Any]:
        body = await _body(request)
        return {"results": await monitor.request_crawl(_relay(body, required=False))}

    async def announce(monitor: Any, request: Request) -> dict[str, Any]:
        body = await _body(request)
        return await monitor.reannounce_account(_did(body.get("did")))

    async def advance(monitor: Any, request: Request) -> dict[str, Any]:
        body = await _body(request)
        confirm = body.get("confirm", False)
        if not isinstance(confirm, bool):
            raise InvalidRequest("Input/confirm must be a boolean")
        return await monitor.advance_sequence(_relay(body, required=True), confirm=confirm)

    async def check(monitor: Any, request: Request) -> dict[str, Any]:
        body = await _body(request)
        did = _did(body["did"]) if body.get("did") is not None else None
        result = await monitor.check_now(_relay(body, required=False), did)
        return result.to_json()

    app.get(PREFIX)(admin(status))
    app.post(f"{PREFIX}/request-crawl")(admin(request_crawl))
    app.post(f"{PREFIX}/announce")(admin(announce))
    app.post(f"{PREFIX}/advance-sequence")(admin(advance))
    app.post(f"{PREFIX}/check")(admin(check))


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body_capped(request, MAX_BODY)
    try:
        value = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return value


def _relay(body: dict[str, Any], *, required: bool) -> str | None:
    value = body.get("relay")
    if value is None:
        if required:
            raise InvalidRequest("Input/relay is required (a relay URL from PDS_CRAWLERS or PDS_RELAY_MONITOR_URLS)")
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise InvalidRequest("Input/relay must be a relay URL")
    return value


def _did(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("Input/did must be a string" if value is not None else "Input/did is required")
    try:
        syntax.ensure_valid_did(value)
    except InvalidSyntax as exc:
        raise InvalidRequest(f"Input/did must be a valid did: {exc}") from None
    return value
