"""Identity: did:plc and did:web for accounts, handle and DID resolution, the DID cache.

The feature module for ``squall.app``: ``start`` attaches ``IdentityService`` as
``ctx.identity`` and starts the PLC pending-operation loop; ``stop`` ends both. Its
XRPC methods and well-known routes live in ``squall.xrpc.identity``.
"""

from __future__ import annotations

from typing import Any

from .service import (
    CreatedIdentity,
    HandleChangeRefused,
    IdentityError,
    IdentityRejected,
    IdentityService,
    IdentityUnavailable,
    IdentityUnpublished,
    decode_pending_op,
    pending_op_blob,
)

__all__ = [
    "CreatedIdentity",
    "HandleChangeRefused",
    "IdentityError",
    "IdentityRejected",
    "IdentityService",
    "IdentityUnavailable",
    "IdentityUnpublished",
    "decode_pending_op",
    "pending_op_blob",
    "start",
    "stop",
]


async def start(ctx: Any) -> None:
    service = IdentityService(ctx.settings, ctx.db, ctx.secrets.plc_rotation_key, log=ctx.log,
                              observe=ctx.metrics.outbound("identity"))
    ctx.identity = service
    service.start()


async def stop(ctx: Any) -> None:
    await ctx.identity.close()
