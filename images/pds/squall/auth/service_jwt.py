"""Inter-service auth tokens (https://atproto.com/specs/xrpc, "Inter-Service Authentication").

A service-auth JWT is how this PDS vouches for one of its users towards another service (an
AppView, a chat service, a labeler): it is signed with the **account's repo signing key**, so the
receiver checks it against the ``#atproto`` key in the user's DID document, with no shared secret.

Header ``{"typ": "JWT", "alg": "ES256K" | "ES256"}`` (the key's curve). Claims:

* ``iat`` issued-at and ``exp`` expiry, Unix seconds; tokens are short (60 s by default);
* ``iss`` the user's DID (the reference also accepts ``did#service`` when verifying);
* ``aud`` the DID (or ``did#service``) of the service the token is for;
* ``lxm`` the XRPC method (NSID) the token may be used for, when bound to one;
* ``jti`` a random nonce, so two tokens minted in the same second differ.

The signature is the 64-byte compact low-S ECDSA signature of the ASCII bytes
``base64url(header) "." base64url(payload)``, base64url without padding. It is made with the
protocol core's keys (``squall.atproto.crypto``), not a JWT library: those emit DER or high-S
signatures that atproto services refuse.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..atproto import syntax
from ..atproto.crypto import Keypair, PublicKey

DEFAULT_TTL = 60  # seconds; what the reference uses for proxied calls and getServiceAuth without exp
MAX_TOKEN_LENGTH = 8192

# Token types that belong to other protocols; accepting them here would let, say, an OAuth access
# token pass as a service token.
_FOREIGN_TYPES = frozenset({"at+jwt", "refresh+jwt", "dpop+jwt"})


class ServiceJwtError(Exception):
    """A token that cannot be accepted; ``name`` is the reference's XRPC error name."""

    def __init__(self, message: str, name: str = "BadJwt"):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class ServiceJwtClaims:
    iss: str
    aud: str
    exp: int
    iat: int | None
    lxm: str | None
    jti: str | None
    alg: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not text or any(c not in _B64URL_CHARS for c in text) or len(text) % 4 == 1:
        raise ServiceJwtError("poorly formatted jwt: not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ServiceJwtError("poorly formatted jwt: not base64url") from None


_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _json_segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def create_service_jwt(keypair: Keypair, *, iss: str, aud: str, lxm: str | None = None,
                       exp: int | None = None, iat: int | None = None,
                       clock: Callable[[], float] = time.time) -> str:
    """Sign a service-auth token for ``iss`` (the keypair is that account's repo signing key)."""
    now = int(clock()) if iat is None else int(iat)
    payload: dict[str, Any] = {"iat": now, "iss": iss, "aud": aud,
                               "exp": now + DEFAULT_TTL if exp is None else int(exp)}
    if lxm is not None:
        payload["lxm"] = lxm
    payload["jti"] = secrets.token_hex(16)
    signing_input = f"{_json_segment({'typ': 'JWT', 'alg': keypair.jwt_alg})}.{_json_segment(payload)}"
    signature = keypair.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"


def _decode_json(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(segment).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ServiceJwtError):
            raise
        raise ServiceJwtError("poorly formatted jwt: not JSON") from None
    if not isinstance(value, dict):
        raise ServiceJwtError("poorly formatted jwt: not a JSON object")
    return value


def _is_did_or_service_ref(value: str) -> bool:
    did, sep, fragment = value.partition("#")
    if sep and (not fragment or "#" in fragment):
        return False
    return syntax.is_valid_did(did)


def decode_service_jwt(token: str) -> tuple[dict[str, Any], ServiceJwtClaims, bytes, bytes]:
    """Parse without checking the signature: (header, claims, signing input, signature)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise ServiceJwtError("poorly formatted jwt")
    parts = token.split(".")
    if len(parts) != 3:
        raise ServiceJwtError("poorly formatted jwt")
    header = _decode_json(parts[0])
    if not isinstance(header.get("alg"), str):
        raise ServiceJwtError("poorly formatted jwt: no alg")
    if header.get("typ") in _FOREIGN_TYPES:
        raise ServiceJwtError(f"Invalid jwt type \"{header['typ']}\"", "BadJwtType")
    payload = _decode_json(parts[1])
    iss, aud, exp = payload.get("iss"), payload.get("aud"), payload.get("exp")
    lxm, iat, jti = payload.get("lxm"), payload.get("iat"), payload.get("jti")
    if not isinstance(iss, str) or not isinstance(aud, str):
        raise ServiceJwtError("poorly formatted jwt: iss and aud must be strings")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise ServiceJwtError("poorly formatted jwt: exp must be an integer")
    if lxm is not None and not isinstance(lxm, str):
        raise ServiceJwtError("poorly formatted jwt: lxm must be a string")
    if iat is not None and (not isinstance(iat, int) or isinstance(iat, bool)):
        raise ServiceJwtError("poorly formatted jwt: iat must be an integer")
    if jti is not None and not isinstance(jti, str):
        raise ServiceJwtError("poorly formatted jwt: jti must be a string")
    claims = ServiceJwtClaims(iss=iss, aud=aud, exp=exp, iat=iat, lxm=lxm, jti=jti, alg=header["alg"])
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), _b64url_decode(parts[2])


KeyLookup = Callable[[str, bool], Awaitable[PublicKey | None]]


async def verify_service_jwt(token: str, *, audience: str | None, lxm: str | None, get_key: KeyLookup,
                             clock: Callable[[], float] = time.time) -> ServiceJwtClaims:
    """Check a service-auth token as a receiving service does.

    ``audience`` None skips the audience check, ``lxm`` None the method check. ``get_key(iss,
    fresh)`` returns the issuer's signing key (``fresh`` after a failed check, in case the key was
    rotated since it was cached), or None when the issuer has none.
    """
    _header, claims, signing_input, signature = decode_service_jwt(token)
    if clock() > claims.exp:
        raise ServiceJwtError("jwt expired", "JwtExpired")
    if audience is not None and claims.aud != audience:
        raise ServiceJwtError("jwt audience does not match service did", "BadJwtAudience")
    if lxm is not None and claims.lxm != lxm:
        message = (f"bad jwt lexicon method (\"lxm\"). must match: {lxm}" if claims.lxm is not None
                   else f"missing jwt lexicon method (\"lxm\"). must match: {lxm}")
        raise ServiceJwtError(message, "BadJwtLexiconMethod")
    if not _is_did_or_service_ref(claims.iss):
        raise ServiceJwtError("jwt iss is not a valid did", "BadJwtIss")
    issuer_did = claims.iss.partition("#")[0]
    tried: set[PublicKey] = set()
    for fresh in (False, True):
        key = await get_key(issuer_did, fresh)
        if key is None or key in tried:
            continue
        tried.add(key)
        # A token whose alg names another curve than the key's is refused, never reinterpreted.
        if key.jwt_alg == claims.alg and key.verify(signing_input, signature):
            return claims
    if not tried:
        raise ServiceJwtError("could not find the jwt issuer's signing key", "BadJwtSignature")
    raise ServiceJwtError("jwt signature does not match jwt issuer", "BadJwtSignature")
