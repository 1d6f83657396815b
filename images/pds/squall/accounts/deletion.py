"""Deleting an account: com.atproto.admin.deleteAccount, com.atproto.server.deleteAccount and
``squall account delete`` (semantics of the reference PDS; https://atproto.com/specs/sync#account-status).

Everything the account owns goes in ONE transaction: its account row (and with it the refresh
tokens, app passwords, preferences, repo root and operator tokens), records, repo blocks and blob
references. Its blob rows are stamped unreferenced since the epoch, so the blob garbage collector
removes their bytes at its next sweep without waiting for the grace period (nothing can refer to
them any more) and with its usual retry when the store fails. The same transaction appends
``#account {active: false, status: "deleted"}`` and, as the reference's tombstone, drops every
earlier event of the DID from ``repo_seq``: the deletion event is what is kept. The handle is free
at once. The account's unused invite codes are disabled so nobody signs up with them later.

Not touched: the DID's PLC document (the directory keeps it; this PDS holds the rotation key but
a deletion does not tombstone the DID, as in the reference) — a did:web document simply stops
being served, because ``/.well-known/did.json`` only answers for local accounts.

Self-service deletion needs a token the reference e-mails (requestAccountDelete). Squall sends no
mail, so the operator issues it (``squall account delete-token``; ``squall.accounts.operator_tokens``,
purpose ``delete``), and the user presents it with their password.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store import accounts as accounts_store
from ..store import blobs as blobs_store
from ..store import identity as identity_store
from ..store import invites as invites_store
from ..store import preferences as preferences_store
from ..store import repos as repos_store
from ..store import sequencer
from ..store import sessions as sessions_store
from ..store import tokens as tokens_store
from ..store.accounts import get_by_did_sync
from ..store.sequencer import now_iso
from . import events, operator_tokens
from .operator_tokens import AccountNotFound

if TYPE_CHECKING:
    from ..context import AppContext

STATUS_DELETED = "deleted"
# The GC collects blobs whose ``unreferenced_since`` is older than its grace cutoff; this is older
# than any cutoff.
UNREFERENCED_SINCE_DELETION = "1970-01-01T00:00:00.000Z"

@dataclass(frozen=True)
class DeletedAccount:
    did: str
    handle: str | None
    seq: int  # of the #account "deleted" event
    records: int
    blobs: int


def delete_account(conn: sqlite3.Connection, did: str) -> DeletedAccount:
    """Remove the account and everything it owns; sequence its deletion (inside ``Database.write``)."""
    account = get_by_did_sync(conn, did)
    if account is None:
        raise AccountNotFound(did)
    # Each table's owner removes its rows; all of it runs in the caller's one transaction.
    records = repos_store.delete_repo_for_account(conn, did)  # records, blocks and root
    # Taken-down blobs are kept by the collector (their row blocks a re-upload); not once the
    # account itself is gone.
    blobs = blobs_store.release_blobs_for_account(conn, did, UNREFERENCED_SINCE_DELETION)
    invites_store.disable_account_invite_codes(conn, did)
    identity_store.delete_cached_did(conn, did)
    # The foreign keys cascade these with the account row; deleting them by name keeps the
    # deletion whole even on a connection without PRAGMA foreign_keys.
    sessions_store.delete_refresh_tokens_of(conn, did)
    accounts_store.delete_app_passwords_of(conn, did)
    preferences_store.delete_preferences_of(conn, did)
    tokens_store.delete_account_tokens_of(conn, did)
    accounts_store.delete_account_row(conn, did)
    seq = events.account(conn, did, STATUS_DELETED, now_iso())
    sequencer.delete_events_for_account_except(conn, did, seq)
    return DeletedAccount(did, account.handle, seq, records, blobs)


async def delete(ctx: "AppContext", did: str, *, token: str | None = None) -> DeletedAccount:
    """Delete the account (with ``token``: only if it is the account's live deletion token), then
    wake the firehose and forget what in-memory state knew of it."""
    if token is None:
        deleted = await ctx.db.write(delete_account, did)
    else:
        deleted = await ctx.db.write(delete_with_token, did, token)
    await events.wake_firehose(ctx)
    ctx.log.info("account deleted", extra={"did": did, "handle": deleted.handle, "records": deleted.records,
                                           "blobs": deleted.blobs, "seq": deleted.seq})
    return deleted


def delete_with_token(conn: sqlite3.Connection, did: str, token: str) -> DeletedAccount:
    """Check the deletion token and delete, in one transaction (a token is good for one deletion)."""
    operator_tokens.check(conn, did, operator_tokens.PURPOSE_DELETE, token)
    return delete_account(conn, did)
