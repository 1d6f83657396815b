"""Firehose events about accounts (https://atproto.com/specs/sync#firehose): ``#identity``,
``#account`` and ``#sync`` bodies, appended inside the caller's transaction, and the wake-up of the
fan-out once that transaction has committed."""

from __future__ import annotations

import inspect
import sqlite3
from typing import TYPE_CHECKING, Any

from ..atproto.cid import CID
from ..store.sequencer import append_event
from .repo_init import sync_blocks

if TYPE_CHECKING:
    from ..context import AppContext


def identity(conn: sqlite3.Connection, did: str, handle: str | None, time: str) -> int:
    body: dict[str, Any] = {"did": did, "time": time}
    if handle is not None:
        body["handle"] = handle
    return append_event(conn, did, "identity", body)


def account(conn: sqlite3.Connection, did: str, status: str | None, time: str) -> int:
    body: dict[str, Any] = {"did": did, "active": status is None, "time": time}
    if status is not None:
        body["status"] = status
    return append_event(conn, did, "account", body)


def sync(conn: sqlite3.Connection, did: str, commit_cid: CID, commit_block: bytes, rev: str, time: str) -> int:
    body = {"did": did, "blocks": sync_blocks(commit_cid, commit_block), "rev": rev, "time": time}
    return append_event(conn, did, "sync", body)


async def wake_firehose(ctx: "AppContext") -> None:
    firehose = ctx.firehose
    if firehose is None:
        return
    result = firehose.notify()
    if inspect.isawaitable(result):
        await result
    relays = getattr(ctx, "relays", None)
    if relays is not None:  # the relay monitor checks the accounts these events concern
        relays.poke()
