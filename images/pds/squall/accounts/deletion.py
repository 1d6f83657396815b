"""Deleting an account: com.atproto.admin.deleteAccount, com.atproto.server.deleteAccount and
``squall account delete`` (semantics of the reference PDS; https://atproto.com/specs/sync#account-status).

Everything the account owns goes in ONE transaction: its account row (and with it the refresh
tokens, app passwords, preferences, repo root and deletion token), records, repo blocks and blob
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
mail, so the operator issues it (``squall account delete-token``): it is stored as a SHA-256 digest,
valid for :data:`DELETE_TOKEN_TTL` seconds, and the user presents it with their password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.sequencer import now_iso
from ..xrpc.errors import InvalidRequest
from . import events
from .store import get_by_did_sync

if TYPE_CHECKING:
    from ..context import AppContext

STATUS_DELETED = "deleted"
# The GC collects blobs whose ``unreferenced_since`` is older than its grace cutoff; this is older
# than any cutoff.
UNREFERENCED_SINCE_DELETION = "1970-01-01T00:00:00.000Z"
DELETE_TOKEN_TTL = 3600  # the reference's e-mailed tokens live 15 minutes; an operator hands this on by hand
_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class AccountNotFound(InvalidRequest):
    def __init__(self, did: str):
        super().__init__(f"Account not found: {did}", "AccountNotFound")


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
    records = conn.execute("DELETE FROM record WHERE did = ?", (did,)).rowcount
    conn.execute("DELETE FROM record_blob WHERE did = ?", (did,))
    conn.execute("DELETE FROM repo_block WHERE did = ?", (did,))
    # Taken-down blobs are kept by the collector (their row blocks a re-upload); not once the
    # account itself is gone.
    blobs = conn.execute(
        "UPDATE blob SET unreferenced_since = ?, takedown_ref = NULL WHERE did = ?",
        (UNREFERENCED_SINCE_DELETION, did),
    ).rowcount
    conn.execute("UPDATE invite_code SET disabled = 1 WHERE for_account = ?", (did,))
    conn.execute("DELETE FROM did_cache WHERE did = ?", (did,))
    # The foreign keys cascade these with the account row; deleting them by name keeps the
    # deletion whole even on a connection without PRAGMA foreign_keys.
    for table in ("refresh_token", "app_password", "account_pref", "repo_root", "account_delete_token"):
        conn.execute(f"DELETE FROM {table} WHERE did = ?", (did,))
    conn.execute("DELETE FROM account WHERE did = ?", (did,))
    seq = events.account(conn, did, STATUS_DELETED, now_iso())
    conn.execute("DELETE FROM repo_seq WHERE did = ? AND seq != ?", (did, seq))
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


# -- deletion tokens -------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().upper().encode()).hexdigest()


def generate_token() -> str:
    """``XXXXX-XXXXX`` in base32 letters, as the reference's e-mail tokens look (50 bits)."""
    raw = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def issue_token(conn: sqlite3.Connection, did: str, now: int | None = None) -> tuple[str, int]:
    """A new deletion token for ``did`` (replacing any earlier one); returns (token, expires_at)."""
    if get_by_did_sync(conn, did) is None:
        raise AccountNotFound(did)
    now = int(time.time()) if now is None else now
    token = generate_token()
    expires_at = now + DELETE_TOKEN_TTL
    conn.execute(
        "INSERT INTO account_delete_token (did, token_hash, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (did) DO UPDATE SET token_hash = excluded.token_hash, expires_at = excluded.expires_at",
        (did, _digest(token), expires_at),
    )
    return token, expires_at


def verify_token(stored: tuple[str, int] | None, token: str, now: int) -> None:
    """Raise InvalidToken / ExpiredToken unless ``token`` matches the stored (digest, expires_at)."""
    if stored is None or not hmac.compare_digest(stored[0], _digest(token)):
        raise InvalidRequest("Token is invalid", "InvalidToken")
    if stored[1] <= now:
        raise InvalidRequest("Token is expired", "ExpiredToken")


def check_token(conn: sqlite3.Connection, did: str, token: str, now: int | None = None) -> None:
    """Raise InvalidToken / ExpiredToken unless ``token`` is the live deletion token of ``did``."""
    row = conn.execute("SELECT token_hash, expires_at FROM account_delete_token WHERE did = ?", (did,)).fetchone()
    verify_token(tuple(row) if row is not None else None, token, int(time.time()) if now is None else now)


def delete_with_token(conn: sqlite3.Connection, did: str, token: str) -> DeletedAccount:
    """Check the token and delete, in one transaction (a token is good for one deletion)."""
    check_token(conn, did, token)
    return delete_account(conn, did)
