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
from ..store import accounts, repos
from ..store.repos import RepoRoot

if TYPE_CHECKING:
    from weakref import WeakSet

    from ..store.db import Database

__all__ = ["RepoRoot", "StoredRecord", "active_did", "get_active_record", "get_root", "list_collections",
           "list_records", "record_json"]


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
    return await repos.get_root(db, did)


async def active_did(db: "Database", identifier: str) -> str | None:
    """The DID of the active local account named by a DID or handle, else None."""
    return await accounts.active_account_did(db, identifier)


async def get_active_record(db: "Database", identifier: str, collection: str, rkey: str,
                            cid: str | None = None, *, prepared: "WeakSet | None" = None) -> StoredRecord | None:
    """A record of an active local account (DID or handle), with its block, in one query.
    ``prepared`` remembers the reader connections that already have the CID function."""
    found = await repos.get_active_record_block(db, identifier, collection, rkey, prepared=prepared)
    if found is None:
        return None
    did, record_cid, block = found
    if cid is not None and record_cid != cid:
        return None
    return StoredRecord(f"at://{did}/{collection}/{rkey}", record_cid, record_json(block))


async def list_records(db: "Database", did: str, collection: str, *, limit: int, cursor: str | None,
                       reverse: bool) -> list[StoredRecord]:
    """Newest key first (TID keys sort by time); ``reverse`` gives oldest first. The cursor is the
    last record key of the previous page, as the reference. A record taken down by the admin stays
    in the signed repo but is left out here."""
    rows = await repos.list_record_blocks(db, did, collection, limit=limit, cursor=cursor, reverse=reverse)
    return [StoredRecord(f"at://{did}/{collection}/{rkey}", cid, record_json(block)) for rkey, cid, block in rows]


async def list_collections(db: "Database", did: str) -> list[str]:
    return await repos.list_collections(db, did)
