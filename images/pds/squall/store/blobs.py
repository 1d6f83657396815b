"""Owner of the blob tables: ``blob`` (each uploaded blob, temporary until referenced) and ``record_blob`` (which record references which blob).

The bytes themselves live in the blob store (disk or S3); these rows are the index and the reference counts.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .db import Database


# -- readers (reader pool) ----------------------------------------------------------------------------


async def get_temp_key(db: "Database", did: str, cid: str) -> str | None:
    """The temp upload key of ``did``'s blob ``cid``; None when it is permanent or not stored."""
    row = await db.fetchone("SELECT temp_key FROM blob WHERE did = ? AND cid = ?", (did, cid))
    return row["temp_key"] if row is not None else None


async def get_permanent_blob(db: "Database", did: str, cid: str) -> sqlite3.Row | None:
    """(mime_type, size) of a permanent, not taken-down blob of ``did``."""
    return await db.fetchone(
        "SELECT mime_type, size FROM blob WHERE did = ? AND cid = ? AND temp_key IS NULL "
        "AND takedown_ref IS NULL", (did, cid))


async def known_temp_keys(db: "Database", keys: list[str]) -> set[str]:
    """Those of ``keys`` that a blob row names as its temp upload."""
    marks = ",".join("?" * len(keys))
    rows = await db.fetchall(f"SELECT temp_key FROM blob WHERE temp_key IN ({marks})", tuple(keys))
    return {r["temp_key"] for r in rows}


async def referenced_temp_blobs(db: "Database", limit: int) -> list[sqlite3.Row]:
    """(did, cid) of blobs a record references that are still temp uploads."""
    return await db.fetchall(
        "SELECT did, cid FROM blob AS b WHERE temp_key IS NOT NULL AND EXISTS "
        "(SELECT 1 FROM record_blob AS r WHERE r.did = b.did AND r.blob_cid = b.cid) LIMIT ?", (limit,))


async def list_record_blob_cids(db: "Database", did: str, after: str, limit: int,
                                since: str | None = None) -> list[str]:
    """The blob CIDs ``did``'s records reference, in CID order after ``after``; with ``since``,
    only those referenced by records written after that rev (com.atproto.sync.listBlobs)."""
    if since is None:
        rows = await db.fetchall(
            "SELECT DISTINCT blob_cid FROM record_blob WHERE did = ? AND blob_cid > ? ORDER BY blob_cid LIMIT ?",
            (did, after, limit))
    else:
        rows = await db.fetchall(
            "SELECT DISTINCT rb.blob_cid FROM record AS r JOIN record_blob AS rb "
            "ON rb.did = r.did AND rb.record_uri = 'at://' || r.did || '/' || r.collection || '/' || r.rkey "
            "WHERE r.did = ? AND r.repo_rev > ? AND rb.blob_cid > ? ORDER BY rb.blob_cid LIMIT ?",
            (did, since, after, limit))
    return [row["blob_cid"] for row in rows]


async def list_missing_blobs(db: "Database", did: str, after: str, limit: int) -> list[sqlite3.Row]:
    """(cid, uri: the first record referencing it) of blobs ``did``'s records reference but that
    were never uploaded, in CID order after ``after`` (com.atproto.repo.listMissingBlobs)."""
    return await db.fetchall(
        "SELECT rb.blob_cid AS cid, MIN(rb.record_uri) AS uri FROM record_blob AS rb "
        "LEFT JOIN blob AS b ON b.did = rb.did AND b.cid = rb.blob_cid "
        "WHERE rb.did = ? AND b.cid IS NULL AND rb.blob_cid > ? GROUP BY rb.blob_cid ORDER BY rb.blob_cid LIMIT ?",
        (did, after, limit))


# -- uploads (writer connection) ----------------------------------------------------------------------


def get_upload_state(conn: sqlite3.Connection, did: str, cid: str) -> sqlite3.Row | None:
    """(mime_type, temp_key, takedown_ref, referenced by a record?) of a stored blob."""
    return conn.execute(
        "SELECT mime_type, temp_key, takedown_ref, "
        "EXISTS (SELECT 1 FROM record_blob r WHERE r.did = blob.did AND r.blob_cid = blob.cid) "
        "FROM blob WHERE did = ? AND cid = ?", (did, cid),
    ).fetchone()


