"""Owner of the repository tables: ``repo_root`` (each account's current commit), ``repo_block``
(every block of every repo, by CID and rev) and ``record`` (the index of current records).

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take
the writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction, so
a commit's blocks, records, blob references, root and firehose event are one transaction.

Also here: :class:`SqliteBlockStore` (the protocol core's BlockStore over one DID's ``repo_block``
rows on the writer connection), the ``squall_cid_bytes`` SQL function registered on reader
connections (record rows name blocks by CID text, blocks are keyed by binary CID), and the
snapshot connection a CAR export streams from.
"""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Mapping

import aiosqlite

from ..atproto.cid import CID

if TYPE_CHECKING:
    from weakref import WeakSet

    from .db import Database


@dataclass(frozen=True)
class RepoRoot:
    cid: str
    rev: str


# -- readers (reader pool) ----------------------------------------------------------------------------


async def newest_rev(db: "Database") -> str | None:
    """The highest repo rev stored (the TID clock starts above it)."""
    row = await db.fetchone("SELECT MAX(rev) AS rev FROM repo_root")
    return row["rev"] if row is not None and row["rev"] else None


async def get_root(db: "Database", did: str) -> RepoRoot | None:
    row = await db.fetchone("SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    return RepoRoot(row["cid"], row["rev"]) if row is not None else None


def _account_clause(identifier: str) -> tuple[str, str]:
    if identifier.startswith("did:"):
        return "a.did = ?", identifier
    return "a.handle = ?", identifier.lower()


CID_BYTES_FUNCTION = "squall_cid_bytes"


def _cid_bytes(text: str | None) -> bytes | None:
    try:
        return CID.decode(text).bytes if text is not None else None
    except ValueError:
        return None


async def _with_cid_function(conn: Any, prepared: "WeakSet | None") -> None:
    """Record rows name blocks by CID text, blocks are keyed by binary CID: a SQL function bridges
    the two so a record and its block come back in one query (one thread hop instead of two)."""
    if prepared is not None and conn in prepared:
        return
    await conn.create_function(CID_BYTES_FUNCTION, 1, _cid_bytes, deterministic=True)
    if prepared is not None:
        prepared.add(conn)


async def get_active_record_block(db: "Database", identifier: str, collection: str, rkey: str, *,
                                  prepared: "WeakSet | None" = None) -> tuple[str, str, bytes] | None:
    """(did, record CID, block) of a record not taken down, of an active local account named by
    DID or handle, in one query; None when there is none. ``prepared`` remembers the reader
    connections that already have the CID function."""
    clause, value = _account_clause(identifier)
    found = db.read_inline(_active_record_block_now, clause, value, collection, rkey)
    if found is not None:
        return found or None
    async with db.reader() as conn:
        await _with_cid_function(conn, prepared)
        rows = await conn.execute_fetchall(
            "SELECT r.did, r.cid, b.content FROM account a "
            "JOIN record r ON r.did = a.did AND r.collection = ? AND r.rkey = ? AND r.takedown_ref IS NULL "
            f"JOIN repo_block b ON b.did = r.did AND b.cid = {CID_BYTES_FUNCTION}(r.cid) "
            f"WHERE {clause} AND a.deactivated_at IS NULL AND a.takedown_ref IS NULL",
            (collection, rkey, value))
    if not rows:
        return None
    did, record_cid, block = rows[0]
    return did, record_cid, bytes(block)


def _active_record_block_now(conn: sqlite3.Connection, clause: str, value: str, collection: str,
                             rkey: str) -> tuple[str, str, bytes] | tuple[()]:
    """get_active_record_block on the inline connection (Database.read_inline): two indexed
    lookups in one read transaction; () when there is no such record."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT r.did, r.cid FROM account a "
            "JOIN record r ON r.did = a.did AND r.collection = ? AND r.rkey = ? AND r.takedown_ref IS NULL "
            f"WHERE {clause} AND a.deactivated_at IS NULL AND a.takedown_ref IS NULL",
            (collection, rkey, value)).fetchone()
        if row is None:
            return ()
        block = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?",
                             (row[0], _cid_bytes(row[1]))).fetchone()
    finally:
        conn.execute("ROLLBACK")
    return (row[0], row[1], bytes(block[0])) if block is not None else ()


async def list_record_blocks(db: "Database", did: str, collection: str, *, limit: int, cursor: str | None,
                             reverse: bool) -> list[tuple[str, str, bytes]]:
    """(rkey, record CID, block) of the records not taken down, newest key first (``reverse``:
    oldest first), after the record key ``cursor``; records whose block is missing are left out."""
    if reverse:
        where, order = "rkey > ?", "ASC"
    else:
        where, order = "rkey < ?", "DESC"
    sql = "SELECT rkey, cid FROM record WHERE did = ? AND collection = ? AND takedown_ref IS NULL"
    params: list[Any] = [did, collection]
    if cursor is not None:
        sql += f" AND {where}"
        params.append(cursor)
    sql += f" ORDER BY rkey {order} LIMIT ?"
    params.append(limit)
    async with db.reader() as conn:
        rows = list(await conn.execute_fetchall(sql, params))
        if not rows:
            return []
        cids = {row[1]: CID.decode(row[1]).bytes for row in rows}
        marks = ",".join("?" * len(cids))
        found = await conn.execute_fetchall(
            f"SELECT cid, content FROM repo_block WHERE did = ? AND cid IN ({marks})", (did, *cids.values()))
        blocks = {bytes(r[0]): bytes(r[1]) for r in found}
    out = []
    for rkey, cid in rows:
        block = blocks.get(cids[cid])
        if block is not None:
            out.append((rkey, cid, block))
    return out


async def list_collections(db: "Database", did: str) -> list[str]:
    rows = await db.fetchall("SELECT DISTINCT collection FROM record WHERE did = ? ORDER BY collection", (did,))
    return [r[0] for r in rows]


async def list_repos(db: "Database", limit: int, after: tuple[str, str] | None = None) -> list[sqlite3.Row]:
    """Accounts with a repo, ordered by (account created_at, did), after ``(created_at, did)``:
    rows of did, created_at, deactivated_at, takedown_ref, cid, rev (com.atproto.sync.listRepos)."""
    sql = ("SELECT a.did, a.created_at, a.deactivated_at, a.takedown_ref, r.cid, r.rev "
           "FROM account a JOIN repo_root r ON r.did = a.did")
    params: list[Any] = []
    if after is not None:
        created_at, did = after
        sql += " WHERE (a.created_at > ?) OR (a.created_at = ? AND a.did > ?)"
        params += [created_at, created_at, did]
    sql += " ORDER BY a.created_at, a.did LIMIT ?"
    params.append(limit)
    return await db.fetchall(sql, tuple(params))


# -- readers on a connection the caller holds (one read transaction over several reads) ----------------


@asynccontextmanager
async def read_transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """One read transaction on ``conn``: every read inside sees the same snapshot."""
    await conn.execute("BEGIN")
    try:
        yield conn
    finally:
        await conn.execute("ROLLBACK")


async def root_cid_on(conn: aiosqlite.Connection, did: str) -> str | None:
    async with conn.execute("SELECT cid FROM repo_root WHERE did = ?", (did,)) as cur:
        row = await cur.fetchone()
    return row[0] if row is not None else None


async def block_on(conn: aiosqlite.Connection, did: str, cid: CID) -> bytes | None:
    async with conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, cid.bytes)) as cur:
        row = await cur.fetchone()
    return bytes(row[0]) if row is not None else None


async def blocks_on(conn: aiosqlite.Connection, did: str, cids: list[CID]) -> dict[bytes, bytes]:
    """binary CID → block, for those of ``cids`` stored."""
    marks = ",".join("?" * len(cids))
    async with conn.execute(f"SELECT cid, content FROM repo_block WHERE did = ? AND cid IN ({marks})",
                            (did, *(c.bytes for c in cids))) as cur:
        return {bytes(r[0]): bytes(r[1]) for r in await cur.fetchall()}


# -- on a snapshot (store.db.Snapshot: plain sqlite3, one worker-thread hop per call) -----------------


def export_head(conn: sqlite3.Connection, did: str) -> tuple[bytes, bytes] | None:
    """(binary root CID, commit block) of the repo; None when either is missing."""
    found = conn.execute("SELECT cid FROM repo_root WHERE did = ?", (did,)).fetchone()
    if found is None:
        return None
    root = CID.decode(found[0]).bytes
    block = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, root)).fetchone()
    return (root, bytes(block[0])) if block is not None else None


def export_cursor(conn: sqlite3.Connection, did: str, since: str | None) -> sqlite3.Cursor:
    """(binary CID, block) rows of the repo in storage order; with ``since``, the blocks written
    after that rev, oldest rev first. Read with ``fetchmany`` on the same snapshot."""
    if since is None:
        return conn.execute("SELECT cid, content FROM repo_block WHERE did = ? ORDER BY cid", (did,))
    return conn.execute("SELECT cid, content FROM repo_block WHERE did = ? AND repo_rev > ? ORDER BY repo_rev, cid",
                        (did, since))


# -- the writer connection ----------------------------------------------------------------------------


class SqliteBlockStore:
    """The protocol core's :class:`~squall.atproto.blockstore.BlockStore` interface over the
    ``repo_block`` rows of one DID, on the connection it is handed — the writer's connection inside
    a ``Database.write`` transaction, so a commit reads the tree exactly as the transaction sees it
    (https://atproto.com/specs/repository#repo-data-structure-v3). It never writes: the repo
    writer persists the blocks a commit lists (:func:`put_blocks`)."""

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
        # repo_rev (put_blocks), which this interface cannot carry.
        raise TypeError("SqliteBlockStore is read-only; the repo writer persists commit blocks")


def get_root_row(conn: sqlite3.Connection, did: str) -> sqlite3.Row | None:
    """The repo root (cid, rev) as the write transaction sees it."""
    return conn.execute("SELECT cid, rev FROM repo_root WHERE did = ?", (did,)).fetchone()


def get_record_cid(conn: sqlite3.Connection, did: str, collection: str, rkey: str) -> str | None:
    """The CID (text) of the record at ``collection/rkey``, as the write transaction sees it."""
    row = conn.execute(
        "SELECT cid FROM record WHERE did = ? AND collection = ? AND rkey = ?", (did, collection, rkey)
    ).fetchone()
    return row[0] if row is not None else None


def delete_blocks(conn: sqlite3.Connection, did: str, cids: Iterable[CID]) -> None:
    conn.executemany("DELETE FROM repo_block WHERE did = ? AND cid = ?", [(did, cid.bytes) for cid in cids])


def put_blocks(conn: sqlite3.Connection, did: str, rev: str, blocks: Mapping[CID, bytes]) -> None:
    """Store a commit's new blocks, stamped with its rev (a block already stored stays as it is)."""
    conn.executemany(
        "INSERT OR IGNORE INTO repo_block (did, cid, repo_rev, size, content) VALUES (?, ?, ?, ?, ?)",
        [(did, cid.bytes, rev, len(block), block) for cid, block in blocks.items()],
    )


def put_records(conn: sqlite3.Connection, did: str, rev: str, indexed_at: str,
                changes: Iterable[tuple[str, str, str | None]]) -> None:
    """Apply a commit's record changes in order: (collection, rkey, CID text) upserts the row,
    (collection, rkey, None) deletes it."""
    for collection, rkey, cid in changes:
        if cid is None:
            conn.execute("DELETE FROM record WHERE did = ? AND collection = ? AND rkey = ?",
                         (did, collection, rkey))
        else:
            conn.execute(
                "INSERT INTO record (did, collection, rkey, cid, repo_rev, indexed_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (did, collection, rkey) DO UPDATE SET cid = excluded.cid, "
                "repo_rev = excluded.repo_rev, indexed_at = excluded.indexed_at",
                (did, collection, rkey, cid, rev, indexed_at),
            )


def delete_unheld_record_blocks(conn: sqlite3.Connection, did: str, cids: Iterable[CID]) -> None:
    """Delete the blocks of removed records, except those another record row still names (the
    same content at another path has the same CID)."""
    for cid in cids:
        if conn.execute("SELECT 1 FROM record WHERE did = ? AND cid = ? LIMIT 1", (did, str(cid))).fetchone() is None:
            conn.execute("DELETE FROM repo_block WHERE did = ? AND cid = ?", (did, cid.bytes))


def set_root(conn: sqlite3.Connection, did: str, cid: CID, rev: str, indexed_at: str) -> None:
    """Point the existing repo root at a new commit."""
    conn.execute("UPDATE repo_root SET cid = ?, rev = ?, indexed_at = ? WHERE did = ?",
                 (str(cid), rev, indexed_at, did))


def put_root(conn: sqlite3.Connection, did: str, cid: CID, rev: str, indexed_at: str) -> None:
    """Point the repo root at ``cid``, creating the row when the account has none."""
    cur = conn.execute("UPDATE repo_root SET cid = ?, rev = ?, indexed_at = ? WHERE did = ?",
                       (str(cid), rev, indexed_at, did))
    if cur.rowcount == 0:
        conn.execute("INSERT INTO repo_root (did, cid, rev, indexed_at) VALUES (?, ?, ?, ?)",
                     (did, str(cid), rev, indexed_at))


def get_block(conn: sqlite3.Connection, did: str, cid: CID) -> bytes | None:
    row = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, cid.bytes)).fetchone()
    return None if row is None else bytes(row[0])


