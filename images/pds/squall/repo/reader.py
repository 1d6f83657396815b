"""Reading a repository: its root, records and collections (com.atproto.repo.getRecord,
listRecords, describeRepo; https://atproto.com/specs/repository).

Reads go through the database's reader pool, never the writer. A record row names its block by
CID; the value is that block decoded and rendered as atproto JSON
(https://atproto.com/specs/data-model#json-representation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


async def get_record(db: "Database", did: str, collection: str, rkey: str,
                     cid: str | None = None) -> StoredRecord | None:
    async with db.reader() as conn:
        async with conn.execute(
            "SELECT cid FROM record WHERE did = ? AND collection = ? AND rkey = ?", (did, collection, rkey)
        ) as cur:
            row = await cur.fetchone()
        if row is None or (cid is not None and row[0] != cid):
            return None
        async with conn.execute(
            "SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, CID.decode(row[0]).bytes)
        ) as cur:
            block = await cur.fetchone()
    if block is None:
        return None
    return StoredRecord(f"at://{did}/{collection}/{rkey}", row[0], record_json(bytes(block[0])))


async def list_records(db: "Database", did: str, collection: str, *, limit: int, cursor: str | None,
                       reverse: bool) -> list[StoredRecord]:
    """Newest key first (TID keys sort by time); ``reverse`` gives oldest first. The cursor is the
    last record key of the previous page, as the reference."""
    if reverse:
        where, order = "rkey > ?", "ASC"
    else:
        where, order = "rkey < ?", "DESC"
    sql = f"SELECT rkey, cid FROM record WHERE did = ? AND collection = ?"
    params: list[Any] = [did, collection]
    if cursor is not None:
        sql += f" AND {where}"
        params.append(cursor)
    sql += f" ORDER BY rkey {order} LIMIT ?"
    params.append(limit)
    async with db.reader() as conn:
        async with conn.execute(sql, params) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            return []
        cids = {row[1]: CID.decode(row[1]).bytes for row in rows}
        marks = ",".join("?" * len(cids))
        async with conn.execute(
            f"SELECT cid, content FROM repo_block WHERE did = ? AND cid IN ({marks})", (did, *cids.values())
        ) as cur:
            blocks = {bytes(r[0]): bytes(r[1]) for r in await cur.fetchall()}
    out = []
    for rkey, cid in rows:
        block = blocks.get(cids[cid])
        if block is not None:
            out.append(StoredRecord(f"at://{did}/{collection}/{rkey}", cid, record_json(block)))
    return out


async def list_collections(db: "Database", did: str) -> list[str]:
    rows = await db.fetchall("SELECT DISTINCT collection FROM record WHERE did = ? ORDER BY collection", (did,))
    return [r[0] for r in rows]
