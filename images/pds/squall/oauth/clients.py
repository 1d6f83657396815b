"""OAuth clients as atproto identifies them (https://atproto.com/specs/oauth, "Clients" and
"Client ID Metadata Document"): the ``client_id`` is the https URL of the client's metadata JSON,
fetched (through the SSRF-guarded client), validated and cached briefly. The development form
``http://localhost?redirect_uri=…&scope=…`` describes a loopback public client without a
document.

Confidential clients authenticate at the token endpoint with ``private_key_jwt`` (RFC 7523): an
ES256 client assertion signed by a key from the client's ``jwks`` or ``jwks_uri``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .. import jsonin
from ..net import make_client
from .dpop import unverified_header
from .errors import OAuthError

CACHE_TTL = 60.0
CACHE_SIZE = 256
MAX_METADATA_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_MAX_AGE = 300

SUPPORTED_SCOPES = ("atproto", "transition:generic", "transition:chat.bsky", "transition:email")
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")

_log = logging.getLogger("squall")


@dataclass(frozen=True)
class Client:
    client_id: str
    metadata: dict[str, Any]
    auth_method: str  # 'none' | 'private_key_jwt'
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]
    is_loopback: bool = False
    jwks: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        name = self.metadata.get("client_name")
        if isinstance(name, str) and name.strip():
            return name.strip()[:100]
        return urlsplit(self.client_id).hostname or self.client_id

    @property
    def uri(self) -> str | None:
        uri = self.metadata.get("client_uri")
        return uri if isinstance(uri, str) and uri.startswith("https://") else None

    def redirect_allowed(self, redirect_uri: str) -> bool:
        """Exact match, except that a loopback IP redirect may use any port (RFC 8252 §7.3)."""
        if redirect_uri in self.redirect_uris:
            return True
        asked = urlsplit(redirect_uri)
        if asked.scheme != "http" or _loopback_netloc(asked) is None:
            return False
        for registered in self.redirect_uris:
            reg = urlsplit(registered)
            if (reg.scheme == "http" and _loopback_netloc(reg) == _loopback_netloc(asked)
                    and reg.path == asked.path and reg.query == asked.query):
                return True
        return False


def _loopback_netloc(parts) -> str | None:
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    return host if host in LOOPBACK_HOSTS else None


def _invalid(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def parse_scope(scope: Any) -> frozenset[str]:
    if not isinstance(scope, str):
        return frozenset()
    return frozenset(s for s in scope.split(" ") if s)


def _check_redirect_uri(uri: Any, dev_mode: bool) -> str:
    if not isinstance(uri, str) or not uri or len(uri) > 2048:
        raise _invalid("redirect_uris must be non-empty URL strings")
    parts = urlsplit(uri)
    if parts.fragment:
        raise _invalid(f"redirect_uri {uri!r} must not have a fragment")
    if parts.scheme == "https":
        if not parts.hostname:
            raise _invalid(f"redirect_uri {uri!r} has no host")
        return uri
    if parts.scheme == "http":
        if _loopback_netloc(parts) is not None:
            return uri
        if dev_mode and parts.hostname == "localhost":
            return uri
        raise _invalid(f"redirect_uri {uri!r}: http is only allowed for 127.0.0.1 or [::1]")
    # A native app's private-use scheme is a reversed domain name (RFC 8252 §7.1).
    if "." in parts.scheme and parts.path.startswith("/") and not parts.netloc:
        return uri
    raise _invalid(f"redirect_uri {uri!r} uses an unsupported scheme")


def validate_metadata(client_id: str, doc: Any, *, dev_mode: bool) -> Client:
    """A ``Client`` from a metadata document, or OAuthError(invalid_client_metadata)."""
    if not isinstance(doc, dict):
        raise _invalid("client metadata must be a JSON object")
    if doc.get("client_id") != client_id:
        raise _invalid("client metadata client_id does not match the URL it was fetched from")
    uris = doc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > 20:
        raise _invalid("redirect_uris must be a non-empty array")
    redirect_uris = tuple(_check_redirect_uri(u, dev_mode) for u in uris)
    grant_types = doc.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or "authorization_code" not in grant_types:
        raise _invalid("grant_types must include authorization_code")
    response_types = doc.get("response_types", ["code"])
    if not isinstance(response_types, list) or "code" not in response_types:
        raise _invalid("response_types must include code")
    scopes = parse_scope(doc.get("scope"))
    if "atproto" not in scopes:
        raise _invalid("scope must include atproto")
    if doc.get("dpop_bound_access_tokens") is not True:
        raise _invalid("dpop_bound_access_tokens must be true")
    method = doc.get("token_endpoint_auth_method", "none")
    jwks = None
    if method == "private_key_jwt":
        if doc.get("token_endpoint_auth_signing_alg", "ES256") != "ES256":
            raise _invalid("token_endpoint_auth_signing_alg must be ES256")
        if "jwks" in doc:
            jwks = doc["jwks"]
            if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
                raise _invalid("jwks must be an object with a non-empty keys array")
        elif not isinstance(doc.get("jwks_uri"), str) or not doc["jwks_uri"].startswith(("https://", "http://")):
            raise _invalid("a private_key_jwt client needs jwks or jwks_uri")
    elif method != "none":
        raise _invalid("token_endpoint_auth_method must be none or private_key_jwt")
    return Client(client_id=client_id, metadata=doc, auth_method=method, redirect_uris=redirect_uris,
                  scopes=scopes, jwks=jwks)


def loopback_client(client_id: str) -> Client:
    """The development client ``http://localhost[/]?redirect_uri=…&scope=…`` (no document)."""
    parts = urlsplit(client_id)
    if parts.netloc != "localhost" or parts.path not in ("", "/") or parts.fragment:
        raise OAuthError("invalid_client", "A loopback client_id must be http://localhost with no port or path")
    redirect_uris: list[str] = []
    scope = "atproto"
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "redirect_uri":
            parsed = urlsplit(value)
            if parsed.scheme != "http" or _loopback_netloc(parsed) is None:
                raise OAuthError("invalid_client", "A loopback client's redirect_uri must be http://127.0.0.1 or [::1]")
            redirect_uris.append(value)
        elif name == "scope":
            scope = value
        else:
            raise OAuthError("invalid_client", f"Unexpected parameter {name!r} in a loopback client_id")
    if not redirect_uris:
        redirect_uris = ["http://127.0.0.1/", "http://[::1]/"]
    scopes = parse_scope(scope)
    if "atproto" not in scopes:
        raise OAuthError("invalid_client", "A loopback client's scope must include atproto")
    metadata = {"client_id": client_id, "client_name": "Loopback development client",
                "redirect_uris": redirect_uris, "scope": scope, "application_type": "native",
                "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                "token_endpoint_auth_method": "none", "dpop_bound_access_tokens": True}
    return Client(client_id=client_id, metadata=metadata, auth_method="none", redirect_uris=tuple(redirect_uris),
                  scopes=scopes, is_loopback=True)


class ClientStore:
    """Resolves ``client_id`` values to validated clients, caching documents for ``CACHE_TTL``."""

    def __init__(self, settings: Any, *, clock=time.monotonic):
        self._settings = settings
        self._dev = bool(getattr(settings, "dev_mode", False))
        self._http = make_client(settings, timeout=FETCH_TIMEOUT, max_response_bytes=MAX_METADATA_BYTES,
                                 headers={"Accept": "application/json"})
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Client]] = OrderedDict()

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, client_id: Any) -> Client:
        if not isinstance(client_id, str) or not client_id or len(client_id) > 2048:
            raise OAuthError("invalid_request", "client_id is required")
        parts = urlsplit(client_id)
        if parts.scheme == "http" and parts.hostname == "localhost":
            return loopback_client(client_id)
        allowed = ("https", "http") if self._dev else ("https",)
        if parts.scheme not in allowed or not parts.hostname or parts.fragment or parts.username or parts.password:
            raise OAuthError("invalid_client", "client_id must be an https URL of the client metadata document")
        cached = self._cache.get(client_id)
        now = self._clock()
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(client_id)
            return cached[1]
        doc = await self._fetch_json(client_id, "client metadata")
        client = validate_metadata(client_id, doc, dev_mode=self._dev)
        self._cache[client_id] = (now + CACHE_TTL, client)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return client

    async def _fetch_json(self, url: str, what: str) -> Any:
        # The client sees one generic message for every failure to fetch: the underlying error
        # (refused, reset, timed out, an address the SSRF guard blocked) would make this endpoint a
        # probe of whatever the URL reaches. The detail goes to the log.
        failed = OAuthError("invalid_client_metadata", f"The {what} could not be fetched")
        try:
            response = await self._http.get(url)
            body = await response.aread()
        except httpx.HTTPError as exc:
            _log.info("client metadata fetch failed", extra={"url": url, "error": str(exc)})
            raise failed from None
        if response.status_code != 200:  # an answer from a server the SSRF guard let us reach
            raise OAuthError("invalid_client_metadata",
                             f"Fetching the {what} at {url} answered HTTP {response.status_code}")
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise OAuthError("invalid_client_metadata", f"The {what} is not application/json")
        try:
            return jsonin.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise OAuthError("invalid_client_metadata", f"The {what} is not valid JSON") from None

    # -- client authentication ------------------------------------------------------------------

    async def authenticate(self, client: Client, form: dict[str, str], *, issuer: str, replay) -> str:
        """Check the request's client authentication against the client's registered method;
        returns the method. ``replay(key, exp)`` is False for an assertion jti already seen."""
        assertion_type = form.get("client_assertion_type")
        assertion = form.get("client_assertion")
        if client.auth_method == "none":
            if assertion or assertion_type:
                raise OAuthError("invalid_client", "This client is registered as public (no client authentication)")
            return "none"
        if assertion_type != ASSERTION_TYPE or not assertion:
            raise OAuthError("invalid_client", "This client must authenticate with private_key_jwt", status=401)
        keys = client.jwks if client.jwks is not None else await self._fetch_json(client.metadata["jwks_uri"], "JWKS")
        try:
            header = unverified_header(assertion)
            if header.get("alg") != "ES256":
                raise ValueError("alg")
            key_set = KeySet.import_key_set(keys)
            token = jwt.decode(assertion, key_set, algorithms=["ES256"])
        except (JoseError, ValueError, TypeError, KeyError):
            raise OAuthError("invalid_client", "The client assertion could not be verified", status=401) from None
        claims = token.claims
        now = time.time()
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id or issuer not in auds:
            raise OAuthError("invalid_client", "The client assertion's iss, sub or aud is wrong", status=401)
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or iat < now - ASSERTION_MAX_AGE or iat > now + 30:
            raise OAuthError("invalid_client", "The client assertion is too old or from the future", status=401)
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, (int, float)) or exp < now):
            raise OAuthError("invalid_client", "The client assertion has expired", status=401)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or not replay((client.client_id, jti), now + ASSERTION_MAX_AGE):
            raise OAuthError("invalid_client", "The client assertion jti is missing or was already used", status=401)
        return "private_key_jwt"

