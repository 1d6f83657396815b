"""Owner of the invite tables: ``invite_code`` and ``invite_code_use``.

Uses are rows of their own so that a code's remaining count is always derived, never stored twice.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
