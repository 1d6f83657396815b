"""Owner of the blob tables: ``blob`` (each uploaded blob, temporary until referenced) and ``record_blob`` (which record references which blob).

The bytes themselves live in the blob store (disk or S3); these rows are the index and the reference counts.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations
