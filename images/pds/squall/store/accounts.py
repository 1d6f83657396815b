"""Owner of the account tables: ``account`` (identity, credentials, status) and ``app_password``.

The account row holds the password hash and the repo signing key; nothing outside this module reads those columns by SQL.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations


# -- used by observability (metrics, the admin dashboard, squall status) --


async def obs_count_by_status(db) -> dict[str, int]:
    """Accounts by hosting status: active, deactivated, takendown (a takedown wins)."""
    rows = await db.fetchall(
        "SELECT CASE WHEN takedown_ref IS NOT NULL THEN 'takendown' WHEN deactivated_at IS NOT NULL "
        "THEN 'deactivated' ELSE 'active' END AS status, COUNT(*) AS n FROM account GROUP BY 1")
    counts = {"active": 0, "deactivated": 0, "takendown": 0}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def obs_search(db, query: str, *, limit: int = 50, cursor: str = "") -> list:
    """Accounts whose handle, DID or e-mail contains ``query`` (all when empty), by handle."""
    like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return await db.fetchall(
        "SELECT did, handle, email, created_at, deactivated_at, takedown_ref, invites_disabled FROM account "
        "WHERE (handle LIKE ?1 ESCAPE '\\' OR did LIKE ?1 ESCAPE '\\' OR email LIKE ?1 ESCAPE '\\') "
        "AND COALESCE(handle, did) > ?2 ORDER BY COALESCE(handle, did) LIMIT ?3", (like, cursor, limit))


async def obs_get(db, did: str):
    """One account's row for the dashboard (no key or password columns), or None."""
    return await db.fetchone(
        "SELECT did, handle, email, created_at, email_confirmed_at, deactivated_at, delete_after, takedown_ref, "
        "invites_disabled FROM account WHERE did = ?", (did,))
