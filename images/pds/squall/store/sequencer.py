"""The sequencer table: firehose events appended inside the transaction of the change itself.

``append_event`` runs on the writer connection (inside ``Database.write``), so a commit and its
event are stored together or not at all. The body is the DAG-CBOR event body without ``seq``; the
firehose adds ``seq`` when it frames the event. After the transaction commits, the caller wakes the
fan-out (``ctx.firehose``) so subscribers see the event.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from ..atproto import dagcbor

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


# -- used by accounts --

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from .db import Database


def delete_events_for_account_except(conn: sqlite3.Connection, did: str, seq: int) -> None:
    """Account deletion's tombstone: every event of the DID goes but ``seq`` (the deletion event)."""
    conn.execute("DELETE FROM repo_seq WHERE did = ? AND seq != ?", (did, seq))


async def max_seq(db: "Database") -> int | None:
    """The newest event's seq, None when none was ever sequenced (the admin status page)."""
    row = await db.fetchone("SELECT MAX(seq) AS seq FROM repo_seq")
    return row["seq"]
