"""Read-only checks: safe against any deployment, they change nothing on the server.

Each function is one line of the report; ``READ_CHECKS`` is their order.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from . import firehose, identity
from .context import Smoke, excerpt, json_body, seen, xrpc_error
from .runner import CheckFailed, Skipped

DESCRIBE = "/xrpc/com.atproto.server.describeServer"
ADMIN_STATUS = "/xrpc/_admin/status"
IDLE_WAIT = 2.0  # an idle stream is fine: wait this long for a first frame, then call it idle


async def health(ctx: Smoke) -> str:
    body = await ctx.expect_json("GET", "/xrpc/_health")
    if not isinstance(body, dict) or not isinstance(body.get("version"), str):
        raise CheckFailed('{"version": "<string>"} from /xrpc/_health', repr(body)[:200])
    return f"version {body['version']}"


async def describe_server(ctx: Smoke) -> str:
    body = await ctx.expect_json("GET", DESCRIBE)
    if not isinstance(body, dict):
        raise CheckFailed("a JSON object from describeServer", repr(body)[:200])
    did = body.get("did")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise CheckFailed("describeServer.did to be a DID", repr(did))
    domains = body.get("availableUserDomains")
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
        raise CheckFailed("describeServer.availableUserDomains to be a non-empty list of domains", repr(domains))
    ctx.state["describe"] = body
    invite = "invite required" if body.get("inviteCodeRequired") else "open sign-up"
    return f"{did}, handles under {', '.join(domains)}, {invite}"


async def service_did_document(ctx: Smoke) -> str:
    host = ctx.options.hostname
    expected = f"did:web:{host}"
    service_did = ctx.state.get("describe", {}).get("did", expected)
    if service_did != expected:
        raise Skipped(f"the service DID is {service_did}, not {expected}: no /.well-known/did.json expected")
    response = await ctx.request("GET", "/.well-known/did.json", headers={"Host": host})
    if response.status_code != 200:
        raise CheckFailed(f"HTTP 200 with the did:web document for Host {host}", seen(response))
    doc = json_body(response, "/.well-known/did.json")
    if not isinstance(doc, dict) or doc.get("id") != expected:
        raise CheckFailed(f"a document with id {expected}", repr(doc.get("id") if isinstance(doc, dict) else doc))
    endpoint = identity.pds_endpoint(doc, expected)
    if endpoint.rstrip("/") != ctx.options.public_url:
        raise CheckFailed(f"#atproto_pds serviceEndpoint {ctx.options.public_url}", endpoint)
    return f"{expected} → {endpoint}"


async def admin_status(ctx: Smoke) -> str:
    password = ctx.options.admin_password
    if not password:
        raise Skipped("no --admin-password given")
    body = await ctx.expect_json("GET", ADMIN_STATUS, auth=("admin", password))
    if not isinstance(body, dict) or "version" not in body:
        raise CheckFailed("an admin status object with a version", repr(body)[:200])
    accounts = body.get("accounts")
    return f"version {body['version']}" + (f", accounts {accounts}" if accounts is not None else "")


async def _refused(ctx: Smoke, what: str, **kw: Any) -> int:
    response = await ctx.request("GET", ADMIN_STATUS, what=f"waiting for GET {ADMIN_STATUS} {what}", **kw)
    if response.status_code not in (401, 403):
        raise CheckFailed(f"HTTP 401 or 403 from {ADMIN_STATUS} {what}", seen(response))
    if xrpc_error(response) is None:
        raise CheckFailed(f"an XRPC error body ({{error, message}}) with the refusal {what}", excerpt(response))
    return response.status_code


async def admin_refuses_anonymous(ctx: Smoke) -> str:
    none = await _refused(ctx, "without credentials")
    wrong = await _refused(ctx, "with a wrong password", auth=("admin", "smoke-" + secrets.token_urlsafe(12)))
    return f"{none} without credentials, {wrong} with a wrong password"


async def tls_check(ctx: Smoke) -> str:
    host = ctx.options.hostname
    response = await ctx.request("GET", "/tls-check", params={"domain": host})
    if response.status_code != 200:
        raise CheckFailed(f"HTTP 200 from /tls-check?domain={host} (the proxy may get a certificate)", seen(response))
    stranger = f"smoke-{secrets.token_hex(6)}.invalid"
    response = await ctx.request("GET", "/tls-check", params={"domain": stranger})
    if 200 <= response.status_code < 300:
        raise CheckFailed(f"a refusal for an unknown name ({stranger}): anyone could make the proxy "
                          "request certificates", seen(response))
    return f"{host} allowed, unknown names refused ({response.status_code})"


def _allows(header: str | None, wanted: str) -> bool:
    items = {item.strip().lower() for item in (header or "").split(",")}
    return "*" in items or wanted.lower() in items


async def cors(ctx: Smoke) -> str:
    origin = "https://smoke-client.example"
    response = await ctx.expect("GET", DESCRIBE, headers={"Origin": origin})
    allowed = response.headers.get("access-control-allow-origin")
    if allowed not in ("*", origin):
        raise CheckFailed(f"access-control-allow-origin * (or {origin}) on an XRPC answer", repr(allowed))
    path = "/xrpc/com.atproto.repo.createRecord"
    response = await ctx.request("OPTIONS", path, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })
    if not 200 <= response.status_code < 300:
        raise CheckFailed(f"a 2xx answer to the CORS preflight for POST {path}", seen(response))
    h = response.headers
    if h.get("access-control-allow-origin") not in ("*", origin):
        raise CheckFailed("access-control-allow-origin on the preflight", repr(h.get("access-control-allow-origin")))
    if not _allows(h.get("access-control-allow-methods"), "POST"):
        raise CheckFailed("POST in access-control-allow-methods", repr(h.get("access-control-allow-methods")))
    for name in ("authorization", "content-type"):
        if not _allows(h.get("access-control-allow-headers"), name):
            raise CheckFailed(f"{name} in access-control-allow-headers", repr(h.get("access-control-allow-headers")))
    return f"allow-origin {allowed}; preflight allows POST with authorization"


async def firehose_upgrade(ctx: Smoke) -> str:
    url = firehose.stream_url(ctx.options.ws_url, 0)
    ctx.doing(f"waiting for the WebSocket upgrade (HTTP 101) from {url}")
    ws = await firehose.open_stream(url, ctx.ssl)
    try:
        ctx.doing(f"reading the first frame from {url}")
        try:
            async with asyncio.timeout(min(IDLE_WAIT, ctx.options.timeout / 4)):
                message = await ws.recv()
        except TimeoutError:
            return "upgraded; idle stream"
        try:
            header, body = firehose.decode(message)
        except firehose.FrameError as exc:
            raise CheckFailed("a DAG-CBOR header+body frame", str(exc)) from None
        if header.get("op") == -1:
            raise CheckFailed("event frames for cursor 0", f"error frame {body.get('error')}: {body.get('message')}")
        if header.get("op") != 1 or not isinstance(header.get("t"), str):
            raise CheckFailed("a frame header {op: 1, t: '#…'}", repr(header))
        return f"upgraded; first frame {header['t']} seq {body.get('seq')}"
    finally:
        ctx.doing(f"closing the WebSocket to {url}")
        await ws.close()


# -- a given handle ----------------------------------------------------------------------------


def _handle(ctx: Smoke) -> str:
    if not ctx.options.handle:
        raise Skipped("no --handle given")
    return ctx.options.handle.lower()


async def handle_identity(ctx: Smoke) -> str:
    did, key, where = await identity.check_handle(ctx, _handle(ctx))
    return f"{did}; document from {where}; key {key.algorithm}"


async def handle_well_known(ctx: Smoke) -> str:
    handle = _handle(ctx)
    return await well_known_for(ctx, handle)


async def well_known_for(ctx: Smoke, handle: str) -> str:
    response = await ctx.request("GET", "/.well-known/atproto-did", headers={"Host": handle})
    if response.status_code != 200:
        raise CheckFailed(f"HTTP 200 with the DID from /.well-known/atproto-did for Host {handle}", seen(response))
    did = response.text.strip()
    if not did.startswith("did:"):
        raise CheckFailed("a DID as the body", excerpt(response))
    return did


async def handle_tls_check(ctx: Smoke) -> str:
    handle = _handle(ctx)
    response = await ctx.request("GET", "/tls-check", params={"domain": handle})
    if response.status_code != 200:
        raise CheckFailed(f"HTTP 200 from /tls-check?domain={handle} (HTTPS for the handle's host)", seen(response))
    return f"{handle} allowed"


# -- blobs -------------------------------------------------------------------------------------


async def blob_headers(ctx: Smoke, did: str, cid: str, mime_type: str | None = None,
                       data: bytes | None = None) -> str:
    path = "/xrpc/com.atproto.sync.getBlob"
    response = await ctx.expect("GET", path, params={"did": did, "cid": cid})
    h = response.headers
    problems = []
    if (h.get("x-content-type-options") or "").strip().lower() != "nosniff":
        problems.append(f"x-content-type-options {h.get('x-content-type-options')!r} (expected 'nosniff')")
    directives = {" ".join(d.split()).lower() for d in (h.get("content-security-policy") or "").split(";")}
    for wanted in ("default-src 'none'", "sandbox"):
        if wanted not in directives:
            problems.append(f"content-security-policy {h.get('content-security-policy')!r} "
                            f"(expected it to hold {wanted!r})")
    kind = (h.get("content-type") or "").split(";")[0].strip().lower()
    if mime_type is not None and kind != mime_type:
        problems.append(f"content-type {h.get('content-type')!r} (expected {mime_type})")
    elif not kind:
        problems.append("no content-type")
    if data is not None and response.content != data:
        problems.append(f"{len(response.content)} bytes that differ from the {len(data)} uploaded")
    if problems:
        raise CheckFailed("getBlob's security headers and content", "; ".join(problems))
    return f"{kind}, nosniff, CSP {h.get('content-security-policy')}"


async def given_blob(ctx: Smoke) -> str:
    if not ctx.options.blob:
        raise Skipped("no --blob given")
    did, cid = ctx.options.blob.split("/")
    return await blob_headers(ctx, did, cid)


# -- a relay -----------------------------------------------------------------------------------


def crawler_url(value: str) -> str:
    """A bare hostname means https; a URL (http://127.0.0.1:port for tests) is taken as is."""
    return value.rstrip("/") if "://" in value else f"https://{value.strip('/')}"


async def request_crawl(ctx: Smoke) -> str:
    if not ctx.options.crawler_hostname:
        raise Skipped("no --crawler-hostname given")
    relay = crawler_url(ctx.options.crawler_hostname)
    url = f"{relay}/xrpc/com.atproto.sync.requestCrawl"
    host = ctx.options.hostname
    # A relay validates the input before acting on it: a request without a hostname must be
    # refused with an XRPC error, which also shows the URL really is a relay's XRPC endpoint.
    ctx.doing(f"waiting for {url} to refuse a request without a hostname")
    response = await ctx.http.post(url, json={})
    if not 400 <= response.status_code < 500 or xrpc_error(response) is None:
        raise CheckFailed(f"HTTP 4xx with an XRPC error from {url} for a request without hostname "
                          "(the way a relay refuses bad input)", seen(response))
    ctx.doing(f"waiting for {url} to answer requestCrawl {{hostname: {host}}}")
    response = await ctx.http.post(url, json={"hostname": host})
    if 200 <= response.status_code < 300:
        return f"{relay} accepted requestCrawl for {host}"
    refusal = xrpc_error(response)
    if refusal is not None:
        raise CheckFailed(f"the relay at {relay} to accept requestCrawl for {host}",
                          f"HTTP {response.status_code} {refusal[0]}: {refusal[1]}")
    raise CheckFailed(f"an XRPC answer from the relay at {relay}", seen(response))


READ_CHECKS = [
    ("health", health),
    ("describe-server", describe_server),
    ("service-did-document", service_did_document),
    ("admin.status", admin_status),
    ("admin.refuses-anonymous", admin_refuses_anonymous),
    ("tls-check", tls_check),
    ("cors", cors),
    ("firehose.upgrade", firehose_upgrade),
    ("handle.identity", handle_identity),
    ("handle.well-known", handle_well_known),
    ("handle.tls-check", handle_tls_check),
]
