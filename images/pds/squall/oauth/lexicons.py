"""Permission sets for ``include:<nsid>`` scopes, found by lexicon resolution
(https://atproto.com/specs/lexicon, "Lexicon Publication and Resolution"):

    NSID authority (the NSID without its name, reversed: com.example.auth.basic → auth.example.com)
    → DNS TXT ``_lexicon.<authority>`` holding ``did=<DID>``
    → the DID document → its ``#atproto_pds`` endpoint
    → ``com.atproto.repo.getRecord`` of ``com.atproto.lexicon.schema`` with the NSID as record key.

Pluggable for tests: the DNS step is a constructor argument, and in dev mode
``PDS_DEV_LEXICON_AUTHORITIES`` (``com.example=did:web:127.0.0.1%3A8123,…``) maps authorities to
DIDs without DNS, so a loopback "lexicon host" can serve both the DID document and the record.
Answers (and failures, for less time) are kept in a bounded cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import httpx

from ..atproto import syntax
from ..auth.scopes import IncludeScope, PermissionSet, PermissionSetError, expand_permission_set
from ..identity.document import pds_endpoint_from_doc
from ..net import make_client
from .errors import OAuthError

CACHE_TTL = 3600.0
FAILURE_TTL = 60.0
CACHE_SIZE = 256
MAX_LEXICON_BYTES = 128 * 1024
FETCH_TIMEOUT = 5.0
SCHEMA_COLLECTION = "com.atproto.lexicon.schema"

DnsTxt = Callable[[str], Awaitable[list[str]]]


class LexiconResolutionError(Exception):
    pass


def authority_domain(nsid: str) -> str:
    return ".".join(reversed(nsid.split(".")[:-1])).lower()


def parse_overrides(entries: list[str]) -> dict[str, str]:
    """``namespace=did`` pairs (namespace as written in NSIDs, e.g. com.example) → {domain: did}."""
    out: dict[str, str] = {}
    for entry in entries:
        namespace, sep, did = entry.partition("=")
        namespace, did = namespace.strip(), did.strip()
        if not sep or not namespace or "." not in namespace or not syntax.is_valid_did(did):
            raise ValueError(f"expected namespace=did pairs (com.example=did:web:…), got {entry!r}")
        out[".".join(reversed(namespace.lower().split(".")))] = did
    return out


class LexiconResolver:
    def __init__(self, settings: Any, resolve_did: Callable[[str], Awaitable[dict[str, Any] | None]], *,
                 dns_txt: DnsTxt | None = None, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._overrides = parse_overrides(getattr(settings, "dev_lexicon_authorities", None) or [])
        self._resolve_did = resolve_did
        self._dns_txt = dns_txt
        self._own_http = http is None
        self._http = http or make_client(settings, timeout=FETCH_TIMEOUT, max_response_bytes=MAX_LEXICON_BYTES,
                                         headers={"Accept": "application/json"})
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, dict[str, Any] | str]] = OrderedDict()

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def permission_set(self, include: IncludeScope) -> PermissionSet:
        """The permissions ``include`` grants, or OAuthError(invalid_scope) saying why not."""
        try:
            doc = await self.lexicon(include.nsid)
            return expand_permission_set(include, doc)
        except (LexiconResolutionError, PermissionSetError) as exc:
            raise OAuthError("invalid_scope", f"Permission set {include.nsid} could not be used: {exc}") from None

    async def lexicon(self, nsid: str) -> dict[str, Any]:
        now = self._clock()
        cached = self._cache.get(nsid)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(nsid)
            if isinstance(cached[1], str):
                raise LexiconResolutionError(cached[1])
            return cached[1]
        try:
            doc = await self._fetch(nsid)
        except LexiconResolutionError as exc:
            self._remember(nsid, now + FAILURE_TTL, str(exc))
            raise
        self._remember(nsid, now + CACHE_TTL, doc)
        return doc

    def _remember(self, nsid: str, expires: float, value: dict[str, Any] | str) -> None:
        self._cache[nsid] = (expires, value)
        self._cache.move_to_end(nsid)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def authority_did(self, nsid: str) -> str:
        domain = authority_domain(nsid)
        if domain in self._overrides:
            return self._overrides[domain]
        if self._dns_txt is None:
            raise LexiconResolutionError("no DNS resolver for lexicon authorities")
        try:
            records = await self._dns_txt(f"_lexicon.{domain}")
        except Exception as exc:  # noqa: BLE001 - any resolver failure is "not resolvable"
            raise LexiconResolutionError(f"DNS lookup of _lexicon.{domain} failed: {exc}") from None
        dids = {r[len("did="):].strip() for r in records if r.startswith("did=")}
        if len(dids) != 1:
            raise LexiconResolutionError(f"_lexicon.{domain} has no single did= TXT record")
        did = dids.pop()
        if not syntax.is_valid_did(did):
            raise LexiconResolutionError(f"_lexicon.{domain} names an invalid DID")
        return did

    async def _fetch(self, nsid: str) -> dict[str, Any]:
        did = await self.authority_did(nsid)
        doc = await self._resolve_did(did)
        endpoint = pds_endpoint_from_doc(doc) if doc is not None else None
        if endpoint is None:
            raise LexiconResolutionError(f"{did} has no PDS to publish lexicons from")
        try:
            response = await self._http.get(f"{endpoint}/xrpc/com.atproto.repo.getRecord",
                                            params={"repo": did, "collection": SCHEMA_COLLECTION, "rkey": nsid})
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise LexiconResolutionError(f"fetching the schema record failed: {exc}") from None
        if response.status_code != 200:
            raise LexiconResolutionError(f"the schema record was not found (HTTP {response.status_code})")
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, dict) or value.get("$type") != SCHEMA_COLLECTION:
            raise LexiconResolutionError("the record is not a com.atproto.lexicon.schema")
        return value


def dns_txt_with(identity: Any) -> DnsTxt:
    """TXT lookups with the identity service's DNS resolver (the one handles use)."""

    async def lookup(name: str) -> list[str]:
        answer = await identity.handles.dns.resolve(name, "TXT")
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    return lookup
