"""The PDS as OAuth resource server (https://atproto.com/specs/oauth, "Tokens and Session
Management"; RFC 9449 §7): ``Authorization: DPoP <token>`` plus a ``DPoP`` proof for this very
request (method, URL without query, ``ath`` of the token, the key the token is bound to, a server
nonce, an unused ``jti``).

The verifier sees only the Authorization header, so a small ASGI middleware records the parts of
the request a proof is checked against (method, path, DPoP header) in a context variable for the
duration of the request, and adds a fresh ``DPoP-Nonce`` to the answer of every request that
carried a proof, so clients keep a current nonce without a failed round trip.

OAuth scopes: ``transition:generic`` maps onto the legacy policies and acts like an app password
(no account management), with ``transition:chat.bsky`` like a privileged one. Any other grant is
checked per call against its permission scopes (squall.auth.permissions).

Refusals use the spec's error codes (RFC 6750 §3.1, RFC 9449 §7.1) as the XRPC error name and in
``WWW-Authenticate``: ``invalid_token``, ``invalid_dpop_proof``, ``use_dpop_nonce``.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from ..auth.tokens import SCOPE_APP_PASS, SCOPE_APP_PASS_PRIVILEGED
from ..errors import AuthRequired
from .dpop import DpopError
from .tokens import AccessTokenError


@dataclass(frozen=True)
class RequestFacts:
    method: str
    path: str
    dpop: str | None


# Request-scoped (set and reset by the middleware around each request), not shared state.
CURRENT_REQUEST: contextvars.ContextVar[RequestFacts | None] = contextvars.ContextVar("squall_oauth_request",
                                                                                    default=None)


@dataclass(frozen=True)
class OAuthGrant:
    did: str
    legacy_scope: str | None  # None: granular permissions, no legacy policy
    oauth_scope: str
    client_id: str
    exp: int


def legacy_scope_for(oauth_scope: str) -> str | None:
    scopes = set(oauth_scope.split(" "))
    if "transition:generic" not in scopes:
        return None
    return SCOPE_APP_PASS_PRIVILEGED if "transition:chat.bsky" in scopes else SCOPE_APP_PASS


class _DpopAuthError(AuthRequired):
    """401 with ``WWW-Authenticate: DPoP error=…`` (RFC 9449 §7.1) and a fresh nonce; the XRPC
    error name is the same spec code."""

    def __init__(self, error: str, message: str, nonce: str):
        quoted = message.replace("\\", "").replace('"', "'")
        challenge = f'DPoP algs="ES256", error="{error}", error_description="{quoted}"'
        super().__init__(message, error, headers={"WWW-Authenticate": challenge, "DPoP-Nonce": nonce,
                                                  "Access-Control-Expose-Headers": "WWW-Authenticate, DPoP-Nonce"})


class ResourceVerifier:
    def __init__(self, provider: Any):
        self._provider = provider

    async def __call__(self, token: str) -> OAuthGrant:
        provider = self._provider
        facts = CURRENT_REQUEST.get()
        nonce = provider.dpop.next_nonce()
        if facts is None:  # not an HTTP request the middleware saw (cannot happen for XRPC routes)
            raise _DpopAuthError("invalid_dpop_proof", "DPoP proof required", nonce)
        try:
            claims = provider.tokens.decode(token)
        except AccessTokenError as exc:
            raise _DpopAuthError("invalid_token", str(exc), nonce) from None
        try:
            proof = provider.dpop.check(facts.dpop, htm=facts.method, htu=provider.endpoint(facts.path),
                                        access_token=token)
        except DpopError as exc:
            raise _DpopAuthError(exc.error, exc.description, nonce) from None
        if proof.jkt != claims.jkt:
            raise _DpopAuthError("invalid_dpop_proof", "DPoP key does not match the token's binding", nonce)
        if not await provider.session_active(claims.session_id, claims.did):
            raise _DpopAuthError("invalid_token", "Token has been revoked", nonce)
        return OAuthGrant(did=claims.did, legacy_scope=legacy_scope_for(claims.scope), oauth_scope=claims.scope,
                          client_id=claims.client_id, exp=claims.exp)


class DpopRequestMiddleware:
    """Plain ASGI middleware (see the module doc); does nothing for requests without a DPoP header."""

    def __init__(self, app, get_provider):
        self.app = app
        self.get_provider = get_provider

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dpop = None
        for name, value in scope.get("headers", ()):
            if name == b"dpop":
                dpop = value.decode("latin-1")
                break
        if dpop is None:
            await self.app(scope, receive, send)
            return
        token = CURRENT_REQUEST.set(RequestFacts(method=scope.get("method", ""), path=scope.get("path", ""),
                                                 dpop=dpop))

        async def send_with_nonce(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"dpop-nonce" for k, _ in headers):
                    provider = self.get_provider()
                    if provider is not None:
                        headers.append((b"dpop-nonce", provider.dpop.next_nonce().encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_nonce)
        finally:
            CURRENT_REQUEST.reset(token)

