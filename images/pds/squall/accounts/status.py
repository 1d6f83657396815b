"""Account hosting status: deactivation and reactivation (com.atproto.server.de/activateAccount).

A deactivated account keeps its data and may still sign in; it is announced on the firehose as
``#account {active: false, status: "deactivated"}``. Reactivating announces ``#account`` (active),
``#identity`` and ``#sync`` (the current commit), in that order, so relays re-learn the repo.
"""

from __future__ import annotations

import sqlite3

from ..store.sequencer import now_iso
from ..errors import InvalidRequest
from . import events
from .repo_init import current_commit
from ..store import accounts as accounts_store
from ..store.accounts import get_by_did_sync


def deactivate(conn: sqlite3.Connection, did: str, delete_after: str | None) -> None:
    now = now_iso()
    if not accounts_store.deactivate_account(conn, did, now, delete_after):
        raise InvalidRequest("Account not found", "AccountNotFound")
    account = get_by_did_sync(conn, did)
    assert account is not None
    events.account(conn, did, account.status, now)


def activate(conn: sqlite3.Connection, did: str) -> None:
    account = get_by_did_sync(conn, did)
    if account is None or account.is_takendown:
        raise InvalidRequest("user not found", "AccountNotFound")
    now = now_iso()
    accounts_store.activate_account(conn, did)
    events.account(conn, did, None, now)
    events.identity(conn, did, account.handle, now)
    commit = current_commit(conn, did)
    if commit is not None:
        cid, block, rev = commit
        events.sync(conn, did, cid, block, rev, now)
