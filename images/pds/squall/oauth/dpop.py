"""DPoP proofs (RFC 9449) as the atproto OAuth profile requires them (https://atproto.com/specs/oauth,
"DPoP"): ES256 proofs only, server-issued nonces mandatory, ``jti`` never accepted twice.

The same checker serves the authorization server (PAR, token) and the resource server (XRPC with
``Authorization: DPoP``): the PDS is both, so one nonce sequence is valid for both.

Nonces are not stored: a nonce is an HMAC of a time step under a per-process key, and the current
step's neighbours are accepted, so nonces rotate every ``NONCE_STEP`` seconds and a restart simply
makes clients fetch a new one (they retry on ``use_dpop_nonce``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

NONCE_STEP = 120  # seconds per nonce
IAT_PAST = 300  # a proof is accepted this long after it was made …
IAT_FUTURE = 30  # … and this far ahead of our clock (skew)
MAX_PROOF_LENGTH = 4096
MAX_JTI_LENGTH = 256
REPLAY_CACHE_SIZE = 100_000


class DpopError(Exception):
    """A refused proof. ``error`` is the OAuth error code (``invalid_dpop_proof`` or
    ``use_dpop_nonce``); the caller answers with a fresh ``DPoP-Nonce`` either way."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class DpopProof:
    jkt: str  # RFC 7638 thumbprint of the proof's public key
    jti: str
    htm: str
    htu: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    """The ``ath`` claim: base64url SHA-256 of the access token's ASCII bytes."""
    return b64url(hashlib.sha256(token.encode()).digest())


def normalize_htu(url: str) -> str:
    """The URL a proof's ``htu`` is compared with: scheme and host lower-cased, no query or fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


class ReplayCache:
    """Keys (``(jkt, jti)`` pairs for proofs) seen within the acceptance window, bounded in memory. When full, the
    oldest entries go first; they are the ones closest to falling out of the window anyway."""

    def __init__(self, size: int):
        self._size = size
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def add(self, key: tuple[str, str], expires: float, now: float) -> bool:
        """False when ``key`` was already seen (a replay)."""
        while self._seen:
            oldest_key, oldest_exp = next(iter(self._seen.items()))
            if oldest_exp > now and len(self._seen) < self._size:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            return False
        self._seen[key] = expires
        return True


class DpopChecker:
    def __init__(self, *, clock=time.time, replay_cache_size: int = REPLAY_CACHE_SIZE, secret: bytes | None = None):
        # PDS_DPOP_SECRET makes nonces survive restarts (and agree between processes).
        self._key = secret or secrets.token_bytes(32)
        self._clock = clock
        self._replays = ReplayCache(replay_cache_size)

    def __repr__(self) -> str:
        return "DpopChecker(<redacted>)"

    # -- nonces ---------------------------------------------------------------------------------

    def _nonce_for(self, step: int) -> str:
        return b64url(hmac.new(self._key, step.to_bytes(8, "big"), hashlib.sha256).digest()[:18])

    def next_nonce(self) -> str:
        return self._nonce_for(int(self._clock()) // NONCE_STEP)

    def _nonce_ok(self, nonce: str) -> bool:
        step = int(self._clock()) // NONCE_STEP
        return any(hmac.compare_digest(nonce, self._nonce_for(s)) for s in (step, step - 1, step + 1))

    # -- proofs ---------------------------------------------------------------------------------

    def check(self, proof: str | None, *, htm: str, htu: str, access_token: str | None = None) -> DpopProof:
        """Verify ``proof`` for a request ``htm htu``; with ``access_token``, also its ``ath``.

        Raises DpopError. The nonce is checked after the signature, so ``use_dpop_nonce`` is only
        ever the answer to an otherwise valid proof (clients retry exactly then).
        """
        if not proof:
            raise DpopError("invalid_dpop_proof", "DPoP proof required")
        if len(proof) > MAX_PROOF_LENGTH or proof.count(".") != 2:
            raise DpopError("invalid_dpop_proof", "Malformed DPoP proof")
        try:
            header = unverified_header(proof)
        except ValueError:
            raise DpopError("invalid_dpop_proof", "Malformed DPoP proof") from None
        if header.get("typ") != "dpop+jwt":
            raise DpopError("invalid_dpop_proof", "DPoP proof typ must be dpop+jwt")
        if header.get("alg") != "ES256":
            raise DpopError("invalid_dpop_proof", "DPoP proof alg must be ES256")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
            raise DpopError("invalid_dpop_proof", "DPoP proof must carry a public P-256 jwk")
        try:
            key = ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk})
            token = jwt.decode(proof, key, algorithms=["ES256"])
        except (JoseError, ValueError, TypeError, KeyError):
            raise DpopError("invalid_dpop_proof", "DPoP proof signature is invalid") from None
        claims = token.claims
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise DpopError("invalid_dpop_proof", "DPoP proof jti is missing or invalid")
        if claims.get("htm") != htm:
            raise DpopError("invalid_dpop_proof", "DPoP proof htm does not match the request method")
        claimed_htu = claims.get("htu")
        if not isinstance(claimed_htu, str) or normalize_htu(claimed_htu) != normalize_htu(htu):
            raise DpopError("invalid_dpop_proof", "DPoP proof htu does not match the request URL")
        iat = claims.get("iat")
        now = self._clock()
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise DpopError("invalid_dpop_proof", "DPoP proof iat is missing")
        if iat < now - IAT_PAST or iat > now + IAT_FUTURE:
            raise DpopError("invalid_dpop_proof", "DPoP proof iat is outside the accepted window")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
                raise DpopError("invalid_dpop_proof", "DPoP proof ath does not match the access token")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not self._nonce_ok(nonce):
            raise DpopError("use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
        jkt = key.thumbprint()
        if not self._replays.add((jkt, jti), now + IAT_PAST + IAT_FUTURE, now):
            raise DpopError("invalid_dpop_proof", "DPoP proof jti has already been used")
        return DpopProof(jkt=jkt, jti=jti, htm=htm, htu=claimed_htu)


def unverified_header(token: str) -> dict:
    """A compact JWS's protected header, not yet verified (to learn which key checks it)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("bad header") from None
    if not isinstance(header, dict):
        raise ValueError("bad header")
    return header