def delete_repo_contents(conn: sqlite3.Connection, did: str) -> None:
    """Drop every record row and block of ``did``'s repo (the root row stays; an import replaces it)."""
    conn.execute("DELETE FROM record WHERE did = ?", (did,))
    conn.execute("DELETE FROM repo_block WHERE did = ?", (did,))


def insert_imported_blocks(conn: sqlite3.Connection, did: str, rev: str, rows: Iterable[tuple[bytes, bytes]]) -> None:
    """(binary CID, block) rows of an imported repo, all stamped with the imported commit's rev."""
    conn.executemany("INSERT OR IGNORE INTO repo_block (did, cid, repo_rev, size, content) "
                     "VALUES (?, ?, ?, ?, ?)",
                     [(did, cid, rev, len(content), content) for cid, content in rows])


def insert_imported_records(conn: sqlite3.Connection, did: str, rev: str, indexed_at: str,
                            rows: Iterable[tuple[str, str, bytes]]) -> None:
    """(collection, rkey, binary CID) rows of an imported repo's records."""
    conn.executemany("INSERT OR REPLACE INTO record (did, collection, rkey, cid, repo_rev, indexed_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     [(did, c, k, str(CID.from_bytes(cid)), rev, indexed_at) for c, k, cid in rows])


# -- used by accounts --


def insert_initial_repo_rows(conn: "sqlite3.Connection", did: str, blocks: "list[tuple[bytes, bytes]]", rev: str,
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


def account_root_sync(conn: "sqlite3.Connection", did: str) -> "sqlite3.Row | None":
    """(``cid``, ``rev``) of the account's repo root, on the writer connection."""
    return conn.execute("SELECT cid, rev FROM repo_root WHERE did = ?", (did,)).fetchone()


def account_block_sync(conn: "sqlite3.Connection", did: str, cid: bytes) -> bytes | None:
    """One block of the account's repo, on the writer connection."""
    row = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, cid)).fetchone()
    return bytes(row["content"]) if row is not None else None


