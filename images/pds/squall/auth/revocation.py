"""Access tokens cut off at once: revoking an app password or changing the account's password
makes every access token issued under it fail on its next use, not when it expires (up to 2 h
later, as with the reference PDS).

Access tokens are stateless JWTs, so the cut-off is a time: ``token_cutoff`` (store/sessions.py)
holds, per account, when tokens stopped counting — for any credential ('' : the password
changed) or for one app password ('app:<name>'). A token carries the millisecond it was issued
(claim ``iat_ms``) and, when an app password issued it, the app password's name (``app``); it is
refused when issued at or before a cut-off that covers it. An app password made again under the
same name later issues tokens after the cut-off, so those count.

The verifier checks this on every authenticated request, so the cut-offs of recently seen
accounts are cached in memory (bounded LRU). The cache is invalidated by whoever writes a cut-off,
after the write commits (``invalidate``); an epoch counter keeps a read that raced with an
invalidation from caching what it read before the write. OAuth tokens need none of this: each
request checks that its grant's session still exists, and revoking the grant or changing the
password deletes the session.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from ..store import sessions as sessions_store
from .tokens import ACCESS_TTL

if TYPE_CHECKING:
    from ..store.db import Database

ANY_CREDENTIAL = ""
DEFAULT_CACHE_SIZE = 10_000  # accounts; a single-user PDS uses one entry


def app_password_credential(name: str) -> str:
    return f"app:{name}"


def now_ms(clock: Callable[[], float] = time.time) -> int:
    return int(clock() * 1000)


def cut_off(conn: sqlite3.Connection, did: str, credential: str = ANY_CREDENTIAL, *,
            clock: Callable[[], float] = time.time) -> None:
    """Inside a write transaction: refuse the access tokens ``did`` was issued under ``credential``
    until now. Call ``TokenCutoffs.invalidate(did)`` once the transaction has committed."""
    now = now_ms(clock)
    sessions_store.set_token_cutoff(conn, did, credential, now, now - (ACCESS_TTL + 60) * 1000)


class TokenCutoffs:
    def __init__(self, db: "Database", *, max_entries: int = DEFAULT_CACHE_SIZE):
        self._db = db
        self._max = max_entries
        self._cache: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._epoch = 0

    def __repr__(self) -> str:
        return f"TokenCutoffs({len(self._cache)} cached)"

    async def revoked(self, did: str, app_password: str | None, issued_ms: int) -> bool:
        cutoffs = self._cache.get(did)
        if cutoffs is None:
            epoch = self._epoch
            cutoffs = await sessions_store.token_cutoffs(self._db, did)
            if epoch == self._epoch:  # no invalidation since the read began: safe to remember
                self._cache[did] = cutoffs
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(did)
        if not cutoffs:
            return False
        limit = cutoffs.get(ANY_CREDENTIAL, -1)
        if app_password is not None:
            limit = max(limit, cutoffs.get(app_password_credential(app_password), -1))
        return issued_ms <= limit

    def invalidate(self, did: str) -> None:
        self._epoch += 1
        self._cache.pop(did, None)
