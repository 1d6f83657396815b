"""The account page (``/account``, issue #17): a user's own view of their account, server-rendered,
usable without JavaScript. Signed in with the account password (and, when the account has turned
on sign-in codes, the code ``ctx.mail`` e-mails), a user can: see and revoke OAuth grants (app name
and logo from the client metadata, permissions in words, created, last used); create, list and
revoke app passwords; see and end their sessions (password and app-password sign-ins of apps, and
this page's own sign-ins); change the password (``/.well-known/change-password`` leads to that
form, ``/account/password``); change the handle; download the repository as a CAR; deactivate
(and reactivate) or delete the account.

Every action uses the service the XRPC methods use, so the rules and error texts are one:
``squall.accounts.password_change`` (as resetPassword and admin.updateAccountPassword: every other
session ends), ``squall.xrpc.identity.change_handle`` with ``check_handle`` (as updateHandle),
``squall.accounts.status`` (de/activateAccount), ``squall.accounts.deletion`` with the deletion
token (as requestAccountDelete + deleteAccount: mailed when SMTP is set up, else issued by the
operator), the OAuth provider's grants, ``squall.accounts.app_passwords``, ``squall.repo.export``.

Security: a strict CSP (no scripts at all; the stylesheet by nonce; images only from ourselves and
the https origins of the listed apps' logos); no framing; a session is a random id in a cookie
(HttpOnly, SameSite=Strict, Secure unless dev mode over plain http) whose SHA-256 keys a row of
``account_session`` (``store/account_sessions.py``), so signing out, a password change or the
account's deletion really ends it. Every POST carries a CSRF token bound to the session (before
sign-in: a double-submit cookie) and is refused when the browser says it comes from another site
(``Origin``/``Sec-Fetch-Site``). Password attempts (sign-in, code, confirmations) count against the
sign-in rate limits of createSession and the OAuth form.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ..accounts import app_passwords, deletion, operator_tokens, password_change, status
from ..accounts.events import wake_firehose
from ..accounts.sessions import MAX_PASSWORD_LENGTH, LoginChecker
from ..auth.passwords import verify_password
from ..auth.scopes import describe, split
from ..errors import DomainError
from ..ratelimit import consume_sign_in
from ..store import account_sessions
from ..store import sessions as sessions_store
from ..store.accounts import get_by_did, list_app_passwords
from ..store.sequencer import now_iso

SESSION_COOKIE = "squall_account"
PRE_CSRF_COOKIE = "squall_account_csrf"
SESSION_TTL = 4 * 3600
CODE_TTL = 15 * 60  # a session waiting for its e-mailed code lives as long as the code
MAX_FORM_BYTES = 16 * 1024
PAGES = ("/account", "/account/password")  # where sign-in may lead back to
CODE_WORDS = {
    "AuthFactorTokenRequired": "We sent a sign-in code to your e-mail address. Enter it below.",
    "ExpiredToken": "That sign-in code has expired. Sign in again to get a new one.",
    "InvalidToken": "That sign-in code is not right. Check the latest mail.",
}


def _templates() -> Any:
    from jinja2 import Environment, PackageLoader

    return Environment(loader=PackageLoader("squall.account_web", "templates"), autoescape=True)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _when(ts: int | None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def routes(app, get_ctx: Callable[[], Any]) -> None:
    env: list[Any] = []

    def secure(ctx) -> bool:
        # Browsers drop Secure cookies set over plain http; only dev mode serves the page over it.
        return ctx.settings.public_url.startswith("https://")

    async def session_of(request: Request, stage: str = "active") -> dict[str, Any] | None:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid or len(sid) > 128:
            return None
        row = await account_sessions.get(get_ctx().db, _digest(sid), int(time.time()))
        if row is None or row["stage"] != stage:
            return None
        return {"did": row["did"], "csrf": row["csrf"], "id_hash": _digest(sid)}

    async def new_session(request: Request, did: str, stage: str) -> str:
        ctx = get_ctx()
        sid = secrets.token_urlsafe(32)
        now = int(time.time())
        ttl = SESSION_TTL if stage == "active" else CODE_TTL
        agent = request.headers.get("user-agent", "")[:200]
        await ctx.db.write(account_sessions.create, _digest(sid), did, secrets.token_urlsafe(24), stage, now,
                           now + ttl, agent)
        return sid

    def with_cookie(response: Response, sid: str, stage: str) -> Response:
        ctx = get_ctx()
        response.set_cookie(SESSION_COOKIE, sid, max_age=SESSION_TTL if stage == "active" else CODE_TTL,
                            httponly=True, samesite="strict", secure=secure(ctx), path="/")
        return response

    def render(name: str, status: int = 200, *, logo_origins: set[str] | None = None, **values: Any) -> HTMLResponse:
        ctx = get_ctx()
        if not env:
            env.append(_templates())
        nonce = secrets.token_urlsafe(16)
        images = " ".join(["'self'", *sorted(logo_origins or ())])
        html = env[0].get_template(name).render(style_nonce=nonce, server=urlsplit(ctx.settings.public_url).netloc,
                                                **values)
        csp = (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src {images}; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
        return HTMLResponse(html, status_code=status, headers={
            "Content-Security-Policy": csp, "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",  # so that form POSTs carry a real Origin
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    def refuse(message: str, status: int = 403) -> HTMLResponse:
        return render("account_error.html", status, message=message)

    def cross_site(request: Request) -> bool:
        ctx = get_ctx()
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return True
        origin = request.headers.get("origin")
        return origin is not None and origin != _origin(ctx.settings.public_url)

    async def read_form(request: Request) -> dict[str, str] | None:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return None
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32))
        except (UnicodeDecodeError, ValueError):
            return None

    async def checked(request: Request, stage: str = "active") -> tuple[dict[str, Any], dict[str, str]] | Response:
        """The signed-in session and the form of a POST, or the refusal."""
        if cross_site(request):
            return refuse("This form was submitted from another site.")
        session = await session_of(request, stage)
        if session is None:
            return RedirectResponse("/account", status_code=303)
        form = await read_form(request)
        if form is None:
            return refuse("The form is too large.", 413)
        if not hmac.compare_digest(form.get("csrf_token", ""), session["csrf"]):
            return refuse("The form could not be verified (missing or wrong CSRF token). Reload the page.")
        return session, form

    def limited(request: Request, identifier: str) -> str | None:
        """Count one password (or code) attempt; the words when a sign-in limit is exceeded."""
        hit = consume_sign_in(get_ctx(), request, identifier)
        if hit is None:
            return None
        minutes = max(1, math.ceil((hit.reset_at - time.time()) / 60))
        return f"Too many attempts. Try again in {minutes} minutes."

    async def password_ok(request: Request, did: str, password: str) -> str | None:
        """None when ``password`` is the account's password; else what the page says."""
        words = limited(request, did)
        if words is not None:
            return words
        account = await get_by_did(get_ctx().db, did)
        if (account is None or account.password_hash is None or not password or len(password) > MAX_PASSWORD_LENGTH
                or not await verify_password(get_ctx().hasher, account.password_hash, password)):
            return "Your current password is not right."
        return None

    def sign_in_page(ctx, *, error: str | None = None, status: int = 200, identifier: str = "",
                     next_page: str = "/account") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render("account_signin.html", status, csrf_token=token, error=error, identifier=identifier,
                          next_page=next_page if next_page in PAGES else "/account")
        response.set_cookie(PRE_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure(ctx),
                            path="/account")
        return response

    def code_page(session: dict[str, Any], *, message: str, status: int = 200, next_page: str = "/account") -> HTMLResponse:
        return render("account_code.html", status, csrf_token=session["csrf"], message=message, next_page=next_page,
                      sent=message == CODE_WORDS["AuthFactorTokenRequired"])

    async def dashboard(ctx, session: dict[str, Any], *, notice: str | None = None, error: str | None = None,
                        status: int = 200, new_password: dict[str, str] | None = None,
                        delete_requested: bool = False) -> HTMLResponse:
        did = session["did"]
        now = int(time.time())
        account = await get_by_did(ctx.db, did)
        grants, logos = [], set()
        for row in await ctx.oauth.grants(did):
            name, logo = row["client_id"], None
            try:
                client = await ctx.oauth.clients.get(row["client_id"])
                name = client.name
                uri = client.metadata.get("logo_uri")
                if isinstance(uri, str) and uri.startswith("https://"):
                    logo = uri
                    logos.add(_origin(uri))
            except Exception:  # noqa: BLE001 - an unreachable client still lists (by its id)
                pass
            grants.append({"id": row["id"], "name": name, "client_id": row["client_id"], "logo": logo,
                           "scopes": [describe(s) for s in split(row["scope"])], "created": _when(row["created_at"]),
                           "last_used": _when(row["last_used_at"])})
        passwords = [{"name": r["name"], "created": r["created_at"], "privileged": bool(r["privileged"])}
                     for r in await list_app_passwords(ctx.db, did)]
        sessions = [{"id": r["id"], "app_password": r["app_password_name"], "expires": _when(r["expires_at"])}
                    for r in await sessions_store.list_live_refresh_tokens(ctx.db, did, now)]
        pages = [{"id": r["id_hash"], "created": _when(r["created_at"]), "agent": r["user_agent"] or "a browser",
                  "current": r["id_hash"] == session["id_hash"]}
                 for r in await account_sessions.list_of(ctx.db, did, now)]
        return render("account.html", status, logo_origins=logos, handle=account.handle if account else did, did=did,
                      grants=grants, passwords=passwords, sessions=sessions, pages=pages, csrf_token=session["csrf"],
                      notice=notice, error=error, new_password=new_password,
                      deactivated=account is not None and account.deactivated_at is not None,
                      mail_enabled=ctx.mail.enabled, delete_requested=delete_requested)

    def signed_out(message: str) -> Response:
        response = render("account_error.html", 200, message=message, title="Signed out")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- pages ----------------------------------------------------------------------------------------

    @app.get("/.well-known/change-password")
    async def well_known_change_password() -> Response:
        return RedirectResponse("/account/password", status_code=302)

    @app.get("/account")
    async def account_page(request: Request) -> Response:
        ctx = get_ctx()
        session = await session_of(request)
        if session is not None:
            return await dashboard(ctx, session)
        pending = await session_of(request, "code")
        if pending is not None:
            return code_page(pending, message=CODE_WORDS["AuthFactorTokenRequired"])
        return sign_in_page(ctx)

    @app.get("/account/password")
    async def password_page(request: Request) -> Response:
        ctx = get_ctx()
        session = await session_of(request)
        if session is None:
            pending = await session_of(request, "code")
            if pending is not None:
                return code_page(pending, message=CODE_WORDS["AuthFactorTokenRequired"], next_page="/account/password")
            return sign_in_page(ctx, next_page="/account/password")
        account = await get_by_did(ctx.db, session["did"])
        return render("account_password.html", handle=account.handle if account else session["did"],
                      csrf_token=session["csrf"])

    # -- signing in and out ---------------------------------------------------------------------------

    @app.post("/account/sign-in")
    async def sign_in(request: Request) -> Response:
        ctx = get_ctx()
        if cross_site(request):
            return refuse("This form was submitted from another site.")
        form = await read_form(request)
        if form is None:
            return refuse("The form is too large.", 413)
        cookie = request.cookies.get(PRE_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, form.get("csrf_token", "")):
            return refuse("The form could not be verified (missing or wrong CSRF token). Reload the page.")
        identifier = form.get("identifier", "").strip()
        next_page = form.get("next", "/account")
        words = limited(request, identifier)
        if words is not None:
            return sign_in_page(ctx, error=words, status=429, identifier=identifier, next_page=next_page)
        try:
            account, app_password = await LoginChecker(ctx.db, ctx.hasher).login(identifier, form.get("password", ""))
        except DomainError:
            account, app_password = None, None
        if account is None or app_password is not None or account.is_takendown:
            # The same words whatever was wrong, so the form does not tell which accounts exist.
            return sign_in_page(ctx, error="Wrong handle, e-mail or password.", status=401, identifier=identifier,
                                next_page=next_page)
        stage = "active"
        if await ctx.mail.auth_factor(account.did):  # e-mail two-factor (squall.mail): mail a code
            try:
                await ctx.mail.check_sign_in(account, None)
            except DomainError as err:
                if err.name != "AuthFactorTokenRequired":  # e.g. no SMTP any more: say so
                    return sign_in_page(ctx, error=err.message, status=400, identifier=identifier,
                                        next_page=next_page)
                stage = "code"
        sid = await new_session(request, account.did, stage)
        target = next_page if next_page in PAGES else "/account"
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(PRE_CSRF_COOKIE, path="/account")
        return with_cookie(response, sid, stage)

    @app.post("/account/sign-in/code")
    async def sign_in_code(request: Request) -> Response:
        result = await checked(request, "code")
        if isinstance(result, Response):
            return result
        pending, form = result
        ctx = get_ctx()
        next_page = form.get("next", "/account")
        words = limited(request, pending["did"])
        if words is not None:
            return code_page(pending, message=words, status=429, next_page=next_page)
        account = await get_by_did(ctx.db, pending["did"])
        if account is None:
            return signed_out("This account no longer exists.")
        code = form.get("code", "").strip()
        if not code:
            return code_page(pending, message="Enter the code from the e-mail.", status=400, next_page=next_page)
        try:
            await ctx.mail.check_sign_in(account, code)
        except DomainError as err:
            words = CODE_WORDS.get(err.name, err.message)
            if err.name == "ExpiredToken":
                await ctx.db.write(account_sessions.delete, pending["id_hash"])
                return signed_out(words)
            return code_page(pending, message=words, status=401, next_page=next_page)
        # A fresh id for the signed-in session: the pending one's cookie is worth nothing now.
        await ctx.db.write(account_sessions.delete, pending["id_hash"])
        sid = await new_session(request, account.did, "active")
        target = next_page if next_page in PAGES else "/account"
        return with_cookie(RedirectResponse(target, status_code=303), sid, "active")

    @app.post("/account/sign-out")
    async def sign_out(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            result = await checked(request, "code")  # cancelling a sign-in that waits for its code
            if isinstance(result, Response):
                return result
        session, _ = result
        await get_ctx().db.write(account_sessions.delete, session["id_hash"])
        response = RedirectResponse("/account", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- apps, app passwords, sessions ------------------------------------------------------------------

    @app.post("/account/grants/revoke")
    async def revoke_grant(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        done = await ctx.oauth.revoke_grant(session["did"], form.get("grant", ""))
        return await dashboard(ctx, session, notice="Access revoked." if done else "That app had no access.")

    @app.post("/account/app-passwords/create")
    async def create_app_password(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        name = form.get("name", "").strip()[:app_passwords.MAX_NAME_LENGTH]
        if not name:
            return await dashboard(ctx, session, notice="Give the app password a name.")
        password = app_passwords.generate()
        digest = await app_passwords.hash_app_password(ctx.hasher, session["did"], password)
        try:
            inserted = await ctx.db.write(app_passwords.insert, session["did"], name, digest,
                                          form.get("privileged") == "on", now_iso())
        except app_passwords.TooManyAppPasswords:
            return await dashboard(ctx, session, notice="Too many app passwords; revoke one first.")
        if not inserted:
            return await dashboard(ctx, session, notice=f"An app password named {name!r} already exists.")
        return await dashboard(ctx, session, new_password={"name": name, "password": password})

    @app.post("/account/app-passwords/revoke")
    async def revoke_app_password(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        await ctx.db.write(app_passwords.delete, session["did"], form.get("name", ""))
        return await dashboard(ctx, session, notice="App password revoked.")

    @app.post("/account/sessions/revoke")
    async def revoke_session(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        if form.get("kind") == "page":
            target = form.get("session", "")
            if target == session["id_hash"]:
                return await dashboard(ctx, session, notice="To end this session, sign out.")
            done = await ctx.db.write(account_sessions.delete_one_of, session["did"], target)
        else:
            done = await ctx.db.write(sessions_store.delete_refresh_token_of, session["did"], form.get("session", ""))
        return await dashboard(ctx, session, notice="Session ended." if done else "That session had already ended.")

    # -- password, handle ---------------------------------------------------------------------------------

    @app.post("/account/password")
    async def change_password(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        new = form.get("new_password", "")
        if new != form.get("new_password_again", new):
            return await dashboard(ctx, session, error="The two new passwords differ.", status=400)
        words = await password_ok(request, session["did"], form.get("current_password", ""))
        if words is not None:
            return await dashboard(ctx, session, error=words, status=401)
        try:
            digest = await password_change.new_password_hash(ctx.hasher, new)
            await ctx.db.write(password_change.set_password, session["did"], digest, session["id_hash"])
            ctx.verifier.forget_revocations(session["did"])
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        ctx.log.info("password changed on the account page", extra={"did": session["did"]})
        return await dashboard(ctx, session, notice="Password changed. Every other session has been signed out.")

    @app.post("/account/handle")
    async def change_handle(request: Request) -> Response:
        from ..identity.handles import HandleError, check_handle
        from ..xrpc.identity import change_handle as move_handle

        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        account = await get_by_did(ctx.db, session["did"])
        if account is None:
            return signed_out("This account no longer exists.")
        try:
            checked_handle = check_handle(form.get("handle", "").strip()[:300], list(ctx.settings.service_handle_domains))
            await move_handle(ctx, session["did"], account.handle, checked_handle)
        except HandleError as err:
            return await dashboard(ctx, session, error=str(err), status=400)
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        return await dashboard(ctx, session, notice=f"Your handle is now @{checked_handle.handle}.")

    # -- deactivate, delete ------------------------------------------------------------------------------

    @app.post("/account/deactivate")
    async def deactivate(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        words = await password_ok(request, session["did"], form.get("password", ""))
        if words is not None:
            return await dashboard(ctx, session, error=words, status=401)
        try:
            await ctx.db.write(status.deactivate, session["did"], None)
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        await wake_firehose(ctx)
        return await dashboard(ctx, session, notice="Your account is deactivated.")

    @app.post("/account/activate")
    async def activate(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, _ = result
        ctx = get_ctx()
        try:
            await ctx.db.write(status.activate, session["did"])
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        await wake_firehose(ctx)
        return await dashboard(ctx, session, notice="Your account is active again.")

    @app.post("/account/delete/request")
    async def request_delete(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, _ = result
        ctx = get_ctx()
        if not ctx.mail.enabled:
            return await dashboard(ctx, session, error="This server sends no e-mail: ask its operator for a "
                                   "deletion code.", status=400)
        try:
            await ctx.mail.request_account_delete(session["did"])
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        return await dashboard(ctx, session, notice="We sent a deletion code to your e-mail address.",
                               delete_requested=True)

    @app.post("/account/delete")
    async def delete_account(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        session, form = result
        ctx = get_ctx()
        did = session["did"]
        token = form.get("token", "").strip()
        if form.get("confirm") != "on":
            return await dashboard(ctx, session, error="Tick the box to confirm the deletion.", status=400)
        if not token or len(token) > 64:
            return await dashboard(ctx, session, error="Enter the deletion code.", status=400)
        try:
            # As deleteAccount: the token before the password (a request without one costs no hash).
            await operator_tokens.precheck(ctx.db, did, operator_tokens.PURPOSE_DELETE, token)
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        words = await password_ok(request, did, form.get("password", ""))
        if words is not None:
            return await dashboard(ctx, session, error=words, status=401)
        try:
            await deletion.delete(ctx, did, token=token)
        except DomainError as err:
            return await dashboard(ctx, session, error=err.message, status=400)
        return signed_out("Your account has been deleted.")

    # -- data -------------------------------------------------------------------------------------------

    @app.get("/account/repo.car")
    async def download_car(request: Request) -> Response:
        from ..repo.export import RepoExport, RepoNotStored

        session = await session_of(request)
        if session is None:
            return RedirectResponse("/account", status_code=303)
        ctx = get_ctx()
        try:
            export = await RepoExport.open(ctx.db, session["did"], None)
        except RepoNotStored:
            return refuse("This account has no repository.", 404)
        name = session["did"].replace(":", "_")
        return StreamingResponse(export.chunks(), media_type="application/vnd.ipld.car", headers={
            "Content-Disposition": f'attachment; filename="{name}-{int(time.time())}.car"',
            "Cache-Control": "no-store"})
