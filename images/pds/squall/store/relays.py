"""The relay monitor's tables (``squall.relays``): per relay, the last host check and the lag
history; per relay × account, the relay's view of the account; the actions taken; the self-checks.

Times are unix seconds (REAL). Histories are bounded here, by the writers that append to them.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database

LAG_HISTORY_KEEP = 200  # host checks kept per relay
ACTIONS_KEEP = 1000  # actions kept in all


# -- readers (reader pool) ----------------------------------------------------------------------------


async def list_hosts(db: "Database") -> list[sqlite3.Row]:
    return await db.fetchall("SELECT * FROM relay_host ORDER BY relay")


async def get_host(db: "Database", relay: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM relay_host WHERE relay = ?", (relay,))


async def lag_history(db: "Database", relay: str, limit: int) -> list[sqlite3.Row]:
    """The newest ``limit`` host checks of ``relay`` (checked_at, our_seq, their_seq), oldest first."""
    rows = await db.fetchall(
        "SELECT checked_at, our_seq, their_seq FROM relay_lag WHERE relay = ? ORDER BY checked_at DESC LIMIT ?",
        (relay, limit))
    return list(reversed(rows))


async def list_account_views(db: "Database", relay: str | None = None, did: str | None = None,
                             limit: int = 1000) -> list[sqlite3.Row]:
    """relay × account rows (with the account's handle), by relay then handle."""
    sql = ("SELECT ra.*, a.handle FROM relay_account ra JOIN account a ON a.did = ra.did "
           "WHERE (? IS NULL OR ra.relay = ?) AND (? IS NULL OR ra.did = ?) ORDER BY ra.relay, a.handle, ra.did LIMIT ?")
    return await db.fetchall(sql, (relay, relay, did, did, limit))


async def get_account_view(db: "Database", relay: str, did: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM relay_account WHERE relay = ? AND did = ?", (relay, did))


async def last_account_action_at(db: "Database", did: str, action: str) -> float | None:
    """When ``action`` was last taken for the account, whatever the relay."""
    row = await db.fetchone("SELECT MAX(at) AS at FROM relay_action WHERE did = ? AND action = ?", (did, action))
    return row["at"] if row is not None else None


async def recent_actions(db: "Database", relay: str | None = None, limit: int = 50) -> list[sqlite3.Row]:
    """The newest actions (for ``relay`` and for every relay when given), newest first."""
    return await db.fetchall(
        "SELECT id, at, relay, did, action, reason, result FROM relay_action "
        "WHERE (? IS NULL OR relay = ? OR relay IS NULL) ORDER BY id DESC LIMIT ?", (relay, relay, limit))


async def list_self_checks(db: "Database") -> list[sqlite3.Row]:
    return await db.fetchall("SELECT name, ok, detail, checked_at FROM relay_self_check ORDER BY name")


# -- writers (writer connection, inside Database.write) ------------------------------------------------


def save_host(conn: sqlite3.Connection, relay: str, *, checked_at: float, status: str, message: str | None,
              host_status: str | None, their_seq: int | None, our_seq: int | None, account_count: int | None,
              clock_skew_ms: int | None, last_error: str | None, warnings: list[str]) -> None:
    """Store one host check; a check with both seqs is also appended to the lag history."""
    conn.execute(
        "INSERT INTO relay_host (relay, checked_at, status, message, host_status, their_seq, our_seq, account_count, "
        "clock_skew_ms, last_error, warnings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(relay) DO UPDATE SET checked_at = excluded.checked_at, status = excluded.status, "
        "message = excluded.message, host_status = excluded.host_status, their_seq = excluded.their_seq, "
        "our_seq = excluded.our_seq, account_count = excluded.account_count, "
        "clock_skew_ms = COALESCE(excluded.clock_skew_ms, relay_host.clock_skew_ms), "
        "last_error = excluded.last_error, warnings = excluded.warnings",
        (relay, checked_at, status, message, host_status, their_seq, our_seq, account_count, clock_skew_ms,
         last_error, json.dumps(warnings)))
    if their_seq is not None and our_seq is not None:
        conn.execute("INSERT INTO relay_lag (relay, checked_at, our_seq, their_seq) VALUES (?, ?, ?, ?)",
                     (relay, checked_at, our_seq, their_seq))
        conn.execute(
            "DELETE FROM relay_lag WHERE relay = ? AND checked_at < (SELECT checked_at FROM relay_lag WHERE relay = ? "
            "ORDER BY checked_at DESC LIMIT 1 OFFSET ?)", (relay, relay, LAG_HISTORY_KEEP - 1))


def set_crawl_requested(conn: sqlite3.Connection, relay: str, at: float) -> None:
    conn.execute(
        "INSERT INTO relay_host (relay, status, last_crawl_at) VALUES (?, 'pending', ?) "
        "ON CONFLICT(relay) DO UPDATE SET last_crawl_at = excluded.last_crawl_at", (relay, at))


def save_account_view(conn: sqlite3.Connection, relay: str, did: str, *, status: str, message: str | None,
                      their_active: bool | None, their_status: str | None, their_rev: str | None,
                      our_rev: str | None, checked_at: float, behind_since: float | None) -> bool:
    """Store one relay × account check (False when the account is gone here)."""
    if conn.execute("SELECT 1 FROM account WHERE did = ?", (did,)).fetchone() is None:
        return False
    conn.execute(
        "INSERT INTO relay_account (relay, did, status, message, their_active, their_status, their_rev, our_rev, "
        "checked_at, behind_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(relay, did) DO UPDATE SET status = excluded.status, message = excluded.message, "
        "their_active = excluded.their_active, their_status = excluded.their_status, "
        "their_rev = excluded.their_rev, our_rev = excluded.our_rev, checked_at = excluded.checked_at, "
        "behind_since = excluded.behind_since",
        (relay, did, status, message, None if their_active is None else int(their_active), their_status, their_rev,
         our_rev, checked_at, behind_since))
    return True


def record_action(conn: sqlite3.Connection, *, at: float, relay: str | None, did: str | None, action: str,
                  reason: str, result: str) -> int:
    """Log an action; a per-account one is also set on the relay × account rows it concerns."""
    cur = conn.execute("INSERT INTO relay_action (at, relay, did, action, reason, result) VALUES (?, ?, ?, ?, ?, ?)",
                       (at, relay, did, action, reason, result))
    if did is not None:
        conn.execute("UPDATE relay_account SET action = ?, action_at = ? WHERE did = ? AND (? IS NULL OR relay = ?)",
                     (action, at, did, relay, relay))
    conn.execute("DELETE FROM relay_action WHERE id <= ?", (int(cur.lastrowid) - ACTIONS_KEEP,))
    return int(cur.lastrowid)


def save_self_check(conn: sqlite3.Connection, name: str, ok: bool, detail: str, checked_at: float) -> None:
    conn.execute(
        "INSERT INTO relay_self_check (name, ok, detail, checked_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET ok = excluded.ok, detail = excluded.detail, checked_at = excluded.checked_at",
        (name, int(ok), detail, checked_at))


def forget_relays_except(conn: sqlite3.Connection, relays: list[str]) -> None:
    """Drop what is stored about relays no longer configured (their history would mislead)."""
    marks = ",".join("?" * len(relays)) or "NULL"
    for table in ("relay_host", "relay_lag", "relay_account"):
        conn.execute(f"DELETE FROM {table} WHERE relay NOT IN ({marks})", tuple(relays))
