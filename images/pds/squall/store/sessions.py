"""Owner of the legacy session tables: ``refresh_token`` (rotating refresh tokens and their grace window).

Access tokens are stateless JWTs; only refresh tokens (and their revocation) are stored.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
