"""Owner of ``reserved_signing_key``: signing keys handed out by
``com.atproto.server.reserveSigningKey`` before an account migrates here, so that the key the
user puts in their DID document (signed by the old PDS) is the key this PDS will sign with.

Readers take the ``Database`` and run on the reader pool; writers take the writer's
``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database


def reserved_for(conn: sqlite3.Connection, did: str) -> tuple[str, bytes] | None:
    """(key did, private key) reserved for ``did``, inside a write transaction."""
    row = conn.execute("SELECT key_did, private_key FROM reserved_signing_key WHERE did = ?", (did,)).fetchone()
    return (row["key_did"], bytes(row["private_key"])) if row is not None else None


def insert(conn: sqlite3.Connection, key_did: str, did: str | None, private_key: bytes, now: int) -> None:
    conn.execute("INSERT INTO reserved_signing_key (key_did, did, private_key, created_at) VALUES (?, ?, ?, ?)",
                 (key_did, did, private_key, now))


def delete_older_than(conn: sqlite3.Connection, cutoff: int) -> int:
    return conn.execute("DELETE FROM reserved_signing_key WHERE created_at < ?", (cutoff,)).rowcount


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM reserved_signing_key").fetchone()[0]


def release(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM reserved_signing_key WHERE did = ?", (did,))


async def get_for_did(db: "Database", did: str) -> tuple[str, bytes] | None:
    row = await db.fetchone("SELECT key_did, private_key FROM reserved_signing_key WHERE did = ?", (did,))
    return (row["key_did"], bytes(row["private_key"])) if row is not None else None
