"""IdentityService: DIDs for new accounts, handle changes, resolution, and the PLC retry loop.

Attached as ``ctx.identity`` (see ``squall.identity.start``). Account creation, the
session endpoints and the XRPC handlers call it; it never creates accounts itself.

did:plc publication (https://web.plc.directory/spec/v0.1/did-plc): the signed genesis operation is
POSTed with one retry on 5xx or a network error; 409 counts as success and 400 is final. When the
directory cannot be reached the caller stores the signed operation in ``account.plc_pending_op``
(``pending_op_blob``) and the background loop here publishes it: at start, then every minute,
a bounded batch at a time, clearing the column once the directory has it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx

from ..atproto import dagcbor, syntax
from ..atproto.crypto import Keypair, PublicKey, load_keypair
from ..atproto.errors import AtprotoError
from ..net import OutboundPolicy, make_client
from ..store import accounts as accounts_store
from ..store.db import Database
from ..store.sequencer import append_event, now_iso
from . import plc, web
from .document import handle_from_doc, pds_endpoint_from_doc, signing_key_from_doc
from .resolver import MAX_DID_DOC_BYTES, DidResolver, HandleResolver

RETRY_INTERVAL = 60.0
RETRY_BATCH = 50


class IdentityError(Exception):
    """Base of the identity errors a caller is expected to handle."""


class IdentityRejected(IdentityError):
    """The directory refused the operation (400): the account must not be created / changed."""


class IdentityUnavailable(IdentityError):
    """The directory could not be reached (5xx twice, timeout, network)."""


class IdentityUnpublished(IdentityUnavailable):
    """A genesis operation could not be published. Store ``pending_op_blob`` in
    ``account.plc_pending_op``; the retry loop publishes it later."""

    def __init__(self, did: str, op: dict[str, Any], reason: str):
        self.did = did
        self.op = op
        super().__init__(f"the PLC operation for {did} is not published yet: {reason}")

    @property
    def pending_op_blob(self) -> bytes:
        return pending_op_blob(self.op)


class HandleChangeRefused(IdentityError):
    """The account's DID method cannot carry a new handle (did:web: the DID is the handle)."""


@dataclass(frozen=True)
class CreatedIdentity:
    did: str
    plc_op: dict[str, Any] | None  # the signed genesis operation (did:plc), None for did:web


def pending_op_blob(op: dict[str, Any]) -> bytes:
    """How a signed operation is stored in ``account.plc_pending_op``: its DAG-CBOR bytes."""
    return dagcbor.encode(op)


def decode_pending_op(blob: bytes | str) -> dict[str, Any]:
    if isinstance(blob, str):
        value = json.loads(blob)
    else:
        try:
            value = dagcbor.decode(bytes(blob))
        except AtprotoError:
            value = json.loads(bytes(blob))  # tolerate a JSON-encoded op written by hand
    if not isinstance(value, dict):
        raise plc.PlcOpError("stored PLC operation is not an object")
    return value


