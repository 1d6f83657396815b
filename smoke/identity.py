"""DID documents as a client sees them (https://atproto.com/specs/did, https://atproto.com/specs/handle).

Where the document comes from — the design choice of this suite:

* ``did:plc:…`` — ``GET <--plc-url>/<did>`` (default https://plc.directory), exactly what any
  relay or AppView does.
* ``did:web:<host>`` — the document lives at ``https://<host>/.well-known/did.json``. For an
  account hosted here, ``<host>`` is its handle and the PDS itself serves that file, choosing the
  account by the ``Host`` header. The smoke run may not be able to reach ``<host>`` by name (a LAN
  test box, a handle whose DNS is not set up yet, a test machine with only the base URL), so the
  document is fetched from ``--base-url`` with ``Host: <host>``: it checks what the PDS serves for
  that name. Whether the name's DNS and certificate reach the PDS is covered separately by
  ``/tls-check?domain=<host>`` (the proxy gets certificates only for names it allows).

The checks on a document: ``id`` is the DID, ``alsoKnownAs`` holds ``at://<handle>``, the
``#atproto`` verification method is a parsable Multikey, and the ``#atproto_pds`` service of type
``AtprotoPersonalDataServer`` points at the public URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from squall.atproto.crypto import PublicKey
from squall.atproto.errors import AtprotoError

from .context import Smoke, json_body, seen
from .runner import CheckFailed

PDS_SERVICE_TYPE = "AtprotoPersonalDataServer"


def did_web_host(did: str) -> str:
    """``did:web:example.com%3A8080`` → ``example.com:8080`` (atproto allows no path)."""
    ident = did[len("did:web:"):]
    if not ident or ":" in ident:
        raise CheckFailed("a did:web without a path", did)
    return unquote(ident).lower()


async def resolve_did(ctx: Smoke, did: str) -> tuple[dict[str, Any], str]:
    """The DID document and a short note of where it came from."""
    if did.startswith("did:web:"):
        host = did_web_host(did)
        ctx.doing(f"fetching the did:web document for {host} from the PDS (Host: {host})")
        response = await ctx.http.get(ctx.url("/.well-known/did.json"), headers={"Host": host})
        where = f"/.well-known/did.json with Host {host}"
    elif did.startswith("did:plc:"):
        url = f"{ctx.options.plc_url}/{quote(did, safe=':')}"
        ctx.doing(f"fetching the DID document from the PLC directory at {url}")
        response = await ctx.http.get(url)
        where = url
    else:
        raise CheckFailed("a did:plc or did:web", did)
    if response.status_code != 200:
        raise CheckFailed(f"HTTP 200 with the DID document of {did} from {where}", seen(response))
    doc = json_body(response, where)
    if not isinstance(doc, dict):
        raise CheckFailed(f"a JSON object as the DID document from {where}", type(doc).__name__)
    if doc.get("id") != did:
        raise CheckFailed(f"document id {did!r} from {where}", repr(doc.get("id")))
    return doc, where


def _entries(doc: dict[str, Any], field: str) -> list[dict[str, Any]]:
    value = doc.get(field)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _matches(entry_id: Any, did: str, fragment: str) -> bool:
    return entry_id in (f"#{fragment}", f"{did}#{fragment}")


def signing_key(doc: dict[str, Any], did: str) -> PublicKey:
    """The ``#atproto`` key: the one that signs the repository's commits."""
    for method in _entries(doc, "verificationMethod"):
        if _matches(method.get("id"), did, "atproto"):
            value = method.get("publicKeyMultibase")
            try:
                return PublicKey.from_multibase(value)
            except (AtprotoError, TypeError, ValueError) as exc:
                raise CheckFailed("a secp256k1 or P-256 Multikey in #atproto", f"{value!r} ({exc})") from None
    ids = [m.get("id") for m in _entries(doc, "verificationMethod")]
    raise CheckFailed("a verificationMethod with id #atproto", f"ids {ids}")


def pds_endpoint(doc: dict[str, Any], did: str) -> str:
    for service in _entries(doc, "service"):
        if _matches(service.get("id"), did, "atproto_pds"):
            if service.get("type") != PDS_SERVICE_TYPE:
                raise CheckFailed(f"#atproto_pds of type {PDS_SERVICE_TYPE}", repr(service.get("type")))
            endpoint = service.get("serviceEndpoint")
            if not isinstance(endpoint, str):
                raise CheckFailed("a string serviceEndpoint in #atproto_pds", repr(endpoint))
            return endpoint
    raise CheckFailed("a service with id #atproto_pds", f"services {[s.get('id') for s in _entries(doc, 'service')]}")


def check_account_document(ctx: Smoke, doc: dict[str, Any], did: str, handle: str) -> PublicKey:
    """Everything a relay or AppView relies on in an account's document; returns its signing key."""
    aka = doc.get("alsoKnownAs")
    want = f"at://{handle}"
    if not isinstance(aka, list) or want not in [a.lower() for a in aka if isinstance(a, str)]:
        raise CheckFailed(f"alsoKnownAs containing {want}", repr(aka))
    endpoint = pds_endpoint(doc, did)
    if endpoint.rstrip("/") != ctx.options.public_url:
        raise CheckFailed(f"#atproto_pds serviceEndpoint {ctx.options.public_url}", endpoint)
    return signing_key(doc, did)


async def check_handle(ctx: Smoke, handle: str) -> tuple[str, PublicKey, str]:
    """resolveHandle through the PDS, then the document; returns (did, key, where)."""
    handle = handle.lower()
    path = "/xrpc/com.atproto.identity.resolveHandle"
    body = await ctx.expect_json("GET", path, params={"handle": handle})
    did = body.get("did") if isinstance(body, dict) else None
    if not isinstance(did, str) or not did.startswith("did:"):
        raise CheckFailed(f"{{did}} from resolveHandle({handle})", repr(body))
    doc, where = await resolve_did(ctx, did)
    key = check_account_document(ctx, doc, did, handle)
    return did, key, where
