"""ProxyService: the pieces of service proxying held together for the XRPC layer.

Attached as ``ctx.proxy``. It resolves targets (``target``), mints service-auth
tokens with the calling account's repo key (``squall.auth.service_jwt``) and forwards
(``forwarder``). The XRPC catch-all and the preference methods use it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..store.accounts import get_by_did
from ..atproto.crypto import Keypair
from ..auth.service_jwt import create_service_jwt
from ..net import OutboundPolicy
from ..store.db import Database
from ..errors import AuthRequired
from .forwarder import Forwarder, ProxyLimits
from .target import TargetResolver


class ProxyService:
    def __init__(self, settings: Any, db: Database, identity: Any, *, limits: ProxyLimits = ProxyLimits(),
                 log: logging.Logger | None = None):
        self.settings = settings
        self.db = db
        self.log = log or logging.getLogger("squall.proxy")
        self.targets = TargetResolver(settings, identity.resolve_did)
        self.forwarder = Forwarder(OutboundPolicy.from_settings(settings), limits, log=self.log)

    async def close(self) -> None:
        await self.forwarder.aclose()

    async def signing_key(self, did: str) -> Keypair:
        account = await get_by_did(self.db, did)
        if account is None:
            # The token outlived its account.
            raise AuthRequired("Account not found", "AccountNotFound")
        return account.keypair()

    async def service_token(self, did: str, aud: str, lxm: str | None, *, exp: int | None = None) -> str:
        """A service-auth JWT from ``did`` for ``aud``, bound to ``lxm``."""
        return create_service_jwt(await self.signing_key(did), iss=did, aud=aud, lxm=lxm, exp=exp)
