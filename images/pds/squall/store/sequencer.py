"""The sequencer table: firehose events appended inside the transaction of the change itself.

``append_event`` runs on the writer connection (inside ``Database.write``), so a commit and its
event are stored together or not at all. The body is the DAG-CBOR event body without ``seq``; the
firehose adds ``seq`` when it frames the event. After the transaction commits, the caller wakes the
fan-out (``ctx.firehose``) so subscribers see the event.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..atproto import dagcbor

if TYPE_CHECKING:
    from .db import Database

EVENT_TYPES = frozenset({"commit", "sync", "identity", "account"})


def now_iso() -> str:
    """atproto datetime with millisecond precision, as the reference writes `time`."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def append_event(conn: sqlite3.Connection, did: str, event_type: str, body: dict[str, Any]) -> int:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    cur = conn.execute(
        "INSERT INTO repo_seq (did, event_type, event, sequenced_at) VALUES (?, ?, ?, ?)",
        (did, event_type, dagcbor.encode(body), body.get("time") or now_iso()),
    )
    return int(cur.lastrowid)


# -- readers (reader pool) ----------------------------------------------------------------------------


async def current_seq(db: "Database") -> int:
    """The highest seq stored (0 for none)."""
    row = await db.fetchone("SELECT MAX(seq) AS seq FROM repo_seq")
    return int(row["seq"] or 0) if row is not None else 0


_EVENTS_AFTER = "SELECT seq, event_type, event, sequenced_at FROM repo_seq WHERE seq > ? ORDER BY seq LIMIT ?"


async def read_events(db: "Database", after: int, limit: int) -> list[sqlite3.Row]:
    """Up to ``limit`` events (seq, event_type, event, sequenced_at) with seq > ``after``, oldest first."""
    return await db.fetchall(_EVENTS_AFTER, (after, limit))


def events_after(conn: sqlite3.Connection, after: int, limit: int) -> list[sqlite3.Row]:
    """``read_events`` on a connection at hand (``Database.read_inline``: the fan-out reads the
    few events a commit appended without a hop to a reader thread)."""
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur.execute(_EVENTS_AFTER, (after, limit)).fetchall()


async def first_event_after(db: "Database", seq: int) -> sqlite3.Row | None:
    """(seq, sequenced_at) of the first event stored after ``seq``."""
    return await db.fetchone("SELECT seq, sequenced_at FROM repo_seq WHERE seq > ? ORDER BY seq LIMIT 1", (seq,))


async def first_seq_since(db: "Database", time: str) -> int | None:
    """The seq of the first event sequenced at or after ``time``."""
    row = await db.fetchone("SELECT seq FROM repo_seq WHERE sequenced_at >= ? ORDER BY seq LIMIT 1", (time,))
    return row["seq"] if row is not None else None


# -- retention (writer connection) --------------------------------------------------------------------


def prune_events(conn: sqlite3.Connection, before: str, limit: int) -> int:
    """Delete up to ``limit`` of the oldest events sequenced before ``before``, never the newest
    event (so the current seq survives restarts); return how many were deleted."""
    cur = conn.execute(
        "DELETE FROM repo_seq WHERE seq IN (SELECT seq FROM repo_seq WHERE sequenced_at < ? "
        "AND seq < (SELECT MAX(seq) FROM repo_seq) ORDER BY seq LIMIT ?)",
        (before, limit),
    )
    return cur.rowcount


# -- used by accounts --


def delete_events_for_account_except(conn: sqlite3.Connection, did: str, seq: int) -> None:
    """Account deletion's tombstone: every event of the DID goes but ``seq`` (the deletion event)."""
    conn.execute("DELETE FROM repo_seq WHERE did = ? AND seq != ?", (did, seq))


async def max_seq(db: "Database") -> int | None:
    """The newest event's seq, None when none was ever sequenced (the admin status page)."""
    row = await db.fetchone("SELECT MAX(seq) AS seq FROM repo_seq")
    return row["seq"]


# -- used by the relay monitor (squall.relays) --


async def account_events_after(db: "Database", after: int, limit: int) -> list[sqlite3.Row]:
    """(seq, did, event_type) of #identity, #account and #sync events after ``after``, oldest first:
    the account changes (creation, activation, handle change, import) a relay should pick up."""
    return await db.fetchall(
        "SELECT seq, did, event_type FROM repo_seq WHERE seq > ? AND event_type IN ('identity', 'account', 'sync') "
        "ORDER BY seq LIMIT ?", (after, limit))


async def count_events_since(db: "Database", time: str) -> int:
    """How many events were sequenced at or after ``time`` (our event rate, beside a relay's limits)."""
    row = await db.fetchone("SELECT COUNT(*) AS n FROM repo_seq WHERE sequenced_at >= ?", (time,))
    return int(row["n"]) if row is not None else 0


def next_seq_floor(conn: sqlite3.Connection) -> int:
    """The seq the last event got or that was reserved (AUTOINCREMENT's high-water mark): the next
    event gets a larger one."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'repo_seq'").fetchone()
    stored = conn.execute("SELECT MAX(seq) FROM repo_seq").fetchone()[0] or 0
    return max(int(row[0]) if row is not None else 0, int(stored))


def advance_next_seq(conn: sqlite3.Connection, past: int) -> int:
    """Make the next event's seq larger than ``past`` (never lowers it); returns the new floor.

    The reference's desync fix edits ``sqlite_sequence`` by hand; here it is one writer step, in the
    caller's transaction, next to the events that re-announce the accounts."""
    floor = next_seq_floor(conn)
    if past <= floor:
        return floor
    if conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'repo_seq'", (past,)).rowcount == 0:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('repo_seq', ?)", (past,))
    return past
