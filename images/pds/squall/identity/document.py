"""Reading atproto facts out of a DID document (https://atproto.com/specs/did, "DID Documents").

The atproto parts of a document are: the handle, the first ``at://`` entry of ``alsoKnownAs``;
the signing key, the verification method whose id ends in ``#atproto`` (``Multikey`` with a
multicodec key, or a legacy suite with the bare point); the PDS, the service whose id ends in
``#atproto_pds`` with type ``AtprotoPersonalDataServer``. Each helper returns None for a document
that lacks the part or spells it wrongly, so callers decide what missing means.
"""

from __future__ import annotations

from typing import Any

from ..atproto import syntax
from ..atproto.crypto import PublicKey
from ..atproto.errors import AtprotoError

_LEGACY_SUITES = {
    "EcdsaSecp256k1VerificationKey2019": "ES256K",
    "EcdsaSecp256r1VerificationKey2019": "ES256",
}


def _entries(doc: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    value = doc.get(field)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _matches(entry_id: Any, did: str | None, fragment: str) -> bool:
    return isinstance(entry_id, str) and (entry_id == f"#{fragment}" or entry_id == f"{did}#{fragment}")


def handle_from_doc(doc: Any) -> str | None:
    """The handle the document claims (lower-case), or None when there is no valid one."""
    aliases = doc.get("alsoKnownAs") if isinstance(doc, dict) else None
    if not isinstance(aliases, list):
        return None
    for alias in aliases:
        if isinstance(alias, str) and alias.startswith("at://"):
            handle = alias[len("at://"):]
            return syntax.normalize_handle(handle) if syntax.is_valid_handle(handle) else None
    return None


def signing_key_from_doc(doc: Any) -> PublicKey | None:
    """The ``#atproto`` verification key, or None when absent or unusable."""
    did = doc.get("id") if isinstance(doc, dict) else None
    for method in _entries(doc, "verificationMethod"):
        if not _matches(method.get("id"), did, "atproto"):
            continue
        value = method.get("publicKeyMultibase")
        try:
            if method.get("type") == "Multikey":
                return PublicKey.from_multibase(value)
            algorithm = _LEGACY_SUITES.get(method.get("type"))
            if algorithm is not None:
                return PublicKey.from_multibase(value, algorithm)
        except AtprotoError:
            return None
        return None
    return None


def pds_endpoint_from_doc(doc: Any) -> str | None:
    """The ``#atproto_pds`` endpoint URL (http or https, no path checks), or None."""
    did = doc.get("id") if isinstance(doc, dict) else None
    for service in _entries(doc, "service"):
        if not _matches(service.get("id"), did, "atproto_pds"):
            continue
        if service.get("type") != "AtprotoPersonalDataServer":
            return None
        endpoint = service.get("serviceEndpoint")
        if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://")):
            return endpoint.rstrip("/")
        return None
    return None
