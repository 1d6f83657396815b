"""BlobService (``ctx.blobs``): uploads, making blobs permanent, reads and the collector.

Upload (https://atproto.com/specs/blob#blob-lifecycle): the body is streamed into a temp upload
while it is hashed (sha-256 → a raw-codec CID), counted against ``PDS_BLOB_UPLOAD_LIMIT`` and its
first bytes sniffed for a mime type; only then is it recorded in the ``blob`` table with its temp
key. It becomes permanent when a record references it (``refs.link_record_blobs`` in the write
transaction, then :meth:`BlobService.make_permanent` after the commit).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable

import filetype

from ..atproto.cid import CID, RAW
from ..config import Settings
from ..store import blobs as blob_rows
from ..store.db import Database
from ..store.sequencer import now_iso
from ..errors import InvalidRequest, PayloadTooLarge
from .disk import DiskBlobStore
from .gc import GarbageCollector, SweepReport
from .options import BlobOptions
from .store import BlobNotFoundError, BlobStore, BlobStoreError

SNIFF_BYTES = 8192  # what the signature table (``filetype``) looks at
DEFAULT_MIME = "application/octet-stream"
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def sniff_mime(head: bytes) -> str | None:
    """The mime type the content's signature shows, or None when the signature table can't tell."""
    kind = filetype.guess(head) if head else None
    return kind.mime if kind is not None else None


def declared_mime(content_type: str | None) -> str | None:
    """The client's Content-Type without parameters, if it is a plausible concrete type."""
    if not content_type:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    if not _MIME.match(value) or "*" in value:
        return None
    return value


def choose_mime(sniffed: str | None, declared: str | None) -> str:
    # As the reference: the content's signature wins (a client can't label a PNG as text/html);
    # the declared type is kept only for content the table does not recognise (text, SVG, …).
    return sniffed or declared or DEFAULT_MIME


@dataclass(frozen=True)
class BlobInfo:
    did: str
    cid: CID
    mime_type: str
    size: int


def build_store(settings: Settings, options: BlobOptions) -> BlobStore:
    temp = settings.data_directory / "tmp"
    if settings.blobstore_s3_bucket:
        # boto3 adds ~25 MB of resident memory: load it only when S3 storage is configured.
        from .s3 import S3BlobStore, S3Options

        return S3BlobStore(S3Options(
            bucket=settings.blobstore_s3_bucket, region=settings.blobstore_s3_region,
            endpoint=settings.blobstore_s3_endpoint, force_path_style=settings.blobstore_s3_force_path_style,
            access_key_id=settings.blobstore_s3_access_key_id,
            secret_access_key=settings.blobstore_s3_secret_access_key,
            timeout_seconds=settings.blobstore_s3_upload_timeout_ms / 1000,
            max_attempts=options.s3_max_attempts, multipart_threshold=options.s3_multipart_threshold,
        ), temp)
    return DiskBlobStore(settings.blob_directory, temp)


def _track_upload(conn: sqlite3.Connection, did: str, cid: str, mime: str, size: int,
                  key: str) -> tuple[str, str | None, bool, bool]:
    """Record an upload. Returns (mime type to report, old temp key to delete, keep the new temp?,
    already referenced by a record, so make it permanent now?)."""
    row = blob_rows.get_upload_state(conn, did, cid)
    now = now_iso()
    if row is None:
        blob_rows.insert_blob(conn, did, cid, mime, size, key, now)
        # An imported repo (account migration) references its blobs before they are uploaded.
        return mime, None, True, blob_rows.is_blob_referenced(conn, did, cid)
    stored_mime, old_key, takedown, referenced = row
    if takedown is not None:
        raise InvalidRequest("Blob has been takendown, cannot re-upload")
    if old_key is None or referenced:
        # Already stored (or about to be made permanent): keep what records agreed on, and give a
        # blob awaiting collection a fresh grace period, since the client is about to use it.
        blob_rows.refresh_unreferenced(conn, did, cid, now)
        return stored_mime, None, False, False
    blob_rows.replace_temp_upload(conn, did, cid, key, mime, now)
    return mime, old_key, True, False


