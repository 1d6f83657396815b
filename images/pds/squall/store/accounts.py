"""Owner of the account tables: ``account`` (identity, credentials, status) and ``app_password``.

The account row holds the password hash and the repo signing key; nothing outside this module reads those columns by SQL.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by repo --

import sqlite3  # noqa: E402  (kept with the functions below: the section is appended as a whole)
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402

if _TYPE_CHECKING:
    from .db import Database as _Database


def repo_signing_account(conn: sqlite3.Connection, did: str) -> sqlite3.Row | None:
    """The account's signing key and status, as a repo write transaction sees them
    (signing_key_alg, signing_key, deactivated_at, takedown_ref)."""
    return conn.execute(
        "SELECT signing_key_alg, signing_key, deactivated_at, takedown_ref FROM account WHERE did = ?", (did,)
    ).fetchone()


def repo_import_account(conn: sqlite3.Connection, did: str) -> sqlite3.Row | None:
    """The account's status as a repo import transaction sees it (deactivated_at, takedown_ref)."""
    return conn.execute("SELECT deactivated_at, takedown_ref FROM account WHERE did = ?", (did,)).fetchone()


async def active_account_did(db: "_Database", identifier: str) -> str | None:
    """The DID of the active local account named by a DID or a handle (neither deactivated nor
    taken down), else None."""
    if identifier.startswith("did:"):
        clause, value = "a.did = ?", identifier
    else:
        clause, value = "a.handle = ?", identifier.lower()
    async with db.reader() as conn:
        rows = await conn.execute_fetchall(
            f"SELECT a.did FROM account a WHERE {clause} AND a.deactivated_at IS NULL AND a.takedown_ref IS NULL",
            (value,))
    return rows[0][0] if rows else None
