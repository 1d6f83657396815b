"""Owner of the repository tables: ``repo_root`` (each account's current commit), ``repo_block``
(every block of every repo, by CID and rev) and ``record`` (the index of current records).

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take
the writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction, so
a commit's blocks, records, blob references, root and firehose event are one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database


async def newest_rev(db: "Database") -> str | None:
    """The highest repo rev stored (the TID clock starts above it)."""
    row = await db.fetchone("SELECT MAX(rev) AS rev FROM repo_root")
    return row["rev"] if row is not None and row["rev"] else None


# -- used by observability (the admin dashboard's storage page) --


async def obs_largest(db, limit: int = 20) -> list:
    """Repos by stored block bytes, largest first, with their record counts."""
    return await db.fetchall(
        "SELECT b.did, a.handle, SUM(b.size) AS bytes, COUNT(*) AS blocks, "
        "(SELECT COUNT(*) FROM record r WHERE r.did = b.did) AS records "
        "FROM repo_block b LEFT JOIN account a ON a.did = b.did GROUP BY b.did ORDER BY bytes DESC LIMIT ?",
        (limit,))


async def obs_recent_commits(db, limit: int = 10) -> list:
    """The newest repo roots (one per account), newest first."""
    return await db.fetchall(
        "SELECT r.did, a.handle, r.rev, r.indexed_at FROM repo_root r LEFT JOIN account a ON a.did = r.did "
        "ORDER BY r.rev DESC LIMIT ?", (limit,))
