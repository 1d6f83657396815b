"""Owner of the account tables: ``account`` (identity, credentials, status) and ``app_password``.

The account row holds the password hash and the repo signing key; nothing outside this module reads those columns by SQL.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by oauth --


def account_takedown_ref(conn: "sqlite3.Connection", did: str) -> "sqlite3.Row | None":
    """The account's row with its ``takedown_ref`` (None when there is no such account)."""
    return conn.execute("SELECT takedown_ref FROM account WHERE did = ?", (did,)).fetchone()
