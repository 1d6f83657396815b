"""Owner of the ``did_cache`` table (resolved DID documents and when to refresh them).

Only the cache is stored: the account's own identity lives in ``account`` (see ``store.accounts``).

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database


async def get_cached_did(db: "Database", did: str) -> sqlite3.Row | None:
    """(``doc``, ``updated_at``) of the cached document."""
    return await db.fetchone("SELECT doc, updated_at FROM did_cache WHERE did = ?", (did,))


def put_cached_did(conn: sqlite3.Connection, did: str, doc: str, updated_at: int) -> None:
    conn.execute(
        "INSERT INTO did_cache (did, doc, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(did) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
        (did, doc, updated_at),
    )


def delete_cached_did(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM did_cache WHERE did = ?", (did,))


def prune_did_cache(conn: sqlite3.Connection, cutoff: int) -> int:
    """Forget documents last updated before ``cutoff``; returns how many."""
    return conn.execute("DELETE FROM did_cache WHERE updated_at < ?", (cutoff,)).rowcount
