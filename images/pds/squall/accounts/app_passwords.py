"""App passwords: https://atproto.com/specs/xrpc (legacy auth) and com.atproto.server.createAppPassword.

An app password is 16 random base32 characters shown once as ``xxxx-xxxx-xxxx-xxxx``. It is
stored as an argon2id hash whose salt is derived from the account's DID and the password's own
parameters, so the same password always hashes to the same string for one account: login computes
one hash and finds the app password by equality, instead of trying every stored hash in turn.
The password's 80 random bits, not the salt, are what make guessing hopeless.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.low_level import Type, hash_secret

from ..auth import revocation
from ..store import accounts as accounts_store, sessions as sessions_store

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
APP_PASSWORD_RE = re.compile(r"^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$")
MAX_NAME_LENGTH = 100
MAX_PER_ACCOUNT = 100


@dataclass(frozen=True)
class AppPassword:
    name: str
    privileged: bool


def generate() -> str:
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def looks_like_app_password(password: str) -> bool:
    return bool(APP_PASSWORD_RE.match(password))


def hash_app_password_sync(hasher: PasswordHasher, did: str, password: str) -> str:
    salt = hashlib.sha256(b"squall app password\0" + did.encode()).digest()[:16]
    return hash_secret(
        password.encode(), salt, time_cost=hasher.time_cost, memory_cost=hasher.memory_cost,
        parallelism=hasher.parallelism, hash_len=hasher.hash_len, type=Type.ID,
    ).decode()


async def hash_app_password(hasher: PasswordHasher, did: str, password: str) -> str:
    return await asyncio.to_thread(hash_app_password_sync, hasher, did, password)


# -- storing (inside Database.write) -------------------------------------------------------------


def insert(conn: sqlite3.Connection, did: str, name: str, password_hash: str, privileged: bool,
           created_at: str) -> bool:
    """False when the account already has an app password of that name (or too many)."""
    if accounts_store.count_app_passwords(conn, did) >= MAX_PER_ACCOUNT:
        raise TooManyAppPasswords()
    return accounts_store.insert_app_password(conn, did, name, password_hash, privileged, created_at)


class TooManyAppPasswords(Exception):
    pass


def delete(conn: sqlite3.Connection, did: str, name: str) -> None:
    """Remove the app password and every refresh token issued through it, and cut off its access
    tokens (the caller invalidates ``ctx.verifier.revocations`` for ``did`` after the commit)."""
    accounts_store.delete_app_password(conn, did, name)
    sessions_store.delete_refresh_tokens_of_app_password(conn, did, name)
    revocation.cut_off(conn, did, revocation.app_password_credential(name))
