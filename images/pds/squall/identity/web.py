"""did:web for accounts and for the service (https://atproto.com/specs/did, "did:web").

atproto uses only host-level did:web: ``did:web:<host>`` names the document at
``https://<host>/.well-known/did.json``; paths are not allowed, and a port (``%3A``) only for
local testing, where plain http is used. Squall gives a did:web account the DID
``did:web:<handle>`` and serves its document itself, so nothing is published anywhere — the mode
for LAN and offline use.

Because the DID *is* the handle, a did:web account cannot change its handle: the old DID would
keep naming the old host. ``com.atproto.identity.updateHandle`` refuses with a message that says
so (see ``squall.xrpc.identity``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ..atproto import syntax
from ..atproto.crypto import PublicKey
from .plc import PDS_SERVICE_ID, PDS_SERVICE_TYPE

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
SUITE_CONTEXT = {
    "ES256K": "https://w3id.org/security/suites/secp256k1-2019/v1",
    "ES256": "https://w3id.org/security/suites/ecdsa-2019/v1",
}


class DidWebError(ValueError):
    """A did:web this PDS cannot use (a path, a bad host)."""


def did_for_handle(handle: str) -> str:
    """``did:web:<handle>``; the handle is a host name, so it needs no escaping."""
    syntax.ensure_valid_handle(handle)
    return f"did:web:{handle.lower()}"


def host_of(did: str) -> str:
    """The host (with ``:port`` when the DID carries ``%3A``) that serves a did:web document."""
    if not did.startswith("did:web:"):
        raise DidWebError(f"not a did:web: {did[:80]!r}")
    ident = did[len("did:web:"):]
    if not ident or ":" in ident:
        raise DidWebError("did:web with a path is not supported by atproto")
    host = unquote(ident).lower()
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        raise DidWebError(f"did:web has a bad port: {ident!r}")
    if not name or any(c in name for c in "/?#@[] "):
        raise DidWebError(f"did:web has a bad host: {ident!r}")
    return host


def document_url(did: str, *, allow_http: bool = False) -> str:
    """Where the DID document lives. Plain http only when allowed (dev mode) and for a local host."""
    host = host_of(did)
    name = host.split(":", 1)[0]
    local = name == "localhost" or name.endswith(".localhost") or name.replace(".", "").isdigit()
    scheme = "http" if allow_http and (local or ":" in host) else "https"
    return f"{scheme}://{host}/.well-known/did.json"


def account_document(did: str, handle: str | None, signing_key: PublicKey, pds_endpoint: str) -> dict[str, Any]:
    """The atproto DID document of an account hosted here (for did:web and as our view of did:plc)."""
    suite = SUITE_CONTEXT[signing_key.algorithm]
    return {
        "@context": [DID_CONTEXT, MULTIKEY_CONTEXT, suite],
        "id": did,
        "alsoKnownAs": [f"at://{handle}"] if handle else [],
        "verificationMethod": [{
            "id": f"{did}#atproto",
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": signing_key.multibase(),
        }],
        "service": [{
            "id": f"#{PDS_SERVICE_ID}",
            "type": PDS_SERVICE_TYPE,
            "serviceEndpoint": pds_endpoint,
        }],
    }


def service_document(service_did: str, public_url: str) -> dict[str, Any]:
    """The PDS's own did:web document: it only names the PDS endpoint."""
    return {
        "@context": [DID_CONTEXT],
        "id": service_did,
        "service": [{
            "id": f"#{PDS_SERVICE_ID}",
            "type": PDS_SERVICE_TYPE,
            "serviceEndpoint": public_url,
        }],
    }
