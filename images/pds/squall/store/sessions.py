"""Owner of the legacy session tables: ``refresh_token`` (rotating refresh tokens and their grace
window) and ``token_cutoff`` (when access tokens of an account or an app password stopped counting).

Access tokens are stateless JWTs; refresh tokens and the access-token cut-offs are stored.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database


def insert_refresh_token(conn: sqlite3.Connection, jti: str, did: str, app_password_name: str | None,
                         expires_at: int) -> None:
    conn.execute(
        "INSERT INTO refresh_token (id, did, app_password_name, expires_at) VALUES (?, ?, ?, ?)",
        (jti, did, app_password_name, expires_at),
    )


def get_refresh_token(conn: sqlite3.Connection, jti: str) -> sqlite3.Row | None:
    """The token's ``did``, ``app_password_name``, ``expires_at``, ``next_id`` and the ``privileged``
    flag of its app password (NULL when it has none, or when that app password was revoked)."""
    return conn.execute(
        "SELECT r.did, r.app_password_name, r.expires_at, r.next_id, a.privileged FROM refresh_token r "
        "LEFT JOIN app_password a ON a.did = r.did AND a.name = r.app_password_name WHERE r.id = ?",
        (jti,),
    ).fetchone()


def delete_expired_refresh_tokens(conn: sqlite3.Connection, did: str, now: int) -> None:
    conn.execute("DELETE FROM refresh_token WHERE did = ? AND expires_at <= ?", (did, now))


def mark_refresh_token_rotated(conn: sqlite3.Connection, jti: str, next_id: str, expires_by: int) -> None:
    """Record the token's successor and shorten its life to ``expires_by`` (the grace window)."""
    conn.execute(
        "UPDATE refresh_token SET next_id = ?, expires_at = MIN(expires_at, ?) WHERE id = ?",
        (next_id, expires_by, jti),
    )


def delete_refresh_token(conn: sqlite3.Connection, jti: str) -> bool:
    """False when there was no such token."""
    return conn.execute("DELETE FROM refresh_token WHERE id = ?", (jti,)).rowcount > 0


def delete_refresh_tokens_of(conn: sqlite3.Connection, did: str) -> None:
    """End every session of the account."""
    conn.execute("DELETE FROM refresh_token WHERE did = ?", (did,))


def delete_refresh_tokens_of_app_password(conn: sqlite3.Connection, did: str, app_password_name: str) -> None:
    conn.execute("DELETE FROM refresh_token WHERE did = ? AND app_password_name = ?", (did, app_password_name))


# -- used by e-mail (squall.mail): a password reset ends every session --


def mail_revoke_all_refresh_tokens(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM refresh_token WHERE did = ?", (did,))
# -- access-token cut-offs -------------------------------------------------------------------------


def set_token_cutoff(conn: sqlite3.Connection, did: str, credential: str, cutoff_ms: int, sweep_before_ms: int) -> None:
    """Refuse ``did``'s access tokens issued under ``credential`` before ``cutoff_ms``; forget the
    cut-offs older than ``sweep_before_ms`` (every token they refused has expired)."""
    conn.execute(
        "INSERT INTO token_cutoff (did, credential, cutoff_ms) VALUES (?, ?, ?) ON CONFLICT (did, credential) "
        "DO UPDATE SET cutoff_ms = MAX(cutoff_ms, excluded.cutoff_ms)",
        (did, credential, cutoff_ms),
    )
    conn.execute("DELETE FROM token_cutoff WHERE cutoff_ms < ?", (sweep_before_ms,))


async def token_cutoffs(db: "Database", did: str) -> dict[str, int]:
    """credential -> cut-off (unix ms) of the account's live cut-offs."""
    rows = await db.fetchall("SELECT credential, cutoff_ms FROM token_cutoff WHERE did = ?", (did,))
    return {row["credential"]: row["cutoff_ms"] for row in rows}


# -- used by the account page (squall.account_web): list and end one session --


async def list_live_refresh_tokens(db, did: str, now: int) -> list[sqlite3.Row]:
    """The account's sessions: refresh tokens not yet rotated nor expired (``id``, ``app_password_name``,
    ``expires_at``), the longest-lived first."""
    return await db.fetchall(
        "SELECT id, app_password_name, expires_at FROM refresh_token "
        "WHERE did = ? AND next_id IS NULL AND expires_at > ? ORDER BY expires_at DESC",
        (did, now),
    )


def delete_refresh_token_of(conn: sqlite3.Connection, did: str, jti: str) -> bool:
    """End one session of the account, and the grace-window predecessors that rotated into it.
    False when the account has no such token."""
    found = conn.execute("DELETE FROM refresh_token WHERE did = ? AND id = ?", (did, jti)).rowcount > 0
    if found:
        conn.execute("DELETE FROM refresh_token WHERE did = ? AND next_id = ?", (did, jti))
    return found
