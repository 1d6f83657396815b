"""did:plc operations and the PLC directory client (https://web.plc.directory/spec/v0.1/did-plc).

An operation is a JSON object ``{type: 'plc_operation', rotationKeys, verificationMethods,
alsoKnownAs, services, prev, sig}``. It is signed by encoding it as DAG-CBOR *without* ``sig``,
signing those bytes with a rotation key (ECDSA-SHA256, low-S, 64-byte ``r || s``) and writing the
signature as base64url without padding. An operation's CID is the dag-cbor/sha-256 CIDv1 of the
signed operation; the next operation points at it through ``prev`` (a base32 CID *string*, not an
IPLD link). The DID is ``did:plc:`` + the first 24 characters of base32-lower(sha256(DAG-CBOR of the
signed genesis operation)).

The directory client POSTs operations to ``<directory>/<did>`` and reads ``/<did>``,
``/<did>/log/last`` and ``/<did>/log/audit``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from typing import Any

import httpx

from ..atproto import dagcbor
from ..atproto.cid import CID
from ..atproto.crypto import Keypair, PublicKey
from ..atproto.errors import AtprotoError

OP_TYPE = "plc_operation"
TOMBSTONE_TYPE = "plc_tombstone"
LEGACY_CREATE_TYPE = "create"
MAX_OP_BYTES = 7500  # the directory's anti-abuse cap on an operation's DAG-CBOR size
MAX_ROTATION_KEYS = 5
MAX_VERIFICATION_METHODS = 10
PDS_SERVICE_ID = "atproto_pds"
PDS_SERVICE_TYPE = "AtprotoPersonalDataServer"

_SIG_RE = re.compile(r"[A-Za-z0-9_-]+")
_PLC_DID_RE = re.compile(r"did:plc:[a-z2-7]{24}")


class PlcOpError(ValueError):
    """An operation that is malformed, badly signed or does not fit the log."""


class PlcDirectoryError(Exception):
    """The directory could not be used."""


class PlcRejected(PlcDirectoryError):
    """The directory refused the operation (a 4xx other than 409): retrying cannot help."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"PLC directory refused the operation ({status}): {message}")


class PlcUnavailable(PlcDirectoryError):
    """The directory did not answer usefully (5xx, timeout, network error): worth retrying later."""


# -- encoding ----------------------------------------------------------------------------------


def encode_sig(signature: bytes) -> str:
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


def decode_sig(value: object) -> bytes:
    """Strict base64url without padding; non-zero padding bits and other spellings are refused."""
    if not isinstance(value, str) or not _SIG_RE.fullmatch(value):
        raise PlcOpError("sig must be a base64url string without padding")
    if len(value) % 4 == 1:
        raise PlcOpError("sig is not valid base64url (bad length)")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if encode_sig(raw) != value:
        raise PlcOpError("sig is not canonical base64url (non-zero padding bits)")
    return raw


def unsigned_bytes(op: dict[str, Any]) -> bytes:
    """The DAG-CBOR bytes a signature covers: the operation without its ``sig`` field."""
    return dagcbor.encode({k: v for k, v in op.items() if k != "sig"})


def op_cid(op: dict[str, Any]) -> CID:
    """CID of the signed operation (what the next operation's ``prev`` names)."""
    return CID.from_block(dagcbor.encode(op))


def did_for_genesis(op: dict[str, Any]) -> str:
    digest = hashlib.sha256(dagcbor.encode(op)).digest()
    return "did:plc:" + base64.b32encode(digest).decode("ascii").lower()[:24]


def is_plc_did(did: str) -> bool:
    return isinstance(did, str) and _PLC_DID_RE.fullmatch(did) is not None


# -- building ----------------------------------------------------------------------------------


def sign_op(unsigned: dict[str, Any], key: Keypair) -> dict[str, Any]:
    signed = dict(unsigned)
    signed["sig"] = encode_sig(key.sign(unsigned_bytes(unsigned)))
    return signed


