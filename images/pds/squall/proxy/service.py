"""ProxyService: the pieces of service proxying held together for the XRPC layer.

Attached as ``ctx.proxy``. It resolves targets (``target``), mints service-auth
tokens with the calling account's repo key (``squall.auth.service_jwt``) and forwards
(``forwarder``). The XRPC catch-all and the preference methods use it.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from ..store.accounts import get_by_did
from ..atproto.crypto import Keypair
from ..auth.service_jwt import create_service_jwt
from ..net import OutboundPolicy
from ..store.db import Database
from ..atproto.lexicon import Lexicons, load_bundled
from ..errors import AuthRequired, UpstreamFailure
from .forwarder import Forwarder, ProxyLimits
from .read_after_write import ReadAfterWrite
from .target import Target, TargetResolver


class ProxyService:
    def __init__(self, settings: Any, db: Database, identity: Any, *, limits: ProxyLimits = ProxyLimits(),
                 log: logging.Logger | None = None, lexicons: Lexicons | None = None, observe: Any = None):
        self.settings = settings
        self.db = db
        self.log = log or logging.getLogger("squall.proxy")
        self.targets = TargetResolver(settings, identity.resolve_did)
        self.forwarder = Forwarder(OutboundPolicy.from_settings(settings), limits, log=self.log, observe=observe)
        self.read_after_write = ReadAfterWrite(settings, db, lexicons if lexicons is not None else load_bundled(),
                                               self.appview_query, log=self.log)

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

    async def query(self, did: str, target: Target, nsid: str, params: Mapping[str, Any], *,
                    aud: str | None = None) -> Any:
        """A query this PDS makes upstream on the user's behalf; the parsed JSON answer."""
        token = await self.service_token(did, aud or target.did, nsid)
        return await self.forwarder.get_json(origin=target.origin, nsid=nsid, params=params,
                                             authorization=f"Bearer {token}")

    async def appview_query(self, did: str, nsid: str, params: Mapping[str, Any]) -> Any:
        appview = self.targets.configured("appview")
        if appview is None:
            raise UpstreamFailure("No AppView is configured")
        return await self.query(did, appview, nsid, params)
