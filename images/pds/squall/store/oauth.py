"""Owner of the OAuth tables: ``oauth_request`` (pushed authorization requests), ``oauth_session`` (grants and their rotating refresh tokens) and ``oauth_spent_refresh``.

Refresh tokens are stored hashed; a spent one is remembered so a replay revokes the grant.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