def atproto_op(*, rotation_keys: list[str], signing_key: str, handle: str, pds_endpoint: str,
               prev: str | None, also_known_as_rest: list[str] | None = None,
               other_verification_methods: dict[str, str] | None = None,
               other_services: dict[str, Any] | None = None) -> dict[str, Any]:
    """An unsigned ``plc_operation`` carrying the atproto fields (handle first in ``alsoKnownAs``)."""
    verification_methods = dict(other_verification_methods or {})
    verification_methods["atproto"] = signing_key
    services = dict(other_services or {})
    services[PDS_SERVICE_ID] = {"type": PDS_SERVICE_TYPE, "endpoint": pds_endpoint}
    return {
        "type": OP_TYPE,
        "rotationKeys": list(rotation_keys),
        "verificationMethods": verification_methods,
        "alsoKnownAs": [f"at://{handle}", *(also_known_as_rest or [])],
        "services": services,
        "prev": prev,
    }


def create_genesis(*, rotation_key: Keypair, rotation_keys: list[str], signing_key: PublicKey, handle: str,
                   pds_endpoint: str) -> tuple[str, dict[str, Any]]:
    """(DID, signed genesis operation) for a new account."""
    unsigned = atproto_op(rotation_keys=rotation_keys, signing_key=signing_key.did_key(), handle=handle,
                          pds_endpoint=pds_endpoint, prev=None)
    signed = sign_op(unsigned, rotation_key)
    check_op(signed)
    return did_for_genesis(signed), signed


def update_handle_op(last_op: dict[str, Any], *, handle: str, signer: Keypair) -> dict[str, Any]:
    """The signed operation that follows ``last_op`` with ``at://<handle>`` as the first alias.

    Other ``at://`` aliases are dropped (one handle per account); non-atproto aliases are kept.
    """
    data = normalize_op(last_op)
    if data["type"] != OP_TYPE:
        raise PlcOpError("the DID is tombstoned; it cannot be updated")
    rest = [aka for aka in data["alsoKnownAs"] if not aka.startswith("at://")]
    unsigned = {
        "type": OP_TYPE,
        "rotationKeys": list(data["rotationKeys"]),
        "verificationMethods": dict(data["verificationMethods"]),
        "alsoKnownAs": [f"at://{handle}", *rest],
        "services": dict(data["services"]),
        "prev": str(op_cid(last_op)),
    }
    signed = sign_op(unsigned, signer)
    check_op(signed)
    return signed


# -- checking ----------------------------------------------------------------------------------


def _check_did_key(value: object, what: str, *, rotation: bool) -> None:
    if not isinstance(value, str) or not value.startswith("did:key:z"):
        raise PlcOpError(f"{what} must be a did:key string")
    if rotation:
        try:
            PublicKey.from_did_key(value)
        except AtprotoError as exc:
            raise PlcOpError(f"{what} is not a usable secp256k1/P-256 did:key: {exc}") from None


