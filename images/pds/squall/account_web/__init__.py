"""The account page (``/account``, issue #17): a user's own view of their account, server-rendered,
usable without JavaScript: sign in with the account password; see and revoke OAuth grants (app
name and logo from the client metadata, permissions in words, created, last used); create, list
and revoke app passwords; download the repository as a CAR; ``/.well-known/change-password``
leads here.

Security: a strict CSP (no scripts at all; the stylesheet by nonce; images only from ourselves and
the https origins of the listed apps' logos); no framing; the session is a signed, expiring cookie
(itsdangerous, key derived from the JWT secret) that is HttpOnly, SameSite=Strict and Secure when
the server is on https; every POST carries a CSRF token bound to the session (before sign-in: a
double-submit cookie) and is refused when the browser says it comes from another site
(``Origin``/``Sec-Fetch-Site``). Actions use the same services as the XRPC methods (the OAuth
provider's grants, squall.accounts.app_passwords, squall.repo.export).

Second factor: ``ctx.account_second_factor`` (absent today) is the hook for the e-mail code being
built separately: an object with ``async required(did) -> bool``, ``async send(did)`` and
``async verify(did, code) -> bool``; when present and required, sign-in asks for the code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ..accounts import app_passwords
from ..accounts.sessions import LoginChecker
from ..auth.scopes import describe, split
from ..errors import DomainError
from ..store.accounts import get_by_did, list_app_passwords
from ..store.sequencer import now_iso

SESSION_COOKIE = "squall_account"
PRE_CSRF_COOKIE = "squall_account_csrf"
SESSION_TTL = 3600
MAX_FORM_BYTES = 16 * 1024


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


def routes(app, get_ctx: Callable[[], Any]) -> None:
    env: list[Any] = []

    def signer(ctx) -> Any:
        from itsdangerous import URLSafeTimedSerializer

        key = hmac.new(ctx.secrets.jwt_secret.encode(), b"squall account page v1", hashlib.sha256).hexdigest()
        return URLSafeTimedSerializer(key, salt="account-session")

    def secure(ctx) -> bool:
        return ctx.settings.public_url.startswith("https://")

    def session_of(request: Request) -> dict[str, str] | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        from itsdangerous import BadSignature

        try:
            data = signer(get_ctx()).loads(raw, max_age=SESSION_TTL)
        except BadSignature:
            return None
        return data if isinstance(data, dict) and "did" in data and "csrf" in data else None

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

    async def checked(request: Request) -> tuple[dict[str, str], dict[str, str]] | Response:
        """The signed-in session and the form of a POST, or the refusal."""
        if cross_site(request):
            return refuse("This form was submitted from another site.")
        session = session_of(request)
        if session is None:
            return RedirectResponse("/account", status_code=303)
        form = await read_form(request)
        if form is None:
            return refuse("The form is too large.", 413)
        if not hmac.compare_digest(form.get("csrf_token", ""), session["csrf"]):
            return refuse("The form could not be verified (missing or wrong CSRF token). Reload the page.")
        return session, form

    def sign_in_page(ctx, *, error: str | None = None, status: int = 200, identifier: str = "") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render("account_signin.html", status, csrf_token=token, error=error, identifier=identifier)
        response.set_cookie(PRE_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure(ctx),
                            path="/account")
        return response

    async def dashboard(ctx, session: dict[str, str], *, notice: str | None = None,
                        new_password: dict[str, str] | None = None) -> HTMLResponse:
        did = session["did"]
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
        return render("account.html", logo_origins=logos, handle=account.handle if account else did, did=did,
                      grants=grants, passwords=passwords, csrf_token=session["csrf"], notice=notice,
                      new_password=new_password)

    def with_session(response: Response, ctx, data: dict[str, str]) -> Response:
        response.set_cookie(SESSION_COOKIE, signer(ctx).dumps(data), max_age=SESSION_TTL, httponly=True,
                            samesite="strict", secure=secure(ctx), path="/")
        return response

    @app.get("/.well-known/change-password")
    async def change_password() -> Response:
        return RedirectResponse("/account#password", status_code=302)

    @app.get("/account")
    async def account_page(request: Request) -> Response:
        ctx = get_ctx()
        session = session_of(request)
        if session is None:
            return sign_in_page(ctx)
        return await dashboard(ctx, session)

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
        try:
            account, app_password = await LoginChecker(ctx.db, ctx.hasher).login(identifier, form.get("password", ""))
        except DomainError:
            account, app_password = None, None
        if account is None or app_password is not None or account.is_takendown:
            return sign_in_page(ctx, error="Wrong handle, e-mail or password.", status=401, identifier=identifier)
        second = getattr(ctx, "account_second_factor", None)
        if second is not None and await second.required(account.did):
            code = form.get("code", "")
            if not code:
                await second.send(account.did)
                return sign_in_page(ctx, error="Enter the code we sent to your e-mail address.", status=401,
                                    identifier=identifier)
            if not await second.verify(account.did, code):
                return sign_in_page(ctx, error="Wrong code.", status=401, identifier=identifier)
        response = RedirectResponse("/account", status_code=303)
        response.delete_cookie(PRE_CSRF_COOKIE, path="/account")
        return with_session(response, ctx, {"did": account.did, "csrf": secrets.token_urlsafe(24)})

    @app.post("/account/sign-out")
    async def sign_out(request: Request) -> Response:
        result = await checked(request)
        if isinstance(result, Response):
            return result
        response = RedirectResponse("/account", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

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

    @app.get("/account/repo.car")
    async def download_car(request: Request) -> Response:
        from ..repo.export import RepoExport, RepoNotStored

        session = session_of(request)
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
