"""Owner of the OAuth tables: ``oauth_request`` (pushed authorization requests), ``oauth_session`` (grants and their rotating refresh tokens) and ``oauth_spent_refresh``.

Refresh tokens are stored hashed; a spent one is remembered so a replay revokes the grant.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by e-mail (squall.mail): a password reset ends every OAuth grant too --

import sqlite3 as _sqlite3  # noqa: E402  (kept in this block so the section merges on its own)


def mail_revoke_oauth_sessions(conn: _sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM oauth_session WHERE did = ?", (did,))
