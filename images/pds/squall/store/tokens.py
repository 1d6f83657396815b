"""Owner of the operator-issued tokens: ``account_token`` (account deletion, PLC operation signing) and the retired ``account_delete_token``.

Tokens are stored hashed and single-use.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
