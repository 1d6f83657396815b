"""Legacy sessions: login, refresh-token storage and rotation, revocation.

A session is an access JWT (2 h) and a refresh JWT (90 days) — see ``squall.auth.tokens``. Every
refresh token's ``jti`` has a row in ``refresh_token``; the row is what makes the token usable.
Refreshing rotates: the old row gets ``next_id`` and a short expiry, a new row is added, and the
old token is refused from then on (a replayed refresh token is the sign of a stolen one).
Deleting the session, or revoking the app password it came from, deletes the row.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth.passwords import verify_password
from ..auth.tokens import SCOPE_ACCESS, SCOPE_APP_PASS, SCOPE_APP_PASS_PRIVILEGED, TokenIssuer
from ..errors import AuthRequired, InvalidRequest
from . import app_passwords
from .app_passwords import AppPassword
from ..store import sessions as sessions_store
from ..store.accounts import Account, find_app_password, get_by_identifier

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from ..store.db import Database

# A rotated token's row is kept this long (bounded by its own expiry), then swept.
ROTATED_ROW_TTL = 2 * 3600
MAX_PASSWORD_LENGTH = 512
LOGIN_FAILED = "Invalid identifier or password"


@dataclass(frozen=True)
class Session:
    access_jwt: str
    refresh_jwt: str

    def __repr__(self) -> str:
        return "Session(<redacted>)"


def scope_for(app_password: AppPassword | None) -> str:
    if app_password is None:
        return SCOPE_ACCESS
    return SCOPE_APP_PASS_PRIVILEGED if app_password.privileged else SCOPE_APP_PASS


def mint(issuer: TokenIssuer, did: str, app_password: AppPassword | None) -> tuple[Session, str, int]:
    """A new token pair; returns it with the refresh token's jti and expiry (store them)."""
    access = issuer.access_token(did, scope_for(app_password),
                                 app_password=app_password.name if app_password is not None else None)
    refresh, jti, exp = issuer.refresh_token(did)
    return Session(access, refresh), jti, exp


def store_refresh_token(conn: sqlite3.Connection, jti: str, did: str, app_password_name: str | None,
                        expires_at: int) -> None:
    sessions_store.insert_refresh_token(conn, jti, did, app_password_name, expires_at)


# -- login ----------------------------------------------------------------------------------------


class _Dummy:
    """A real argon2 hash to verify against when the identifier is unknown, so that a wrong
    identifier costs as much time as a wrong password and does not reveal which accounts exist."""

    def __init__(self) -> None:
        self.hash: str | None = None

    async def get(self, hasher: "PasswordHasher") -> str:
        if self.hash is None:
            from ..auth.passwords import hash_password

            self.hash = await hash_password(hasher, "squall-no-such-account")
        return self.hash


@dataclass
class LoginChecker:
    db: "Database"
    hasher: "PasswordHasher"

    def __post_init__(self) -> None:
        self._dummy = _Dummy()

    async def login(self, identifier: str, password: str) -> tuple[Account, AppPassword | None]:
        """The account and, for an app-password login, which one. Raises AuthenticationRequired."""
        if len(password) > MAX_PASSWORD_LENGTH or not identifier or not password:
            raise AuthRequired(LOGIN_FAILED)
        account = await get_by_identifier(self.db, identifier)
        if account is None or account.password_hash is None:
            await verify_password(self.hasher, await self._dummy.get(self.hasher), password)
            if app_passwords.looks_like_app_password(password):  # a known account would hash twice
                await app_passwords.hash_app_password(self.hasher, "did:web:invalid", password)
            raise AuthRequired(LOGIN_FAILED)
        if await verify_password(self.hasher, account.password_hash, password):
            return account, None
        # A taken-down account may not sign in with an app password.
        if account.is_takendown or not app_passwords.looks_like_app_password(password):
            raise AuthRequired(LOGIN_FAILED)
        digest = await app_passwords.hash_app_password(self.hasher, account.did, password)
        row = await find_app_password(self.db, account.did, digest)
        if row is None:
            raise AuthRequired(LOGIN_FAILED)
        return account, AppPassword(row["name"], bool(row["privileged"]))


# -- refresh --------------------------------------------------------------------------------------


def rotate(conn: sqlite3.Connection, issuer: TokenIssuer, jti: str, now: int | None = None) -> Session:
    """Exchange the refresh token ``jti`` for a new pair (inside a write transaction).

    Raises ExpiredToken when the token was revoked, already used or has lapsed.
    """
    now = int(time.time()) if now is None else now
    row = sessions_store.get_refresh_token(conn, jti)
    if row is None:
        raise InvalidRequest("Token has been revoked", "ExpiredToken")
    if row["next_id"] is not None:
        raise InvalidRequest("Token has already been used; sign in again", "ExpiredToken")
    if row["expires_at"] <= now:
        raise InvalidRequest("Token has expired", "ExpiredToken")
    did = row["did"]
    app_password = None
    if row["app_password_name"] is not None:
        if row["privileged"] is None:  # its app password was revoked meanwhile
            raise InvalidRequest("Token has been revoked", "ExpiredToken")
        app_password = AppPassword(row["app_password_name"], bool(row["privileged"]))
    session, new_jti, new_exp = mint(issuer, did, app_password)
    sessions_store.delete_expired_refresh_tokens(conn, did, now)
    sessions_store.mark_refresh_token_rotated(conn, jti, new_jti, now + ROTATED_ROW_TTL)
    store_refresh_token(conn, new_jti, did, row["app_password_name"], new_exp)
    return session


def revoke(conn: sqlite3.Connection, jti: str) -> bool:
    return sessions_store.delete_refresh_token(conn, jti)
