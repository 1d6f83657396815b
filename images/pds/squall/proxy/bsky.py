"""The app.bsky methods whose service token is not the plain one (as the reference PDS).

* ``app.bsky.feed.getFeed``: a custom feed is served by its feed generator, which the AppView
  calls with the user's token. So the token must be for the generator: ``aud`` = the generator's
  service DID (from the AppView's ``getFeedGenerator`` view of the feed's record, the DID whose
  document has the ``#bsky_fg`` endpoint) and ``lxm`` = ``app.bsky.feed.getFeedSkeleton``. The
  call itself still goes to the AppView, which passes the token on.
* ``app.bsky.notification.registerPush`` / ``unregisterPush``: ``aud`` = the body's
  ``serviceDid``; sent to the AppView when that is the AppView's DID, else to the ``#bsky_notif``
  endpoint of that DID's document.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..atproto import syntax
from ..errors import InvalidRequest, UpstreamFailure
from .target import Target

if TYPE_CHECKING:
    from .service import ProxyService

GET_FEED = "app.bsky.feed.getFeed"
GET_FEED_GENERATOR = "app.bsky.feed.getFeedGenerator"
GET_FEED_SKELETON = "app.bsky.feed.getFeedSkeleton"
REGISTER_PUSH = "app.bsky.notification.registerPush"
UNREGISTER_PUSH = "app.bsky.notification.unregisterPush"
PUSH_METHODS = frozenset({REGISTER_PUSH, UNREGISTER_PUSH})
NOTIF_SERVICE_ID = "bsky_notif"
MAX_PUSH_BODY = 64 * 1024


async def feed_generator_did(proxy: "ProxyService", did: str, target: Target, feed: str) -> str:
    """The service DID of the generator of ``feed`` (an at-uri), as ``target`` (the AppView) knows it."""
    if not feed.startswith("at://") or len(feed) > 8192:
        raise InvalidRequest("Error: Params property \"feed\" must be a valid at-uri")
    answer = await proxy.query(did, target, GET_FEED_GENERATOR, {"feed": feed})
    view = answer.get("view") if isinstance(answer, dict) else None
    generator = view.get("did") if isinstance(view, dict) else None
    if not isinstance(generator, str) or not syntax.is_valid_did(generator):
        raise UpstreamFailure("The AppView's view of the feed generator has no valid DID")
    return generator


def push_body(raw: bytes) -> tuple[dict[str, Any], str]:
    """The parsed registerPush/unregisterPush body and its ``serviceDid`` (InvalidRequest otherwise)."""
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    service_did = body.get("serviceDid")
    if not isinstance(service_did, str) or not service_did:
        raise InvalidRequest("Input must have the property \"serviceDid\"")
    if len(service_did) > 2048 or not syntax.is_valid_did(service_did):
        raise InvalidRequest("Input/serviceDid must be a valid did")
    return body, service_did


async def push_target(proxy: "ProxyService", service_did: str) -> Target:
    appview = proxy.targets.configured("appview")
    if appview is not None and appview.did == service_did:
        return appview
    return await proxy.targets.resolve_service(service_did, NOTIF_SERVICE_ID, what="notification service did")
