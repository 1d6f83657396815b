"""Owner of the ``did_cache`` table (resolved DID documents and when to refresh them).

Only the cache is stored: the account's own identity lives in ``account`` (see ``store.accounts``).

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
