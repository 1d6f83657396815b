"""Where a proxied call goes (https://atproto.com/specs/xrpc, "Service Proxying").

A client names the destination with the header ``atproto-proxy: <did>#<service id>``: the DID's
document is resolved (through the identity service's cache) and the ``service`` entry with that id
gives the endpoint. Without the header, a method goes to the service this PDS is configured with
for its namespace: ``app.bsky.*`` to the AppView (``#bsky_appview``), ``chat.bsky.*`` to the chat
service (``#bsky_chat``), ``com.atproto.moderation.createReport`` to the report service and
``tools.ozone.*`` to the moderation service (both ``#atproto_labeler``), and any other
``com.atproto.*`` method this PDS does not serve to the AppView (as the reference). Anything else
has no destination and stays MethodNotImplemented.

Only the endpoint's origin is used: the request path is always ``/xrpc/<nsid>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ..atproto import syntax
from ..errors import InvalidRequest

MAX_HEADER_LENGTH = 2048
MAX_SERVICE_ID_LENGTH = 256

APPVIEW_SERVICE_ID = "bsky_appview"
CHAT_SERVICE_ID = "bsky_chat"
LABELER_SERVICE_ID = "atproto_labeler"


@dataclass(frozen=True)
class Target:
    did: str
    service_id: str  # without the leading '#'
    origin: str  # scheme://host[:port]

    @property
    def ref(self) -> str:
        return f"{self.did}#{self.service_id}"


def parse_proxy_header(value: str) -> tuple[str, str]:
    """(DID, service id) of an ``atproto-proxy`` value; InvalidRequest naming what is wrong."""
    if len(value) > MAX_HEADER_LENGTH:
        raise InvalidRequest("proxy header is too long")
    hash_index = value.find("#")
    if hash_index == 0:
        raise InvalidRequest("no did specified in proxy header")
    if hash_index == -1 or hash_index == len(value) - 1:
        raise InvalidRequest("no service id specified in proxy header")
    if value.find("#", hash_index + 1) != -1:
        raise InvalidRequest("invalid proxy header format")
    if " " in value:
        raise InvalidRequest("proxy header cannot contain spaces")
    did, service_id = value[:hash_index], value[hash_index + 1:]
    if not syntax.is_valid_did(did):
        raise InvalidRequest("invalid proxy header format: not a DID before '#'")
    if len(service_id) > MAX_SERVICE_ID_LENGTH or not all(0x21 <= ord(c) < 0x7F for c in service_id):
        raise InvalidRequest("invalid proxy header format: bad service id")
    return did, service_id


def endpoint_origin(endpoint: Any) -> str | None:
    """``scheme://host[:port]`` of an http(s) service endpoint, None for anything else."""
    if not isinstance(endpoint, str) or len(endpoint) > MAX_HEADER_LENGTH:
        return None
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def service_endpoint(doc: Any, service_id: str) -> str | None:
    """The origin of the document's service ``#<service_id>``, or None."""
    if not isinstance(doc, dict) or not isinstance(doc.get("service"), list):
        return None
    did = doc.get("id")
    for entry in doc["service"]:
        if not isinstance(entry, dict):
            continue
        entry_id = entry.get("id")
        if entry_id == f"#{service_id}" or (isinstance(did, str) and entry_id == f"{did}#{service_id}"):
            return endpoint_origin(entry.get("serviceEndpoint"))
    return None


def configured_targets(settings: Any) -> dict[str, Target]:
    """The services named in the configuration, keyed by role."""
    out: dict[str, Target] = {}
    for role, url, did, service_id in (
        ("appview", settings.bsky_app_view_url, settings.bsky_app_view_did, APPVIEW_SERVICE_ID),
        ("chat", settings.bsky_chat_url, settings.bsky_chat_did, CHAT_SERVICE_ID),
        ("report", settings.report_service_url, settings.report_service_did, LABELER_SERVICE_ID),
        ("mod", settings.mod_service_url, settings.mod_service_did, LABELER_SERVICE_ID),
    ):
        origin = endpoint_origin(url)
        if origin is not None and did:
            out[role] = Target(did, service_id, origin)
    return out


def default_role(nsid: str) -> str | None:
    lower = nsid.lower()
    if lower.startswith("app.bsky."):
        return "appview"
    if lower.startswith("chat.bsky."):
        return "chat"
    if lower == "com.atproto.moderation.createreport":
        return "report"
    if lower.startswith("tools.ozone."):
        return "mod"
    if lower.startswith("com.atproto."):
        # As the reference: a com.atproto method this PDS does not serve (resolveIdentity,
        # label.queryLabels, …) goes to the AppView; protected ones never get here.
        return "appview"
    return None


DidResolver = Callable[[str], Awaitable[dict[str, Any] | None]]


class TargetResolver:
    def __init__(self, settings: Any, resolve_did: DidResolver):
        self._configured = configured_targets(settings)
        self._resolve_did = resolve_did

    def configured(self, role: str) -> Target | None:
        return self._configured.get(role)

    def default(self, nsid: str) -> Target | None:
        role = default_role(nsid)
        return self._configured.get(role) if role is not None else None

    async def from_header(self, value: str) -> Target:
        did, service_id = parse_proxy_header(value)
        # A configured service is reached at its configured URL without a lookup (the reference
        # does this for the AppView), which also keeps working while its DID document is down.
        for target in self._configured.values():
            if target.did == did and target.service_id == service_id:
                return target
        return await self.resolve_service(did, service_id)

    async def resolve_service(self, did: str, service_id: str, *, what: str = "proxy did") -> Target:
        """The ``#service_id`` endpoint of ``did``'s document; InvalidRequest naming ``what``."""
        doc = await self._resolve_did(did)
        if doc is None:
            raise InvalidRequest(f"could not resolve {what}")
        origin = service_endpoint(doc, service_id)
        if origin is None:
            raise InvalidRequest(f"could not resolve {what} service url")
        return Target(did, service_id, origin)
