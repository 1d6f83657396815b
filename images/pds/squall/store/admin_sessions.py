"""Owner of ``admin_session``: the admin dashboard's server-side sign-in sessions (squall.admin_web).

The cookie carries a random session id; the row is keyed by its SHA-256, so the table alone does not
let anyone sign in. Writers run inside the caller's ``Database.write``; readers on the reader pool.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database

MAX_SESSIONS = 100  # oldest sessions are dropped past this (a bounded table)


def create(conn: sqlite3.Connection, id_hash: str, csrf: str, now: int, expires_at: int) -> None:
    conn.execute("DELETE FROM admin_session WHERE expires_at <= ?", (now,))
    conn.execute("INSERT INTO admin_session (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
                 (id_hash, csrf, now, expires_at))
    conn.execute("DELETE FROM admin_session WHERE id_hash NOT IN "
                 "(SELECT id_hash FROM admin_session ORDER BY created_at DESC LIMIT ?)", (MAX_SESSIONS,))


def delete(conn: sqlite3.Connection, id_hash: str) -> None:
    conn.execute("DELETE FROM admin_session WHERE id_hash = ?", (id_hash,))


async def get(db: "Database", id_hash: str, now: int) -> sqlite3.Row | None:
    """The live session with this id hash (``csrf``, ``created_at``, ``expires_at``), or None."""
    return await db.fetchone("SELECT csrf, created_at, expires_at FROM admin_session "
                             "WHERE id_hash = ? AND expires_at > ?", (id_hash, now))