def insert_blob(conn: sqlite3.Connection, did: str, cid: str, mime_type: str, size: int, temp_key: str,
                created_at: str) -> None:
    conn.execute(
        "INSERT INTO blob (did, cid, mime_type, size, temp_key, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (did, cid, mime_type, size, temp_key, created_at),
    )


def is_blob_referenced(conn: sqlite3.Connection, did: str, cid: str) -> bool:
    """Whether a record of ``did`` references blob ``cid`` (uploaded or not)."""
    return conn.execute("SELECT 1 FROM record_blob WHERE did = ? AND blob_cid = ? LIMIT 1",
                        (did, cid)).fetchone() is not None


def refresh_unreferenced(conn: sqlite3.Connection, did: str, cid: str, now: str) -> None:
    """Restart the grace period of a blob awaiting collection."""
    conn.execute("UPDATE blob SET unreferenced_since = ? WHERE did = ? AND cid = ? "
                 "AND unreferenced_since IS NOT NULL", (now, did, cid))


def replace_temp_upload(conn: sqlite3.Connection, did: str, cid: str, temp_key: str, mime_type: str,
                        created_at: str) -> None:
    conn.execute("UPDATE blob SET temp_key = ?, mime_type = ?, created_at = ? WHERE did = ? AND cid = ?",
                 (temp_key, mime_type, created_at, did, cid))


def clear_temp_key(conn: sqlite3.Connection, did: str, cid: str, temp_key: str) -> None:
    """The blob is permanent: forget its temp upload ``temp_key`` (unless a re-upload replaced it)."""
    conn.execute("UPDATE blob SET temp_key = NULL WHERE did = ? AND cid = ? AND temp_key = ?", (did, cid, temp_key))


# -- record references (writer connection, inside the record's transaction) ---------------------------


def get_blob_for_ref(conn: sqlite3.Connection, did: str, cid: str) -> sqlite3.Row | None:
    """(mime_type, size, temp_key, takedown_ref) of ``did``'s blob ``cid``."""
    return conn.execute(
        "SELECT mime_type, size, temp_key, takedown_ref FROM blob WHERE did = ? AND cid = ?", (did, cid)
    ).fetchone()


def add_record_blob_ref(conn: sqlite3.Connection, did: str, cid: str, uri: str) -> None:
    """The record at ``uri`` references blob ``cid``: store that, and the blob is no longer
    awaiting collection."""
    conn.execute("INSERT OR IGNORE INTO record_blob (did, blob_cid, record_uri) VALUES (?, ?, ?)",
                 (did, cid, uri))
    conn.execute("UPDATE blob SET unreferenced_since = NULL WHERE did = ? AND cid = ?", (did, cid))


def remove_record_blob_refs(conn: sqlite3.Connection, did: str, uri: str) -> list[str]:
    """Drop the blob references of the record at ``uri``; return the blob CIDs it referenced."""
    return [row[0] for row in conn.execute(
        "DELETE FROM record_blob WHERE did = ? AND record_uri = ? RETURNING blob_cid", (did, uri)
    ).fetchall()]


def mark_unreferenced(conn: sqlite3.Connection, did: str, cids: Iterable[str], now: str) -> None:
    """Stamp ``unreferenced_since`` on those of ``cids`` no record references any more (the
    collector deletes them once the grace period has passed)."""
    for cid in cids:
        conn.execute(
            "UPDATE blob SET unreferenced_since = ? WHERE did = ? AND cid = ? AND unreferenced_since IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM record_blob WHERE record_blob.did = blob.did "
            "AND record_blob.blob_cid = blob.cid)",
            (now, did, cid),
        )


def referenced_blob_cids(conn: sqlite3.Connection, did: str) -> list[str]:
    """Every blob CID ``did``'s records reference."""
    return [r[0] for r in conn.execute("SELECT DISTINCT blob_cid FROM record_blob WHERE did = ?", (did,))]


