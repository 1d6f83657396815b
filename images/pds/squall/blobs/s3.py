"""Blob store on an S3-compatible service (AWS S3, Cloudflare R2, MinIO …) through boto3.

Objects: ``<did>/<cid>`` for blobs, ``tmp/<key>`` for staged uploads (the reference PDS's layout).
boto3 is synchronous, so every call runs in a worker thread. An upload is first spooled to a
local file while it is hashed and size-checked (nothing unbounded stays in memory, and a retry
can re-send the body), then sent with boto3's managed transfer, which switches to multipart
uploads for big blobs and aborts a multipart upload that fails.

Checksums: newer botocore adds CRC checksums to every request and validates them on responses;
R2 and several other S3 clones reject or mangle those, so both are limited to the operations that
require them (``when_required``). Retries are bounded (standard mode, ``max_attempts`` in total)
and every request has connect/read timeouts, so a dead endpoint yields an error, not a hang.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..atproto.cid import CID
from .store import BlobNotFoundError, BlobStore, BlobStoreError, TempEntry, blob_path_parts, check_temp_key

TEMP_PREFIX = "tmp/"
READ_CHUNK = 256 * 1024
SPOOL_SUFFIX = ".s3spool"
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class S3Options:
    bucket: str
    region: str | None = None
    endpoint: str | None = None
    force_path_style: bool = True
    access_key_id: str | None = None
    secret_access_key: str | None = None
    timeout_seconds: float = 20.0
    max_attempts: int = 3
    multipart_threshold: int = 16 * 1024 * 1024
    multipart_chunksize: int = 8 * 1024 * 1024

    def __repr__(self) -> str:  # never print the secret
        return f"S3Options(bucket={self.bucket!r}, endpoint={self.endpoint!r}, region={self.region!r})"


class S3BlobStore(BlobStore):
    def __init__(self, options: S3Options, spool_directory: Path) -> None:
        self.options = options
        self.bucket = options.bucket
        self.spool = Path(spool_directory)
        self.spool.mkdir(parents=True, exist_ok=True)
        # Spool files only live during one request; any left over are from a crash.
        for stale in self.spool.glob(f"*{SPOOL_SUFFIX}"):
            stale.unlink(missing_ok=True)
        config = Config(
            s3={"addressing_style": "path" if options.force_path_style else "virtual"},
            signature_version="s3v4",
            retries={"mode": "standard", "total_max_attempts": options.max_attempts},
            connect_timeout=options.timeout_seconds,
            read_timeout=options.timeout_seconds,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=20,
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=options.endpoint, region_name=options.region or "us-east-1",
            aws_access_key_id=options.access_key_id, aws_secret_access_key=options.secret_access_key,
            config=config,
        )
        self.transfer = TransferConfig(multipart_threshold=options.multipart_threshold,
                                       multipart_chunksize=options.multipart_chunksize,
                                       max_concurrency=4, use_threads=True)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r})"

    @staticmethod
    def _key(did: str, cid: CID) -> str:
        d, c = blob_path_parts(did, cid)
        return f"{d}/{c}"

    @staticmethod
    def _temp_key(key: str) -> str:
        return TEMP_PREFIX + check_temp_key(key)

    async def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise BlobNotFoundError(f"{what}: not found") from None
            raise BlobStoreError(f"{what} failed: S3 error {code or 'unknown'}") from exc
        except (BotoCoreError, Boto3Error, OSError) as exc:
            # The transfer manager wraps S3 errors in its own (S3UploadFailedError …).
            raise BlobStoreError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    # -- uploads ---------------------------------------------------------------------------------------

    async def put_temp(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        object_key = self._temp_key(key)
        spool = self.spool / f"{key}{SPOOL_SUFFIX}"
        f = await asyncio.to_thread(open, spool, "xb")
        try:
            try:
                buf = bytearray()
                async for chunk in chunks:
                    buf += chunk
                    if len(buf) >= 1024 * 1024:
                        await asyncio.to_thread(f.write, bytes(buf))
                        buf.clear()
                if buf:
                    await asyncio.to_thread(f.write, bytes(buf))
            finally:
                await asyncio.to_thread(f.close)
            try:
                await self._call("upload", self.client.upload_file, str(spool), self.bucket, object_key,
                                 Config=self.transfer)
            except BaseException:
                # A failed single PUT stores nothing and a failed multipart upload is aborted by
                # the transfer manager; this removes a complete object whose response was lost.
                await self._quiet_delete(object_key)
                raise
        finally:
            await asyncio.to_thread(spool.unlink, missing_ok=True)

    async def _quiet_delete(self, object_key: str) -> None:
        try:
            await self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=object_key)
        except BlobStoreError:
            pass

    async def make_permanent(self, key: str, did: str, cid: CID) -> None:
        src, dst = self._temp_key(key), self._key(did, cid)
        try:
            await self._call("copy", self.client.copy, {"Bucket": self.bucket, "Key": src}, self.bucket, dst,
                             Config=self.transfer)
        except BlobNotFoundError:
            if await self.has(did, cid):
                return  # made permanent earlier (the call is idempotent)
            raise
        await self._call("delete temp", self.client.delete_object, Bucket=self.bucket, Key=src)

    # -- reads -----------------------------------------------------------------------------------------

    async def get(self, did: str, cid: CID, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(did, cid)}
        if start or end is not None:
            kw["Range"] = f"bytes={start}-{'' if end is None else end}"
        resp = await self._call(f"get {cid}", self.client.get_object, **kw)
        return _read_body(resp["Body"])

    async def size(self, did: str, cid: CID) -> int:
        resp = await self._call(f"head {cid}", self.client.head_object, Bucket=self.bucket, Key=self._key(did, cid))
        return int(resp["ContentLength"])

    async def has(self, did: str, cid: CID) -> bool:
        try:
            await self.size(did, cid)
        except BlobNotFoundError:
            return False
        return True

    async def has_temp(self, key: str) -> bool:
        try:
            await self._call("head temp", self.client.head_object, Bucket=self.bucket, Key=self._temp_key(key))
        except BlobNotFoundError:
            return False
        return True

    # -- deletes and listing --------------------------------------------------------------------------

    async def delete(self, did: str, cid: CID) -> None:
        await self._call(f"delete {cid}", self.client.delete_object, Bucket=self.bucket, Key=self._key(did, cid))

    async def delete_temp(self, key: str) -> None:
        await self._call("delete temp", self.client.delete_object, Bucket=self.bucket, Key=self._temp_key(key))

    async def list_temp(self) -> list[TempEntry]:
        return await self._call("list temp", self._list_temp)

    def _list_temp(self) -> list[TempEntry]:
        now = time.time()
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=TEMP_PREFIX):
            for obj in page.get("Contents", ()):
                name = obj["Key"][len(TEMP_PREFIX):]
                try:
                    check_temp_key(name)
                except ValueError:
                    continue
                out.append(TempEntry(name, max(0.0, now - obj["LastModified"].timestamp())))
        # A spool file belongs to an upload in progress in this process; the service tracks those.
        return out

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


async def _read_body(body: Any) -> AsyncIterator[bytes]:
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(body.read, READ_CHUNK)
            except (BotoCoreError, OSError) as exc:
                raise BlobStoreError(f"reading blob failed: {exc}") from exc
            if not chunk:
                break
            yield chunk
    finally:
        await asyncio.to_thread(body.close)

