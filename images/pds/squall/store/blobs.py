"""Owner of the blob tables: ``blob`` (each uploaded blob, temporary until referenced) and ``record_blob`` (which record references which blob).

The bytes themselves live in the blob store (disk or S3); these rows are the index and the reference counts.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by observability (metrics, the admin dashboard) --


async def obs_totals(db) -> dict[str, int]:
    """Number and bytes of all blob rows, and of those unreferenced (awaiting garbage collection)."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes, "
        "COALESCE(SUM(unreferenced_since IS NOT NULL OR temp_key IS NOT NULL), 0) AS unref_n, "
        "COALESCE(SUM(CASE WHEN unreferenced_since IS NOT NULL OR temp_key IS NOT NULL THEN size END), 0) "
        "AS unref_bytes FROM blob")
    return {"count": row["n"], "bytes": row["bytes"], "unreferenced": row["unref_n"],
            "unreferenced_bytes": row["unref_bytes"]}


async def obs_per_account(db, limit: int = 20) -> list:
    """Blob count and bytes per account, largest first."""
    return await db.fetchall(
        "SELECT b.did, a.handle, COUNT(*) AS n, SUM(b.size) AS bytes FROM blob b LEFT JOIN account a "
        "ON a.did = b.did GROUP BY b.did ORDER BY bytes DESC LIMIT ?", (limit,))
