"""Owner of the invite tables: ``invite_code`` and ``invite_code_use``.

Uses are rows of their own so that a code's remaining count is always derived, never stored twice.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .db import Database

_CODE_COLUMNS = "i.code, i.available_uses, i.disabled, i.for_account, i.created_by, i.created_at"
_USES = "(SELECT COUNT(*) FROM invite_code_use u WHERE u.code = i.code)"
# The orders get_invite_codes pages by (the key must be one of these names, never caller text).
ORDER_KEYS = {"recent": "i.created_at", "usage": _USES}


def insert_invite_codes(conn: sqlite3.Connection, rows: Iterable[tuple[str, int, int, str, str, str]]) -> None:
    """``rows`` is [(code, available_uses, disabled, for_account, created_by, created_at)]."""
    conn.executemany(
        "INSERT INTO invite_code (code, available_uses, disabled, for_account, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def get_invite_code_availability(conn: sqlite3.Connection, code: str) -> sqlite3.Row | None:
    """``available_uses``, ``disabled`` and the ``takedown_ref`` of the account it belongs to."""
    return conn.execute(
        "SELECT i.available_uses, i.disabled, a.takedown_ref FROM invite_code i "
        "LEFT JOIN account a ON a.did = i.for_account WHERE i.code = ?",
        (code,),
    ).fetchone()


def count_invite_code_uses(conn: sqlite3.Connection, code: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM invite_code_use WHERE code = ?", (code,)).fetchone()[0]


def insert_invite_code_use(conn: sqlite3.Connection, code: str, did: str, used_at: str) -> None:
    conn.execute("INSERT INTO invite_code_use (code, used_by, used_at) VALUES (?, ?, ?)", (code, did, used_at))


def list_account_invite_codes(conn: sqlite3.Connection, did: str) -> list[sqlite3.Row]:
    """The codes belonging to ``did``, oldest first, on the writer connection."""
    return conn.execute(
        "SELECT code, available_uses, disabled, for_account, created_by, created_at FROM invite_code "
        "WHERE for_account = ? ORDER BY created_at, code",
        (did,),
    ).fetchall()


def list_invite_code_uses(conn: sqlite3.Connection, code: str) -> list[sqlite3.Row]:
    """(``used_by``, ``used_at``) of the code, newest first, on the writer connection."""
    return conn.execute(
        "SELECT used_by, used_at FROM invite_code_use WHERE code = ? ORDER BY used_at DESC", (code,)
    ).fetchall()


def disable_invite_codes(conn: sqlite3.Connection, codes: Iterable[tuple[str]]) -> None:
    """``codes`` is [(code,)]."""
    conn.executemany("UPDATE invite_code SET disabled = 1 WHERE code = ?", codes)


def disable_invite_codes_of(conn: sqlite3.Connection, accounts: Iterable[tuple[str]]) -> None:
    """Disable every code belonging to the accounts; ``accounts`` is [(did,)]."""
    conn.executemany("UPDATE invite_code SET disabled = 1 WHERE for_account = ?", accounts)


def disable_account_invite_codes(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("UPDATE invite_code SET disabled = 1 WHERE for_account = ?", (did,))


async def list_uses_of_codes(db: "Database", codes: list[str]) -> list[sqlite3.Row]:
    """(``code``, ``used_by``, ``used_at``) of every use of ``codes``, newest first."""
    return await db.fetchall(
        f"SELECT code, used_by, used_at FROM invite_code_use WHERE code IN ({','.join('?' * len(codes))}) "
        "ORDER BY used_at DESC", tuple(codes))


async def list_codes_for_accounts(db: "Database", dids: list[str]) -> list[sqlite3.Row]:
    """The codes belonging to ``dids``, oldest first."""
    marks = ",".join("?" * len(dids))
    return await db.fetchall(f"SELECT {_CODE_COLUMNS} FROM invite_code i WHERE i.for_account IN ({marks}) "
                             "ORDER BY i.created_at, i.code", tuple(dids))


async def list_codes_used_by(db: "Database", dids: list[str]) -> list[sqlite3.Row]:
    """The code each of ``dids`` signed up with (``used_by`` and the code's columns)."""
    marks = ",".join("?" * len(dids))
    return await db.fetchall(f"SELECT u.used_by, {_CODE_COLUMNS} FROM invite_code_use u "
                             f"JOIN invite_code i ON i.code = u.code WHERE u.used_by IN ({marks})", tuple(dids))


async def list_invite_codes(db: "Database", order: str, limit: int,
                            after: tuple[object, str] | None = None) -> list[sqlite3.Row]:
    """One page of every code with its ``uses`` count, by ``order`` (a key of ORDER_KEYS) descending,
    then code descending; ``after`` is the (order value, code) the previous page ended at."""
    key = ORDER_KEYS[order]
    where: str = ""
    params: tuple = ()
    if after is not None:
        value, code = after
        where = f"WHERE ({key} < ? OR ({key} = ? AND i.code < ?))"
        params = (value, value, code)
    return await db.fetchall(
        f"SELECT {_CODE_COLUMNS}, {_USES} AS uses FROM invite_code i {where} "
        f"ORDER BY {key} DESC, i.code DESC LIMIT ?", (*params, limit))
