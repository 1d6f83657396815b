"""The ``account`` rows moved to squall.store.accounts; re-exported until every caller imports the store."""

from __future__ import annotations

from ..store.accounts import (  # noqa: F401
    STATUS_DEACTIVATED,
    STATUS_TAKENDOWN,
    Account,
    find_account,
    get_by_did,
    get_by_did_sync,
    get_by_email,
    get_by_handle,
    get_by_identifier,
    insert_account,
)
