"""Owner of the blob tables: ``blob`` (each uploaded blob, temporary until referenced) and ``record_blob`` (which record references which blob).

The bytes themselves live in the blob store (disk or S3); these rows are the index and the reference counts.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by accounts --

import sqlite3 as _sqlite3
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from .db import Database


def release_blobs_for_account(conn: "_sqlite3.Connection", did: str, unreferenced_since: str) -> int:
    """Account deletion: drop the account's blob references and stamp its blobs unreferenced since
    ``unreferenced_since`` with no takedown (so the collector removes them); returns the blob count."""
    conn.execute("DELETE FROM record_blob WHERE did = ?", (did,))
    return conn.execute(
        "UPDATE blob SET unreferenced_since = ?, takedown_ref = NULL WHERE did = ?",
        (unreferenced_since, did),
    ).rowcount


def set_blob_takedown_ref(conn: "_sqlite3.Connection", did: str, cid: str, takedown_ref: str | None) -> bool:
    """False when the account has no such blob."""
    cur = conn.execute("UPDATE blob SET takedown_ref = ? WHERE did = ? AND cid = ?", (takedown_ref, did, cid))
    return cur.rowcount > 0


async def blob_takedown_row(db: "Database", did: str, cid: str) -> "_sqlite3.Row | None":
    """(``takedown_ref``) of the account's blob."""
    return await db.fetchone("SELECT takedown_ref FROM blob WHERE did = ? AND cid = ?", (did, cid))


async def account_blob_counts(db: "Database", did: str) -> tuple[int, int]:
    """(blobs the account's records reference, blobs of the account stored for good) — checkAccountStatus."""
    expected = await db.fetchone("SELECT COUNT(DISTINCT blob_cid) AS n FROM record_blob WHERE did = ?", (did,))
    imported = await db.fetchone("SELECT COUNT(*) AS n FROM blob WHERE did = ? AND temp_key IS NULL", (did,))
    return expected["n"], imported["n"]


async def blob_totals(db: "Database") -> tuple[int, int]:
    """(count, bytes) of every stored blob (the admin status page)."""
    row = await db.fetchone("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM blob")
    return row["n"], row["bytes"]
