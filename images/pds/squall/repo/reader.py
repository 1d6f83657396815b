"""Reading a repository: its root, records and collections (com.atproto.repo.getRecord,
listRecords, describeRepo; https://atproto.com/specs/repository).

Reads go through the database's reader pool, never the writer. A record row names its block by
CID; the value is that block decoded and rendered as atproto JSON
(https://atproto.com/specs/data-model#json-representation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from ..atproto import dagcbor, datamodel
from ..atproto.cid import CID

if TYPE_CHECKING:
    from ..store.db import Database


@dataclass(frozen=True)
class RepoRoot:
    cid: str
    rev: str


@dataclass(frozen=True)
class StoredRecord:
    uri: str
    cid: str
    value: Any  # JSON-ready

    def view(self) -> dict[str, Any]:
        return {"uri": self.uri, "cid": self.cid, "value": self.value}


def record_json(block: bytes) -> Any:
    return datamodel.to_json(dagcbor.decode(block))


async def get_root(db: "Database", did: str) -> RepoRoot | None:
    row = await db.fetchone("SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    return RepoRoot(row["cid"], row["rev"]) if row is not None else None


def _account_clause(identifier: str) -> tuple[str, str]:
    if identifier.startswith("did:"):
        return "a.did = ?", identifier
    return "a.handle = ?", identifier.lower()


async def active_did(db: "Database", identifier: str) -> str | None:
    """The DID of the active local account named by a DID or handle, else None."""
    clause, value = _account_clause(identifier)
    async with db.reader() as conn:
        rows = await conn.execute_fetchall(
            f"SELECT a.did FROM account a WHERE {clause} AND a.deactivated_at IS NULL AND a.takedown_ref IS NULL",
            (value,))
    return rows[0][0] if rows else None


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


async def get_active_record(db: "Database", identifier: str, collection: str, rkey: str,
                            cid: str | None = None, *, prepared: "WeakSet | None" = None) -> StoredRecord | None:
    """A record of an active local account (DID or handle), with its block, in one query.
    ``prepared`` remembers the reader connections that already have the CID function."""
    clause, value = _account_clause(identifier)
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
    if cid is not None and record_cid != cid:
        return None
    return StoredRecord(f"at://{did}/{collection}/{rkey}", record_cid, record_json(bytes(block)))


async def list_records(db: "Database", did: str, collection: str, *, limit: int, cursor: str | None,
                       reverse: bool) -> list[StoredRecord]:
    """Newest key first (TID keys sort by time); ``reverse`` gives oldest first. The cursor is the
    last record key of the previous page, as the reference."""
    if reverse:
        where, order = "rkey > ?", "ASC"
    else:
        where, order = "rkey < ?", "DESC"
    # A record taken down by the admin stays in the signed repo but is left out here.
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
            out.append(StoredRecord(f"at://{did}/{collection}/{rkey}", cid, record_json(block)))
    return out


async def list_collections(db: "Database", did: str) -> list[str]:
    rows = await db.fetchall("SELECT DISTINCT collection FROM record WHERE did = ? ORDER BY collection", (did,))
    return [r[0] for r in rows]
