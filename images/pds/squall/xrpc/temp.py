"""com.atproto.temp.* — the temporary methods the reference PDS still serves.

``checkSignupQueue``: clients ask it after sign-up when the server runs a signup queue. Squall has
no queue, so an account is let in at once; the answer reports whether the caller's account is
active (a deactivated one, e.g. migrating in, is not yet).
"""

from __future__ import annotations

from typing import Any

from ..store.accounts import get_by_did
from .errors import AuthRequired
from .registry import Auth, Method
from .request import XrpcRequest


async def check_signup_queue(req: XrpcRequest) -> dict[str, Any]:
    account = await get_by_did(req.ctx.db, req.did)
    if account is None:
        raise AuthRequired("Account not found", "AccountNotFound")
    return {"activated": account.deactivated_at is None}


METHODS = (
    Method("com.atproto.temp.checkSignupQueue", "query", check_signup_queue, Auth.ACCESS),
)
