"""Owner of the account tables: ``account`` (identity, credentials, status) and ``app_password``.

The account row holds the password hash and the repo signing key; nothing outside this module reads those columns by SQL.

Readers take the ``Database`` (or a reader connection) and run on the reader pool; writers take the
writer's ``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..atproto.crypto import Keypair, P256Keypair, Secp256k1Keypair
from ..atproto.syntax import normalize_handle

if TYPE_CHECKING:
    from .db import Database

STATUS_TAKENDOWN = "takendown"
STATUS_DEACTIVATED = "deactivated"

_COLUMNS = (
    "did, handle, email, password_hash, signing_key_alg, signing_key, created_at, email_confirmed_at, "
    "deactivated_at, delete_after, takedown_ref, invites_disabled, plc_pending_op"
)


@dataclass(frozen=True)
class Account:
    did: str
    handle: str | None
    email: str | None
    password_hash: str | None
    signing_key_alg: str
    signing_key: bytes
    created_at: str
    email_confirmed_at: str | None
    deactivated_at: str | None
    delete_after: str | None
    takedown_ref: str | None
    invites_disabled: bool
    plc_pending_op: bytes | None

    def __repr__(self) -> str:  # the row holds a private key and a password hash
        return f"Account(did={self.did!r}, handle={self.handle!r})"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Account":
        return cls(
            did=row["did"], handle=row["handle"], email=row["email"], password_hash=row["password_hash"],
            signing_key_alg=row["signing_key_alg"], signing_key=bytes(row["signing_key"]),
            created_at=row["created_at"], email_confirmed_at=row["email_confirmed_at"],
            deactivated_at=row["deactivated_at"], delete_after=row["delete_after"],
            takedown_ref=row["takedown_ref"], invites_disabled=bool(row["invites_disabled"]),
            plc_pending_op=bytes(row["plc_pending_op"]) if row["plc_pending_op"] is not None else None,
        )

    @property
    def is_takendown(self) -> bool:
        return self.takedown_ref is not None

    @property
    def active(self) -> bool:
        return self.takedown_ref is None and self.deactivated_at is None

    @property
    def status(self) -> str | None:
        """The reference's hosting status: None while active, else why not (takedown wins)."""
        if self.takedown_ref is not None:
            return STATUS_TAKENDOWN
        if self.deactivated_at is not None:
            return STATUS_DEACTIVATED
        return None

    def keypair(self) -> Keypair:
        cls = Secp256k1Keypair if self.signing_key_alg == "ES256K" else P256Keypair
        return cls.from_private_bytes(self.signing_key)


# -- account: reading ---------------------------------------------------------------------------


async def get_by_did(db: "Database", did: str) -> Account | None:
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM account WHERE did = ?", (did,))
    return Account.from_row(row) if row else None


async def get_by_handle(db: "Database", handle: str) -> Account | None:
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM account WHERE handle = ?", (handle.lower(),))
    return Account.from_row(row) if row else None


async def get_by_email(db: "Database", email: str) -> Account | None:
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM account WHERE email = ?", (email,))
    return Account.from_row(row) if row else None


async def get_by_identifier(db: "Database", identifier: str) -> Account | None:
    """An account by email (contains '@'), DID (starts with 'did:') or handle, as login accepts."""
    ident = identifier.strip()
    if "@" in ident:
        return await get_by_email(db, ident)
    if ident.startswith("did:"):
        return await get_by_did(db, ident)
    return await get_by_handle(db, ident)


async def find_account(db: "Database", identifier: str) -> Account | None:
    """The local account named by a DID or a handle (repo parameters), whatever its status."""
    if identifier.startswith("did:"):
        return await get_by_did(db, identifier)
    return await get_by_handle(db, normalize_handle(identifier))


def get_by_did_sync(conn: sqlite3.Connection, did: str) -> Account | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM account WHERE did = ?", (did,)).fetchone()
    return Account.from_row(row) if row else None


async def account_exists(db: "Database", did: str) -> bool:
    return await db.fetchone("SELECT 1 FROM account WHERE did = ?", (did,)) is not None


async def did_for_handle(db: "Database", handle: str) -> str | None:
    """The DID of the local account holding ``handle`` (already normalised)."""
    row = await db.fetchone("SELECT did FROM account WHERE handle = ?", (handle,))
    return row["did"] if row is not None else None


async def get_handle(db: "Database", did: str) -> sqlite3.Row | None:
    """The row (``handle``) of the account, None when there is none."""
    return await db.fetchone("SELECT handle FROM account WHERE did = ?", (did,))


async def get_signing_key(db: "Database", did: str) -> sqlite3.Row | None:
    """``handle``, ``signing_key_alg``, ``signing_key`` of the account (what its DID document needs)."""
    return await db.fetchone("SELECT handle, signing_key_alg, signing_key FROM account WHERE did = ?", (did,))


async def get_status_columns(db: "Database", did: str) -> sqlite3.Row | None:
    """``takedown_ref`` and ``deactivated_at`` of the account."""
    return await db.fetchone("SELECT takedown_ref, deactivated_at FROM account WHERE did = ?", (did,))


