"""Owner of the operator-issued tokens: ``account_token`` (account deletion, PLC operation signing) and the retired ``account_delete_token``.

Tokens are stored hashed and single-use.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database

_SELECT = "SELECT token_hash, expires_at FROM account_token WHERE did = ? AND purpose = ?"


def put_account_token(conn: sqlite3.Connection, did: str, purpose: str, token_hash: str, expires_at: int) -> None:
    """Store the account's ``purpose`` token, replacing any earlier one."""
    conn.execute(
        "INSERT INTO account_token (did, purpose, token_hash, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (did, purpose) DO UPDATE SET token_hash = excluded.token_hash, expires_at = excluded.expires_at",
        (did, purpose, token_hash, expires_at),
    )


def get_account_token(conn: sqlite3.Connection, did: str, purpose: str) -> tuple[str, int] | None:
    """(token_hash, expires_at), on the writer connection."""
    row = conn.execute(_SELECT, (did, purpose)).fetchone()
    return tuple(row) if row is not None else None


async def read_account_token(db: "Database", did: str, purpose: str) -> tuple[str, int] | None:
    """(token_hash, expires_at), on a reader."""
    row = await db.fetchone(_SELECT, (did, purpose))
    return tuple(row) if row is not None else None


def delete_account_token(conn: sqlite3.Connection, did: str, purpose: str) -> None:
    conn.execute("DELETE FROM account_token WHERE did = ? AND purpose = ?", (did, purpose))


def delete_account_tokens_of(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM account_token WHERE did = ?", (did,))


# -- used by e-mail (squall.mail): a mailed deletion / PLC token is an account_token with the
# e-mail lifetime, so deleteAccount and signPlcOperation consume it unchanged --


def mail_put_account_token(conn: sqlite3.Connection, did: str, purpose: str, token_hash: str,
                           expires_at: int) -> None:
    conn.execute(
        "INSERT INTO account_token (did, purpose, token_hash, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (did, purpose) DO UPDATE SET token_hash = excluded.token_hash, expires_at = excluded.expires_at",
        (did, purpose, token_hash, expires_at),
    )
