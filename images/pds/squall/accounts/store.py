"""The ``account`` table: rows, lookups by DID, handle or email, and the account's status.

Readers take the ``Database`` and run on a reader connection; writers take the writer's
``sqlite3.Connection`` and run inside the caller's ``Database.write`` transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..atproto.crypto import Keypair, P256Keypair, Secp256k1Keypair
from ..atproto.syntax import normalize_handle

if TYPE_CHECKING:
    from ..store.db import Database

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


# -- reading ----------------------------------------------------------------------------------


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


# -- writing ----------------------------------------------------------------------------------


def insert_account(conn: sqlite3.Connection, *, did: str, handle: str, email: str, password_hash: str,
                   keypair: Keypair, created_at: str, plc_pending_op: bytes | None) -> None:
    conn.execute(
        "INSERT INTO account (did, handle, email, password_hash, signing_key_alg, signing_key, created_at, "
        "plc_pending_op) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (did, handle, email, password_hash, keypair.algorithm, keypair.private_bytes(), created_at, plc_pending_op),
    )
