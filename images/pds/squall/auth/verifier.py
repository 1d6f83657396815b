"""Who is calling: turns the Authorization header into an ``AuthResult`` for a method's policy.

User credentials are the legacy session JWTs (squall.auth.tokens). The admin credential is either
HTTP Basic ``admin:<PDS_ADMIN_PASSWORD>`` (as the reference) or a Bearer token whose argon2 hash is
``PDS_ADMIN_TOKEN_HASH``. A user token on an admin route is refused, and vice versa.

OAuth access tokens (``Authorization: DPoP …``) are checked by the verifier squall.oauth attaches
(``attach_dpop``); a grant with ``transition:generic`` carries the legacy scope it maps onto, so
the policies below apply to it as to an app password; a grant with granular permissions only is
checked per method by squall.auth.permissions instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from argon2 import PasswordHasher

from ..errors import AuthRequired, Forbidden, InvalidRequest
from .passwords import verify_password
from .policy import Auth
from .revocation import TokenCutoffs
from .scopes import Permissions
from .tokens import (
    ACCESS_SCOPES,
    SCOPE_ACCESS,
    SCOPE_APP_PASS,
    SCOPE_APP_PASS_PRIVILEGED,
    SCOPE_REFRESH,
    SCOPE_TAKENDOWN,
    TokenError,
    TokenIssuer,
)


@dataclass(frozen=True)
class AuthResult:
    did: str | None = None
    scope: str | None = None
    is_admin: bool = False
    refresh_jti: str | None = None
    token_exp: int | None = None
    oauth_scope: str | None = None  # set for an OAuth (DPoP) token
    oauth_client_id: str | None = None
    # The OAuth token's permissions (squall.auth.scopes); None for legacy credentials.
    permissions: Permissions | None = None

    @property
    def is_user(self) -> bool:
        return self.did is not None

    @property
    def is_app_password(self) -> bool:
        return self.scope is not None and self.scope != SCOPE_ACCESS and self.scope in ACCESS_SCOPES

    @property
    def is_privileged(self) -> bool:
        return self.scope in (SCOPE_ACCESS, SCOPE_APP_PASS_PRIVILEGED)


ANONYMOUS = AuthResult()


class AuthVerifier:
    def __init__(self, issuer: TokenIssuer, hasher: PasswordHasher, *, admin_password: str | None,
                 admin_token_hash: str | None, revocations: TokenCutoffs | None = None):
        self._issuer = issuer
        # Access tokens cut off by an app-password revocation or a password change (None: no check).
        self.revocations = revocations
        self._hasher = hasher
        self._admin_password = admin_password
        self._admin_token_hash = admin_token_hash
        # sha256 of admin tokens already verified against the argon2 hash; argon2 takes ~20 ms and
        # scripts poll admin status, so a verified token is remembered (bounded, by digest only).
        self._verified_admin_tokens: set[bytes] = set()
        self._dpop: Callable[[str], Awaitable[Any]] | None = None

    def forget_revocations(self, did: str) -> None:
        """A cut-off was just written for ``did`` (password change, app password revoked): drop
        the cached view so its tokens are refused from the next request on."""
        if self.revocations is not None:
            self.revocations.invalidate(did)

    def attach_dpop(self, verify: Callable[[str], Awaitable[Any]]) -> None:
        """Accept ``Authorization: DPoP <token>``; ``verify(token)`` returns a grant with ``did``,
        ``legacy_scope``, ``oauth_scope``, ``client_id`` and ``exp``, or raises an XRPC error."""
        self._dpop = verify

    def __repr__(self) -> str:
        return "AuthVerifier(<redacted>)"

    async def verify(self, policy: Auth, authorization: str | None) -> AuthResult:
        if policy is Auth.NONE:
            return ANONYMOUS
        scheme, _, value = (authorization or "").partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if not authorization:
            if policy is Auth.OPTIONAL:
                return ANONYMOUS
            raise AuthRequired("Authentication Required")

        if policy in (Auth.ADMIN, Auth.ACCESS_OR_ADMIN):
            admin = await self._check_admin(scheme, value)
            if admin:
                return AuthResult(is_admin=True)
            if policy is Auth.ADMIN:
                raise AuthRequired("Admin credentials required", "AuthenticationRequired")

        if scheme == "dpop" and value and self._dpop is not None and policy is not Auth.REFRESH:
            grant = await self._dpop(value)
            result = AuthResult(did=grant.did, scope=grant.legacy_scope or SCOPE_APP_PASS, token_exp=grant.exp,
                                oauth_scope=grant.oauth_scope, oauth_client_id=grant.client_id,
                                permissions=Permissions(grant.oauth_scope))
            if grant.legacy_scope is None:
                # Granular permissions: the method's rule decides once the input is read
                # (squall.auth.permissions, run by the dispatcher), not the legacy policy.
                return result
            return self._apply_policy(policy, result)

        if scheme != "bearer" or not value:
            raise AuthRequired("Unexpected authorization type", "AuthenticationRequired")

        if policy is Auth.REFRESH:
            claims = self._decode(value, "refresh+jwt")
            if claims.scope != SCOPE_REFRESH or not claims.jti:
                raise InvalidRequest("Invalid token scope", "InvalidToken")
            return AuthResult(did=claims.did, scope=claims.scope, refresh_jti=claims.jti, token_exp=claims.exp)

        claims = self._decode(value, "at+jwt")
        if policy is Auth.ACCESS_OR_TAKENDOWN and claims.scope == SCOPE_TAKENDOWN:
            return AuthResult(did=claims.did, scope=claims.scope, token_exp=claims.exp)
        if claims.scope not in ACCESS_SCOPES:
            raise InvalidRequest("Bad token scope", "InvalidToken")
        if self.revocations is not None and await self.revocations.revoked(claims.did, claims.app_password,
                                                                           claims.issued_ms):
            # ExpiredToken, as for a lapsed token: clients then refresh, which fails if the session ended.
            raise InvalidRequest("Token has been revoked", "ExpiredToken")
        return self._apply_policy(policy, AuthResult(did=claims.did, scope=claims.scope, token_exp=claims.exp))

    @staticmethod
    def _apply_policy(policy: Auth, result: AuthResult) -> AuthResult:
        if policy is Auth.FULL and result.scope != SCOPE_ACCESS:
            raise Forbidden("This method requires a full-access session, not an app password", "InvalidToken")
        if policy is Auth.PRIVILEGED and not result.is_privileged:
            raise Forbidden("This method requires a privileged app password or a full session", "InvalidToken")
        return result

    def _decode(self, token: str, typ: str):
        try:
            return self._issuer.decode(token, expect_typ=typ)
        except TokenError as exc:
            if exc.expired:
                raise InvalidRequest("Token has expired", "ExpiredToken") from None
            raise InvalidRequest("Token could not be verified", "InvalidToken") from None

    async def _check_admin(self, scheme: str, value: str) -> bool:
        if scheme == "basic" and self._admin_password:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            expected = f"admin:{self._admin_password}".encode()
            return hmac.compare_digest(f"{user}:{password}".encode(), expected)
        if scheme == "bearer" and self._admin_token_hash and value.count(".") != 2:
            digest = hashlib.sha256(value.encode()).digest()
            if digest in self._verified_admin_tokens:
                return True
            if await verify_password(self._hasher, self._admin_token_hash, value):
                if len(self._verified_admin_tokens) < 64:
                    self._verified_admin_tokens.add(digest)
                return True
        return False
