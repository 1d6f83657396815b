"""The repository block store over SQLite (https://atproto.com/specs/repository#repo-data-structure-v3).

``SqliteBlockStore`` gives the protocol core's :class:`~squall.atproto.blockstore.BlockStore`
interface over the ``repo_block`` rows of one DID, on the connection it is handed — the writer's
connection inside a ``Database.write`` transaction, so a commit reads the tree exactly as the
transaction sees it. It never writes: the repo writer persists the blocks a commit lists.
"""

from __future__ import annotations

import sqlite3

from ..atproto.cid import CID


class SqliteBlockStore:
    __slots__ = ("conn", "did")

    def __init__(self, conn: sqlite3.Connection, did: str) -> None:
        self.conn = conn
        self.did = did

    def get(self, cid: CID) -> bytes | None:
        row = self.conn.execute(
            "SELECT content FROM repo_block WHERE did = ? AND cid = ?", (self.did, cid.bytes)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def has(self, cid: CID) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM repo_block WHERE did = ? AND cid = ?", (self.did, cid.bytes)
        ).fetchone() is not None

    def put(self, cid: CID, data: bytes) -> None:
        # The core only reads through this store; blocks are inserted by the writer with their
        # repo_rev (see squall.repo.writer), which this interface cannot carry.
        raise TypeError("SqliteBlockStore is read-only; the repo writer persists commit blocks")