def delete_record_blob_refs_for_account(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM record_blob WHERE did = ?", (did,))


def insert_record_blob_refs(conn: sqlite3.Connection, did: str, rows: Iterable[tuple[str, str]]) -> None:
    """(record URI, blob CID) references, e.g. of an imported repo (the blobs may not be uploaded yet)."""
    conn.executemany("INSERT OR IGNORE INTO record_blob (did, blob_cid, record_uri) VALUES (?, ?, ?)",
                     [(did, cid, uri) for uri, cid in rows])


def clear_unreferenced_for_account(conn: sqlite3.Connection, did: str) -> None:
    """Blobs of ``did`` awaiting collection that a record references again are kept."""
    conn.execute("UPDATE blob SET unreferenced_since = NULL WHERE did = ? AND unreferenced_since IS NOT NULL "
                 "AND EXISTS (SELECT 1 FROM record_blob AS r WHERE r.did = blob.did AND r.blob_cid = blob.cid)",
                 (did,))


# -- garbage collection (writer connection) -----------------------------------------------------------

_GARBAGE = (
    "SELECT did, cid, mime_type, size, temp_key, created_at, unreferenced_since FROM blob AS b "
    "WHERE b.takedown_ref IS NULL "
    "AND ((b.temp_key IS NOT NULL AND b.created_at < :cutoff) "
    "     OR (b.unreferenced_since IS NOT NULL AND b.unreferenced_since < :cutoff)) "
    "AND NOT EXISTS (SELECT 1 FROM record_blob AS r WHERE r.did = b.did AND r.blob_cid = b.cid) "
    "LIMIT :limit"
)


def claim_garbage(conn: sqlite3.Connection, cutoff: str, limit: int) -> list[tuple]:
    """Delete up to ``limit`` unreferenced, not taken-down blob rows whose grace period ended
    before ``cutoff`` (temp uploads by ``created_at``, dropped blobs by ``unreferenced_since``);
    return the deleted rows (did, cid, mime_type, size, temp_key, created_at, unreferenced_since)
    so that :func:`restore_blob` can put one back."""
    rows = [tuple(r) for r in conn.execute(_GARBAGE, {"cutoff": cutoff, "limit": limit}).fetchall()]
    conn.executemany("DELETE FROM blob WHERE did = ? AND cid = ?", [(r[0], r[1]) for r in rows])
    return rows


def restore_blob(conn: sqlite3.Connection, row: tuple) -> None:
    """Put back a row :func:`claim_garbage` returned."""
    conn.execute(
        "INSERT OR IGNORE INTO blob (did, cid, mime_type, size, temp_key, created_at, unreferenced_since) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", row,
    )


# -- used by accounts --


def release_blobs_for_account(conn: "sqlite3.Connection", did: str, unreferenced_since: str) -> int:
    """Account deletion: drop the account's blob references and stamp its blobs unreferenced since
    ``unreferenced_since`` with no takedown (so the collector removes them); returns the blob count."""
    conn.execute("DELETE FROM record_blob WHERE did = ?", (did,))
    return conn.execute(
        "UPDATE blob SET unreferenced_since = ?, takedown_ref = NULL WHERE did = ?",
        (unreferenced_since, did),
    ).rowcount


def set_blob_takedown_ref(conn: "sqlite3.Connection", did: str, cid: str, takedown_ref: str | None) -> bool:
    """False when the account has no such blob."""
    cur = conn.execute("UPDATE blob SET takedown_ref = ? WHERE did = ? AND cid = ?", (takedown_ref, did, cid))
    return cur.rowcount > 0


async def blob_takedown_row(db: "Database", did: str, cid: str) -> "sqlite3.Row | None":
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

# -- used by observability (metrics, the admin dashboard) --


async def obs_totals(db) -> dict[str, int]:
    """Number and bytes of all blob rows, and of those unreferenced (awaiting garbage collection)."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes, "
        "COALESCE(SUM(unreferenced_since IS NOT NULL OR temp_key IS NOT NULL), 0) AS unref_n, "
        "COALESCE(SUM(CASE WHEN unreferenced_since IS NOT NULL OR temp_key IS NOT NULL THEN size END), 0) "
        "AS unref_bytes FROM blob")
    return {"count": row["n"], "bytes": row["bytes"], "unreferenced": row["unref_n"],
            "unreferenced_bytes": row["unref_bytes"]}


async def obs_per_account(db, limit: int = 20) -> list:
    """Blob count and bytes per account, largest first."""
    return await db.fetchall(
        "SELECT b.did, a.handle, COUNT(*) AS n, SUM(b.size) AS bytes FROM blob b LEFT JOIN account a "
        "ON a.did = b.did GROUP BY b.did ORDER BY bytes DESC LIMIT ?", (limit,))
