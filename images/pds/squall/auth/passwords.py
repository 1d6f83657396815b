"""argon2id password hashing, run off the event loop.

Parameters follow OWASP's argon2id minimum (19 MiB, t=2, p=1) rather than argon2-cffi's default
(64 MiB, p=4): a login must not add 64 MB to the resident size of a small PDS, and the memory
hardness still makes offline guessing expensive.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def make_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password_sync(hasher: PasswordHasher, password: str) -> str:
    return hasher.hash(password)


def verify_password_sync(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(hasher: PasswordHasher, password: str) -> str:
    return await asyncio.to_thread(hasher.hash, password)


async def verify_password(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password_sync, hasher, stored_hash, password)
