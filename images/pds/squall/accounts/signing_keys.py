"""Signing keys reserved ahead of an account migration (``com.atproto.server.reserveSigningKey``).

A user moving an account here asks this PDS for the key it will sign the repo with, has the old
PDS put that key in the DID document, then creates the account here with the same DID. As the
reference PDS: a reservation may name the DID (asking again returns the same key) or not; the key
is generated here and its private half never leaves this server. The reference keeps reservations
as files without end; here they live in the database (``store/reserved_keys.py``), expire after
``RESERVATION_TTL`` and are capped in number, since the method needs no authentication.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from ..atproto.crypto import Secp256k1Keypair
from ..errors import RateLimitExceeded
from ..store import reserved_keys

if TYPE_CHECKING:
    from ..store.db import Database

RESERVATION_TTL = 7 * 24 * 3600
MAX_RESERVATIONS = 10_000


async def reserve(db: "Database", did: str | None, *, now: float | None = None) -> str:
    """The did:key of a key reserved for ``did`` (the same one on every call for that DID)."""
    at = int(time.time() if now is None else now)

    def run(conn: sqlite3.Connection) -> str:
        reserved_keys.delete_older_than(conn, at - RESERVATION_TTL)
        if did is not None:
            existing = reserved_keys.reserved_for(conn, did)
            if existing is not None:
                return existing[0]
        if reserved_keys.count(conn) >= MAX_RESERVATIONS:
            raise RateLimitExceeded("Too many signing keys are reserved; try again later")
        keypair = Secp256k1Keypair.generate()
        reserved_keys.insert(conn, keypair.did_key(), did, keypair.private_bytes(), at)
        return keypair.did_key()

    return await db.write(run)


async def reserved_keypair(db: "Database", did: str) -> Secp256k1Keypair | None:
    """The key reserved for ``did``, if any (still reserved until ``release`` runs with the account)."""
    found = await reserved_keys.get_for_did(db, did)
    if found is None:
        return None
    return Secp256k1Keypair.from_private_bytes(found[1])


release = reserved_keys.release  # writer: run it in the transaction that creates the account
