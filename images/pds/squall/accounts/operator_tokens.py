"""Operator-issued account tokens: what the reference PDS e-mails, handed on by the operator.

The reference mails a short token for the actions that need more than a session: deleting the
account (``requestAccountDelete`` → ``com.atproto.server.deleteAccount``) and having the PDS sign
a PLC operation (``requestPlcOperationSignature`` → ``com.atproto.identity.signPlcOperation``,
https://atproto.com/guides/account-migration). Squall sends no mail, so the operator issues the
token (``squall account delete-token`` / ``plc-token``) and gives it to the account holder.

One table, ``account_token(did, purpose, token_hash, expires_at)``: at most one live token per
account and purpose (a new one replaces the old), stored only as a SHA-256 digest, valid for
:data:`TOKEN_TTL` seconds, good for one use, and never valid for another purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from typing import TYPE_CHECKING

from ..errors import InvalidRequest
from ..store import tokens as tokens_store
from ..store.accounts import get_by_did_sync

if TYPE_CHECKING:
    from ..store.db import Database

PURPOSE_DELETE = "delete"  # com.atproto.server.deleteAccount
PURPOSE_PLC = "plc"  # com.atproto.identity.signPlcOperation
PURPOSES = (PURPOSE_DELETE, PURPOSE_PLC)
TOKEN_TTL = 3600  # the reference's e-mailed tokens live 15 minutes; an operator hands this on by hand
MAX_TOKEN_LENGTH = 64
_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class AccountNotFound(InvalidRequest):
    def __init__(self, did: str):
        super().__init__(f"Account not found: {did}", "AccountNotFound")


def _purpose(purpose: str) -> str:
    if purpose not in PURPOSES:  # a programming error, not user input
        raise ValueError(f"unknown token purpose {purpose!r}")
    return purpose


def _digest(token: str) -> str:
    # Tokens are read off a screen and typed: case and surrounding blanks do not matter.
    return hashlib.sha256(token.strip().upper().encode()).hexdigest()


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def generate_token() -> str:
    """Two groups of five base32 letters joined by a dash, as the reference's e-mail tokens look (50 bits)."""
    raw = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def issue(conn: sqlite3.Connection, did: str, purpose: str, now: int | None = None) -> tuple[str, int]:
    """A new ``purpose`` token for ``did`` (replacing any earlier one); returns (token, expires_at)."""
    _purpose(purpose)
    if get_by_did_sync(conn, did) is None:
        raise AccountNotFound(did)
    token = generate_token()
    expires_at = _now(now) + TOKEN_TTL
    tokens_store.put_account_token(conn, did, purpose, _digest(token), expires_at)
    return token, expires_at


def verify(stored: tuple[str, int] | None, token: str, now: int) -> None:
    """Raise InvalidToken / ExpiredToken unless ``token`` matches the stored (digest, expires_at)."""
    if stored is None or not hmac.compare_digest(stored[0], _digest(token)):
        raise InvalidRequest("Token is invalid", "InvalidToken")
    if stored[1] <= now:
        raise InvalidRequest("Token is expired", "ExpiredToken")


def check(conn: sqlite3.Connection, did: str, purpose: str, token: str, now: int | None = None) -> None:
    """Raise InvalidToken / ExpiredToken unless ``token`` is the live ``purpose`` token of ``did``."""
    verify(tokens_store.get_account_token(conn, did, _purpose(purpose)), token, _now(now))


async def precheck(db: "Database", did: str, purpose: str, token: str) -> None:
    """:func:`check` on a reader, before costly work; the deciding check is :func:`consume`'s."""
    verify(await tokens_store.read_account_token(db, did, _purpose(purpose)), token, _now(None))


def consume(conn: sqlite3.Connection, did: str, purpose: str, token: str, now: int | None = None) -> None:
    """Check the token and remove it, in the caller's transaction: a token is good for one use."""
    check(conn, did, purpose, token, now)
    tokens_store.delete_account_token(conn, did, purpose)
