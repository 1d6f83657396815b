"""Fake atproto services on loopback (an AppView, a chat service, …) for the proxying tests.

Each ``FakeService`` records every request it receives and, like a real service, checks the
service-auth JWT it was sent before answering: header ``typ``/``alg``, ``aud`` equal to its own
DID, ``lxm`` equal to the method in the path, ``exp`` in the future and at most a minute after
``iat``, and the signature against the ``#atproto`` key of the issuer's DID document, fetched from
the PLC directory double. A token that fails gets 401 and the failure is recorded, so a test can
assert ``service.jwt_errors() == []``.

The check is written here from the spec (https://atproto.com/specs/xrpc, "Inter-Service
Authentication") using only the protocol core's key code, independently of
``squall.auth.service_jwt``, so a mistake there shows up as a refused token.

Service DIDs are did:plc identities registered in the PLC double with a genesis operation built
here (``register_service_did``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from squall.atproto import dagcbor
from squall.atproto.crypto import Keypair, PublicKey, Secp256k1Keypair

from .net import ThreadedServer, free_port
from .plc import PlcDirectoryDouble

MAX_PROXY_TOKEN_TTL = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def register_service_did(plc: PlcDirectoryDouble, services: dict[str, tuple[str, str]],
                         key: Keypair | None = None) -> str:
    """Register a did:plc whose document lists ``services`` {id: (type, endpoint)}; return the DID."""
    key = key or Secp256k1Keypair.generate()
    unsigned = {
        "type": "plc_operation",
        "rotationKeys": [key.did_key()],
        "verificationMethods": {"atproto": key.did_key()},
        "alsoKnownAs": [],
        "services": {sid: {"type": typ, "endpoint": url} for sid, (typ, url) in services.items()},
        "prev": None,
    }
    op = {**unsigned, "sig": _b64url(key.sign(dagcbor.encode(unsigned)))}
    did = "did:plc:" + base64.b32encode(hashlib.sha256(dagcbor.encode(op)).digest()).decode().lower()[:24]
    assert plc.submit(did, op) == 200
    return did


@dataclass
class Received:
    method: str
    nsid: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    claims: dict[str, Any] | None
    jwt_header: dict[str, Any] | None
    jwt_error: str | None


Handler = Callable[[Request, Received], Awaitable[Response]]


class JwtRefused(Exception):
    pass


@dataclass
class FakeService:
    name: str
    plc_url: str
    port: int = field(default_factory=free_port)
    did: str | None = None
    received: list[Received] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    # nsid → (accepted audiences or None for "not checked", accepted lxm values); see expect_token
    token_rules: dict[str, tuple[frozenset[str] | None, frozenset[str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test-facing ----------------------------------------------------------------------------

    def on(self, nsid: str, handler: Handler) -> None:
        """Answer ``nsid`` with ``handler`` (after the JWT was accepted)."""
        with self._lock:
            self.handlers[nsid] = handler

    def expect_token(self, nsid: str, *, aud: set[str] | None, lxm: set[str]) -> None:
        """Accept tokens for ``nsid`` with another audience / method than its own DID and ``nsid``
        (as the AppView's getFeed, which takes the token the PDS minted for a feed generator:
        audience not checked, ``lxm`` getFeedSkeleton or getFeed). Survives ``reset``."""
        with self._lock:
            self.token_rules[nsid] = (frozenset(aud) if aud is not None else None, frozenset(lxm))

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.handlers.clear()

    def requests(self, nsid: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if nsid is None or r.nsid == nsid]

    def jwt_errors(self) -> list[str]:
        with self._lock:
            return [f"{r.nsid}: {r.jwt_error}" for r in self.received if r.jwt_error]

    # -- the JWT check ----------------------------------------------------------------------------

    async def _issuer_key(self, did: str) -> PublicKey:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{self.plc_url}/{did}")
        if r.status_code != 200:
            raise JwtRefused(f"issuer {did} does not resolve ({r.status_code})")
        doc = r.json()
        for method in doc.get("verificationMethod", []):
            if method.get("id") in (f"{did}#atproto", "#atproto"):
                return PublicKey.from_multibase(method["publicKeyMultibase"])
        raise JwtRefused(f"issuer {did} has no #atproto key")

    async def _check_jwt(self, authorization: str | None, nsid: str) -> tuple[dict, dict]:
        if not authorization or not authorization.startswith("Bearer "):
            raise JwtRefused("no bearer token")
        token = authorization[len("Bearer "):]
        parts = token.split(".")
        if len(parts) != 3:
            raise JwtRefused("not a three-part JWT")
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        if header.get("typ") != "JWT" or header.get("alg") not in ("ES256K", "ES256"):
            raise JwtRefused(f"bad header {header}")
        now = time.time()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise JwtRefused(f"expired or missing exp: {claims.get('exp')}")
        if not isinstance(claims.get("iat"), int) or claims["iat"] > now + 5:
            raise JwtRefused(f"bad iat: {claims.get('iat')}")
        if claims["exp"] - claims["iat"] > MAX_PROXY_TOKEN_TTL:
            raise JwtRefused(f"token lives {claims['exp'] - claims['iat']} s, more than {MAX_PROXY_TOKEN_TTL}")
        with self._lock:
            auds, lxms = self.token_rules.get(nsid, (frozenset({self.did}), frozenset({nsid})))
        if auds is not None and claims.get("aud") not in auds:
            raise JwtRefused(f"aud {claims.get('aud')!r} is not {sorted(auds)!r}")
        if claims.get("lxm") not in lxms:
            raise JwtRefused(f"lxm {claims.get('lxm')!r} is not one of {sorted(lxms)!r}")
        if not isinstance(claims.get("jti"), str) or len(claims["jti"]) < 16:
            raise JwtRefused("missing or short jti")
        key = await self._issuer_key(claims.get("iss", ""))
        if key.jwt_alg != header["alg"]:
            raise JwtRefused(f"alg {header['alg']} does not match the issuer's {key.jwt_alg} key")
        signature = _unb64url(parts[2])
        if len(signature) != 64 or not key.verify(f"{parts[0]}.{parts[1]}".encode(), signature):
            raise JwtRefused("signature does not verify against the issuer's DID document key")
        return header, claims

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        nsid = request.path_params["nsid"]
        body = await request.body()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        jwt_header = claims = None
        error = None
        try:
            jwt_header, claims = await self._check_jwt(request.headers.get("authorization"), nsid)
        except (JwtRefused, ValueError, KeyError, httpx.HTTPError) as exc:
            error = str(exc) or type(exc).__name__
        record = Received(request.method, nsid, request.url.query, headers, body, claims, jwt_header, error)
        with self._lock:
            self.received.append(record)
            handler = self.handlers.get(nsid)
        if error is not None:
            return JSONResponse({"error": "BadJwtSignature", "message": error}, status_code=401)
        if handler is not None:
            return await handler(request, record)
        return JSONResponse(
            {"service": self.name, "nsid": nsid, "iss": claims["iss"], "query": request.url.query,
             "body": body.decode("utf-8", "replace")},
            headers={"atproto-repo-rev": "3kfakerev", "atproto-content-labelers": "did:plc:labeler",
                     "content-language": "en", "set-cookie": "upstream=secret", "x-upstream-internal": "secret"},
        )

    def start(self) -> "FakeService":
        app = Starlette(routes=[Route("/xrpc/{nsid}", self._handle, methods=["GET", "HEAD", "POST"])])
        self._server = ThreadedServer(app, self.port, name=f"fake {self.name}").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None


def start_service(plc: PlcDirectoryDouble, name: str, service_id: str, service_type: str) -> FakeService:
    """Start a fake and register its DID (with ``#service_id`` at its URL) in the PLC double."""
    service = FakeService(name, plc.url).start()
    service.did = register_service_did(plc, {service_id: (service_type, service.url)})
    return service


def start_feed_generator(plc: PlcDirectoryDouble) -> FakeService:
    """A feed generator (``#bsky_fg``): the AppView calls its getFeedSkeleton with the user's token,
    which must name it as ``aud`` and getFeedSkeleton as ``lxm`` (the default check)."""
    return start_service(plc, "feedgen", "bsky_fg", "BskyFeedGenerator")


def start_notification_service(plc: PlcDirectoryDouble) -> FakeService:
    """A push notification service (``#bsky_notif``) other than the AppView."""
    return start_service(plc, "notif", "bsky_notif", "BskyNotificationService")


async def service_endpoint(plc_url: str, did: str, service_id: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        doc = (await client.get(f"{plc_url}/{did}")).json()
    for entry in doc.get("service", []):
        if entry.get("id") in (f"#{service_id}", f"{did}#{service_id}"):
            return entry["serviceEndpoint"]
    raise LookupError(f"{did} has no #{service_id}")


def appview_get_feed(plc_url: str, hydrate: Callable[[str], dict]) -> Handler:
    """The AppView's getFeed as the real one does it: find the generator's DID (the test's
    getFeedGenerator answer), resolve its ``#bsky_fg`` endpoint and call getFeedSkeleton with the
    Authorization the PDS sent, then hydrate the skeleton's post URIs with ``hydrate``."""

    async def handler(request: Request, record: Received) -> Response:
        generator = record.claims["aud"]
        origin = await service_endpoint(plc_url, generator, "bsky_fg")
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{origin}/xrpc/app.bsky.feed.getFeedSkeleton",
                                 params={"feed": request.query_params["feed"]},
                                 headers={"authorization": request.headers["authorization"]})
        if r.status_code != 200:
            return JSONResponse({"error": "UnknownFeed", "message": r.text}, status_code=400)
        return JSONResponse({"feed": [{"post": hydrate(item["post"])} for item in r.json()["feed"]]})

    return handler


# -- canned answers --------------------------------------------------------------------------------


def answer(status: int, body: bytes | dict | None = None, *, headers: dict[str, str] | None = None,
           media_type: str | None = None, delay: float = 0.0) -> Handler:
    async def handler(request: Request, record: Received) -> Response:
        if delay:
            await asyncio.sleep(delay)
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=headers)
        return Response(body or b"", status_code=status, headers=headers, media_type=media_type)

    return handler


class ConnectionCounter:
    """A TCP listener that only counts the connections it accepts (and closes them at once)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
