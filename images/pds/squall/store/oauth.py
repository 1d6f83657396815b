"""Owner of the OAuth tables: ``oauth_request`` (pushed authorization requests), ``oauth_session`` (grants and their rotating refresh tokens) and ``oauth_spent_refresh``.

Refresh tokens are stored hashed; a spent one is remembered so a replay revokes the grant.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database


# -- oauth_request (pushed authorization requests and their codes) -----------------------------------


def purge_expired(conn: sqlite3.Connection, now: int) -> None:
    """Forget expired authorization requests and spent refresh tokens (run on each new request)."""
    conn.execute("DELETE FROM oauth_request WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM oauth_spent_refresh WHERE expires_at <= ?", (now,))


def insert_request(conn: sqlite3.Connection, request_id: str, client_id: str, client_auth: str, dpop_jkt: str,
                   params: str, expires_at: int) -> None:
    """``params`` is the request's parameters as JSON text."""
    conn.execute(
        "INSERT INTO oauth_request (id, client_id, client_auth, dpop_jkt, params, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (request_id, client_id, client_auth, dpop_jkt, params, expires_at),
    )


async def get_request(db: "Database", request_id: str) -> sqlite3.Row | None:
    """``client_id, params, expires_at, did`` of a pushed request (``did`` is set once approved)."""
    return await db.fetchone(
        "SELECT client_id, params, expires_at, did FROM oauth_request WHERE id = ?", (request_id,))


def count_failed_login(conn: sqlite3.Connection, request_id: str, max_failed: int) -> None:
    """Count a failed sign-in on the request; the request is deleted once ``max_failed`` is reached."""
    conn.execute("UPDATE oauth_request SET failed_logins = failed_logins + 1 WHERE id = ?", (request_id,))
    conn.execute("DELETE FROM oauth_request WHERE id = ? AND failed_logins >= ?", (request_id, max_failed))


def approve_request(conn: sqlite3.Connection, request_id: str, did: str, code_hash: str, code_expires_at: int,
                    now: int) -> bool:
    """Attach the user and the code to a live, not yet answered request; False when there is none."""
    return conn.execute(
        "UPDATE oauth_request SET did = ?, code = ?, code_expires_at = ?, expires_at = ? "
        "WHERE id = ? AND did IS NULL AND expires_at > ?",
        (did, code_hash, code_expires_at, code_expires_at, request_id, now),
    ).rowcount == 1


def delete_request(conn: sqlite3.Connection, request_id: str) -> None:
    conn.execute("DELETE FROM oauth_request WHERE id = ?", (request_id,))


def get_request_by_code(conn: sqlite3.Connection, code_hash: str) -> sqlite3.Row | None:
    """The request a code was issued for (``session_id`` is set once the code was exchanged)."""
    return conn.execute(
        "SELECT id, client_id, client_auth, dpop_jkt, params, did, code_expires_at, session_id "
        "FROM oauth_request WHERE code = ?", (code_hash,)).fetchone()


def mark_code_exchanged(conn: sqlite3.Connection, request_id: str, session_id: str, expires_at: int) -> None:
    """Remember which session a code issued (until ``expires_at``), so that a replay can revoke it."""
    conn.execute("UPDATE oauth_request SET session_id = ?, expires_at = ? WHERE id = ?",
                 (session_id, expires_at, request_id))


# -- oauth_session (grants) and oauth_spent_refresh -------------------------------------------------------


def insert_session(conn: sqlite3.Connection, session_id: str, did: str, client_id: str, client_auth: str,
                   dpop_jkt: str, scope: str, created_at: int, expires_at: int, refresh_hash: str,
                   refresh_expires_at: int) -> None:
    conn.execute(
        "INSERT INTO oauth_session (id, did, client_id, client_auth, dpop_jkt, scope, created_at, expires_at, "
        "refresh_hash, refresh_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, did, client_id, client_auth, dpop_jkt, scope, created_at, expires_at, refresh_hash,
         refresh_expires_at),
    )


def delete_session(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("DELETE FROM oauth_session WHERE id = ?", (session_id,))


def delete_sessions_of(conn: sqlite3.Connection, did: str) -> None:
    """End every OAuth grant of the account (its password changed)."""
    conn.execute("DELETE FROM oauth_session WHERE did = ?", (did,))


def get_session_by_refresh(conn: sqlite3.Connection, refresh_hash: str) -> sqlite3.Row | None:
    """The whole session row whose current refresh token has this hash."""
    return conn.execute("SELECT * FROM oauth_session WHERE refresh_hash = ?", (refresh_hash,)).fetchone()


def spent_refresh_session(conn: sqlite3.Connection, refresh_hash: str) -> str | None:
    """The session a spent (already rotated) refresh token belonged to."""
    row = conn.execute("SELECT session_id FROM oauth_spent_refresh WHERE refresh_hash = ?",
                       (refresh_hash,)).fetchone()
    return row["session_id"] if row is not None else None


def remember_spent_refresh(conn: sqlite3.Connection, refresh_hash: str, session_id: str, expires_at: int) -> None:
    conn.execute("INSERT INTO oauth_spent_refresh (refresh_hash, session_id, expires_at) VALUES (?, ?, ?)",
                 (refresh_hash, session_id, expires_at))


def rotate_refresh(conn: sqlite3.Connection, session_id: str, refresh_hash: str, refresh_expires_at: int,
                   scope: str) -> None:
    """Give the session its new refresh token (and possibly narrowed scope)."""
    conn.execute("UPDATE oauth_session SET refresh_hash = ?, refresh_expires_at = ?, scope = ? WHERE id = ?",
                 (refresh_hash, refresh_expires_at, scope, session_id))


def revoke_session(conn: sqlite3.Connection, refresh_hash: str, session_id: str | None) -> None:
    """Delete the session holding this refresh token, or the session with this id."""
    conn.execute("DELETE FROM oauth_session WHERE refresh_hash = ? OR id = ?", (refresh_hash, session_id))


async def get_session_owner(db: "Database", session_id: str) -> sqlite3.Row | None:
    """``did, expires_at, last_used_at`` of a session (the resource server checks an access token's
    session is live)."""
    return await db.fetchone("SELECT did, expires_at, last_used_at FROM oauth_session WHERE id = ?", (session_id,))


def touch_session(conn: sqlite3.Connection, session_id: str, now: int) -> None:
    conn.execute("UPDATE oauth_session SET last_used_at = ? WHERE id = ?", (now, session_id))


async def list_sessions(db: "Database", did: str) -> list[sqlite3.Row]:
    """An account's live grants (the account page), newest first."""
    return await db.fetchall(
        "SELECT id, client_id, scope, created_at, expires_at, last_used_at FROM oauth_session "
        "WHERE did = ? ORDER BY created_at DESC", (did,))


def delete_account_session(conn: sqlite3.Connection, session_id: str, did: str) -> bool:
    """Revoke one grant of this account (the account page); False when there is none."""
    return conn.execute("DELETE FROM oauth_session WHERE id = ? AND did = ?", (session_id, did)).rowcount == 1


# -- used by e-mail (squall.mail): a password reset ends every OAuth grant too --


def mail_revoke_oauth_sessions(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM oauth_session WHERE did = ?", (did,))
