"""What an OAuth token with granular permissions may call (https://atproto.com/specs/permission).

A token whose scope has ``transition:generic`` keeps the legacy rules (it acts as an app password,
see squall.oauth.resource). Any other OAuth token is checked here, per method, once the call's
input has been read and validated: record writes by collection and action (every operation of
``applyWrites``), blob uploads by MIME type, account and identity methods by attribute, locally
answered app-view methods as ``rpc`` calls to the configured app view. A method without a rule
here is not open to such tokens at all. Proxied calls and ``getServiceAuth`` are checked where the
audience is known (squall.xrpc.proxy) through ``require``.

Refusals are 403 ``ScopeMissingError`` naming the scope that would have allowed the call, as the
reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import Forbidden
from .scopes import Missing, Permissions

SCOPE_MISSING = "ScopeMissingError"


def require(missing: Missing | None) -> None:
    if missing is not None:
        raise Forbidden(missing.message, SCOPE_MISSING)


@dataclass(frozen=True)
class Call:
    nsid: str
    body: Any  # the validated JSON input, when the method takes JSON
    content_type: str  # the request's Content-Type (blob uploads)
    appview: str  # the configured app view's service reference (did#bsky_appview), or "*" when none


def _collection(call: Call) -> str:
    body = call.body if isinstance(call.body, dict) else {}
    value = body.get("collection")
    return value if isinstance(value, str) else ""


def _create(p: Permissions, call: Call) -> Missing | None:
    return p.repo(_collection(call), "create")


def _put(p: Permissions, call: Call) -> Missing | None:
    # putRecord creates or replaces: both actions are needed (the reference asks for both).
    return p.repo(_collection(call), "create") or p.repo(_collection(call), "update")


def _delete(p: Permissions, call: Call) -> Missing | None:
    return p.repo(_collection(call), "delete")


_WRITE_ACTIONS = {"com.atproto.repo.applyWrites#create": "create",
                  "com.atproto.repo.applyWrites#update": "update",
                  "com.atproto.repo.applyWrites#delete": "delete"}


def _apply_writes(p: Permissions, call: Call) -> Missing | None:
    writes = call.body.get("writes") if isinstance(call.body, dict) else None
    for write in writes if isinstance(writes, list) else []:
        if not isinstance(write, dict):
            continue
        action = _WRITE_ACTIONS.get(write.get("$type", ""))
        collection = write.get("collection")
        if action is None or not isinstance(collection, str):
            continue  # the lexicon check has refused such a write already
        missing = p.repo(collection, action)
        if missing is not None:
            return missing
    return None


def _upload_blob(p: Permissions, call: Call) -> Missing | None:
    return p.blob(call.content_type or "application/octet-stream")


def _account(attr: str, action: str) -> Callable[[Permissions, Call], Missing | None]:
    return lambda p, call: p.account(attr, action)


def _identity(attr: str) -> Callable[[Permissions, Call], Missing | None]:
    return lambda p, call: p.identity(attr)


def _appview_rpc(p: Permissions, call: Call) -> Missing | None:
    return p.rpc(call.nsid, call.appview)


def _open(p: Permissions, call: Call) -> Missing | None:
    return None


def _checked_in_handler(p: Permissions, call: Call) -> Missing | None:
    return None


RULES: dict[str, Callable[[Permissions, Call], Missing | None]] = {
    # Who am I: any OAuth session (the e-mail address only with account:email, see server.getSession).
    "com.atproto.server.getSession": _open,
    "com.atproto.server.checkAccountStatus": _open,
    "com.atproto.repo.listMissingBlobs": _open,
    "com.atproto.identity.getRecommendedDidCredentials": _open,
    # Records and blobs
    "com.atproto.repo.createRecord": _create,
    "com.atproto.repo.putRecord": _put,
    "com.atproto.repo.deleteRecord": _delete,
    "com.atproto.repo.applyWrites": _apply_writes,
    "com.atproto.repo.uploadBlob": _upload_blob,
    # The account
    "com.atproto.repo.importRepo": _account("repo", "manage"),
    "com.atproto.server.activateAccount": _account("status", "manage"),
    "com.atproto.server.deactivateAccount": _account("status", "manage"),
    # The identity
    "com.atproto.identity.updateHandle": _identity("handle"),
    "com.atproto.identity.requestPlcOperationSignature": _identity("*"),
    "com.atproto.identity.signPlcOperation": _identity("*"),
    "com.atproto.identity.submitPlcOperation": _identity("*"),
    # App-view methods this PDS answers itself
    "app.bsky.actor.getPreferences": _appview_rpc,
    "app.bsky.actor.putPreferences": _appview_rpc,
    # The audience is a parameter: squall.xrpc.proxy checks rpc:<lxm>?aud=<aud>
    "com.atproto.server.getServiceAuth": _checked_in_handler,
}


def check_call(permissions: Permissions, call: Call) -> None:
    """Raise Forbidden unless a token with these (non-transition) permissions may make ``call``."""
    rule = RULES.get(call.nsid)
    if rule is None:
        raise Forbidden("This method needs a full-access session; OAuth permissions cannot grant it",
                        "InvalidToken")
    require(rule(permissions, call))
