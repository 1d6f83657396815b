"""Owner of the legacy session tables: ``refresh_token`` (rotating refresh tokens and their grace window).

Access tokens are stateless JWTs; only refresh tokens (and their revocation) are stored.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by e-mail (squall.mail): a password reset ends every session --

import sqlite3 as _sqlite3  # noqa: E402  (kept in this block so the section merges on its own)


def mail_revoke_all_refresh_tokens(conn: _sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM refresh_token WHERE did = ?", (did,))
