"""Repositories on this PDS: record writes as signed commits, record reads, CAR exports
(https://atproto.com/specs/repository, https://atproto.com/specs/sync).

The feature module for ``squall.app``: ``start`` attaches :class:`RepoService` as
``ctx.services["repo"]``. The XRPC methods live in ``squall.xrpc.repo`` and ``squall.xrpc.sync``.
"""

from __future__ import annotations

from typing import Any

from ..atproto.tid import TidClock
from .service import RepoService

__all__ = ["RepoService", "start", "stop"]


async def start(ctx: Any) -> None:
    # The one TID clock of the app (squall.xrpc.server creates it too and moves it past the newest
    # stored rev); whichever module starts first creates it, both share it.
    clock = ctx.services.setdefault("tid_clock", TidClock())
    row = await ctx.db.fetchone("SELECT MAX(rev) AS rev FROM repo_root")
    if row is not None and row["rev"]:
        clock.observe(row["rev"])
    ctx.services["repo"] = RepoService(ctx.db, clock, ctx.services, ctx.log)


async def stop(ctx: Any) -> None:
    ctx.services.pop("repo", None)
