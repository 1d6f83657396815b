"""Owner of the account tables: ``account`` (identity, credentials, status) and ``app_password``.

The account row holds the password hash and the repo signing key; nothing outside this module reads those columns by SQL.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by e-mail (squall.mail) --

import sqlite3 as _sqlite3  # noqa: E402  (kept in this block so the section merges on its own)


def mail_confirm_email(conn: _sqlite3.Connection, did: str, email: str, confirmed_at: str) -> bool:
    """Mark the address confirmed, if it is still the account's address."""
    return conn.execute(
        "UPDATE account SET email_confirmed_at = ? WHERE did = ? AND email = ? COLLATE NOCASE",
        (confirmed_at, did, email),
    ).rowcount == 1


def mail_email_holder(conn: _sqlite3.Connection, email: str) -> str | None:
    row = conn.execute("SELECT did FROM account WHERE email = ?", (email,)).fetchone()
    return row[0] if row is not None else None


def mail_set_email(conn: _sqlite3.Connection, did: str, email: str) -> None:
    """A new address starts unconfirmed; the same address (any case) keeps its confirmation."""
    conn.execute(
        "UPDATE account SET email_confirmed_at = CASE WHEN email = ? COLLATE NOCASE THEN email_confirmed_at END, "
        "email = ? WHERE did = ?",
        (email, email, did),
    )


def mail_set_password_hash(conn: _sqlite3.Connection, did: str, password_hash: str) -> bool:
    return conn.execute("UPDATE account SET password_hash = ? WHERE did = ?",
                        (password_hash, did)).rowcount == 1
