"""HTTP endpoints of the authorization server (https://atproto.com/specs/oauth): the two metadata
documents (RFC 9728, RFC 8414), PAR, the authorization page, token and revocation.

The authorization page is server-rendered HTML: no scripts, no external assets, a strict CSP (an
inline stylesheet allowed by a per-response nonce), no framing, and a CSRF token (double submit:
a cookie and a form field that must match) on its POST.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .. import jsonin
from ..auth.scopes import RESOURCES, describe
from ..ratelimit import OAUTH_PAR, OAUTH_TOKEN, RateLimit, consume_ip, consume_sign_in
from .clients import SUPPORTED_SCOPES
from .dpop import DpopError
from .errors import OAuthError
from .provider import OAuthProvider, PendingRequest

MAX_FORM_BYTES = 64 * 1024
CSRF_COOKIE = "squall_oauth_csrf"
AUTHORIZE_PATH = "/oauth/authorize"



def consent_item(scope: str, sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One requested scope for the consent page: its words, and for a permission set its title,
    detail and the permissions it expands to."""
    if scope.startswith("include:"):
        nsid = scope[len("include:"):].split("?", 1)[0]
        entry = sets.get(nsid)
        if entry is not None:
            return {"text": entry.get("title") or f"The permission set {nsid}", "detail": entry.get("detail"),
                    "parts": [describe(s) for s in entry["scopes"]], "scope": scope}
    return {"text": describe(scope), "detail": None, "parts": [], "scope": scope}


def _templates() -> Any:
    # Autoescaping on for every template: client names and hints come from strangers. Jinja2 is
    # loaded with the first page shown, not at start: most PDSs serve no OAuth page most of the time.
    from jinja2 import Environment, PackageLoader

    return Environment(loader=PackageLoader("squall.oauth", "templates"), autoescape=True)


