"""CAR exports of a repository (https://atproto.com/specs/repository#car-file-serialization,
com.atproto.sync.getRepo / getRecord / getBlocks).

``RepoExport`` streams a whole repo, or the blocks written after a ``since`` rev, from a private
read-only connection holding one read transaction (``Database.open_snapshot``, pooled): every
page comes from the same snapshot as the root, however long the client takes, and a slow download
never holds a connection of the shared reader pool. Blocks are read and framed on the snapshot's
thread in chunks of about 64 KiB (one hop per chunk), so memory stays flat whatever the repo's
size; getRepo reads a small repo whole in the first hop. The commit is the CAR's root and comes
first; the rest follow in storage order (the reference does the same: the spec does not order blocks).

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
WHOLE_BYTES = 1024 * 1024  # getRepo reads a CAR up to this size whole, in one hop, and sends it as one body
MAX_PROOF_FETCHES = 64  # an MST path is a few nodes deep; far more means a broken tree


class RepoNotStored(Exception):
    """The DID has no repo root."""


class RepoExport:
    """Open with :meth:`open` (raises RepoNotStored before any byte is sent), then iterate
    :meth:`chunks`; the snapshot closes when the iteration ends or is abandoned."""

    def __init__(self, snapshot: Snapshot, did: str, since: str | None, cursor: Any, root: bytes,
                 read: bytes, done: bool):
        self._snapshot = snapshot
        self.did = did
        self.since = since
        self.root = CID.from_bytes(root)
        self._root_bytes = root
        self._cursor = cursor
        self._read = [read] if read else []  # framed by open(), not yet handed out
        self._done = done  # the cursor is exhausted

    @classmethod
    async def open(cls, db: "Database", did: str, since: str | None = None, *,
                   read_ahead: int = CHUNK_BYTES) -> "RepoExport":
        """The export of ``did``'s repo (blocks after ``since`` only, when given), with up to about
        ``read_ahead`` bytes of it already framed: finding the root, opening the cursor and the
        first bytes take one hop to the snapshot's thread (a small repo is read whole in it)."""
        snapshot = await db.open_snapshot()
        try:
            started = await snapshot.run(_start, did, since, max(read_ahead, 1))
            if started is None:
                raise RepoNotStored(did)
        except BaseException:
            await snapshot.close()
            raise
        cursor, root, read, done = started
        return cls(snapshot, did, since, cursor, root, read, done)

    async def close(self) -> None:
        await self._snapshot.close()

    async def whole_if_small(self) -> bytes | None:
        """The whole CAR when :meth:`open` read all of it (the export is then closed: send it as
        one body, no streaming machinery); None otherwise, and :meth:`chunks` starts with what
        was read."""
        if not self._done:
            return None
        await self.close()
        return b"".join(self._read)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while self._read:
                yield self._read.pop(0)
            while not self._done:
                chunk, self._done = await self._snapshot.run(_frame, self._cursor, self._root_bytes, b"",
                                                              CHUNK_BYTES)
                if chunk:
                    yield chunk
        finally:
            await self.close()


def _start(conn: Any, did: str, since: str | None, limit: int) -> tuple[Any, bytes, bytes, bool] | None:
    """On the snapshot's thread: (cursor, binary root CID, the CAR's first ~``limit`` bytes,
    whether that is all of it); None when the DID has no repo. The commit is the CAR's root and
    comes first."""
    head = repos.export_head(conn, did)
    if head is None:
        return None
    root, commit_block = head
    prefix = bytearray(car_header([CID.from_bytes(root)]))
    prefix += encode_varint(len(root) + len(commit_block)) + root + commit_block
    cursor = repos.export_cursor(conn, did, since)
    read, done = _frame(conn, cursor, root, bytes(prefix), limit)
    return cursor, root, read, done


def _frame(conn: Any, cursor: Any, root: bytes, prefix: bytes, limit: int) -> tuple[bytes, bool]:
    """``prefix`` and the CAR sections of the next rows of ``cursor``, about ``limit`` bytes, and
    whether the cursor is exhausted."""
    parts = [prefix] if prefix else []
    size = len(prefix)
    while size < limit:
        rows = cursor.fetchmany(PAGE_ROWS)
        if not rows:
            return b"".join(parts), True
        for cid, content in rows:
            if cid == root:
                continue
            n = len(cid) + len(content)
            parts.append(bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) if n < 0x4000
                         else encode_varint(n))
            parts.append(cid)
            parts.append(content)
            size += n + 3
    return b"".join(parts), False


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