def check_op(op: object) -> dict[str, Any]:
    """Check an operation's shape (any of the three types); return it. Raises PlcOpError."""
    if not isinstance(op, dict):
        raise PlcOpError("operation must be a JSON object")
    kind = op.get("type")
    if kind == OP_TYPE:
        expected = {"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services", "prev", "sig"}
    elif kind == TOMBSTONE_TYPE:
        expected = {"type", "prev", "sig"}
    elif kind == LEGACY_CREATE_TYPE:
        expected = {"type", "signingKey", "recoveryKey", "handle", "service", "prev", "sig"}
    else:
        raise PlcOpError(f"unknown operation type {kind!r}")
    missing = expected - op.keys()
    if missing:
        raise PlcOpError(f"{kind} operation is missing {', '.join(sorted(missing))}")
    extra = op.keys() - expected
    if extra:
        raise PlcOpError(f"{kind} operation has unexpected fields {', '.join(sorted(extra))}")
    decode_sig(op["sig"])
    prev = op["prev"]
    if prev is not None:
        if not isinstance(prev, str):
            raise PlcOpError("prev must be a CID string or null")
        try:
            cid = CID.decode(prev)
        except AtprotoError as exc:
            raise PlcOpError(f"prev is not a CID: {exc}") from None
        if str(cid) != prev or cid.codec != 0x71:
            raise PlcOpError("prev must be a base32 dag-cbor CIDv1")
    elif kind == TOMBSTONE_TYPE:
        raise PlcOpError("a tombstone needs prev")
    if kind == OP_TYPE:
        keys = op["rotationKeys"]
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_ROTATION_KEYS:
            raise PlcOpError(f"rotationKeys must be a list of 1 to {MAX_ROTATION_KEYS} did:keys")
        if len(set(map(str, keys))) != len(keys):
            raise PlcOpError("rotationKeys has duplicates")
        for i, key in enumerate(keys):
            _check_did_key(key, f"rotationKeys[{i}]", rotation=True)
        methods = op["verificationMethods"]
        if not isinstance(methods, dict) or len(methods) > MAX_VERIFICATION_METHODS:
            raise PlcOpError(f"verificationMethods must be an object of at most {MAX_VERIFICATION_METHODS} keys")
        for name, key in methods.items():
            _check_did_key(key, f"verificationMethods.{name}", rotation=False)
        aka = op["alsoKnownAs"]
        if not isinstance(aka, list) or not all(isinstance(a, str) for a in aka):
            raise PlcOpError("alsoKnownAs must be a list of strings")
        services = op["services"]
        if not isinstance(services, dict):
            raise PlcOpError("services must be an object")
        for name, svc in services.items():
            if (not isinstance(svc, dict) or set(svc) != {"type", "endpoint"}
                    or not all(isinstance(v, str) for v in svc.values())):
                raise PlcOpError(f"services.{name} must be {{type, endpoint}} strings")
    elif kind == LEGACY_CREATE_TYPE:
        for name in ("signingKey", "recoveryKey"):
            _check_did_key(op[name], name, rotation=True)
        if not isinstance(op["handle"], str) or not isinstance(op["service"], str):
            raise PlcOpError("handle and service must be strings")
        if prev is not None:
            raise PlcOpError("a legacy create operation has prev null")
    try:
        size = len(dagcbor.encode(op))
    except AtprotoError as exc:
        raise PlcOpError(f"operation is not encodable as DAG-CBOR: {exc}") from None
    if size > MAX_OP_BYTES:
        raise PlcOpError(f"operation is {size} bytes of DAG-CBOR, over the {MAX_OP_BYTES}-byte limit")
    return op


def normalize_op(op: dict[str, Any]) -> dict[str, Any]:
    """A legacy ``create`` operation rewritten as the equivalent ``plc_operation`` (others unchanged)."""
    if op.get("type") != LEGACY_CREATE_TYPE:
        return op
    return {
        "type": OP_TYPE,
        "rotationKeys": [op["recoveryKey"], op["signingKey"]],
        "verificationMethods": {"atproto": op["signingKey"]},
        "alsoKnownAs": [f"at://{op['handle']}"],
        "services": {PDS_SERVICE_ID: {"type": PDS_SERVICE_TYPE, "endpoint": op["service"]}},
        "prev": None,
        "sig": op["sig"],
    }


def signer_of(op: dict[str, Any], allowed_keys: list[str]) -> str | None:
    """The first of ``allowed_keys`` whose signature ``op`` carries, or None."""
    sig = decode_sig(op.get("sig"))
    message = unsigned_bytes(op)
    for did_key in allowed_keys:
        try:
            key = PublicKey.from_did_key(did_key)
        except AtprotoError:
            continue
        if key.verify(message, sig):
            return did_key
    return None