def server_metadata(provider: OAuthProvider) -> dict[str, Any]:
    return {
        "issuer": provider.issuer,
        "authorization_endpoint": provider.endpoint(AUTHORIZE_PATH),
        "token_endpoint": provider.endpoint("/oauth/token"),
        "pushed_authorization_request_endpoint": provider.endpoint("/oauth/par"),
        "revocation_endpoint": provider.endpoint("/oauth/revoke"),
        "jwks_uri": provider.endpoint("/oauth/jwks"),
        "scopes_supported": [*SUPPORTED_SCOPES, *RESOURCES],
        "subject_types_supported": ["public"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "ui_locales_supported": ["en-US"],
        "display_values_supported": ["page"],
        "prompt_values_supported": ["login", "consent"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "revocation_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "require_pushed_authorization_requests": True,
        "require_request_uri_registration": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "protected_resources": [provider.issuer],
    }


async def read_form(request: Request) -> dict[str, str]:
    """The body as a flat dict (urlencoded or JSON); a repeated parameter is an error (RFC 6749 §3.1)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise OAuthError("invalid_request", f"Request body must be at most {MAX_FORM_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", f"Request body must be at most {MAX_FORM_BYTES} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = jsonin.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise OAuthError("invalid_request", "Request body is not valid JSON") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise OAuthError("invalid_request", "Request body must be an object of string values")
        return data
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_request", "Request body is not valid form data") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"Parameter {name!r} appears more than once")
        form[name] = value
    return form


def routes(app, get_ctx: Callable[[], Any]) -> None:
    templates: list[Any] = []  # the Environment, made on first use

    def provider() -> OAuthProvider:
        return get_ctx().oauth

    def oauth_json(body: Any, status: int = 200, extra: dict[str, str] | None = None) -> JSONResponse:
        headers = {"Cache-Control": "no-store", "DPoP-Nonce": provider().dpop.next_nonce(), **(extra or {})}
        return JSONResponse(body, status_code=status, headers=headers)

    def oauth_error(err: OAuthError) -> JSONResponse:
        return oauth_json(err.body(), err.status, err.headers)

    def dpop_proof(request: Request, path: str):
        try:
            return provider().dpop.check(request.headers.get("dpop"), htm=request.method,
                                         htu=provider().endpoint(path))
        except DpopError as exc:
            raise OAuthError(exc.error, exc.description) from None

    @app.get("/.well-known/oauth-protected-resource")
    async def protected_resource() -> Response:
        p = provider()
        return JSONResponse({"resource": p.issuer, "authorization_servers": [p.issuer],
                             "scopes_supported": [], "bearer_methods_supported": ["header"],
                             "resource_documentation": "https://atproto.com"})

    @app.get("/.well-known/oauth-authorization-server")
    async def authorization_server() -> Response:
        return JSONResponse(server_metadata(provider()))

    @app.get("/oauth/jwks")
    async def jwks() -> Response:
        # The authorization server's public signing keys. Squall's access tokens are HS256 under a
        # key only this server holds (it is issuer and resource server at once), so there is no
        # public key to publish: an empty set, served as JSON like the reference's.
        return JSONResponse({"keys": []}, headers={"Cache-Control": "public, max-age=300"})

    def rate_limited(request: Request, limit: RateLimit) -> None:
        status = consume_ip(get_ctx(), request, limit)
        if status is not None and status.exceeded:
            now = get_ctx().ratelimit.now()
            raise OAuthError("invalid_request", "Too many requests from this address; retry later", status=429,
                             headers=status.headers(now))

    @app.post("/oauth/par")
    async def par(request: Request) -> Response:
        try:
            rate_limited(request, OAUTH_PAR)
            form = await read_form(request)
            proof = dpop_proof(request, "/oauth/par")
            return oauth_json(await provider().push(form, proof), 201)
        except OAuthError as err:
            return oauth_error(err)

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        try:
            rate_limited(request, OAUTH_TOKEN)
            form = await read_form(request)
            proof = dpop_proof(request, "/oauth/token")
            return oauth_json(await provider().token(form, proof))
        except OAuthError as err:
            return oauth_error(err)

    @app.post("/oauth/revoke")
    async def revoke(request: Request) -> Response:
        try:
            form = await read_form(request)
            p = provider()
            if form.get("client_id"):
                client = await p.clients.get(form["client_id"])
                await p.clients.authenticate(client, form, issuer=p.issuer, replay=p.replay)
            await p.revoke(form)
            return oauth_json({})
        except OAuthError as err:
            return oauth_error(err)

    # -- the user's page -------------------------------------------------------------------------

    def page(name: str, status: int, *, form_action: str | None = None, csrf: str | None = None,
             **values: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        if not templates:
            templates.append(_templates())
        brand = branding(get_ctx().settings)
        values.setdefault("server", urlsplit(provider().issuer).netloc)
        html = templates[0].get_template(name).render(style_nonce=nonce, brand=brand, **values)
        actions = "'self'" + (f" {form_action}" if form_action else "")
        images = "'self'" + (f" {_origin(brand['logo_url'])}" if brand["logo_url"] else "")
        csp = (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src {images}; form-action {actions}; "
               "frame-ancestors 'none'; base-uri 'none'")
        response = HTMLResponse(html, status_code=status, headers={
            "Content-Security-Policy": csp, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
        if csrf is not None:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="lax", path=AUTHORIZE_PATH,
                                secure=provider().issuer.startswith("https://"))
        return response

    def error_page(message: str, status: int = 400) -> HTMLResponse:
        return page("error.html", status, message=message)

    def consent_page(pending: PendingRequest, csrf: str, *, status: int = 200, error: str | None = None,
                     identifier: str = "", ask_code: bool = False) -> HTMLResponse:
        requested = pending.params.get("requested_scope", pending.params["scope"]).split(" ")
        sets = {entry["nsid"]: entry for entry in pending.params.get("permission_sets", [])}
        scopes = [consent_item(s, sets) for s in requested]
        return page("authorize.html", status, form_action=_origin(pending.params["redirect_uri"]), csrf=csrf,
                    client_name=pending.client.name, client_id=pending.client.client_id,
                    client_uri=pending.client.uri, is_loopback=pending.client.is_loopback,
                    scopes=scopes,
                    identifier=identifier or pending.params.get("login_hint", ""),
                    request_uri=f"urn:ietf:params:oauth:request_uri:req-{pending.id}", csrf_token=csrf,
                    error=error, action=AUTHORIZE_PATH, server=urlsplit(provider().issuer).netloc,
                    ask_code=ask_code)

    @app.get(AUTHORIZE_PATH)
    async def authorize(request: Request) -> Response:
        try:
            pending = await provider().pending(request.query_params.get("client_id"),
                                               request.query_params.get("request_uri"))
        except OAuthError as err:
            return error_page(err.description)
        if pending.approved:
            return error_page("This authorization request was already answered; go back to the app and start again.")
        return consent_page(pending, secrets.token_urlsafe(24))

    @app.post(AUTHORIZE_PATH)
    async def authorize_post(request: Request) -> Response:
        p = provider()
        try:
            form = await read_form(request)
        except OAuthError as err:
            return error_page(err.description)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        field = form.get("csrf_token", "")
        if not cookie or not field or not hmac.compare_digest(cookie, field):
            return error_page("The form could not be verified (missing or wrong CSRF token). "
                              "Reload the page and try again.", 403)
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin != _origin(p.issuer):
            return error_page("The form was submitted from another site.", 403)
        try:
            pending = await p.pending(form.get("client_id"), form.get("request_uri"))
        except OAuthError as err:
            return error_page(err.description)
        if pending.approved:
            return error_page("This authorization request was already answered; go back to the app and start again.")
        params = pending.params
        if form.get("decision") == "deny":
            await p.deny(pending)
            return _redirect(params, {"error": "access_denied", "error_description": "The user denied access",
                                      "state": params["state"], "iss": p.issuer})
        if form.get("decision") != "allow":
            return error_page("Choose whether to allow or deny access.")
        identifier = form.get("identifier", "").strip()
        limited = consume_sign_in(get_ctx(), request, identifier)
        if limited is not None:
            minutes = max(1, math.ceil((limited.reset_at - time.time()) / 60))
            return consent_page(pending, cookie, status=429, identifier=identifier,
                                error=f"Too many sign-in attempts. Try again in {minutes} minutes.")
        did = await p.sign_in(pending, identifier, form.get("password", ""))
        if did is None:
            # The same words whatever was wrong, so the form does not tell which accounts exist.
            return consent_page(pending, cookie, status=401, error="Wrong handle, e-mail or password.",
                                identifier=identifier)
        refused = await _sign_in_code_refused(get_ctx(), did, form.get("sign_in_code", ""))
        if refused is not None:  # e-mail two-factor (squall.mail): a code was mailed, or a bad one given
            return consent_page(pending, cookie, status=401, identifier=identifier, ask_code=True, error=refused)
        try:
            code = await p.approve(pending, did)
        except OAuthError as err:
            return error_page(err.description)
        return _redirect(params, {"code": code, "state": params["state"], "iss": p.issuer})


def branding(settings: Any) -> dict[str, Any]:
    """The operator's branding for the sign-in pages (PDS_SERVICE_NAME, PDS_LOGO_URL,
    PDS_SUPPORT_URL, PDS_*_COLOR). squall.config has validated every value: colours are hex, the
    logo and support URLs https, so they can go into the style block and the CSP as they are."""
    return {
        "name": settings.service_name,
        "logo_url": settings.logo_url,
        "support_url": settings.support_url,
        "colors": {key: getattr(settings, f"{key}_color") for key in ("primary", "error", "warning", "success")},
        "primary_contrast": settings.primary_color_contrast,
    }


async def _sign_in_code_refused(ctx: Any, did: str, given: str) -> str | None:
    """None when the account wants no e-mailed sign-in code or ``given`` is its live one; else what
    the page says (a code is mailed when none was given)."""
    from ..errors import DomainError

    try:
        await ctx.mail.check_sign_in_did(did, given.strip() or None)
    except DomainError as err:
        if err.name == "AuthFactorTokenRequired":
            return "We sent a sign-in code to your e-mail address. Enter it below, with your password again."
        if err.name == "ExpiredToken":
            return "That sign-in code has expired. Submit without a code to get a new one."
        if err.name == "InvalidToken":
            return "That sign-in code is not right. Check the latest mail, or submit without a code to get a new one."
        return err.message
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


def _redirect(params: dict[str, Any], values: dict[str, str]) -> RedirectResponse:
    uri = params["redirect_uri"]
    encoded = urlencode(values)
    if params.get("response_mode") == "fragment":
        target = f"{uri}#{encoded}"
    else:
        target = f"{uri}{'&' if urlsplit(uri).query else '?'}{encoded}"
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
