"""Owner of the repository tables: ``repo_root`` (each account's current commit), ``repo_block``
(every block of every repo, by CID and rev) and ``record`` (the index of current records).

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take
the writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction, so
a commit's blocks, records, blob references, root and firehose event are one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database


async def newest_rev(db: "Database") -> str | None:
    """The highest repo rev stored (the TID clock starts above it)."""
    row = await db.fetchone("SELECT MAX(rev) AS rev FROM repo_root")
    return row["rev"] if row is not None and row["rev"] else None


# -- used by accounts --

import sqlite3 as _sqlite3


def insert_initial_repo_rows(conn: "_sqlite3.Connection", did: str, blocks: "list[tuple[bytes, bytes]]", rev: str,
                             commit_cid: str, indexed_at: str) -> None:
    """A new account's repo: its blocks [(cid bytes, block)] at ``rev`` and its root commit."""
    for cid, block in blocks:
        conn.execute(
            "INSERT INTO repo_block (did, cid, repo_rev, size, content) VALUES (?, ?, ?, ?, ?)",
            (did, cid, rev, len(block), block),
        )
    conn.execute(
        "INSERT INTO repo_root (did, cid, rev, indexed_at) VALUES (?, ?, ?, ?)",
        (did, commit_cid, rev, indexed_at),
    )


def account_root_sync(conn: "_sqlite3.Connection", did: str) -> "_sqlite3.Row | None":
    """(``cid``, ``rev``) of the account's repo root, on the writer connection."""
    return conn.execute("SELECT cid, rev FROM repo_root WHERE did = ?", (did,)).fetchone()


def account_block_sync(conn: "_sqlite3.Connection", did: str, cid: bytes) -> bytes | None:
    """One block of the account's repo, on the writer connection."""
    row = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, cid)).fetchone()
    return bytes(row["content"]) if row is not None else None


def delete_repo_for_account(conn: "_sqlite3.Connection", did: str) -> int:
    """Remove the account's records, blocks and root (account deletion); returns the records removed."""
    records = conn.execute("DELETE FROM record WHERE did = ?", (did,)).rowcount
    conn.execute("DELETE FROM repo_block WHERE did = ?", (did,))
    conn.execute("DELETE FROM repo_root WHERE did = ?", (did,))
    return records


def set_record_takedown_ref(conn: "_sqlite3.Connection", did: str, collection: str, rkey: str,
                            takedown_ref: str | None) -> str | None:
    """Set the record's takedown ref; returns its CID, None when there is no such record."""
    row = conn.execute(
        "UPDATE record SET takedown_ref = ? WHERE did = ? AND collection = ? AND rkey = ? RETURNING cid",
        (takedown_ref, did, collection, rkey),
    ).fetchone()
    return row[0] if row is not None else None


async def record_takedown_row(db: "Database", did: str, collection: str, rkey: str) -> "_sqlite3.Row | None":
    """(``cid``, ``takedown_ref``) of the record."""
    return await db.fetchone(
        "SELECT cid, takedown_ref FROM record WHERE did = ? AND collection = ? AND rkey = ?",
        (did, collection, rkey))


async def account_repo_counts(db: "Database", did: str) -> "tuple[_sqlite3.Row, int, int] | None":
    """The repo root row (``cid``, ``rev``), the block count and the record count of the account
    (checkAccountStatus); None when it has no repo."""
    root = await db.fetchone("SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    if root is None:
        return None
    blocks = await db.fetchone("SELECT COUNT(*) AS n FROM repo_block WHERE did = ?", (did,))
    records = await db.fetchone("SELECT COUNT(*) AS n FROM record WHERE did = ?", (did,))
    return root, blocks["n"], records["n"]
