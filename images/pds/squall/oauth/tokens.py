"""OAuth access tokens (RFC 9068 JWTs, ``typ: at+jwt``) bound to a DPoP key (RFC 9449 §6, ``cnf.jkt``).

Signed HS256 with a key derived from the PDS's JWT secret, so no new secret file is needed, while a
legacy session token and an OAuth token can never be taken for one another (different keys; the
legacy verifier also refuses the OAuth scopes). The PDS is both issuer and resource server, so a
symmetric key is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from .dpop import unverified_header

ACCESS_TTL = 15 * 60
_KEY_LABEL = b"squall oauth access token v1"


def access_key(jwt_secret: str) -> bytes:
    return hmac.new(jwt_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


class AccessTokenError(Exception):
    def __init__(self, message: str, expired: bool = False):
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class AccessClaims:
    did: str
    scope: str
    jkt: str
    session_id: str
    client_id: str
    exp: int


class AccessTokens:
    def __init__(self, jwt_secret: str, *, issuer: str, audience: str, clock=time.time):
        self._key = OctKey.import_key(access_key(jwt_secret))
        self._issuer = issuer
        self._audience = audience
        self._clock = clock

    def __repr__(self) -> str:
        return "AccessTokens(<redacted>)"

    def mint(self, *, did: str, scope: str, jkt: str, session_id: str, client_id: str) -> tuple[str, int]:
        now = int(self._clock())
        claims = {"iss": self._issuer, "aud": self._audience, "sub": did, "scope": scope, "client_id": client_id,
                  "cnf": {"jkt": jkt}, "sid": session_id, "jti": secrets.token_urlsafe(16),
                  "iat": now, "exp": now + ACCESS_TTL}
        return jwt.encode({"typ": "at+jwt", "alg": "HS256"}, claims, self._key, algorithms=["HS256"]), ACCESS_TTL

    def decode(self, token: str) -> AccessClaims:
        try:
            header = unverified_header(token)
        except ValueError:
            raise AccessTokenError("Token could not be verified") from None
        if header.get("alg") != "HS256" or header.get("typ") != "at+jwt":
            raise AccessTokenError("Token could not be verified")
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"]).claims
        except (JoseError, ValueError, TypeError):
            raise AccessTokenError("Token could not be verified") from None
        cnf = claims.get("cnf")
        fields = (claims.get("sub"), claims.get("scope"), claims.get("sid"), claims.get("client_id"))
        if (claims.get("iss") != self._issuer or claims.get("aud") != self._audience
                or not all(isinstance(f, str) and f for f in fields) or not isinstance(cnf, dict)
                or not isinstance(cnf.get("jkt"), str) or not isinstance(claims.get("exp"), int)):
            raise AccessTokenError("Token could not be verified")
        if claims["exp"] <= self._clock():
            raise AccessTokenError("Token has expired", expired=True)
        return AccessClaims(did=claims["sub"], scope=claims["scope"], jkt=cnf["jkt"], session_id=claims["sid"],
                            client_id=claims["client_id"], exp=claims["exp"])
