"""Owner of ``account_session``: the account page's server-side sign-in sessions (squall.account_web).

The cookie carries a random session id; the row is keyed by its SHA-256, so the table alone does not
let anyone sign in. A session is ``active`` once signed in, or ``code`` while the e-mailed sign-in
code (squall.mail) is awaited. Sign-out, a password change and the account's deletion remove rows
(the last by the foreign key). Writers run inside the caller's ``Database.write``; readers on the
reader pool.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database

MAX_PER_ACCOUNT = 20  # an account's oldest page sessions are dropped past this (a bounded table)


def create(conn: sqlite3.Connection, id_hash: str, did: str, csrf: str, stage: str, now: int,
           expires_at: int, user_agent: str) -> None:
    conn.execute("DELETE FROM account_session WHERE expires_at <= ?", (now,))
    conn.execute("INSERT INTO account_session (id_hash, did, csrf, stage, created_at, expires_at, user_agent) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (id_hash, did, csrf, stage, now, expires_at, user_agent))
    conn.execute("DELETE FROM account_session WHERE did = ? AND id_hash NOT IN "
                 "(SELECT id_hash FROM account_session WHERE did = ? ORDER BY created_at DESC LIMIT ?)",
                 (did, did, MAX_PER_ACCOUNT))


def delete(conn: sqlite3.Connection, id_hash: str) -> None:
    conn.execute("DELETE FROM account_session WHERE id_hash = ?", (id_hash,))


def delete_one_of(conn: sqlite3.Connection, did: str, id_hash: str) -> bool:
    """False when the account has no such session."""
    return conn.execute("DELETE FROM account_session WHERE did = ? AND id_hash = ?", (did, id_hash)).rowcount > 0


def delete_all_of(conn: sqlite3.Connection, did: str, keep: str | None = None) -> None:
    """End every page session of the account but ``keep`` (an id hash)."""
    conn.execute("DELETE FROM account_session WHERE did = ? AND id_hash IS NOT ?", (did, keep))


async def get(db: "Database", id_hash: str, now: int) -> sqlite3.Row | None:
    """The live session with this id hash (``did``, ``csrf``, ``stage``, ``created_at``, ``expires_at``)."""
    return await db.fetchone("SELECT did, csrf, stage, created_at, expires_at FROM account_session "
                             "WHERE id_hash = ? AND expires_at > ?", (id_hash, now))


async def list_of(db: "Database", did: str, now: int) -> list[sqlite3.Row]:
    """The account's live signed-in page sessions, newest first."""
    return await db.fetchall("SELECT id_hash, created_at, expires_at, user_agent FROM account_session "
                             "WHERE did = ? AND stage = 'active' AND expires_at > ? ORDER BY created_at DESC",
                             (did, now))
