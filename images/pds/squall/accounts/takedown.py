"""Admin takedowns of accounts, records and blobs (com.atproto.admin.updateSubjectStatus /
getSubjectStatus, as the reference PDS).

A takedown stores an operator's reference (``takedown_ref``; the time when none is given) on the
subject's row; reversing it clears the column:

- account: the repo, its records and blobs disappear from every reader but the admin and the
  owner (``squall.xrpc.sync`` / ``blobs`` / ``repo`` check ``account.takedown_ref``), its refresh
  tokens are revoked so sessions stop, and the firehose announces
  ``#account {active: false, status: "takendown"}``; a reversal announces the account's status
  again (active, or still deactivated).
- record: ``record.takedown_ref``; getRecord and listRecords leave the record out for everyone
  (:class:`RecordTakedowns`). The record stays in the signed repo, as in the reference.
- blob: ``blob.takedown_ref``; getBlob answers BlobNotFound, a re-upload is refused and the
  garbage collector keeps the row.

Writers take the writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..store.sequencer import now_iso
from ..xrpc.errors import InvalidRequest
from . import events
from .store import get_by_did_sync

if TYPE_CHECKING:
    from ..store.db import Database
    from ..xrpc.registry import Registry
    from ..xrpc.request import XrpcRequest


class SubjectNotFound(InvalidRequest):
    def __init__(self, message: str):
        super().__init__(message, "NotFound")


@dataclass(frozen=True)
class Takedown:
    """A status attribute (com.atproto.admin.defs#statusAttr) to apply."""

    applied: bool
    ref: str | None = None

    def column_value(self) -> str | None:
        # As the reference: a takedown without a reference is stamped with the time it was made.
        if not self.applied:
            return None
        return self.ref if self.ref else now_iso()


def status_attr(value: str | None) -> dict[str, Any]:
    """The stored column as com.atproto.admin.defs#statusAttr."""
    return {"applied": True, "ref": value} if value is not None else {"applied": False}


# -- accounts ----------------------------------------------------------------------------------


def set_account_takedown(conn: sqlite3.Connection, did: str, takedown: Takedown) -> int:
    """Apply or reverse an account takedown; returns the seq of the #account event."""
    cur = conn.execute("UPDATE account SET takedown_ref = ? WHERE did = ?", (takedown.column_value(), did))
    if cur.rowcount == 0:
        raise SubjectNotFound(f"Account not found: {did}")
    if takedown.applied:
        # Sessions end: no refresh token of the account can be used again (access tokens lapse
        # within their two hours, and every account read refuses a taken-down account meanwhile).
        conn.execute("DELETE FROM refresh_token WHERE did = ?", (did,))
    return sequence_account_status(conn, did)


def sequence_account_status(conn: sqlite3.Connection, did: str) -> int:
    """Announce the account's current hosting status on the firehose."""
    account = get_by_did_sync(conn, did)
    if account is None:
        raise SubjectNotFound(f"Account not found: {did}")
    return events.account(conn, did, account.status, now_iso())


async def account_status(db: "Database", did: str) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT takedown_ref, deactivated_at FROM account WHERE did = ?", (did,))
    if row is None:
        return None
    return {
        "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
        "takedown": status_attr(row["takedown_ref"]),
        "deactivated": {"applied": row["deactivated_at"] is not None},
    }


# -- records -----------------------------------------------------------------------------------


def set_record_takedown(conn: sqlite3.Connection, did: str, collection: str, rkey: str,
                        takedown: Takedown) -> str:
    """Apply or reverse a record takedown; returns the record's current CID."""
    row = conn.execute(
        "UPDATE record SET takedown_ref = ? WHERE did = ? AND collection = ? AND rkey = ? RETURNING cid",
        (takedown.column_value(), did, collection, rkey),
    ).fetchone()
    if row is None:
        raise SubjectNotFound(f"Record not found: at://{did}/{collection}/{rkey}")
    return row[0]


async def record_status(db: "Database", did: str, collection: str, rkey: str) -> dict[str, Any] | None:
    row = await db.fetchone(
        "SELECT cid, takedown_ref FROM record WHERE did = ? AND collection = ? AND rkey = ?",
        (did, collection, rkey))
    if row is None:
        return None
    return {
        "subject": {"$type": "com.atproto.repo.strongRef", "uri": f"at://{did}/{collection}/{rkey}",
                    "cid": row["cid"]},
        "takedown": status_attr(row["takedown_ref"]),
    }


# -- blobs -------------------------------------------------------------------------------------


def set_blob_takedown(conn: sqlite3.Connection, did: str, cid: str, takedown: Takedown) -> None:
    cur = conn.execute("UPDATE blob SET takedown_ref = ? WHERE did = ? AND cid = ?",
                       (takedown.column_value(), did, cid))
    if cur.rowcount == 0:
        raise SubjectNotFound(f"Blob not found: {cid} of {did}")


async def blob_status(db: "Database", did: str, cid: str) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT takedown_ref FROM blob WHERE did = ? AND cid = ?", (did, cid))
    if row is None:
        return None
    return {
        "subject": {"$type": "com.atproto.admin.defs#repoBlobRef", "did": did, "cid": cid},
        "takedown": status_attr(row["takedown_ref"]),
    }


# -- hiding taken-down records from repo reads ---------------------------------------------------


GET_RECORD = "com.atproto.repo.getRecord"
LIST_RECORDS = "com.atproto.repo.listRecords"

Handler = Callable[["XrpcRequest"], Awaitable[Any]]


class RecordTakedowns:
    """Keeps taken-down records out of com.atproto.repo.getRecord and listRecords.

    The record reader (``squall.repo.reader``) does not look at ``record.takedown_ref``, so the two
    handlers are wrapped: their answer is filtered against the set of taken-down record paths,
    kept in memory (loaded at start, updated by every record takedown). The database stays the
    source of truth: a path found in the set is checked against its row before it is hidden, so
    a record deleted and written again under the same key is not hidden by a stale entry. With
    no record taken down — the common case — the wrappers cost one set lookup.
    """

    def __init__(self, db: "Database") -> None:
        self.db = db
        self._paths: set[tuple[str, str, str]] = set()

    async def load(self) -> None:
        rows = await self.db.fetchall("SELECT did, collection, rkey FROM record WHERE takedown_ref IS NOT NULL")
        self._paths = {(r["did"], r["collection"], r["rkey"]) for r in rows}

    def note(self, did: str, collection: str, rkey: str, taken_down: bool) -> None:
        if taken_down:
            self._paths.add((did, collection, rkey))
        else:
            self._paths.discard((did, collection, rkey))

    def forget_account(self, did: str) -> None:
        self._paths = {p for p in self._paths if p[0] != did}

    async def _hidden(self, did: str, collection: str, rkey: str) -> bool:
        path = (did, collection, rkey)
        if path not in self._paths:
            return False
        row = await self.db.fetchone(
            "SELECT takedown_ref FROM record WHERE did = ? AND collection = ? AND rkey = ?", path)
        if row is None or row["takedown_ref"] is None:
            self._paths.discard(path)
            return False
        return True

    async def _filter_view(self, view: dict[str, Any]) -> bool:
        """Is the record view ``{uri, cid, value}`` taken down?"""
        uri = view.get("uri")
        if not self._paths or not isinstance(uri, str):
            return False
        did, _, rest = uri[len("at://"):].partition("/")
        collection, _, rkey = rest.partition("/")
        return await self._hidden(did, collection, rkey)

    def wrap_get_record(self, handler: Handler) -> Handler:
        async def get_record(req: "XrpcRequest") -> Any:
            result = await handler(req)
            if isinstance(result, dict) and await self._filter_view(result):
                uri = result["uri"]
                raise InvalidRequest(f"Could not locate record: {uri}", "RecordNotFound")
            return result

        return get_record

    def wrap_list_records(self, handler: Handler) -> Handler:
        async def list_records(req: "XrpcRequest") -> Any:
            result = await handler(req)
            if not self._paths or not isinstance(result, dict) or not isinstance(result.get("records"), list):
                return result
            kept = [r for r in result["records"] if not (isinstance(r, dict) and await self._filter_view(r))]
            # The cursor still names the last key of the page as read, so paging goes on past a
            # hidden record (the page is just shorter).
            return {**result, "records": kept}

        return list_records

    def install(self, registry: "Registry") -> list[str]:
        """Wrap the two read handlers in ``registry``; returns the NSIDs wrapped."""
        wrapped = []
        for nsid, wrap in ((GET_RECORD, self.wrap_get_record), (LIST_RECORDS, self.wrap_list_records)):
            method = registry.get(nsid)
            if method is None:
                continue
            # Registry has no replace(): its table is rebuilt here for the one method.
            registry._methods[nsid] = replace(method, handler=wrap(method.handler))
            wrapped.append(nsid)
        return wrapped
