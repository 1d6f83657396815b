"""The dashboard's routes: pages (GET) and actions (POST, CSRF-checked, then redirect)."""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..atproto import syntax
from ..errors import DomainError, InvalidRequest
from ..store import accounts as accounts_store
from . import _STATIC, COOKIE, CSP, MAX_FORM, PRE_COOKIE, SESSION_SECONDS, Refused

if TYPE_CHECKING:
    from ..context import AppContext

# Referrer-Policy same-origin, not no-referrer: with no-referrer the browser sends "Origin: null" on
# the dashboard's own form posts, which the Origin check must refuse.
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
REPO_REF = "com.atproto.admin.defs#repoRef"


def add_routes(app: Any, get_ctx: Callable[[], "AppContext"]) -> None:
    def web() -> Any:
        return get_ctx().admin_web

    def page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = web().templates.get_template(name).render(**values)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def refused(status: int, message: str) -> HTMLResponse:
        return page("error.html", status, message=message, session=None)

    def to(path: str, note: str | None = None) -> RedirectResponse:
        if note:
            path += ("&" if "?" in path else "?") + "note=" + quote(note)
        return RedirectResponse(path, status_code=303, headers=HEADERS)

    async def signed_in(request: Request) -> Any:
        return await web().session(request)

    def same_origin(request: Request) -> bool:
        """A POST's Origin (or, without one, its Referer) must be this server as the browser sees it."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin is None:
            return True  # old browsers send neither on same-origin POSTs; the CSRF token still holds
        parts = urlsplit(origin)
        allowed = {urlsplit(get_ctx().settings.public_url).netloc, request.headers.get("host", "")}
        return parts.netloc in allowed

    async def form(request: Request) -> dict[str, str]:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM:
                raise Refused(413, "Form too large.")
        try:
            parsed = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "Malformed form.") from None
        return {k: v[0] for k, v in parsed.items()}

    async def checked_post(request: Request) -> tuple[Any, dict[str, str]]:
        """The session and form of a POST, or Refused (no session, cross-site, bad CSRF token)."""
        if not same_origin(request):
            raise Refused(403, "Cross-site request refused.")
        session = await signed_in(request)
        if session is None:
            raise Refused(401, "Not signed in.")
        fields = await form(request)
        if not hmac.compare_digest(fields.get("csrf", "").encode(), session["csrf"].encode()):
            raise Refused(403, "Missing or wrong CSRF token; reload the page and try again.")
        return session, fields

    def guarded(handler: Callable) -> Callable:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as exc:
                return refused(exc.status, exc.message)

        run.__name__ = handler.__name__
        return run

    def view(template: str, load: Callable) -> Callable:
        async def show(request: Request) -> Response:
            session = await signed_in(request)
            if session is None:
                return to("/admin/signin")
            values = await load(request)
            if isinstance(values, Response):
                return values
            return page(template, session=session, note=request.query_params.get("note"), **values)

        return show

    # -- sign-in -------------------------------------------------------------------------------------

    async def signin_form(request: Request) -> Response:
        if await signed_in(request):
            return to("/admin")
        token = secrets.token_urlsafe(24)
        response = page("signin.html", session=None, csrf=token, error=request.query_params.get("error"))
        response.set_cookie(PRE_COOKIE, token, max_age=900, path="/admin", secure=web().secure_cookie,
                            httponly=True, samesite="strict")
        return response

    async def signin(request: Request) -> Response:
        if not same_origin(request):
            raise Refused(403, "Cross-site request refused.")
        fields = await form(request)
        expected = request.cookies.get(PRE_COOKIE, "")
        if not expected or not hmac.compare_digest(fields.get("csrf", "").encode(), expected.encode()):
            raise Refused(403, "Missing or wrong CSRF token; reload the sign-in page and try again.")
        try:
            sid = await web().sign_in(request, fields.get("password", ""))
        except Refused as exc:
            if exc.status == 401:
                return RedirectResponse("/admin/signin?error=" + quote(exc.message), status_code=303,
                                        headers=HEADERS)
            raise
        response = to("/admin")
        response.set_cookie(COOKIE, sid, max_age=SESSION_SECONDS, path="/admin", secure=web().secure_cookie,
                            httponly=True, samesite="strict")
        response.delete_cookie(PRE_COOKIE, path="/admin")
        return response

    async def signout(request: Request) -> Response:
        await checked_post(request)
        await web().sign_out(request)
        response = to("/admin/signin")
        response.delete_cookie(COOKIE, path="/admin", secure=web().secure_cookie, httponly=True, samesite="strict")
        return response

    # -- pages ---------------------------------------------------------------------------------------

    async def load_overview(request: Request) -> dict:
        return {"o": await web().overview()}

    async def load_accounts(request: Request) -> dict:
        q = (request.query_params.get("q") or "").strip()[:256]
        rows = await accounts_store.obs_search(get_ctx().db, q, limit=100)
        return {"q": q, "rows": rows}

    async def load_account(request: Request) -> Any:
        did = request.path_params["did"]
        row = await accounts_store.obs_get(get_ctx().db, did) if syntax.is_valid_did(did) else None
        if row is None:
            return refused(404, "No such account on this server.")
        info = await web().call(_with_params(request, {"did": did}), "com.atproto.admin.getAccountInfo", {})
        return {"a": row, "info": info, "new_password": None}

    async def load_storage(request: Request) -> dict:
        return {"s": await web().storage()}

    async def load_backups(request: Request) -> dict:
        return {"b": await web().backups()}

    async def load_relays(request: Request) -> dict:
        return {"r": await web().relays()}

    async def load_invites(request: Request) -> dict:
        data = await web().call(_with_params(request, {"limit": "100"}), "com.atproto.admin.getInviteCodes", {})
        return {"codes": data["codes"], "created": request.query_params.get("created")}

    # -- actions -------------------------------------------------------------------------------------

    def action(run: Callable) -> Callable:
        async def post(request: Request) -> Response:
            session, fields = await checked_post(request)
            try:
                return await run(request, fields)
            except DomainError as exc:
                path = request.url.path
                back = (path.rsplit("/", 1)[0] if "/accounts/" in path
                        else "/admin/relays" if path.startswith("/admin/relays/") else "/admin")
                return to(back, f"Refused: {exc.message}")

        post.__name__ = run.__name__
        return post

    def account_path(did: str) -> str:
        return "/admin/accounts/" + quote(did, safe=":")

    async def takedown(request: Request, fields: dict) -> Response:
        did = request.path_params["did"]
        apply = fields.get("apply") == "1"
        body: dict[str, Any] = {"subject": {"$type": REPO_REF, "did": did}, "takedown": {"applied": apply}}
        if apply and fields.get("ref"):
            body["takedown"]["ref"] = fields["ref"][:1024]
        await web().call(request, "com.atproto.admin.updateSubjectStatus", body)
        get_ctx().log.info("admin dashboard: takedown", extra={"did": did, "applied": apply})
        return to(account_path(did), "Taken down." if apply else "Takedown reversed.")

    async def deactivate(request: Request, fields: dict) -> Response:
        did = request.path_params["did"]
        apply = fields.get("apply") == "1"
        await web().call(request, "com.atproto.admin.updateSubjectStatus",
                         {"subject": {"$type": REPO_REF, "did": did}, "deactivated": {"applied": apply}})
        return to(account_path(did), "Deactivated." if apply else "Reactivated.")

    async def reset_password(request: Request, fields: dict) -> Response:
        did = request.path_params["did"]
        password = secrets.token_urlsafe(15)
        await web().call(request, "com.atproto.admin.updateAccountPassword", {"did": did, "password": password})
        row = await accounts_store.obs_get(get_ctx().db, did)
        codes = await web().call(_with_params(request, {"did": did}), "com.atproto.admin.getAccountInfo", {})
        session = await signed_in(request)
        # Shown once, on this response only (never in a URL or a log).
        return page("account.html", session=session, a=row, info=codes, new_password=password,
                    note="Password reset: every session of the account has ended.")

    async def invite_create(request: Request, fields: dict) -> Response:
        try:
            uses = max(1, min(int(fields.get("uses") or "1"), 1000))
        except ValueError:
            uses = 1
        data = await web().call(request, "com.atproto.server.createInviteCode", {"useCount": uses})
        return to("/admin/invites?created=" + quote(data["code"]))

    async def invite_disable(request: Request, fields: dict) -> Response:
        code = fields.get("code", "")[:256]
        await web().call(request, "com.atproto.admin.disableInviteCodes", {"codes": [code], "accounts": []})
        return to("/admin/invites", f"Disabled {code}.")

    async def backup_now(request: Request, fields: dict) -> Response:
        web().request_backup()
        return to("/admin/backups", "Backup requested: the backup container starts it within a few seconds.")

    # -- the relay monitor (issue #15): the same calls as /xrpc/_admin/relays/* and `squall relay` ----

    def monitor() -> Any:
        relays = get_ctx().relays
        if relays is None:
            raise InvalidRequest("the relay monitor is not running")
        return relays

    async def relay_crawl(request: Request, fields: dict) -> Response:
        relay = fields.get("relay", "")[:2048] or None
        results = await monitor().request_crawl(relay)
        text = "; ".join(f"{r['relay']}: {'asked' if r['ok'] else 'failed'} ({r['detail']})" for r in results)
        return to("/admin/relays", f"Crawl requested. {text}" if results else "No relay is configured.")

    async def relay_announce(request: Request, fields: dict) -> Response:
        did = fields.get("did", "").strip()[:2048]
        if not syntax.is_valid_did(did):
            raise InvalidRequest(f"not a DID: {did!r}")
        result = await monitor().reannounce_account(did)
        return to("/admin/relays", f"Re-announced {did}: events {', '.join(map(str, result['seqs']))} "
                                   "(#identity, #sync, #account).")

    async def relay_advance(request: Request, fields: dict) -> Response:
        relay = fields.get("relay", "")[:2048]
        if not relay:
            raise InvalidRequest("which relay? (none given)")
        confirm = fields.get("confirm") == "1"
        plan = await monitor().advance_sequence(relay, confirm=confirm)
        if confirm and plan.get("applied"):
            return to("/admin/relays", f"Sequence advanced: {plan['message']}.")
        session = await signed_in(request)
        # Not confirmed yet (or nothing to do): the plan, with the confirming form when there is one.
        return page("relay_advance.html", session=session, plan=plan, note=None,
                    actionable=plan["theirSeq"] > plan["ourSeq"] and not plan.get("applied"))

    async def css(request: Request) -> Response:
        return Response((_STATIC / "admin.css").read_bytes(), media_type="text/css",
                        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})

    gets = {
        "/admin": view("overview.html", load_overview),
        "/admin/accounts": view("accounts.html", load_accounts),
        "/admin/accounts/{did}": view("account.html", load_account),
        "/admin/storage": view("storage.html", load_storage),
        "/admin/backups": view("backups.html", load_backups),
        "/admin/relays": view("relays.html", load_relays),
        "/admin/invites": view("invites.html", load_invites),
    }
    for path, handler in gets.items():
        app.add_api_route(path, guarded(handler), methods=["GET"], include_in_schema=False)
    app.add_api_route("/admin/signin", guarded(signin_form), methods=["GET"], include_in_schema=False)
    app.add_api_route("/admin/static/admin.css", css, methods=["GET"], include_in_schema=False)
    posts = {
        "/admin/signin": signin,
        "/admin/signout": signout,
        "/admin/accounts/{did}/takedown": action(takedown),
        "/admin/accounts/{did}/deactivate": action(deactivate),
        "/admin/accounts/{did}/reset-password": action(reset_password),
        "/admin/invites/create": action(invite_create),
        "/admin/invites/disable": action(invite_disable),
        "/admin/backups/run": action(backup_now),
        "/admin/relays/crawl": action(relay_crawl),
        "/admin/relays/announce": action(relay_announce),
        "/admin/relays/advance-sequence": action(relay_advance),
    }
    for path, handler in posts.items():
        app.add_api_route(path, guarded(handler), methods=["POST"], include_in_schema=False)


def _with_params(request: Request, params: dict[str, str]) -> Request:
    """The same request with other query parameters (for handlers of XRPC queries)."""
    scope = dict(request.scope)
    scope["query_string"] = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items()).encode()
    return Request(scope)
