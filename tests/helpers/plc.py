"""A PLC directory test double on loopback that enforces the directory's rules.

https://web.plc.directory/spec/v0.1/did-plc. Written independently of ``squall.identity.plc``
(it only shares the protocol core's DAG-CBOR, CID and key code), so a mistake in the PDS's
operation building shows up as a refused operation instead of being mirrored here.

Accepted on ``POST /<did>``:
* a well-formed ``plc_operation`` or ``plc_tombstone`` (exact field set, 1–5 distinct rotation
  keys that parse as secp256k1/P-256 did:keys, verification methods as did:keys, services as
  ``{type, endpoint}``, a strict base64url ``sig`` of 64 bytes, ≤ 7500 bytes of DAG-CBOR);
* genesis: ``prev`` null, the DID equal to the hash of the signed operation, signed by one of the
  operation's own rotation keys;
* later operations: ``prev`` equal to the CID of the current last operation (no forks: recovery
  within 72 h is out of scope for the double), signed by a rotation key of that operation, and
  nothing after a tombstone.
Anything else gets 400 with a message; an operation already in the log gets 409.

Reads: ``GET /<did>`` (DID document; 404 unknown, 410 tombstoned), ``/<did>/data``,
``/<did>/log``, ``/<did>/log/last``, ``/<did>/log/audit``.

Knobs: ``fail_next(n, status)`` answers the next n requests with ``status``, ``delay`` sleeps
before every answer, ``requests`` records what was asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from squall.atproto import dagcbor
from squall.atproto.cid import CID
from squall.atproto.crypto import PublicKey
from squall.atproto.errors import AtprotoError

from .net import ThreadedServer, free_port

MAX_OP_BYTES = 7500
_B64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Refused(Exception):
    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    status: int


@dataclass
class _Entry:
    did: str
    operation: dict[str, Any]
    cid: str
    created_at: str

    def audit(self) -> dict[str, Any]:
        return {"did": self.did, "operation": self.operation, "cid": self.cid, "nullified": False,
                "createdAt": self.created_at}


def _cid_of(op: dict[str, Any]) -> str:
    return str(CID.from_block(dagcbor.encode(op)))


def _did_of(op: dict[str, Any]) -> str:
    digest = hashlib.sha256(dagcbor.encode(op)).digest()
    return "did:plc:" + base64.b32encode(digest).decode().lower()[:24]


def _sig_bytes(sig: Any) -> bytes:
    if not isinstance(sig, str) or not sig or set(sig) - _B64URL:
        raise Refused("sig must be unpadded base64url")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) if len(sig) % 4 != 1 else b""
    if len(raw) != 64 or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != sig:
        raise Refused("sig must be the canonical base64url of a 64-byte signature")
    return raw


def _rotation_key(value: Any, where: str) -> PublicKey:
    if not isinstance(value, str):
        raise Refused(f"{where} must be a did:key string")
    try:
        return PublicKey.from_did_key(value)
    except AtprotoError as exc:
        raise Refused(f"{where} is not a valid secp256k1/P-256 did:key: {exc}") from None


def _check_shape(op: Any) -> None:
    if not isinstance(op, dict):
        raise Refused("operation must be a JSON object")
    kind = op.get("type")
    fields = {"plc_operation": {"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services",
                                "prev", "sig"},
              "plc_tombstone": {"type", "prev", "sig"}}.get(kind)
    if fields is None:
        raise Refused(f"unsupported operation type {kind!r}")
    if set(op) != fields:
        raise Refused(f"{kind} must have exactly the fields {sorted(fields)}, got {sorted(op)}")
    if op["prev"] is not None and not isinstance(op["prev"], str):
        raise Refused("prev must be a CID string or null")
    _sig_bytes(op["sig"])
    if kind == "plc_operation":
        keys = op["rotationKeys"]
        if not isinstance(keys, list) or not 1 <= len(keys) <= 5:
            raise Refused("rotationKeys must hold 1 to 5 keys")
        if len(set(map(repr, keys))) != len(keys):
            raise Refused("rotationKeys must not repeat a key")
        for i, key in enumerate(keys):
            _rotation_key(key, f"rotationKeys[{i}]")
        methods = op["verificationMethods"]
        if not isinstance(methods, dict) or len(methods) > 10:
            raise Refused("verificationMethods must be an object with at most 10 entries")
        for name, key in methods.items():
            if not isinstance(key, str) or not key.startswith("did:key:z"):
                raise Refused(f"verificationMethods.{name} must be a did:key")
        if not isinstance(op["alsoKnownAs"], list) or not all(isinstance(a, str) for a in op["alsoKnownAs"]):
            raise Refused("alsoKnownAs must be a list of strings")
        services = op["services"]
        if not isinstance(services, dict):
            raise Refused("services must be an object")
        for name, svc in services.items():
            if not isinstance(svc, dict) or set(svc) != {"type", "endpoint"} or not all(
                    isinstance(v, str) for v in svc.values()):
                raise Refused(f"services.{name} must be {{type, endpoint}}")
    try:
        size = len(dagcbor.encode(op))
    except AtprotoError as exc:
        raise Refused(f"operation is not DAG-CBOR encodable: {exc}") from None
    if size > MAX_OP_BYTES:
        raise Refused(f"operation is {size} bytes, over {MAX_OP_BYTES}")


def _signed_by(op: dict[str, Any], keys: list[str]) -> bool:
    unsigned = dagcbor.encode({k: v for k, v in op.items() if k != "sig"})
    sig = _sig_bytes(op["sig"])
    return any(_rotation_key(k, "rotation key").verify(unsigned, sig) for k in keys)


def render_document(did: str, op: dict[str, Any]) -> dict[str, Any]:
    methods = []
    for name, key in op["verificationMethods"].items():
        methods.append({"id": f"{did}#{name}", "type": "Multikey", "controller": did,
                        "publicKeyMultibase": key[len("did:key:"):]})
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1",
                     "https://w3id.org/security/suites/secp256k1-2019/v1"],
        "id": did,
        "alsoKnownAs": op["alsoKnownAs"],
        "verificationMethod": methods,
        "service": [{"id": f"#{name}", "type": s["type"], "serviceEndpoint": s["endpoint"]}
                    for name, s in op["services"].items()],
    }


@dataclass
class PlcDirectoryDouble:
    port: int = field(default_factory=free_port)
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    _logs: dict[str, list[_Entry]] = field(default_factory=dict)
    _fail: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pds_env(self) -> dict[str, str]:
        """The settings of a PDS that creates did:plc accounts on this directory."""
        return {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": self.url}

    # -- knobs ---------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def clear_failures(self) -> None:
        with self._lock:
            self._fail.clear()

    def posts(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def log(self, did: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e.operation for e in self._logs.get(did, [])]

    def dids(self) -> list[str]:
        with self._lock:
            return list(self._logs)

    # -- the rules -----------------------------------------------------------------------------

    def submit(self, did: str, op: Any) -> int:
        """Apply the directory's rules; return 200 or 409, raise Refused otherwise."""
        _check_shape(op)
        with self._lock:
            log = self._logs.get(did)
            cid = _cid_of(op)
            if log and any(e.cid == cid for e in log):
                return 409
            if not log:
                if op["type"] != "plc_operation" or op["prev"] is not None:
                    raise Refused("the first operation of a DID must be a plc_operation with prev null")
                if _did_of(op) != did:
                    raise Refused(f"DID mismatch: the genesis operation hashes to {_did_of(op)}, not {did}")
                if not _signed_by(op, op["rotationKeys"]):
                    raise Refused("invalid signature: the genesis operation is not signed by one of its rotationKeys")
                self._logs[did] = [_Entry(did, op, cid, _now())]
                return 200
            last = log[-1].operation
            if last["type"] == "plc_tombstone":
                raise Refused("the DID is tombstoned")
            if op["prev"] != log[-1].cid:
                raise Refused(f"prev {op['prev']!r} does not match the latest operation {log[-1].cid}")
            if not _signed_by(op, last["rotationKeys"]):
                raise Refused("invalid signature: not signed by a rotation key of the previous operation")
            log.append(_Entry(did, op, cid, _now()))
            return 200

    # -- HTTP ----------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        path = request.url.path.strip("/")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with self._lock:
            forced = self._fail.pop(0) if self._fail else None
        if forced is not None:
            response: Response = JSONResponse({"message": f"forced failure {forced}"}, status_code=forced)
        else:
            response = self._route(request.method, path, body)
        with self._lock:
            self.requests.append(Recorded(request.method, "/" + path, body, response.status_code))
        return response

    def _route(self, method: str, path: str, body: Any) -> Response:
        parts = path.split("/")
        did = parts[0]
        if not did.startswith("did:plc:"):
            return JSONResponse({"message": "not a did:plc"}, status_code=404)
        if method == "POST" and len(parts) == 1:
            try:
                status = self.submit(did, body)
            except Refused as exc:
                return JSONResponse({"message": str(exc)}, status_code=exc.status)
            if status == 409:
                return JSONResponse({"message": "operation already in the log"}, status_code=409)
            return Response(status_code=200)
        if method != "GET":
            return JSONResponse({"message": "method not allowed"}, status_code=405)
        with self._lock:
            log = list(self._logs.get(did, []))
        if not log:
            return JSONResponse({"message": f"DID not registered: {did}"}, status_code=404)
        last = log[-1].operation
        rest = "/".join(parts[1:])
        if rest == "log/audit":
            return JSONResponse([e.audit() for e in log])
        if rest == "log":
            return JSONResponse([e.operation for e in log])
        if rest == "log/last":
            return JSONResponse(last)
        if last["type"] == "plc_tombstone":
            return JSONResponse({"message": f"DID not available: {did}"}, status_code=410)
        if rest == "data":
            data = {k: v for k, v in last.items() if k not in ("type", "prev", "sig")}
            return JSONResponse({"did": did, **data})
        if rest == "":
            return JSONResponse(render_document(did, last))
        return JSONResponse({"message": "not found"}, status_code=404)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "PlcDirectoryDouble":
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        self._server = ThreadedServer(app, self.port, name="PLC double").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> "PlcDirectoryDouble":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
