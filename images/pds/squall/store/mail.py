"""Owner of the e-mail tables: ``mail_outbox`` (messages waiting for, or done with, the SMTP
sender), ``email_token`` (mailed tokens, hashed, one live per account and purpose) and
``email_auth_factor`` (accounts that sign in with an e-mailed code).

Readers take the ``Database`` and run on the reader pool; writers take the writer's
``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction — a token and
the mail that carries it are written by one transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import Database


# -- outbox: writers ------------------------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, *, transport: str, did: str | None, recipient: str, subject: str,
            message: bytes, now: int) -> int:
    cur = conn.execute(
        "INSERT INTO mail_outbox (transport, did, recipient, subject, message, created_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (transport, did, recipient, subject, message, now, now),
    )
    return int(cur.lastrowid)


def mark_sent(conn: sqlite3.Connection, mail_id: int, now: int) -> None:
    # The message (which may carry a token) is not kept once delivered.
    conn.execute("UPDATE mail_outbox SET sent_at = ?, attempts = attempts + 1, message = NULL WHERE id = ?",
                 (now, mail_id))


def mark_retry(conn: sqlite3.Connection, mail_id: int, next_attempt_at: int, error: str, now: int) -> None:
    conn.execute(
        "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, last_error_at = ? "
        "WHERE id = ?",
        (next_attempt_at, error, now, mail_id),
    )


def mark_failed(conn: sqlite3.Connection, mail_id: int, error: str, now: int) -> None:
    conn.execute(
        "UPDATE mail_outbox SET attempts = attempts + 1, failed_at = ?, last_error = ?, last_error_at = ?, "
        "message = NULL WHERE id = ?",
        (now, error, now, mail_id),
    )


def sweep(conn: sqlite3.Connection, *, sent_before: int, failed_before: int, now: int) -> None:
    """Forget delivered and failed mails after a while, and tokens past their expiry."""
    conn.execute("DELETE FROM mail_outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (sent_before,))
    conn.execute("DELETE FROM mail_outbox WHERE failed_at IS NOT NULL AND failed_at < ?", (failed_before,))
    conn.execute("DELETE FROM email_token WHERE expires_at <= ?", (now,))


# -- outbox: readers ------------------------------------------------------------------------------


def _in(transports: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in transports) or "NULL"


async def due(db: "Database", transports: tuple[str, ...], now: int, limit: int) -> list[Any]:
    """Queued mails of the configured transports whose time has come, oldest first."""
    return await db.fetchall(
        "SELECT id, transport, recipient, message, attempts, created_at FROM mail_outbox "
        f"WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ? AND transport IN ({_in(transports)}) "
        "ORDER BY next_attempt_at, id LIMIT ?",
        (now, *transports, limit),
    )


async def next_attempt_at(db: "Database", transports: tuple[str, ...]) -> int | None:
    row = await db.fetchone(
        "SELECT MIN(next_attempt_at) AS t FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL "
        f"AND transport IN ({_in(transports)})", transports)
    return row["t"] if row is not None else None


async def summary(db: "Database") -> dict[str, Any]:
    counts = await db.fetchone(
        "SELECT SUM(sent_at IS NULL AND failed_at IS NULL) AS queued, SUM(sent_at IS NOT NULL) AS sent, "
        "SUM(failed_at IS NOT NULL) AS failed, MIN(CASE WHEN sent_at IS NULL AND failed_at IS NULL "
        "THEN created_at END) AS oldest FROM mail_outbox")
    last = await db.fetchone(
        "SELECT last_error, last_error_at FROM mail_outbox WHERE last_error_at IS NOT NULL "
        "ORDER BY last_error_at DESC, id DESC LIMIT 1")
    return {"queued": counts["queued"] or 0, "sent": counts["sent"] or 0, "failed": counts["failed"] or 0,
            "oldest_queued_at": counts["oldest"],
            "last_error": last["last_error"] if last else None,
            "last_error_at": last["last_error_at"] if last else None}


async def messages_for(db: "Database", did: str) -> list[Any]:
    """The outbox rows about one account, newest first (the operator's view; no message bodies)."""
    return await db.fetchall(
        "SELECT id, recipient, subject, created_at, attempts, sent_at, failed_at, last_error FROM mail_outbox "
        "WHERE did = ? ORDER BY id DESC LIMIT 50", (did,))


# -- mailed tokens ----------------------------------------------------------------------------------


def put_token(conn: sqlite3.Connection, did: str, purpose: str, token_hash: str, expires_at: int) -> None:
    conn.execute(
        "INSERT INTO email_token (did, purpose, token_hash, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (did, purpose) DO UPDATE SET token_hash = excluded.token_hash, expires_at = excluded.expires_at",
        (did, purpose, token_hash, expires_at),
    )


def get_token(conn: sqlite3.Connection, did: str, purpose: str) -> tuple[str, int] | None:
    row = conn.execute("SELECT token_hash, expires_at FROM email_token WHERE did = ? AND purpose = ?",
                       (did, purpose)).fetchone()
    return (row[0], row[1]) if row is not None else None


def find_token(conn: sqlite3.Connection, purpose: str, token_hash: str) -> tuple[str, int] | None:
    """(did, expires_at) of the live ``purpose`` token with this digest (a token that names no account)."""
    row = conn.execute("SELECT did, expires_at FROM email_token WHERE purpose = ? AND token_hash = ?",
                       (purpose, token_hash)).fetchone()
    return (row[0], row[1]) if row is not None else None


def delete_token(conn: sqlite3.Connection, did: str, purpose: str) -> None:
    conn.execute("DELETE FROM email_token WHERE did = ? AND purpose = ?", (did, purpose))


# -- e-mail sign-in codes (two-factor) ----------------------------------------------------------------


def set_auth_factor(conn: sqlite3.Connection, did: str, enabled: bool, now_iso: str) -> None:
    if enabled:
        conn.execute("INSERT OR IGNORE INTO email_auth_factor (did, enabled_at) VALUES (?, ?)", (did, now_iso))
    else:
        conn.execute("DELETE FROM email_auth_factor WHERE did = ?", (did,))


async def auth_factor(db: "Database", did: str) -> bool:
    return await db.fetchone("SELECT 1 AS x FROM email_auth_factor WHERE did = ?", (did,)) is not None