def delete_repo_for_account(conn: "sqlite3.Connection", did: str) -> int:
    """Remove the account's records, blocks and root (account deletion); returns the records removed."""
    records = conn.execute("DELETE FROM record WHERE did = ?", (did,)).rowcount
    conn.execute("DELETE FROM repo_block WHERE did = ?", (did,))
    conn.execute("DELETE FROM repo_root WHERE did = ?", (did,))
    return records


def set_record_takedown_ref(conn: "sqlite3.Connection", did: str, collection: str, rkey: str,
                            takedown_ref: str | None) -> str | None:
    """Set the record's takedown ref; returns its CID, None when there is no such record."""
    row = conn.execute(
        "UPDATE record SET takedown_ref = ? WHERE did = ? AND collection = ? AND rkey = ? RETURNING cid",
        (takedown_ref, did, collection, rkey),
    ).fetchone()
    return row[0] if row is not None else None


async def record_takedown_row(db: "Database", did: str, collection: str, rkey: str) -> "sqlite3.Row | None":
    """(``cid``, ``takedown_ref``) of the record."""
    return await db.fetchone(
        "SELECT cid, takedown_ref FROM record WHERE did = ? AND collection = ? AND rkey = ?",
        (did, collection, rkey))


async def account_repo_counts(db: "Database", did: str) -> "tuple[sqlite3.Row, int, int] | None":
    """The repo root row (``cid``, ``rev``), the block count and the record count of the account
    (checkAccountStatus); None when it has no repo."""
    root = await db.fetchone("SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    if root is None:
        return None
    blocks = await db.fetchone("SELECT COUNT(*) AS n FROM repo_block WHERE did = ?", (did,))
    records = await db.fetchone("SELECT COUNT(*) AS n FROM record WHERE did = ?", (did,))
    return root, blocks["n"], records["n"]
# -- used by read-after-write --


async def records_since_rev(db: "Database", did: str, collections: tuple[str, ...], rev: str, *,
                            limit: int) -> list[dict]:
    """The current records of ``did`` in ``collections`` written by a commit after ``rev``, newest
    first, at most ``limit``: {collection, rkey, cid, rev, indexed_at}. Records taken down by the
    admin are left out."""
    if not collections:
        return []
    marks = ",".join("?" * len(collections))
    rows = await db.fetchall(
        "SELECT collection, rkey, cid, repo_rev, indexed_at FROM record "
        f"WHERE did = ? AND repo_rev > ? AND collection IN ({marks}) AND takedown_ref IS NULL "
        "ORDER BY repo_rev DESC, rkey DESC LIMIT ?",
        (did, rev, *collections, limit))
    return [{"collection": r["collection"], "rkey": r["rkey"], "cid": r["cid"], "rev": r["repo_rev"],
             "indexed_at": r["indexed_at"]} for r in rows]

# -- used by observability (the admin dashboard's storage page) --


async def obs_largest(db, limit: int = 20) -> list:
    """Repos by stored block bytes, largest first, with their record counts."""
    return await db.fetchall(
        "SELECT b.did, a.handle, SUM(b.size) AS bytes, COUNT(*) AS blocks, "
        "(SELECT COUNT(*) FROM record r WHERE r.did = b.did) AS records "
        "FROM repo_block b LEFT JOIN account a ON a.did = b.did GROUP BY b.did ORDER BY bytes DESC LIMIT ?",
        (limit,))


async def obs_recent_commits(db, limit: int = 10) -> list:
    """The newest repo roots (one per account), newest first."""
    return await db.fetchall(
        "SELECT r.did, a.handle, r.rev, r.indexed_at FROM repo_root r LEFT JOIN account a ON a.did = r.did "
        "ORDER BY r.rev DESC LIMIT ?", (limit,))
