"""Small fake servers on loopback for the smoke suite's own tests: a PDS that imitates Squall's
read-only surface with exactly one flaw switched on, and a relay that answers requestCrawl.

They are deliberately not Squall: the point is to show the suite notices a broken server, so
each flaw is a knob (``flaw=...``) and everything else answers correctly.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from squall.atproto.cid import CID
from squall.atproto.crypto import Secp256k1Keypair

from smoke.write_checks import tiny_png
from tests.helpers.net import ThreadedServer, free_port

HANDLE = "alice.test"
DID = "did:web:alice.test"
ADMIN_PASSWORD = "fake-admin-password"
FLAWS = {None, "wrong-did-document", "no-csp", "ws-never-upgrades"}


def _host(request: Request) -> str:
    return request.headers.get("host", "").split(":")[0].lower()


def _error(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"error": name, "message": message}, status_code=status)


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate it signed for localhost and 127.0.0.1, like the
    internal CA Caddy uses on a LAN: (ca.pem, cert.pem, key.pem)."""
    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("smoke test CA")).issuer_name(name("smoke test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class _Server:
    port: int = field(default_factory=free_port)
    tls: tuple[Path, Path] | None = None  # (cert.pem, key.pem): serve https and wss
    _server: ThreadedServer | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        raise NotImplementedError

    def start(self) -> Any:
        tls = {"ssl_certfile": str(self.tls[0]), "ssl_keyfile": str(self.tls[1])} if self.tls else {}
        self._server = ThreadedServer(self.app(), self.port, name=type(self).__name__, ws="websockets-sansio",
                                      **tls).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass
class FakePds(_Server):
    flaw: str | None = None
    key: Secp256k1Keypair = field(default_factory=Secp256k1Keypair.generate)
    blob: bytes = field(default_factory=tiny_png)

    def __post_init__(self) -> None:
        if self.flaw not in FLAWS:
            raise ValueError(f"unknown flaw {self.flaw!r}")

    @property
    def blob_cid(self) -> str:
        return str(CID.from_block(self.blob, 0x55))

    @property
    def public_url(self) -> str:
        return f"{self.scheme}://localhost:{self.port}"

    def args(self) -> list[str]:
        """The smoke options that describe this server."""
        return ["--base-url", self.url, "--hostname", "localhost", "--public-url", self.public_url,
                "--admin-password", ADMIN_PASSWORD, "--handle", HANDLE, "--blob", f"{DID}/{self.blob_cid}",
                "--timeout", "3"]

    def account_document(self) -> dict[str, Any]:
        aka, endpoint = [f"at://{HANDLE}"], self.public_url
        if self.flaw == "wrong-did-document":
            aka, endpoint = ["at://mallory.test"], "https://elsewhere.example"
        return {
            "@context": ["https://www.w3.org/ns/did/v1"], "id": DID, "alsoKnownAs": aka,
            "verificationMethod": [{"id": f"{DID}#atproto", "type": "Multikey", "controller": DID,
                                    "publicKeyMultibase": self.key.public_key.multibase()}],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": endpoint}],
        }

    def app(self) -> Starlette:
        async def health(request: Request) -> Response:
            return JSONResponse({"version": "fake"})

        async def describe(request: Request) -> Response:
            return JSONResponse({"did": "did:web:localhost", "availableUserDomains": [".test"],
                                 "inviteCodeRequired": True})

        async def did_json(request: Request) -> Response:
            host = _host(request)
            if host == "localhost":
                return JSONResponse({"@context": ["https://www.w3.org/ns/did/v1"], "id": "did:web:localhost",
                                     "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                                  "serviceEndpoint": self.public_url}]})
            if host == HANDLE:
                return JSONResponse(self.account_document())
            return PlainTextResponse("Not found", status_code=404)

        async def atproto_did(request: Request) -> Response:
            if _host(request) == HANDLE:
                return PlainTextResponse(DID)
            return PlainTextResponse("User not found", status_code=404)

        async def admin_status(request: Request) -> Response:
            expected = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return _error(401, "AuthenticationRequired", "Admin credentials required")
            return JSONResponse({"version": "fake", "accounts": {"total": 1, "active": 1}})

        async def tls_check(request: Request) -> Response:
            if request.query_params.get("domain") in ("localhost", HANDLE):
                return PlainTextResponse("ok")
            return PlainTextResponse("unknown domain", status_code=404)

        async def resolve_handle(request: Request) -> Response:
            if request.query_params.get("handle") == HANDLE:
                return JSONResponse({"did": DID})
            return _error(400, "HandleNotFound", "Unable to resolve handle")

        async def get_blob(request: Request) -> Response:
            headers = {"x-content-type-options": "nosniff"}
            if self.flaw != "no-csp":
                headers["content-security-policy"] = "default-src 'none'; sandbox"
            return Response(self.blob, media_type="image/png", headers=headers)

        async def subscribe(websocket: WebSocket) -> None:
            if self.flaw == "ws-never-upgrades":
                # The TCP connection and the upgrade request are taken, the answer never comes
                # (until the fake shuts down).
                while self._server is not None and not self._server.stopping:
                    await asyncio.sleep(0.05)
                return
            await websocket.accept()
            try:
                while True:
                    await websocket.receive()
            except Exception:
                return

        routes = [
            Route("/xrpc/_health", health),
            Route("/xrpc/com.atproto.server.describeServer", describe),
            Route("/.well-known/did.json", did_json),
            Route("/.well-known/atproto-did", atproto_did),
            Route("/xrpc/_admin/status", admin_status),
            Route("/tls-check", tls_check),
            Route("/xrpc/com.atproto.identity.resolveHandle", resolve_handle),
            Route("/xrpc/com.atproto.sync.getBlob", get_blob),
            Route("/xrpc/com.atproto.repo.createRecord", health, methods=["POST"]),
            WebSocketRoute("/xrpc/com.atproto.sync.subscribeRepos", subscribe),
        ]
        cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
        return Starlette(routes=routes, middleware=[cors])


@dataclass
class FakeRelay(_Server):
    """``mode``: "accept" (200 for a hostname, 400 InvalidRequest without), "ban" (400 HostBanned
    for any hostname), "not-a-relay" (404 HTML for everything)."""

    mode: str = "accept"
    received: list[Any] = field(default_factory=list)

    def app(self) -> Starlette:
        async def request_crawl(request: Request) -> Response:
            body = await request.json()
            self.received.append(body)
            if self.mode == "not-a-relay":
                return Response("<html>nothing here</html>", status_code=404, media_type="text/html")
            if not isinstance(body, dict) or not isinstance(body.get("hostname"), str):
                return _error(400, "InvalidRequest", "hostname is required")
            if self.mode == "ban":
                return _error(400, "HostBanned", f"{body['hostname']} is banned")
            return Response(status_code=200)

        return Starlette(routes=[Route("/xrpc/com.atproto.sync.requestCrawl", request_crawl, methods=["POST"])])
