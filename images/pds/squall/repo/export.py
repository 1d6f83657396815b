"""CAR exports of a repository (https://atproto.com/specs/repository#car-file-serialization,
com.atproto.sync.getRepo / getRecord / getBlocks).

``RepoExport`` streams a whole repo, or the blocks written after a ``since`` rev, from a private
read-only connection holding one read transaction (``Database.open_snapshot``, pooled): every
page comes from the same snapshot as the root, however long the client takes, and a slow download
never holds a connection of the shared reader pool. Blocks are read and framed on the snapshot's
thread in chunks of about 64 KiB (one hop per chunk), so memory stays flat whatever the repo's size. The commit is the CAR's root and comes first; the rest follow in
storage order (the reference does the same: the spec does not order blocks).

``record_proof`` builds the small ``sync.getRecord`` CAR with the core's proof walk, fetching the
blocks it asks for on demand within one read transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator

import aiosqlite

from ..atproto.blockstore import MemoryBlockStore, MissingBlock
from ..atproto.car import car_header, encode_car
from ..atproto.cid import CID, encode_varint
from ..atproto.mst import NodeCache
from ..atproto.repo import record_proof_blocks
from ..store import repos
from ..store.db import Snapshot

if TYPE_CHECKING:
    from ..store.db import Database

PAGE_ROWS = 500
CHUNK_BYTES = 64 * 1024
WHOLE_BYTES = 1024 * 1024  # a CAR up to this size goes out as one body (with Content-Length)
MAX_PROOF_FETCHES = 64  # an MST path is a few nodes deep; far more means a broken tree


class RepoNotStored(Exception):
    """The DID has no repo root."""


class RepoExport:
    """Open with :meth:`open` (raises RepoNotStored before any byte is sent), then iterate
    :meth:`chunks`; the snapshot closes when the iteration ends or is abandoned."""

    def __init__(self, snapshot: Snapshot, did: str, root: bytes, commit_block: bytes, since: str | None):
        self._snapshot = snapshot
        self.did = did
        self.root = CID.from_bytes(root)
        self._root_bytes = root
        self._commit_block = commit_block
        self.since = since
        self._cursor: Any = None
        self._read: list[bytes] = []  # chunks read ahead by whole_if_small

    @classmethod
    async def open(cls, db: "Database", did: str, since: str | None = None) -> "RepoExport":
        snapshot = await db.open_snapshot()
        try:
            head = await snapshot.run(repos.export_head, did)
            if head is None:
                raise RepoNotStored(did)
        except BaseException:
            await snapshot.close()
            raise
        return cls(snapshot, did, head[0], head[1], since)

    async def close(self) -> None:
        await self._snapshot.close()

    async def whole_if_small(self, limit: int = WHOLE_BYTES) -> bytes | None:
        """The whole CAR when it is at most about ``limit`` bytes (the export is then closed: send
        it as one body with its length, no streaming machinery); None otherwise, and
        :meth:`chunks` then starts with what was read."""
        try:
            size = 0
            while size <= limit:
                chunk = await self._next_chunk()
                if chunk is None:
                    await self.close()
                    return b"".join(self._read)
                self._read.append(chunk)
                size += len(chunk)
        except BaseException:
            await self.close()
            raise
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while self._read:
                yield self._read.pop(0)
            chunk = await self._next_chunk()
            while chunk is not None:
                yield chunk
                chunk = await self._next_chunk()
        finally:
            await self.close()

    async def _next_chunk(self) -> bytes | None:
        # Each hop to the snapshot's thread reads and frames about CHUNK_BYTES of blocks.
        root = self._root_bytes
        if self._cursor is None:
            head = bytearray(car_header([self.root]))
            head += encode_varint(len(root) + len(self._commit_block)) + root + self._commit_block
            self._cursor = await self._snapshot.run(repos.export_cursor, self.did, self.since)
            return await self._snapshot.run(_frame_chunk, self._cursor, root, bytes(head))
        return await self._snapshot.run(_frame_chunk, self._cursor, root, b"")


def _frame_chunk(conn: Any, cursor: Any, root: bytes, prefix: bytes) -> bytes | None:
    """``prefix`` and the CAR sections of the next rows of ``cursor``, about CHUNK_BYTES; None at
    the end (when nothing is left to send)."""
    parts = [prefix] if prefix else []
    size = len(prefix)
    while size < CHUNK_BYTES:
        rows = cursor.fetchmany(PAGE_ROWS)
        if not rows:
            break
        for cid, content in rows:
            if cid == root:
                continue
            n = len(cid) + len(content)
            parts.append(bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) if n < 0x4000
                         else encode_varint(n))
            parts.append(cid)
            parts.append(content)
            size += n + 3
    if not parts:
        return None
    return b"".join(parts)


async def record_proof(conn: aiosqlite.Connection, did: str, collection: str, rkey: str,
                       node_cache: NodeCache | None = None) -> bytes | None:
    """The proof CAR for ``collection/rkey`` (the record, or its absence) at the current commit;
    None when the DID has no repo. Runs inside one read transaction on ``conn``."""
    async with repos.read_transaction(conn):
        cid = await repos.root_cid_on(conn, did)
        if cid is None:
            return None
        root = CID.decode(cid)
        store = MemoryBlockStore()
        for _ in range(MAX_PROOF_FETCHES):
            try:
                blocks = record_proof_blocks(store, root, collection, rkey, node_cache=node_cache)
            except MissingBlock as missing:
                found = await repos.block_on(conn, did, missing.cid)
                if found is None:
                    raise
                store.put(missing.cid, found)
                continue
            return encode_car([root], blocks.items())
        raise MissingBlock(root, f"proof path (more than {MAX_PROOF_FETCHES} blocks)")


async def get_blocks(conn: aiosqlite.Connection, did: str, cids: list[CID]) -> tuple[list[tuple[CID, bytes]], list[CID]]:
    """(found blocks in request order, missing CIDs)."""
    if not cids:
        return [], []
    got = await repos.blocks_on(conn, did, cids)
    found, missing = [], []
    for cid in cids:
        block = got.get(cid.bytes)
        if block is None:
            missing.append(cid)
        else:
            found.append((cid, block))
    return found, missing