class BlobService:
    def __init__(self, db: Database, store: BlobStore, *, upload_limit: int, grace_seconds: float,
                 gc_interval_seconds: float, log: logging.Logger) -> None:
        self.db = db
        self.store = store
        self.upload_limit = upload_limit
        self.log = log
        self._uploading: set[str] = set()
        self.uploads = 0  # stored uploads and their bytes, read by squall.metrics at scrape time
        self.upload_bytes = 0
        self.gc = GarbageCollector(db, store, grace_seconds=grace_seconds, interval_seconds=gc_interval_seconds,
                                   log=log, uploads_in_progress=lambda: set(self._uploading),
                                   make_permanent=self.make_permanent)

    @classmethod
    def from_settings(cls, db: Database, settings: Settings, log: logging.Logger,
                      options: BlobOptions | None = None) -> "BlobService":
        options = options or BlobOptions.from_env()
        return cls(db, build_store(settings, options), upload_limit=settings.blob_upload_limit,
                   grace_seconds=settings.blob_gc_grace_seconds,
                   gc_interval_seconds=options.gc_interval(settings.blob_gc_grace_seconds), log=log)

    async def start(self) -> None:
        self.gc.start()

    async def stop(self) -> None:
        await self.gc.stop()
        await self.store.close()

    # -- upload ------------------------------------------------------------------------------------------

    async def upload(self, did: str, content_type: str | None, chunks: AsyncIterator[bytes]) -> dict[str, Any]:
        """Store an upload as a temp blob; return the blob ref (JSON form) for the client.

        Raises PayloadTooLarge past the limit, BlobStoreError when the store fails; in every
        failure nothing is kept.
        """
        key = secrets.token_hex(16)
        hasher = hashlib.sha256()
        head = bytearray()
        size = 0
        limit = self.upload_limit

        async def metered() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Blob exceeds the upload limit of {limit} bytes")
                hasher.update(chunk)
                if len(head) < SNIFF_BYTES:
                    head.extend(chunk[:SNIFF_BYTES - len(head)])
                yield chunk

        self._uploading.add(key)
        stored = False
        try:
            await self.store.put_temp(key, metered())
            stored = True
            cid = CID.from_digest(hasher.digest(), RAW)
            mime = choose_mime(sniff_mime(bytes(head)), declared_mime(content_type))
            mime, old_key, keep, referenced = await self.db.write(_track_upload, did, str(cid), mime, size, key)
        except BaseException:
            if stored:
                await self._quiet_delete_temp(key)
            raise
        finally:
            self._uploading.discard(key)
        self.uploads += 1
        self.upload_bytes += size
        if not keep:
            await self._quiet_delete_temp(key)
        if old_key is not None:
            await self._quiet_delete_temp(old_key)
        if referenced:
            await self.make_permanent(did, [cid])
        return {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": mime, "size": size}

    async def _quiet_delete_temp(self, key: str) -> None:
        try:
            await self.store.delete_temp(key)
        except BlobStoreError as exc:
            # The collector removes temp uploads no row names, so this only delays the cleanup.
            self.log.warning("could not delete temp blob upload %s: %s", key, exc)

    # -- after a record write -------------------------------------------------------------------------

    async def make_permanent(self, did: str, cids: Iterable[CID | str]) -> list[CID]:
        """Move referenced temp blobs to their permanent place and clear their temp keys.

        Idempotent. Called after the commit that referenced them, so it does not raise for store
        failures: it logs them and returns the CIDs not made permanent, which the collector
        retries on its next sweep.
        """
        failed: list[CID] = []
        for value in cids:
            cid = value if isinstance(value, CID) else CID.decode(value)
            if not await self._make_one_permanent(did, cid):
                failed.append(cid)
        return failed

    async def _make_one_permanent(self, did: str, cid: CID) -> bool:
        # Twice: a re-upload of the same bytes may replace the temp key between read and move.
        for _ in range(2):
            key = await blob_rows.get_temp_key(self.db, did, str(cid))
            if key is None:
                return True
            try:
                await self.store.make_permanent(key, did, cid)
            except BlobNotFoundError:
                continue
            except BlobStoreError as exc:
                self.log.error("could not make blob %s of %s permanent: %s", cid, did, exc)
                return False
            await self.db.write(blob_rows.clear_temp_key, did, str(cid), key)
            return True
        self.log.error("could not make blob %s of %s permanent: its temp upload is gone", cid, did)
        return False

    # -- reads --------------------------------------------------------------------------------------------

    async def info(self, did: str, cid: CID) -> BlobInfo | None:
        """A permanent, not taken-down blob of ``did``; None otherwise."""
        row = await blob_rows.get_permanent_blob(self.db, did, str(cid))
        if row is None:
            return None
        return BlobInfo(did, cid, row["mime_type"], row["size"])

    async def open(self, info: BlobInfo, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return await self.store.get(info.did, info.cid, start, end)

    async def collect_garbage(self) -> SweepReport:
        return await self.gc.sweep()

