"""CAR exports of a repository (https://atproto.com/specs/repository#car-file-serialization,
com.atproto.sync.getRepo / getRecord / getBlocks).

``RepoExport`` streams a whole repo, or the blocks written after a ``since`` rev, from its own
read-only connection holding one read transaction: every page comes from the same snapshot as the
root, however long the client takes, and a slow download never holds a connection of the shared
reader pool. Blocks are read in pages and written out in chunks of about 64 KiB, so memory stays
flat whatever the repo's size. The commit is the CAR's root and comes first; the rest follow in
storage order (the reference does the same: the spec does not order blocks).

``record_proof`` builds the small ``sync.getRecord`` CAR with the core's proof walk, fetching the
blocks it asks for on demand within one read transaction.
"""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from ..atproto.blockstore import MemoryBlockStore, MissingBlock
from ..atproto.car import car_header, encode_car
from ..atproto.cid import CID, encode_varint
from ..atproto.mst import NodeCache
from ..atproto.repo import record_proof_blocks
from ..store import repos

PAGE_ROWS = 500
CHUNK_BYTES = 64 * 1024
MAX_PROOF_FETCHES = 64  # an MST path is a few nodes deep; far more means a broken tree


class RepoNotStored(Exception):
    """The DID has no repo root."""


class RepoExport:
    """Open with :meth:`open` (raises RepoNotStored before any byte is sent), then iterate
    :meth:`chunks`; the connection closes when the iteration ends or is abandoned."""

    def __init__(self, conn: aiosqlite.Connection, did: str, root: CID, commit_block: bytes, since: str | None):
        self._conn = conn
        self.did = did
        self.root = root
        self._commit_block = commit_block
        self.since = since

    @classmethod
    async def open(cls, path: Path, did: str, since: str | None = None) -> "RepoExport":
        conn = await repos.open_snapshot(path)
        try:
            cid = await repos.root_cid_on(conn, did)
            if cid is None:
                raise RepoNotStored(did)
            root = CID.decode(cid)
            block = await repos.block_on(conn, did, root)
            if block is None:
                raise RepoNotStored(did)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, did, root, block, since)

    async def close(self) -> None:
        await self._conn.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        root_bytes = self.root.bytes
        try:
            buf = bytearray(car_header([self.root]))
            buf += encode_varint(len(root_bytes) + len(self._commit_block)) + root_bytes + self._commit_block
            # aclosing: an abandoned download closes the page cursor before the connection.
            async with aclosing(repos.iter_block_pages(self._conn, self.did, self.since, PAGE_ROWS)) as pages:
                async for rows in pages:
                    for cid, content in rows:
                        if cid == root_bytes:
                            continue
                        buf += encode_varint(len(cid) + len(content))
                        buf += cid
                        buf += content
                    if len(buf) >= CHUNK_BYTES:
                        yield bytes(buf)
                        buf.clear()
            if buf:
                yield bytes(buf)
        finally:
            await self.close()


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
