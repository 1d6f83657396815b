"""com.atproto.server.* — the server description, accounts, sessions, app passwords, invites.

https://atproto.com/specs/xrpc and the com.atproto.server lexicons.
"""

from __future__ import annotations

from typing import Any

from .registry import Auth, Method
from .request import XrpcRequest


async def describe_server(req: XrpcRequest) -> dict[str, Any]:
    s = req.ctx.settings
    out: dict[str, Any] = {
        "did": s.service_did,
        "availableUserDomains": list(s.service_handle_domains),
        "inviteCodeRequired": s.invite_required,
        "phoneVerificationRequired": False,
        "links": {},
    }
    if s.privacy_policy_url:
        out["links"]["privacyPolicy"] = s.privacy_policy_url
    if s.terms_of_service_url:
        out["links"]["termsOfService"] = s.terms_of_service_url
    if s.contact_email_address:
        out["contact"] = {"email": s.contact_email_address}
    return out


METHODS = (
    Method("com.atproto.server.describeServer", "query", describe_server, Auth.NONE),
)
