"""com.atproto.server e-mail methods: confirmation, password reset and address change.

The flows and their rules live in ``squall.mail.service`` (``ctx.mail``); these handlers read and
check the input. requestAccountDelete (squall.xrpc.admin), requestPlcOperationSignature
(squall.xrpc.migration) and createSession's sign-in code (squall.xrpc.server) hand over to the same
service from their own modules.
"""

from __future__ import annotations

from typing import Any

from ..mail.tokens import MAX_TOKEN_LENGTH
from ..ratelimit import DAY, HOUR, KeyBy, RateLimit
from .errors import InvalidRequest
from .registry import Auth, Method
from .request import XrpcRequest

SMALL_BODY = 100_000
MAX_EMAIL = 512


def _token(req: XrpcRequest) -> str | None:
    # Type and presence come from the method's lexicon (the dispatcher checked them).
    token = req.body.get("token")
    if token is not None and len(token) > MAX_TOKEN_LENGTH:
        raise InvalidRequest("Token is invalid", "InvalidToken")
    return token


async def request_email_confirmation(req: XrpcRequest) -> None:
    await req.ctx.mail.request_email_confirmation(req.did)


async def confirm_email(req: XrpcRequest) -> None:
    email = req.capped("email", MAX_EMAIL)
    await req.ctx.mail.confirm_email(req.did, email, _token(req))


async def request_password_reset(req: XrpcRequest) -> None:
    email = req.capped("email", MAX_EMAIL)
    await req.ctx.mail.request_password_reset(email)


async def reset_password(req: XrpcRequest) -> None:
    token = _token(req)
    password = req.capped("password", 4096)
    did = await req.ctx.mail.reset_password(token, password)
    req.ctx.verifier.forget_revocations(did)


async def request_email_update(req: XrpcRequest) -> dict[str, Any]:
    return {"tokenRequired": await req.ctx.mail.request_email_update(req.did)}


async def update_email(req: XrpcRequest) -> None:
    email = req.capped("email", MAX_EMAIL)
    auth_factor = req.body.get("emailAuthFactor")
    await req.ctx.mail.update_email(req.did, email, _token(req), auth_factor)


_PER_DID = (RateLimit("email-request-did-hour", 15, HOUR, KeyBy.DID),
            RateLimit("email-request-did-day", 50, DAY, KeyBy.DID))

METHODS = (
    Method("com.atproto.server.requestEmailConfirmation", "procedure", request_email_confirmation, Auth.ACCESS,
           errors=("AccountNotFound", "AccountTakedown"), input=None, max_body=SMALL_BODY, rate_limits=_PER_DID),
    Method("com.atproto.server.confirmEmail", "procedure", confirm_email, Auth.ACCESS,
           errors=("AccountNotFound", "ExpiredToken", "InvalidToken", "InvalidEmail"), max_body=SMALL_BODY),
    Method("com.atproto.server.requestPasswordReset", "procedure", request_password_reset, Auth.NONE,
           max_body=SMALL_BODY,
           rate_limits=(RateLimit("request-password-reset-ip-hour", 15, HOUR),
                        RateLimit("request-password-reset-ip-day", 50, DAY))),
    Method("com.atproto.server.resetPassword", "procedure", reset_password, Auth.NONE,
           errors=("ExpiredToken", "InvalidToken"), max_body=SMALL_BODY,
           rate_limits=(RateLimit("reset-password-ip", 50, HOUR),)),
    Method("com.atproto.server.requestEmailUpdate", "procedure", request_email_update, Auth.FULL,
           errors=("AccountNotFound", "AccountTakedown"), input=None, max_body=SMALL_BODY, rate_limits=_PER_DID),
    Method("com.atproto.server.updateEmail", "procedure", update_email, Auth.FULL,
           errors=("ExpiredToken", "InvalidToken", "TokenRequired"), max_body=SMALL_BODY),
)