async def list_account_views(db: "Database", dids: list[str]) -> list[sqlite3.Row]:
    """The columns of com.atproto.admin.defs#accountView for each existing account of ``dids``."""
    marks = ",".join("?" * len(dids))
    return await db.fetchall(
        "SELECT did, handle, email, created_at, email_confirmed_at, deactivated_at, invites_disabled "
        f"FROM account WHERE did IN ({marks})", tuple(dids))


async def get_plc_pending_op(db: "Database", did: str) -> sqlite3.Row | None:
    """The account's row (``plc_pending_op``), None when there is no account."""
    return await db.fetchone("SELECT plc_pending_op FROM account WHERE did = ?", (did,))


async def list_plc_pending_ops(db: "Database", limit: int) -> list[sqlite3.Row]:
    """(``did``, ``plc_pending_op``) of accounts with an unpublished PLC operation, oldest first."""
    return await db.fetchall(
        "SELECT did, plc_pending_op FROM account WHERE plc_pending_op IS NOT NULL ORDER BY created_at LIMIT ?",
        (limit,),
    )


async def count_accounts(db: "Database") -> tuple[int, int]:
    """(total, active) accounts: active is neither deactivated nor taken down."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS total, SUM(deactivated_at IS NULL AND takedown_ref IS NULL) AS active FROM account"
    )
    return row["total"] or 0, row["active"] or 0


# -- account: reading inside a write transaction --------------------------------------------------


def did_exists(conn: sqlite3.Connection, did: str) -> bool:
    return conn.execute("SELECT 1 FROM account WHERE did = ?", (did,)).fetchone() is not None


def handle_exists(conn: sqlite3.Connection, handle: str) -> bool:
    return conn.execute("SELECT 1 FROM account WHERE handle = ?", (handle,)).fetchone() is not None


def handle_or_did_exists(conn: sqlite3.Connection, handle: str, did: str) -> bool:
    return conn.execute("SELECT 1 FROM account WHERE handle = ? OR did = ?", (handle, did)).fetchone() is not None


def email_exists(conn: sqlite3.Connection, email: str) -> bool:
    return conn.execute("SELECT 1 FROM account WHERE email = ?", (email,)).fetchone() is not None


def did_for_email(conn: sqlite3.Connection, email: str) -> str | None:
    row = conn.execute("SELECT did FROM account WHERE email = ?", (email,)).fetchone()
    return row[0] if row is not None else None


# -- account: writing -----------------------------------------------------------------------------


def insert_account(conn: sqlite3.Connection, *, did: str, handle: str, email: str, password_hash: str,
                   keypair: Keypair, created_at: str, plc_pending_op: bytes | None) -> None:
    conn.execute(
        "INSERT INTO account (did, handle, email, password_hash, signing_key_alg, signing_key, created_at, "
        "plc_pending_op) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (did, handle, email, password_hash, keypair.algorithm, keypair.private_bytes(), created_at, plc_pending_op),
    )


def set_deactivated(conn: sqlite3.Connection, did: str, deactivated_at: str) -> None:
    conn.execute("UPDATE account SET deactivated_at = ? WHERE did = ?", (deactivated_at, did))


def deactivate_account(conn: sqlite3.Connection, did: str, now: str, delete_after: str | None) -> bool:
    """Mark deactivated (keeping an earlier deactivation time); False when there is no account."""
    cur = conn.execute(
        "UPDATE account SET deactivated_at = COALESCE(deactivated_at, ?), delete_after = ? WHERE did = ?",
        (now, delete_after, did),
    )
    return cur.rowcount > 0


def activate_account(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("UPDATE account SET deactivated_at = NULL, delete_after = NULL WHERE did = ?", (did,))


def set_takedown_ref(conn: sqlite3.Connection, did: str, takedown_ref: str | None) -> bool:
    """False when there is no account."""
    return conn.execute("UPDATE account SET takedown_ref = ? WHERE did = ?", (takedown_ref, did)).rowcount > 0


def set_handle(conn: sqlite3.Connection, did: str, handle: str) -> bool:
    """False when there is no account; sqlite3.IntegrityError when another account holds it."""
    return conn.execute("UPDATE account SET handle = ? WHERE did = ?", (handle, did)).rowcount == 1


def set_email(conn: sqlite3.Connection, did: str, email: str) -> None:
    """A new e-mail address is unconfirmed."""
    conn.execute("UPDATE account SET email = ?, email_confirmed_at = NULL WHERE did = ?", (email, did))


def set_password_hash(conn: sqlite3.Connection, did: str, password_hash: str) -> bool:
    """False when there is no account."""
    return conn.execute("UPDATE account SET password_hash = ? WHERE did = ?", (password_hash, did)).rowcount > 0


def set_invites_disabled(conn: sqlite3.Connection, did: str, disabled: bool) -> bool:
    """False when there is no account."""
    cur = conn.execute("UPDATE account SET invites_disabled = ? WHERE did = ?", (int(disabled), did))
    return cur.rowcount > 0


def clear_plc_pending_op(conn: sqlite3.Connection, did: str, op: bytes) -> None:
    """Clear the pending operation only if it is still ``op`` (not one written meanwhile)."""
    conn.execute("UPDATE account SET plc_pending_op = NULL WHERE did = ? AND plc_pending_op = ?", (did, op))


def delete_account_row(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM account WHERE did = ?", (did,))


# -- app_password ---------------------------------------------------------------------------------


def count_app_passwords(conn: sqlite3.Connection, did: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM app_password WHERE did = ?", (did,)).fetchone()[0]


def insert_app_password(conn: sqlite3.Connection, did: str, name: str, password_hash: str, privileged: bool,
                        created_at: str) -> bool:
    """False when the account already has an app password of that name."""
    cur = conn.execute(
        "INSERT INTO app_password (did, name, password_hash, privileged, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (did, name) DO NOTHING",
        (did, name, password_hash, int(privileged), created_at),
    )
    return cur.rowcount == 1


def delete_app_password(conn: sqlite3.Connection, did: str, name: str) -> None:
    conn.execute("DELETE FROM app_password WHERE did = ? AND name = ?", (did, name))


def delete_app_passwords_of(conn: sqlite3.Connection, did: str) -> None:
    conn.execute("DELETE FROM app_password WHERE did = ?", (did,))


async def find_app_password(db: "Database", did: str, password_hash: str) -> sqlite3.Row | None:
    """(``name``, ``privileged``) of the account's app password with this hash."""
    return await db.fetchone(
        "SELECT name, privileged FROM app_password WHERE did = ? AND password_hash = ?", (did, password_hash)
    )