def verify_log(did: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Check a whole operation log (genesis → last) and return the last operation's data."""
    if not ops:
        raise PlcOpError("empty operation log")
    prev_op: dict[str, Any] | None = None
    for index, op in enumerate(ops):
        check_op(op)
        if prev_op is None:
            if op["prev"] is not None:
                raise PlcOpError("the genesis operation must have prev null")
            if op["type"] == TOMBSTONE_TYPE:
                raise PlcOpError("the genesis operation cannot be a tombstone")
            if did_for_genesis(op) != did:
                raise PlcOpError("the genesis operation does not hash to the DID")
            keys = normalize_op(op)["rotationKeys"]
        else:
            if prev_op["type"] == TOMBSTONE_TYPE:
                raise PlcOpError(f"operation {index} follows a tombstone")
            if op["prev"] != str(op_cid(prev_op)):
                raise PlcOpError(f"operation {index} does not point at the operation before it")
            if op["type"] == LEGACY_CREATE_TYPE:
                raise PlcOpError("a legacy create operation can only be the genesis")
            keys = normalize_op(prev_op)["rotationKeys"]
        if signer_of(op, keys) is None:
            raise PlcOpError(f"operation {index} is not signed by a current rotation key")
        prev_op = op
    assert prev_op is not None
    return normalize_op(prev_op)


def document_from_op(did: str, op: dict[str, Any]) -> dict[str, Any]:
    """The DID document the directory serves for the state in ``op``."""
    data = normalize_op(op)
    contexts = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
    methods = []
    for name, did_key in data["verificationMethods"].items():
        key = did_key[len("did:key:"):]
        methods.append({"id": f"{did}#{name}", "type": "Multikey", "controller": did, "publicKeyMultibase": key})
        try:
            algorithm = PublicKey.from_did_key(did_key).algorithm
        except AtprotoError:
            continue
        suite = ("https://w3id.org/security/suites/secp256k1-2019/v1" if algorithm == "ES256K"
                 else "https://w3id.org/security/suites/ecdsa-2019/v1")
        if suite not in contexts:
            contexts.append(suite)
    return {
        "@context": contexts,
        "id": did,
        "alsoKnownAs": list(data["alsoKnownAs"]),
        "verificationMethod": methods,
        "service": [
            {"id": f"#{name}", "type": svc["type"], "serviceEndpoint": svc["endpoint"]}
            for name, svc in data["services"].items()
        ],
    }


# -- directory client ----------------------------------------------------------------------------


class PlcClient:
    """Talks to one PLC directory through an SSRF-guarded ``httpx`` client (``squall.net``)."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, *, log: logging.Logger | None = None,
                 retry_delay: float = 0.5):
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.log = log or logging.getLogger("squall.identity")
        self.retry_delay = retry_delay

    async def send_operation(self, did: str, op: dict[str, Any]) -> None:
        """POST ``op``; one retry on 5xx or a network error. 409 (already there) counts as success.

        Raises PlcRejected on any other 4xx and PlcUnavailable when both attempts fail.
        """
        url = f"{self.base_url}/{did}"
        last_problem = ""
        for attempt in (1, 2):
            try:
                response = await self.http.post(url, json=op)
            except httpx.HTTPError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300 or response.status_code == 409:
                    return
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    raise PlcRejected(response.status_code, _error_message(response))
                last_problem = f"HTTP {response.status_code}: {_error_message(response)}"
            self.log.warning("PLC directory did not accept the operation (attempt %d): %s",
                             attempt, last_problem, extra={"did": did})
            if attempt == 1:
                await asyncio.sleep(self.retry_delay)
        raise PlcUnavailable(f"PLC directory at {self.base_url} is unavailable: {last_problem}")

    async def _get_json(self, path: str) -> Any | None:
        url = f"{self.base_url}/{path}"
        try:
            response = await self.http.get(url)
        except httpx.HTTPError as exc:
            raise PlcUnavailable(f"PLC directory at {self.base_url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise PlcUnavailable(f"PLC directory answered {response.status_code} for /{path}")
        try:
            return response.json()
        except ValueError:
            raise PlcUnavailable(f"PLC directory sent invalid JSON for /{path}") from None

    async def get_document(self, did: str) -> dict[str, Any] | None:
        doc = await self._get_json(did)
        return doc if isinstance(doc, dict) else None

    async def get_last_op(self, did: str) -> dict[str, Any] | None:
        op = await self._get_json(f"{did}/log/last")
        return op if isinstance(op, dict) else None

    async def get_audit_log(self, did: str) -> list[dict[str, Any]] | None:
        log = await self._get_json(f"{did}/log/audit")
        return log if isinstance(log, list) else None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return body["message"][:300]
    except ValueError:
        pass
    return response.text[:300] if response.content else response.reason_phrase
