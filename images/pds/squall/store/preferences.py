"""Owner of the ``account_pref`` table (app.bsky preferences kept on the PDS).

Preferences are stored per namespace item, as the reference PDS does.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
