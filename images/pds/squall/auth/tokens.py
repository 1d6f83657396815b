"""Legacy session tokens as the reference PDS issues them (HS256 JWTs).

access:  header typ ``at+jwt``;      claims scope (access / appPass / appPassPrivileged), sub = DID,
         aud = the service DID, iat, exp = iat + 2 h; Squall adds ``iat_ms`` (the issue time in
         milliseconds) and, for an app password's token, ``app`` (its name), so that revoking the
         app password or changing the password cuts the token off at once (squall.auth.revocation).
refresh: header typ ``refresh+jwt``; scope ``com.atproto.refresh``, sub, aud, jti, iat,
         exp = iat + 90 days. Each refresh token is single-use: refreshing rotates it and the old
         jti is marked, so a replayed token is refused (see squall.xrpc.server).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

SCOPE_ACCESS = "com.atproto.access"
SCOPE_APP_PASS = "com.atproto.appPass"
SCOPE_APP_PASS_PRIVILEGED = "com.atproto.appPassPrivileged"
SCOPE_REFRESH = "com.atproto.refresh"
SCOPE_TAKENDOWN = "com.atproto.takendown"

ACCESS_SCOPES = frozenset({SCOPE_ACCESS, SCOPE_APP_PASS, SCOPE_APP_PASS_PRIVILEGED})

ACCESS_TTL = 2 * 3600
REFRESH_TTL = 90 * 24 * 3600


class TokenError(Exception):
    def __init__(self, message: str, expired: bool = False):
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class TokenClaims:
    did: str
    scope: str
    jti: str | None
    exp: int
    issued_ms: int = 0  # iat_ms, else iat in ms
    app_password: str | None = None


class TokenIssuer:
    VERIFIED_TTL = 10.0  # seconds a verified token's signature check is remembered
    VERIFIED_MAX = 4096

    def __init__(self, secret: str, service_did: str, *, clock=time.time):
        self._secret = secret
        self._aud = service_did
        self._clock = clock
        self._verified: dict[tuple[str, str], tuple[TokenClaims, float]] = {}

    def __repr__(self) -> str:
        return "TokenIssuer(<redacted>)"

    def access_token(self, did: str, scope: str = SCOPE_ACCESS, *, app_password: str | None = None) -> str:
        clock = self._clock()
        now = int(clock)
        claims = {"scope": scope, "sub": did, "aud": self._aud, "iat": now, "exp": now + ACCESS_TTL,
                  "iat_ms": int(clock * 1000)}
        if app_password is not None:
            claims["app"] = app_password
        return jwt.encode(claims, self._secret, algorithm="HS256", headers={"typ": "at+jwt"})

    def refresh_token(self, did: str) -> tuple[str, str, int]:
        """Return (token, jti, exp)."""
        now = int(self._clock())
        jti = secrets.token_urlsafe(24)
        exp = now + REFRESH_TTL
        claims = {"scope": SCOPE_REFRESH, "sub": did, "aud": self._aud, "jti": jti, "iat": now, "exp": exp}
        token = jwt.encode(claims, self._secret, algorithm="HS256", headers={"typ": "refresh+jwt"})
        return token, jti, exp

    def decode(self, token: str, *, expect_typ: str) -> TokenClaims:
        """The claims of a token this issuer signed, or TokenError.

        A token verified once is remembered for at most ``VERIFIED_TTL`` seconds (and never past
        its ``exp``), at most ``VERIFIED_MAX`` of them: checking the signature and the claims is a
        few percent of a small call (issue #21). Only this check is remembered; whatever the caller
        checks after it (the token's scope, an account's status, a revocation) runs every time.
        """
        key = (token, expect_typ)
        hit = self._verified.get(key)
        if hit is not None:
            claims, until = hit
            now = time.time()
            if now < until:
                if claims.exp <= now:  # as PyJWT with leeway 0
                    del self._verified[key]
                    raise TokenError("Token has expired", expired=True)
                return claims
            del self._verified[key]
        claims = self._decode(token, expect_typ=expect_typ)
        if len(self._verified) >= self.VERIFIED_MAX:
            # Oldest first (dicts keep insertion order); a burst of new tokens only costs the check.
            for stale in list(self._verified)[: self.VERIFIED_MAX // 4]:
                del self._verified[stale]
        self._verified[key] = (claims, time.time() + self.VERIFIED_TTL)
        return claims

    def _decode(self, token: str, *, expect_typ: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("Token could not be verified") from exc
        if header.get("alg") != "HS256":
            raise TokenError("Token could not be verified")
        if header.get("typ") != expect_typ:  # a refresh token must never pass as an access token
            raise TokenError("Invalid token type")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self._aud,
                options={"require": ["exp", "sub", "scope"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("Token has expired", expired=True) from exc
        except jwt.PyJWTError as exc:
            raise TokenError("Token could not be verified") from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"].startswith("did:"):
            raise TokenError("Token could not be verified")
        issued_ms = claims.get("iat_ms")
        if not isinstance(issued_ms, int):
            iat = claims.get("iat")
            issued_ms = int(iat) * 1000 if isinstance(iat, (int, float)) else 0
        app = claims.get("app")
        return TokenClaims(did=claims["sub"], scope=str(claims["scope"]), jti=claims.get("jti"), exp=int(claims["exp"]),
                           issued_ms=issued_ms, app_password=app if isinstance(app, str) else None)