class IdentityService:
    # The document helpers, reachable from the service object for callers that only hold it.
    signing_key_from_doc = staticmethod(signing_key_from_doc)
    pds_endpoint_from_doc = staticmethod(pds_endpoint_from_doc)
    handle_from_doc = staticmethod(handle_from_doc)

    def __init__(self, settings: Any, db: Database, rotation_key: Keypair, *,
                 http: httpx.AsyncClient | None = None, log: logging.Logger | None = None,
                 handle_resolver: HandleResolver | None = None, retry_interval: float = RETRY_INTERVAL,
                 plc_retry_delay: float = 0.5, observe: Any = None):
        self.settings = settings
        self.db = db
        self.rotation_key = rotation_key
        self.log = log or logging.getLogger("squall.identity")
        self._own_http = http is None
        self.http = http or make_client(OutboundPolicy.from_settings(settings), max_response_bytes=MAX_DID_DOC_BYTES,
                                       observe=observe)
        self.plc = plc.PlcClient(settings.did_plc_url, self.http, log=self.log, retry_delay=plc_retry_delay)
        # Resolving other identities waits at most PDS_ID_RESOLVER_TIMEOUT; publishing this
        # server's own PLC operations keeps the longer default of self.http.
        resolver_timeout = settings.id_resolver_timeout / 1000
        self._resolve_http = http or make_client(OutboundPolicy.from_settings(settings),
                                                 max_response_bytes=MAX_DID_DOC_BYTES, timeout=resolver_timeout)
        plc_reads = self.plc if http else plc.PlcClient(settings.did_plc_url, self._resolve_http, log=self.log,
                                                         retry_delay=plc_retry_delay)
        self.handles = handle_resolver or HandleResolver(self._resolve_http, dns_timeout=resolver_timeout, log=self.log)
        self.dids = DidResolver(db, self._resolve_http, plc_reads, allow_http=bool(settings.dev_mode), log=self.log,
                                stale_after=settings.did_cache_stale_ttl / 1000,
                                max_age=settings.did_cache_max_ttl / 1000)
        self.retry_interval = retry_interval
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        # Operations the directory refused (400) are not re-sent every minute: did -> blob refused.
        self._refused: dict[str, bytes] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._retry_loop(), name="plc-pending-ops")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._own_http:
            await self.http.aclose()
            await self._resolve_http.aclose()

    def poke_retry_loop(self) -> None:
        """Run the pending-operation pass now instead of at the next minute."""
        self._wake.set()

    async def _retry_loop(self) -> None:
        while True:
            try:
                await self.publish_pending_ops()
                await self.dids.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("PLC pending-operation pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.retry_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    # -- keys and documents ------------------------------------------------------------------------

    @property
    def rotation_keys(self) -> list[str]:
        """The rotation keys a new did:plc gets: the operator's PDS_RECOVERY_DID_KEY first (it wins
        over the PDS's key within the recovery window), then the PDS's own key."""
        recovery = getattr(self.settings, "recovery_did_key", None)
        own = self.rotation_key.did_key()
        return [recovery, own] if recovery and recovery != own else [own]

    def did_document(self, did: str, handle: str | None, signing_key: PublicKey) -> dict[str, Any]:
        """The DID document of a local account as this PDS states it."""
        return web.account_document(did, handle, signing_key, self.settings.public_url)

    def recommended_did_credentials(self, handle: str | None, signing_key: PublicKey) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rotationKeys": self.rotation_keys,
            "verificationMethods": {"atproto": signing_key.did_key()},
            "services": {plc.PDS_SERVICE_ID: {"type": plc.PDS_SERVICE_TYPE, "endpoint": self.settings.public_url}},
        }
        if handle:
            out["alsoKnownAs"] = [f"at://{handle}"]
        return out

    # -- creating ----------------------------------------------------------------------------------

    async def create_identity(self, handle: str, signing_key: PublicKey) -> CreatedIdentity:
        """A DID for a new account with ``handle`` and repo ``signing_key``.

        did:web: ``did:web:<handle>``, nothing published. did:plc: the genesis operation is built,
        signed with the PDS rotation key and published. Raises IdentityRejected (directory said
        400: do not create the account) or IdentityUnpublished (store its op; retried later).
        """
        handle = syntax.normalize_handle(handle)
        syntax.ensure_valid_handle(handle)
        if self.settings.did_method == "web":
            return CreatedIdentity(web.did_for_handle(handle), None)
        did, op = plc.create_genesis(rotation_key=self.rotation_key, rotation_keys=self.rotation_keys,
                                     signing_key=signing_key, handle=handle,
                                     pds_endpoint=self.settings.public_url)
        await self.publish_op(did, op)
        self.log.info("published did:plc genesis", extra={"did": did})
        return CreatedIdentity(did, op)

    async def publish_op(self, did: str, op: dict[str, Any]) -> None:
        """Send one signed operation. IdentityRejected on 400, IdentityUnpublished when unreachable."""
        try:
            await self.plc.send_operation(did, op)
        except plc.PlcRejected as exc:
            raise IdentityRejected(str(exc)) from None
        except plc.PlcUnavailable as exc:
            raise IdentityUnpublished(did, op, str(exc)) from None

    # -- pending operations ------------------------------------------------------------------------

    async def publish_pending_ops(self, limit: int = RETRY_BATCH) -> dict[str, int]:
        """One pass over ``account.plc_pending_op``; returns counts (published, failed, refused)."""
        rows = await accounts_store.list_plc_pending_ops(self.db, limit)
        counts = {"published": 0, "failed": 0, "refused": 0}
        for row in rows:
            did, blob = row["did"], row["plc_pending_op"]
            if self._refused.get(did) == blob:
                counts["refused"] += 1
                continue
            try:
                op = decode_pending_op(blob)
                plc.check_op(op)
                if op["prev"] is None and plc.did_for_genesis(op) != did:
                    raise plc.PlcOpError("stored genesis operation does not hash to the account's DID")
                await self.plc.send_operation(did, op)
            except (plc.PlcOpError, plc.PlcRejected, ValueError) as exc:
                self._refused[did] = blob
                counts["refused"] += 1
                self.log.error("pending PLC operation refused; it will not be retried until it changes: %s",
                               exc, extra={"did": did})
                continue
            except plc.PlcUnavailable as exc:
                counts["failed"] += 1
                self.log.warning("pending PLC operation still unpublished: %s", exc, extra={"did": did})
                continue
            await self.db.write(accounts_store.clear_plc_pending_op, did, blob)
            counts["published"] += 1
            self.log.info("published pending PLC operation", extra={"did": did})
        return counts

    # -- handles -----------------------------------------------------------------------------------

    async def update_handle(self, did: str, new_handle: str) -> None:
        """Point the DID at ``new_handle``: a new PLC operation for did:plc.

        Does not touch the database or the firehose (``set_handle`` does). did:web raises
        HandleChangeRefused unless the handle is unchanged.
        """
        handle = syntax.normalize_handle(new_handle)
        syntax.ensure_valid_handle(handle)
        if did.startswith("did:web:"):
            if web.host_of(did) != handle:
                raise HandleChangeRefused(
                    f"{did} is a did:web account: its DID is its handle, so the handle cannot change "
                    "(create a new account for a new name)"
                )
            return
        if not plc.is_plc_did(did):
            raise HandleChangeRefused(f"cannot update the handle of {did}: unsupported DID method")
        row = await accounts_store.get_plc_pending_op(self.db, did)
        if row is not None and row["plc_pending_op"] is not None:
            # The directory does not know the DID yet: publish what is pending first.
            pending = decode_pending_op(row["plc_pending_op"])
            await self.publish_op(did, pending)
            await self.db.write(accounts_store.clear_plc_pending_op, did, row["plc_pending_op"])
        try:
            last = await self.plc.get_last_op(did)
        except plc.PlcUnavailable as exc:
            raise IdentityUnavailable(str(exc)) from None
        if last is None:
            raise IdentityRejected(f"the PLC directory does not know {did}")
        try:
            plc.check_op(last)
            if self.rotation_key.did_key() not in plc.normalize_op(last).get("rotationKeys", []):
                raise IdentityRejected(f"this PDS's rotation key no longer controls {did}")
            op = plc.update_handle_op(last, handle=handle, signer=self.rotation_key)
        except plc.PlcOpError as exc:
            raise IdentityRejected(f"cannot build the next operation for {did}: {exc}") from None
        try:
            await self.plc.send_operation(did, op)
        except plc.PlcRejected as exc:
            raise IdentityRejected(str(exc)) from None
        except plc.PlcUnavailable as exc:
            raise IdentityUnavailable(str(exc)) from None
        await self.dids.forget(did)
        self.log.info("published PLC handle update", extra={"did": did, "handle": handle})

    async def set_handle(self, did: str, handle: str) -> int:
        """Store the account's new handle and its #identity event in one transaction; return the seq.

        Raises sqlite3.IntegrityError when another account holds the handle.
        """
        def write(conn: sqlite3.Connection) -> int:
            if not accounts_store.set_handle(conn, did, handle):
                raise LookupError(f"no account {did}")
            return append_event(conn, did, "identity", {"did": did, "handle": handle, "time": now_iso()})

        return await self.db.write(write)

    async def local_did_for_handle(self, handle: str) -> str | None:
        return await accounts_store.did_for_handle(self.db, syntax.normalize_handle(handle))

    async def resolve_handle(self, handle: str, *, verify: bool = True) -> str | None:
        """The DID of ``handle``: local accounts first, then DNS / well-known.

        A handle under one of this service's domains that is not a local account resolves to
        nothing. With ``verify`` (the default) an external answer counts only when the DID's
        document names the handle back.
        """
        handle = syntax.normalize_handle(handle)
        if not syntax.is_valid_handle(handle):
            return None
        local = await self.local_did_for_handle(handle)
        if local is not None:
            return local
        if any(handle.endswith(d) for d in self.settings.service_handle_domains) or handle == self.settings.hostname:
            return None
        did = await self.handles.resolve(handle)
        if did is None or not verify:
            return did
        doc = await self.resolve_did(did)
        if doc is None or handle_from_doc(doc) != handle:
            self.log.info("handle does not verify against its DID document",
                          extra={"handle": handle, "did": did})
            return None
        return did

    # -- DIDs --------------------------------------------------------------------------------------

    async def resolve_did(self, did: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """The DID document, from the cache unless ``fresh`` (see ``DidResolver``).

        A local did:web account's document is built here: this PDS is where it is served from.
        """
        if did.startswith("did:web:"):
            row = await accounts_store.get_signing_key(self.db, did)
            if row is not None:
                key = load_keypair(row["signing_key_alg"], row["signing_key"]).public_key
                return self.did_document(did, row["handle"], key)
        return await self.dids.resolve(did, fresh=fresh)

