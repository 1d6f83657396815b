"""Identity: did:plc and did:web for accounts, handle and DID resolution, the DID cache.

The feature module for ``squall.app``: ``start`` attaches ``IdentityService`` as
``ctx.services["identity"]`` and starts the PLC pending-operation loop; ``stop`` ends both. Its
XRPC methods and well-known routes live in ``squall.xrpc.identity`` and are re-exported here, so
the app registers one module for the whole feature.
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
    service = IdentityService(ctx.settings, ctx.db, ctx.secrets.plc_rotation_key, log=ctx.log)
    ctx.services["identity"] = service
    service.start()


async def stop(ctx: Any) -> None:
    service = ctx.services.pop("identity", None)
    if service is not None:
        await service.close()


def __getattr__(name: str) -> Any:
    # METHODS and routes come from squall.xrpc.identity, imported on first use: that module imports
    # this package's service, so a top-level import here would be circular.
    if name in ("METHODS", "routes"):
        from ..xrpc import identity as xrpc_identity

        return getattr(xrpc_identity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
