"""Repositories on this PDS: record writes as signed commits, record reads, CAR exports
(https://atproto.com/specs/repository, https://atproto.com/specs/sync).

The feature module for ``squall.app``: ``start`` attaches :class:`RepoService` as
``ctx.repo``. The XRPC methods live in ``squall.xrpc.repo`` and ``squall.xrpc.sync``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .service import RepoService

if TYPE_CHECKING:
    from ..context import AppContext

__all__ = ["RepoService", "start"]


async def start(ctx: "AppContext") -> None:
    ctx.repo = RepoService(ctx.db, ctx.tid_clock, ctx.log, firehose=ctx.firehose, blobs=ctx.blobs,
                           lexicons=ctx.registry.lexicons)
    ctx.repo.metrics = ctx.metrics
