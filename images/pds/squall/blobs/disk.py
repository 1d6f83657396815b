"""Blob store on the local file system: ``<blob_directory>/<did>/<cid>``, uploads staged in ``<data>/tmp``.

A blob appears at its permanent path only by an atomic rename (or, across file systems, by a copy
to a hidden name in the target directory followed by a rename), so a reader never sees a partial
blob and a crash leaves at most a stray temp file that the garbage collector removes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import time
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from ..atproto.cid import CID
from .store import BlobNotFoundError, BlobStore, BlobStoreError, TempEntry, blob_path_parts, check_temp_key

WRITE_BUFFER = 1024 * 1024  # batch small network chunks into fewer thread hops
READ_CHUNK = 256 * 1024


class DiskBlobStore(BlobStore):
    def __init__(self, blob_directory: Path, temp_directory: Path) -> None:
        self.root = Path(blob_directory)
        self.temp = Path(temp_directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DiskBlobStore({str(self.root)!r})"

    def _temp_path(self, key: str) -> Path:
        return self.temp / check_temp_key(key)

    def _path(self, did: str, cid: CID) -> Path:
        d, c = blob_path_parts(did, cid)
        return self.root / d / c

    async def put_temp(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        path = self._temp_path(key)
        f: BinaryIO = await asyncio.to_thread(open, path, "xb")
        try:
            buf = bytearray()
            async for chunk in chunks:
                buf += chunk
                if len(buf) >= WRITE_BUFFER:
                    await asyncio.to_thread(f.write, bytes(buf))
                    buf.clear()
            if buf:
                await asyncio.to_thread(f.write, bytes(buf))
            await asyncio.to_thread(_flush_and_close, f)
        except BaseException:
            await asyncio.to_thread(_discard, f, path)
            raise

    async def make_permanent(self, key: str, did: str, cid: CID) -> None:
        await asyncio.to_thread(self._make_permanent, self._temp_path(key), self._path(did, cid))

    @staticmethod
    def _make_permanent(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            if dst.exists():
                return  # made permanent earlier (the call is idempotent)
            raise BlobNotFoundError(f"temp upload {src.name} is gone") from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise BlobStoreError(f"could not store blob: {exc.strerror}") from exc
            # The blob directory is on another file system: copy beside the target, then rename.
            partial = dst.with_name(f".{dst.name}.{src.name}.partial")
            try:
                with open(src, "rb") as fin, open(partial, "wb") as fout:
                    shutil.copyfileobj(fin, fout, READ_CHUNK)
                    fout.flush()
                    os.fsync(fout.fileno())
                os.replace(partial, dst)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            src.unlink(missing_ok=True)

    async def get(self, did: str, cid: CID, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(did, cid)
        try:
            f: BinaryIO = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {cid} not found") from None
        if start:
            await asyncio.to_thread(f.seek, start)
        return _read_file(f, start, end)

    async def size(self, did: str, cid: CID) -> int:
        try:
            return (await asyncio.to_thread(os.stat, self._path(did, cid))).st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {cid} not found") from None

    async def has(self, did: str, cid: CID) -> bool:
        return await asyncio.to_thread(self._path(did, cid).is_file)

    async def delete(self, did: str, cid: CID) -> None:
        path = self._path(did, cid)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def delete_temp(self, key: str) -> None:
        await asyncio.to_thread(self._temp_path(key).unlink, missing_ok=True)

    async def has_temp(self, key: str) -> bool:
        return await asyncio.to_thread(self._temp_path(key).is_file)

    async def list_temp(self) -> list[TempEntry]:
        return await asyncio.to_thread(self._list_temp)

    def _list_temp(self) -> list[TempEntry]:
        now = time.time()
        out = []
        with os.scandir(self.temp) as entries:
            for entry in entries:
                try:
                    check_temp_key(entry.name)
                    mtime = entry.stat().st_mtime
                except (ValueError, FileNotFoundError):
                    continue  # not ours, or removed while listing
                out.append(TempEntry(entry.name, max(0.0, now - mtime)))
        return out


def _flush_and_close(f: BinaryIO) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


def _discard(f: BinaryIO, path: Path) -> None:
    try:
        f.close()
    finally:
        path.unlink(missing_ok=True)


async def _read_file(f: BinaryIO, start: int, end: int | None) -> AsyncIterator[bytes]:
    try:
        remaining = None if end is None else end - start + 1
        while remaining is None or remaining > 0:
            n = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
            chunk = await asyncio.to_thread(f.read, n)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(f.close)
