"""Setting an account's password, the one rule for every path that does it: the user's
``/account`` form (squall.account_web, with the current password), the e-mailed reset
(com.atproto.server.resetPassword, squall.mail) and the operator's
com.atproto.admin.updateAccountPassword. As the reference: every session that the old password
opened ends — access tokens (cut off at once), refresh tokens (password and app-password sessions), OAuth grants and the account
page's sign-ins — except, for the user's own change, the page session that made it.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ..auth import revocation
from ..auth.passwords import hash_password
from ..store import account_sessions
from ..store import accounts as accounts_store
from ..store import oauth as oauth_store
from ..store import sessions as sessions_store
from .operator_tokens import AccountNotFound
from .signup import check_password

if TYPE_CHECKING:
    from argon2 import PasswordHasher


def set_password(conn: sqlite3.Connection, did: str, digest: str, keep_page_session: str | None = None) -> None:
    """Store the new hash and end the account's sessions (inside ``Database.write``)."""
    if not accounts_store.set_password_hash(conn, did, digest):
        raise AccountNotFound(did)
    sessions_store.delete_refresh_tokens_of(conn, did)
    revocation.cut_off(conn, did)  # its access tokens too, at once (the caller then tells the verifier)
    oauth_store.mail_revoke_oauth_sessions(conn, did)
    account_sessions.delete_all_of(conn, did, keep=keep_page_session)


async def new_password_hash(hasher: "PasswordHasher", password: str) -> str:
    """The hash of an acceptable new password (InvalidPassword otherwise)."""
    check_password(password)
    return await hash_password(hasher, password)
