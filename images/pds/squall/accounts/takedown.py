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
  (``squall.repo.reader`` filters on the column). The record stays in the signed repo, as in the reference.
- blob: ``blob.takedown_ref``; getBlob answers BlobNotFound, a re-upload is refused and the
  garbage collector keeps the row.

Writers take the writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store.sequencer import now_iso
from ..errors import InvalidRequest
from . import events
from ..store import accounts as accounts_store
from ..store import blobs as blobs_store
from ..store import repos as repos_store
from ..store import sessions as sessions_store
from ..store.accounts import get_by_did_sync

if TYPE_CHECKING:
    from ..store.db import Database


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
    if not accounts_store.set_takedown_ref(conn, did, takedown.column_value()):
        raise SubjectNotFound(f"Account not found: {did}")
    if takedown.applied:
        # Sessions end: no refresh token of the account can be used again (access tokens lapse
        # within their two hours, and every account read refuses a taken-down account meanwhile).
        sessions_store.delete_refresh_tokens_of(conn, did)
    return sequence_account_status(conn, did)


def sequence_account_status(conn: sqlite3.Connection, did: str) -> int:
    """Announce the account's current hosting status on the firehose."""
    account = get_by_did_sync(conn, did)
    if account is None:
        raise SubjectNotFound(f"Account not found: {did}")
    return events.account(conn, did, account.status, now_iso())


async def account_status(db: "Database", did: str) -> dict[str, Any] | None:
    row = await accounts_store.get_status_columns(db, did)
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
    cid = repos_store.set_record_takedown_ref(conn, did, collection, rkey, takedown.column_value())
    if cid is None:
        raise SubjectNotFound(f"Record not found: at://{did}/{collection}/{rkey}")
    return cid


async def record_status(db: "Database", did: str, collection: str, rkey: str) -> dict[str, Any] | None:
    row = await repos_store.record_takedown_row(db, did, collection, rkey)
    if row is None:
        return None
    return {
        "subject": {"$type": "com.atproto.repo.strongRef", "uri": f"at://{did}/{collection}/{rkey}",
                    "cid": row["cid"]},
        "takedown": status_attr(row["takedown_ref"]),
    }


# -- blobs -------------------------------------------------------------------------------------


def set_blob_takedown(conn: sqlite3.Connection, did: str, cid: str, takedown: Takedown) -> None:
    if not blobs_store.set_blob_takedown_ref(conn, did, cid, takedown.column_value()):
        raise SubjectNotFound(f"Blob not found: {cid} of {did}")


async def blob_status(db: "Database", did: str, cid: str) -> dict[str, Any] | None:
    row = await blobs_store.blob_takedown_row(db, did, cid)
    if row is None:
        return None
    return {
        "subject": {"$type": "com.atproto.admin.defs#repoBlobRef", "did": did, "cid": cid},
        "takedown": status_attr(row["takedown_ref"]),
    }


# -- hiding taken-down records from repo reads ---------------------------------------------------
