"""Mailed tokens: the short codes the reference PDS e-mails, issued and consumed in transactions.

A token looks like the reference's (``ABCDE-FGHIJ``, 50 random bits), is stored only as a SHA-256
digest, lives :data:`TOKEN_TTL` seconds (the reference's e-mail tokens: 15 minutes), is good for one
use, and is never valid for another purpose. At most one is live per account and purpose: asking
again replaces it.

Deletion and PLC-signing tokens are rows of ``account_token`` — the table of the operator-issued
tokens (``squall.accounts.operator_tokens``) — so ``deleteAccount`` and ``signPlcOperation`` take a
mailed token or an operator's alike. The others (``confirm_email``, ``update_email``,
``reset_password``, ``sign_in``) are rows of ``email_token`` (``squall.store.mail``).
"""

from __future__ import annotations

import sqlite3
import time

from ..accounts import operator_tokens
from ..store import mail as mail_store
from ..store import tokens as tokens_store

TOKEN_TTL = 15 * 60
CONFIRM_EMAIL = "confirm_email"
UPDATE_EMAIL = "update_email"
RESET_PASSWORD = "reset_password"
SIGN_IN = "sign_in"
EMAIL_PURPOSES = (CONFIRM_EMAIL, UPDATE_EMAIL, RESET_PASSWORD, SIGN_IN)
MAX_TOKEN_LENGTH = operator_tokens.MAX_TOKEN_LENGTH

generate = operator_tokens.generate_token
# The same normalisation as the operator tokens (case and blanks do not matter: codes are typed).
digest = operator_tokens._digest  # noqa: SLF001 — one rule for both kinds of token


def issue(conn: sqlite3.Connection, did: str, purpose: str, token: str, now: int | None = None) -> int:
    """Store ``token`` as the live ``purpose`` token of ``did``; returns its expiry (unix seconds)."""
    expires_at = (int(time.time()) if now is None else now) + TOKEN_TTL
    if purpose in operator_tokens.PURPOSES:
        tokens_store.mail_put_account_token(conn, did, purpose, digest(token), expires_at)
    elif purpose in EMAIL_PURPOSES:
        mail_store.put_token(conn, did, purpose, digest(token), expires_at)
    else:  # a programming error, not user input
        raise ValueError(f"unknown token purpose {purpose!r}")
    return expires_at


def consume(conn: sqlite3.Connection, did: str, purpose: str, token: str, now: int | None = None) -> None:
    """Raise InvalidToken / ExpiredToken unless ``token`` is the live ``purpose`` token of ``did``;
    then remove it, in the caller's transaction."""
    if purpose not in EMAIL_PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    operator_tokens.verify(mail_store.get_token(conn, did, purpose), token,
                           int(time.time()) if now is None else now)
    mail_store.delete_token(conn, did, purpose)


def consume_any(conn: sqlite3.Connection, purpose: str, token: str, now: int | None = None) -> str:
    """The DID whose live ``purpose`` token this is (used up); InvalidToken / ExpiredToken otherwise.
    For a token that is the only thing the caller has (resetPassword)."""
    found = mail_store.find_token(conn, purpose, digest(token))
    if found is None:
        operator_tokens.verify(None, token, 0)  # raises InvalidToken
    did, expires_at = found
    operator_tokens.verify((digest(token), expires_at), token, int(time.time()) if now is None else now)
    mail_store.delete_token(conn, did, purpose)
    return did