async def list_app_passwords(db: "Database", did: str) -> list[sqlite3.Row]:
    """(``name``, ``created_at``, ``privileged``), newest first."""
    return await db.fetchall(
        "SELECT name, created_at, privileged FROM app_password WHERE did = ? ORDER BY created_at DESC, name",
        (did,),
    )


# -- read by the repo writer and importRepo --


def repo_signing_account(conn: sqlite3.Connection, did: str) -> sqlite3.Row | None:
    """The account's signing key and status, as a repo write transaction sees them
    (signing_key_alg, signing_key, deactivated_at, takedown_ref)."""
    return conn.execute(
        "SELECT signing_key_alg, signing_key, deactivated_at, takedown_ref FROM account WHERE did = ?", (did,)
    ).fetchone()


def repo_import_account(conn: sqlite3.Connection, did: str) -> sqlite3.Row | None:
    """The account's status as a repo import transaction sees it (deactivated_at, takedown_ref)."""
    return conn.execute("SELECT deactivated_at, takedown_ref FROM account WHERE did = ?", (did,)).fetchone()


async def active_account_did(db: "Database", identifier: str) -> str | None:
    """The DID of the active local account named by a DID or a handle (neither deactivated nor
    taken down), else None."""
    if identifier.startswith("did:"):
        clause, value = "a.did = ?", identifier
    else:
        clause, value = "a.handle = ?", identifier.lower()
    async with db.reader() as conn:
        rows = await conn.execute_fetchall(
            f"SELECT a.did FROM account a WHERE {clause} AND a.deactivated_at IS NULL AND a.takedown_ref IS NULL",
            (value,))
    return rows[0][0] if rows else None

# -- read by OAuth --


def account_takedown_ref(conn: "sqlite3.Connection", did: str) -> "sqlite3.Row | None":
    """The account's row with its ``takedown_ref`` (None when there is no such account)."""
    return conn.execute("SELECT takedown_ref FROM account WHERE did = ?", (did,)).fetchone()

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


# -- used by e-mail (squall.mail) --


def mail_confirm_email(conn: sqlite3.Connection, did: str, email: str, confirmed_at: str) -> bool:
    """Mark the address confirmed, if it is still the account's address."""
    return conn.execute(
        "UPDATE account SET email_confirmed_at = ? WHERE did = ? AND email = ? COLLATE NOCASE",
        (confirmed_at, did, email),
    ).rowcount == 1


def mail_email_holder(conn: sqlite3.Connection, email: str) -> str | None:
    row = conn.execute("SELECT did FROM account WHERE email = ?", (email,)).fetchone()
    return row[0] if row is not None else None


def mail_set_email(conn: sqlite3.Connection, did: str, email: str) -> None:
    """A new address starts unconfirmed; the same address (any case) keeps its confirmation."""
    conn.execute(
        "UPDATE account SET email_confirmed_at = CASE WHEN email = ? COLLATE NOCASE THEN email_confirmed_at END, "
        "email = ? WHERE did = ?",
        (email, email, did),
    )


def mail_set_password_hash(conn: sqlite3.Connection, did: str, password_hash: str) -> bool:
    return conn.execute("UPDATE account SET password_hash = ? WHERE did = ?",
                        (password_hash, did)).rowcount == 1
