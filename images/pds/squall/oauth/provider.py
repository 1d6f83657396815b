"""The authorization server's state machine (https://atproto.com/specs/oauth; RFC 9126 PAR, RFC 7636
PKCE, RFC 6749 §4.1 and §6): pushed request → user approval → one-time code → DPoP-bound tokens
→ refresh rotation → revocation.

Secrets are stored only as SHA-256 hashes (codes, refresh tokens). A code or refresh token used
twice is the sign of a stolen one, so the grant it belongs to is revoked (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ..accounts.sessions import LoginChecker
from ..auth import scopes as permission_scopes
from ..errors import DomainError
from ..store import accounts as account_store
from ..store import oauth as store
from .clients import SUPPORTED_SCOPES, Client, ClientStore, parse_scope
from .dpop import DpopChecker, DpopProof, ReplayCache
from .errors import OAuthError
from .tokens import AccessTokenError, AccessTokens

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:req-"
PAR_TTL = 300
CODE_TTL = 120
CODE_REUSE_WINDOW = 600  # how long an exchanged code's row is kept to recognise a replay
MAX_FAILED_LOGINS = 5
PUBLIC_SESSION_TTL = 14 * 86400  # the spec asks for a bounded session for public clients
CONFIDENTIAL_SESSION_TTL = 365 * 86400
CONFIDENTIAL_REFRESH_TTL = 90 * 86400
LAST_USED_RESOLUTION = 60  # a grant's last use is recorded to the minute (one write a minute at most)

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class PendingRequest:
    id: str
    client: Client
    params: dict[str, Any]
    approved: bool


class OAuthProvider:
    def __init__(self, *, settings: Any, db: Any, hasher: Any, jwt_secret: str, lexicons: Any = None):
        self.issuer = settings.public_url
        self.settings = settings
        self.db = db
        self.clients = ClientStore(settings)
        dpop_secret = getattr(settings, "dpop_secret", None)
        self.dpop = DpopChecker(secret=bytes.fromhex(dpop_secret.strip()) if dpop_secret else None)
        self.tokens = AccessTokens(jwt_secret, issuer=self.issuer, audience=settings.service_did)
        self._assertions = ReplayCache(10_000)
        self._login = LoginChecker(db, hasher)
        self.lexicons = lexicons  # squall.oauth.lexicons.LexiconResolver, for include: scopes

    def __repr__(self) -> str:
        return "OAuthProvider(<redacted>)"

    async def close(self) -> None:
        await self.clients.close()
        if self.lexicons is not None:
            await self.lexicons.close()

    def endpoint(self, path: str) -> str:
        return f"{self.issuer}{path}"

    def replay(self, key: tuple[str, str], expires: float) -> bool:
        return self._assertions.add(key, expires, time.time())

    # -- PAR ------------------------------------------------------------------------------------

    async def push(self, form: dict[str, str], proof: DpopProof) -> dict[str, Any]:
        client = await self.clients.get(form.get("client_id"))
        auth_method = await self.clients.authenticate(client, form, issuer=self.issuer, replay=self.replay)
        if "request" in form:
            raise OAuthError("request_not_supported", "Request objects (JAR) are not supported")
        if form.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        if form.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256 (PKCE is required)")
        if not _CHALLENGE.match(form.get("code_challenge", "")):
            raise OAuthError("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")
        state = form.get("state", "")
        if not state or len(state) > 1024:
            raise OAuthError("invalid_request", "state is required (at most 1024 characters)")
        redirect_uri = form.get("redirect_uri")
        if not redirect_uri:
            if len(client.redirect_uris) != 1:
                raise OAuthError("invalid_request", "redirect_uri is required")
            redirect_uri = client.redirect_uris[0]
        if not client.redirect_allowed(redirect_uri):
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
        requested = permission_scopes.split(form.get("scope"))
        if "atproto" not in requested:
            raise OAuthError("invalid_scope", "scope must include atproto")
        granted, permission_sets = await self._grantable(client, requested)
        response_mode = form.get("response_mode", "query")
        if response_mode not in ("query", "fragment"):
            raise OAuthError("invalid_request", "response_mode must be query or fragment")
        login_hint = form.get("login_hint", "")
        if len(login_hint) > 256:
            raise OAuthError("invalid_request", "login_hint is too long")
        if form.get("dpop_jkt") and form["dpop_jkt"] != proof.jkt:
            raise OAuthError("invalid_dpop_proof", "dpop_jkt does not match the DPoP proof's key")
        params = {"redirect_uri": redirect_uri, "scope": " ".join(granted),
                  "requested_scope": " ".join(requested), "permission_sets": permission_sets,
                  "state": state, "code_challenge": form["code_challenge"], "response_mode": response_mode,
                  "login_hint": login_hint}
        request_id = secrets.token_urlsafe(24)
        now = int(time.time())

        def insert(conn: sqlite3.Connection) -> None:
            store.purge_expired(conn, now)
            store.insert_request(conn, request_id, client.client_id, auth_method, proof.jkt, json.dumps(params),
                                 now + PAR_TTL)

        await self.db.write(insert)
        return {"request_uri": REQUEST_URI_PREFIX + request_id, "expires_in": PAR_TTL}

    async def _grantable(self, client: Client, requested: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
        """The concrete scopes a request asks for (permission sets expanded) and the sets themselves
        (for the consent page); OAuthError(invalid_scope) for any scope that is not valid permission
        syntax, not declared by the client, or an unusable permission set."""
        granted: dict[str, None] = {}  # in the order asked for
        sets: list[dict[str, Any]] = []
        for scope in requested:
            try:
                parsed = permission_scopes.parse(scope)
            except permission_scopes.ScopeError as exc:
                raise OAuthError("invalid_scope", str(exc)) from None
            if scope not in client.scopes:
                raise OAuthError("invalid_scope", f"Scope {scope!r} is not declared in the client metadata")
            if isinstance(parsed, permission_scopes.IncludeScope):
                if self.lexicons is None:
                    raise OAuthError("invalid_scope", "Permission sets are not available on this server")
                pset = await self.lexicons.permission_set(parsed)
                sets.append({"nsid": pset.nsid, "title": pset.title, "detail": pset.detail,
                             "scopes": list(pset.scopes)})
                granted.update(dict.fromkeys(pset.scopes))
            else:
                granted[scope] = None
        return list(granted), sets

    # -- authorization (the user's page) ----------------------------------------------------------

    async def pending(self, client_id: str | None, request_uri: str | None) -> PendingRequest:
        if not client_id or not request_uri or not request_uri.startswith(REQUEST_URI_PREFIX):
            raise OAuthError("invalid_request", "client_id and a request_uri from the PAR endpoint are required")
        request_id = request_uri[len(REQUEST_URI_PREFIX):]
        row = await store.get_request(self.db, request_id)
        if row is None or row["expires_at"] <= time.time():
            raise OAuthError("invalid_request", "This authorization request is unknown or has expired; "
                             "go back to the app and start again")
        if row["client_id"] != client_id:
            raise OAuthError("invalid_request", "client_id does not match the authorization request")
        client = await self.clients.get(client_id)
        return PendingRequest(id=request_id, client=client, params=json.loads(row["params"]),
                              approved=row["did"] is not None)

    async def sign_in(self, pending: PendingRequest, identifier: str, password: str) -> str | None:
        """The DID on success; None on a wrong identifier or password (counted per request)."""
        try:
            account, app_password = await self._login.login(identifier, password)
        except DomainError:
            account, app_password = None, None
        # OAuth asks for the account password itself; app passwords are for legacy clients.
        if account is not None and app_password is None and not account.is_takendown:
            return account.did

        await self.db.write(store.count_failed_login, pending.id, MAX_FAILED_LOGINS)
        return None

    async def approve(self, pending: PendingRequest, did: str) -> str:
        code = secrets.token_urlsafe(32)
        now = int(time.time())

        if not await self.db.write(store.approve_request, pending.id, did, _hash(code), now + CODE_TTL, now):
            raise OAuthError("invalid_request", "This authorization request was already answered or has expired")
        return code

    async def deny(self, pending: PendingRequest) -> None:
        await self.db.write(store.delete_request, pending.id)

    # -- token endpoint ---------------------------------------------------------------------------

    async def token(self, form: dict[str, str], proof: DpopProof) -> dict[str, Any]:
        client = await self.clients.get(form.get("client_id"))
        auth_method = await self.clients.authenticate(client, form, issuer=self.issuer, replay=self.replay)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            result = await self.db.write(self._exchange_code, client, auth_method, form, proof)
        elif grant == "refresh_token":
            result = await self.db.write(self._refresh, client, auth_method, form, proof)
        else:
            raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
        if isinstance(result, OAuthError):
            raise result  # raised after the transaction so that a revocation it made is kept
        return result

    def _issue(self, *, session_id: str, did: str, scope: str, jkt: str, client_id: str,
               refresh: str) -> dict[str, Any]:
        access, ttl = self.tokens.mint(did=did, scope=scope, jkt=jkt, session_id=session_id, client_id=client_id)
        return {"access_token": access, "token_type": "DPoP", "expires_in": ttl, "refresh_token": refresh,
                "scope": scope, "sub": did}

    def _exchange_code(self, conn: sqlite3.Connection, client: Client, auth_method: str, form: dict[str, str],
                       proof: DpopProof) -> dict[str, Any] | OAuthError:
        code = form.get("code", "")
        now = int(time.time())
        row = store.get_request_by_code(conn, _hash(code)) if code else None
        if row is None:
            return OAuthError("invalid_grant", "Invalid or expired authorization code")
        if row["session_id"] is not None:
            store.delete_session(conn, row["session_id"])
            return OAuthError("invalid_grant", "Authorization code already used; the grant it issued is revoked")
        if row["code_expires_at"] <= now:
            store.delete_request(conn, row["id"])
            return OAuthError("invalid_grant", "Authorization code has expired")
        if row["client_id"] != client.client_id or row["client_auth"] != auth_method:
            return OAuthError("invalid_grant", "Authorization code was issued to another client")
        params = json.loads(row["params"])
        if form.get("redirect_uri") != params["redirect_uri"]:
            return OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.match(verifier) or not hmac.compare_digest(_s256(verifier), params["code_challenge"]):
            # A wrong verifier is someone else holding the code: it is spent.
            store.delete_request(conn, row["id"])
            return OAuthError("invalid_grant", "code_verifier is missing or does not match the code_challenge")
        if proof.jkt != row["dpop_jkt"]:
            return OAuthError("invalid_dpop_proof", "DPoP key differs from the one used for the authorization request")
        if not _account_usable(conn, row["did"]):
            return OAuthError("invalid_grant", "The account is not available")
        session_id = secrets.token_urlsafe(18)
        refresh = secrets.token_urlsafe(32)
        session_ttl = PUBLIC_SESSION_TTL if auth_method == "none" else CONFIDENTIAL_SESSION_TTL
        refresh_ttl = PUBLIC_SESSION_TTL if auth_method == "none" else CONFIDENTIAL_REFRESH_TTL
        store.insert_session(conn, session_id, row["did"], client.client_id, auth_method, proof.jkt, params["scope"],
                             now, now + session_ttl, _hash(refresh), now + min(session_ttl, refresh_ttl))
        store.mark_code_exchanged(conn, row["id"], session_id, now + CODE_REUSE_WINDOW)
        return self._issue(session_id=session_id, did=row["did"], scope=params["scope"], jkt=proof.jkt,
                           client_id=client.client_id, refresh=refresh)

    def _refresh(self, conn: sqlite3.Connection, client: Client, auth_method: str, form: dict[str, str],
                 proof: DpopProof) -> dict[str, Any] | OAuthError:
        token = form.get("refresh_token", "")
        now = int(time.time())
        digest = _hash(token) if token else ""
        row = store.get_session_by_refresh(conn, digest)
        if row is None:
            spent_session = store.spent_refresh_session(conn, digest)
            if spent_session is not None:
                store.delete_session(conn, spent_session)
                return OAuthError("invalid_grant", "Refresh token was already used; the session is revoked")
            return OAuthError("invalid_grant", "Invalid refresh token")
        if row["client_id"] != client.client_id or row["client_auth"] != auth_method:
            return OAuthError("invalid_grant", "Refresh token was issued to another client")
        if proof.jkt != row["dpop_jkt"]:
            return OAuthError("invalid_dpop_proof", "DPoP key differs from the one the session is bound to")
        if row["refresh_expires_at"] <= now or row["expires_at"] <= now:
            store.delete_session(conn, row["id"])
            return OAuthError("invalid_grant", "Refresh token has expired")
        scope = row["scope"]
        if form.get("scope"):
            narrowed = parse_scope(form["scope"])
            if not narrowed <= parse_scope(scope) or "atproto" not in narrowed:
                return OAuthError("invalid_scope", "A refresh may only narrow the granted scope")
            scope = " ".join(sorted(narrowed, key=_scope_order))
        if not _account_usable(conn, row["did"]):
            return OAuthError("invalid_grant", "The account is not available")
        refresh = secrets.token_urlsafe(32)
        refresh_ttl = PUBLIC_SESSION_TTL if auth_method == "none" else CONFIDENTIAL_REFRESH_TTL
        store.remember_spent_refresh(conn, digest, row["id"], row["expires_at"])
        store.rotate_refresh(conn, row["id"], _hash(refresh), min(row["expires_at"], now + refresh_ttl), scope)
        return self._issue(session_id=row["id"], did=row["did"], scope=scope, jkt=proof.jkt,
                           client_id=client.client_id, refresh=refresh)

    # -- revocation (RFC 7009) --------------------------------------------------------------------

    async def revoke(self, form: dict[str, str]) -> None:
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        session_id = None
        try:
            session_id = self.tokens.decode(token).session_id
        except AccessTokenError:
            pass  # not a (live) access token of ours: maybe a refresh token

        await self.db.write(store.revoke_session, _hash(token), session_id)

    # -- resource server ---------------------------------------------------------------------------

    async def session_active(self, session_id: str, did: str) -> bool:
        row = await store.get_session_owner(self.db, session_id)
        now = int(time.time())
        if row is None or row["did"] != did or row["expires_at"] <= now:
            return False
        if row["last_used_at"] is None or row["last_used_at"] < now - LAST_USED_RESOLUTION:
            await self.db.write(store.touch_session, session_id, now)
        return True

    async def grants(self, did: str) -> list[Any]:
        return await store.list_sessions(self.db, did)

    async def revoke_grant(self, did: str, session_id: str) -> bool:
        """Revoke one of the account's grants at once: its refresh token and every access token
        (the resource server checks the grant on each call)."""
        return await self.db.write(store.delete_account_session, session_id, did)


def _account_usable(conn: sqlite3.Connection, did: str) -> bool:
    row = account_store.account_takedown_ref(conn, did)
    return row is not None and row["takedown_ref"] is None


def _scope_order(scope: str) -> tuple[int, str]:
    return (SUPPORTED_SCOPES.index(scope) if scope in SUPPORTED_SCOPES else len(SUPPORTED_SCOPES), scope)
