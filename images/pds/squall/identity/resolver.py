"""Handle and DID resolution (https://atproto.com/specs/handle#handle-resolution,
https://atproto.com/specs/did#did-resolution).

Handle → DID by two methods run together: a DNS TXT record ``_atproto.<handle>`` holding
``did=<did>``, and ``https://<handle>/.well-known/atproto-did`` holding the DID as text. DNS wins
when both answer. More than one distinct ``did=`` record is an error, not a choice.

DID → document: ``did:plc`` through the PLC directory (``GET <directory>/<did>``), ``did:web``
through ``https://<host>/.well-known/did.json``. Documents of other accounts are cached in the
``did_cache`` table: a cached document is used as is for ``stale_after`` seconds, refreshed after
that, and still served (when the refresh fails) until ``max_age``; older rows are pruned.

Both directions are only a claim until checked against each other; the service does that check
(``IdentityService.resolve_handle``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable

import httpx

from ..atproto import syntax
from ..store import identity as identity_store
from ..store.db import Database
from . import web
from .plc import PlcClient, PlcDirectoryError, is_plc_did

MAX_WELL_KNOWN_BYTES = 2048
MAX_DID_DOC_BYTES = 64 * 1024


def default_well_known_url(handle: str) -> str:
    return f"https://{handle}/.well-known/atproto-did"


class HandleResolver:
    def __init__(self, http: httpx.AsyncClient, *, nameservers: list[str] | None = None, dns_port: int = 53,
                 dns_timeout: float = 3.0, well_known_url: Callable[[str], str] = default_well_known_url,
                 log: logging.Logger | None = None):
        self.http = http
        self.well_known_url = well_known_url
        self.log = log or logging.getLogger("squall.identity")
        self._nameservers = nameservers
        self._dns_port = dns_port
        self._dns_timeout = dns_timeout
        self._dns: Any = None

    @property
    def dns(self) -> Any:
        # dnspython costs ~10 MB of resident memory; most PDSs resolve only their own handles, so
        # it is loaded on the first external lookup rather than at start.
        if self._dns is None:
            import dns.asyncresolver
            import dns.resolver

            try:
                resolver = dns.asyncresolver.Resolver(configure=self._nameservers is None)
            except dns.resolver.NoResolverConfiguration:
                # No /etc/resolv.conf (a minimal container): DNS lookups fail, HTTPS still works.
                resolver = dns.asyncresolver.Resolver(configure=False)
                self.log.warning("no DNS resolver configuration; handle resolution uses HTTPS only")
            if self._nameservers is not None:
                resolver.nameservers = list(self._nameservers)
                resolver.port = self._dns_port
            resolver.lifetime = self._dns_timeout
            resolver.timeout = self._dns_timeout
            self._dns = resolver
        return self._dns

    async def resolve_dns(self, handle: str) -> str | None:
        import dns.exception

        try:
            answer = await self.dns.resolve(f"_atproto.{handle}", "TXT")
        except (dns.exception.DNSException, OSError):
            return None
        found = set()
        for rdata in answer:
            text = b"".join(rdata.strings).decode("utf-8", "replace")
            if text.startswith("did="):
                found.add(text[len("did="):].strip())
        if len(found) != 1:
            return None  # none, or several different claims: not resolvable
        did = found.pop()
        return did if syntax.is_valid_did(did) else None

    async def resolve_http(self, handle: str) -> str | None:
        try:
            response = await self.http.get(self.well_known_url(handle))
        except httpx.HTTPError as exc:
            self.log.debug("well-known handle lookup failed for %s: %s", handle, exc)
            return None
        if response.status_code != 200 or len(response.content) > MAX_WELL_KNOWN_BYTES:
            return None
        lines = response.content.decode("utf-8", "replace").strip().splitlines()
        did = lines[0].strip() if lines else ""
        return did if syntax.is_valid_did(did) else None

    async def resolve(self, handle: str) -> str | None:
        """The DID the handle claims (unverified), or None."""
        dns_task = asyncio.ensure_future(self.resolve_dns(handle))
        http_task = asyncio.ensure_future(self.resolve_http(handle))
        try:
            did = await dns_task
            if did is not None:
                return did
            return await http_task
        finally:
            http_task.cancel()


class DidResolver:
    def __init__(self, db: Database, http: httpx.AsyncClient, plc: PlcClient, *, allow_http: bool = False,
                 stale_after: float = 3600, max_age: float = 24 * 3600, log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.http = http
        self.plc = plc
        self.allow_http = allow_http
        self.stale_after = stale_after
        self.max_age = max_age
        self.log = log or logging.getLogger("squall.identity")
        self.clock = clock

    async def fetch(self, did: str) -> dict[str, Any] | None:
        """Fetch a document without the cache. None when not found or unreachable."""
        try:
            if is_plc_did(did):
                doc = await self.plc.get_document(did)
            elif did.startswith("did:web:"):
                doc = await self._fetch_web(did)
            else:
                return None
        except (PlcDirectoryError, web.DidWebError, httpx.HTTPError) as exc:
            self.log.warning("DID resolution failed for %s: %s", did, exc)
            return None
        if not isinstance(doc, dict) or doc.get("id") != did:
            return None
        return doc

    async def _fetch_web(self, did: str) -> dict[str, Any] | None:
        response = await self.http.get(web.document_url(did, allow_http=self.allow_http))
        if response.status_code != 200 or len(response.content) > MAX_DID_DOC_BYTES:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def cached(self, did: str) -> tuple[dict[str, Any], float] | None:
        row = await identity_store.get_cached_did(self.db, did)
        if row is None:
            return None
        age = self.clock() - row["updated_at"]
        if age > self.max_age:
            return None
        try:
            return json.loads(row["doc"]), age
        except ValueError:
            return None

    async def resolve(self, did: str, *, fresh: bool = False) -> dict[str, Any] | None:
        if not syntax.is_valid_did(did):
            return None
        hit = None if fresh else await self.cached(did)
        if hit is not None and hit[1] <= self.stale_after:
            return hit[0]
        doc = await self.fetch(did)
        if doc is None:
            if hit is not None:
                return hit[0]  # stale but within max_age: better than nothing while the source is down
            if fresh:
                stale = await self.cached(did)
                return stale[0] if stale is not None else None
            return None
        await self.store(did, doc)
        return doc

    async def store(self, did: str, doc: dict[str, Any]) -> None:
        await self.db.write(identity_store.put_cached_did, did, json.dumps(doc, separators=(",", ":")),
                            int(self.clock()))

    async def forget(self, did: str) -> None:
        await self.db.write(identity_store.delete_cached_did, did)

    async def prune(self) -> int:
        cutoff = int(self.clock() - self.max_age)
        return await self.db.write(identity_store.prune_did_cache, cutoff)
