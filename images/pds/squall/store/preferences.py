"""Owner of the ``account_pref`` table (app.bsky preferences kept on the PDS).

Preferences are stored per namespace item, as the reference PDS does.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .db import Database


async def list_preferences(db: "Database", did: str) -> list[sqlite3.Row]:
    """(``name``, ``value``) of every stored preference, in the order written."""
    return await db.fetchall("SELECT name, value FROM account_pref WHERE did = ? ORDER BY id", (did,))


def list_preference_names(conn: sqlite3.Connection, did: str) -> list[sqlite3.Row]:
    """(``id``, ``name``) of every stored preference, on the writer connection."""
    return conn.execute("SELECT id, name FROM account_pref WHERE did = ?", (did,)).fetchall()


def delete_preferences(conn: sqlite3.Connection, ids: Iterable[tuple[int]]) -> None:
    """``ids`` is [(id,)], as executemany takes it."""
    conn.executemany("DELETE FROM account_pref WHERE id = ?", ids)


def insert_preferences(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str]]) -> None:
    """``rows`` is [(did, name, value)]."""
    conn.executemany("INSERT INTO account_pref (did, name, value) VALUES (?, ?, ?)", rows)


def delete_preferences_of(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM account_pref WHERE did = ?", (did,))
