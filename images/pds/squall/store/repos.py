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


# -- used by read-after-write --


async def records_since_rev(db: "Database", did: str, collections: tuple[str, ...], rev: str, *,
                            limit: int) -> list[dict]:
    """The current records of ``did`` in ``collections`` written by a commit after ``rev``, newest
    first, at most ``limit``: {collection, rkey, cid, rev, indexed_at}. Records taken down by the
    admin are left out."""
    if not collections:
        return []
    marks = ",".join("?" * len(collections))
    rows = await db.fetchall(
        "SELECT collection, rkey, cid, repo_rev, indexed_at FROM record "
        f"WHERE did = ? AND repo_rev > ? AND collection IN ({marks}) AND takedown_ref IS NULL "
        "ORDER BY repo_rev DESC, rkey DESC LIMIT ?",
        (did, rev, *collections, limit))
    return [{"collection": r["collection"], "rkey": r["rkey"], "cid": r["cid"], "rev": r["repo_rev"],
             "indexed_at": r["indexed_at"]} for r in rows]

