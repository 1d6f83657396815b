"""A test atproto OAuth client: serves its client metadata on loopback and walks the whole flow
against a running PDS as an app would (https://atproto.com/specs/oauth): discovery, PAR with PKCE
and DPoP (retrying once on ``use_dpop_nonce``), the authorization page's form, the code exchange,
DPoP-authenticated XRPC calls, refresh and revocation.

Every step returns the raw ``httpx.Response`` too, so failure tests can send deliberately wrong
proofs (``proof(...)`` takes overrides for each claim and the key).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .net import ThreadedServer

PASSWORD_FIELD = "password"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    verifier = b64url(secrets.token_bytes(32))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


class MetadataHost:
    """Serves ``/client-metadata.json`` (whatever ``document`` holds; ``status`` to make it fail)."""

    def __init__(self) -> None:
        self.document: Any = None
        self.status = 200
        self.content_type = "application/json"
        self.hits = 0

        async def metadata(request: Request) -> Response:
            self.hits += 1
            if self.status != 200:
                return Response("gone", status_code=self.status)
            return JSONResponse(self.document, media_type=self.content_type)

        self._server = ThreadedServer(Starlette(routes=[Route("/client-metadata.json", metadata)]),
                                      name="oauth-client-metadata")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def client_id(self, variant: str = "") -> str:
        # A query string makes another client_id (and cache entry) on the same host.
        return f"{self.base}/client-metadata.json" + (f"?v={variant}" if variant else "")

    def start(self) -> "MetadataHost":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


def client_metadata(client_id: str, *, redirect_uri: str, scope: str = "atproto transition:generic",
                    **overrides: Any) -> dict[str, Any]:
    doc = {"client_id": client_id, "client_name": "Squall test client", "application_type": "native",
           "redirect_uris": [redirect_uri], "scope": scope,
           "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
           "token_endpoint_auth_method": "none", "dpop_bound_access_tokens": True}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


@dataclass
class OAuthClient:
    http: httpx.Client  # bound to the PDS's address
    client_id: str
    redirect_uri: str
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256"))
    nonce: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    resource: str = ""
    verifier: str = ""
    state: str = ""
    access_token: str | None = None
    refresh_token: str | None = None
    sub: str | None = None
    nonce_retries: int = 0

    def discover(self) -> dict[str, Any]:
        prm = self.http.get("/.well-known/oauth-protected-resource")
        assert prm.status_code == 200, prm.text
        self.resource = prm.json()["resource"]
        issuer = prm.json()["authorization_servers"][0]
        asm = self.http.get("/.well-known/oauth-authorization-server")
        assert asm.status_code == 200, asm.text
        self.server = asm.json()
        assert self.server["issuer"] == issuer
        return self.server

    def path_of(self, url: str) -> str:
        return urlsplit(url).path

    # -- DPoP ------------------------------------------------------------------------------------

    def proof(self, htm: str, htu: str, *, access_token: str | None = None, key: ECKey | None = None,
              **overrides: Any) -> str:
        key = key or self.key
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": htm, "htu": htu, "iat": int(time.time())}
        if self.nonce:
            claims["nonce"] = self.nonce
        if access_token is not None:
            claims["ath"] = b64url(hashlib.sha256(access_token.encode()).digest())
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
        return jwt.encode(header, claims, key, algorithms=["ES256"])

    def client_assertion(self, key: ECKey, *, jti: str | None = None) -> dict[str, str]:
        """private_key_jwt client authentication (RFC 7523) for a confidential client."""
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.server["issuer"],
                  "jti": jti or secrets.token_urlsafe(12), "iat": now, "exp": now + 60}
        token = jwt.encode({"alg": "ES256", "kid": key.kid or "k1"}, claims, key, algorithms=["ES256"])
        return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": token}

    def _remember_nonce(self, r: httpx.Response) -> None:
        if r.headers.get("dpop-nonce"):
            self.nonce = r.headers["dpop-nonce"]

    def post_as(self, endpoint: str, data: dict[str, str], *, retry: bool = True, **proof_args: Any) -> httpx.Response:
        """POST a form to an authorization-server endpoint (full URL from the metadata) with a proof."""
        r = self.http.post(self.path_of(endpoint), data=data, headers={"DPoP": self.proof("POST", endpoint, **proof_args)})
        self._remember_nonce(r)
        if retry and r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
            self.nonce_retries += 1
            r = self.http.post(self.path_of(endpoint), data=data,
                               headers={"DPoP": self.proof("POST", endpoint, **proof_args)})
            self._remember_nonce(r)
        return r

    # -- the flow ------------------------------------------------------------------------------------

    def par(self, *, scope: str = "atproto transition:generic", retry: bool = True, **overrides: Any) -> httpx.Response:
        self.verifier, challenge = pkce_pair()
        self.state = secrets.token_urlsafe(12)
        data = {"client_id": self.client_id, "response_type": "code", "code_challenge": challenge,
                "code_challenge_method": "S256", "state": self.state, "redirect_uri": self.redirect_uri,
                "scope": scope}
        data.update(overrides)
        return self.post_as(self.server["pushed_authorization_request_endpoint"],
                            {k: v for k, v in data.items() if v is not None}, retry=retry)

    def authorize_page(self, request_uri: str) -> httpx.Response:
        return self.http.get(self.path_of(self.server["authorization_endpoint"]),
                             params={"client_id": self.client_id, "request_uri": request_uri})

    def submit(self, request_uri: str, *, identifier: str, password: str, decision: str = "allow",
               page: httpx.Response | None = None, csrf: str | None = "from-page") -> httpx.Response:
        page = page or self.authorize_page(request_uri)
        assert page.status_code == 200, page.text
        data = {"request_uri": request_uri, "client_id": self.client_id, "identifier": identifier,
                PASSWORD_FIELD: password, "decision": decision}
        if csrf == "from-page":
            match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert match, page.text
            data["csrf_token"] = match.group(1)
        elif csrf is not None:
            data["csrf_token"] = csrf
        return self.http.post(self.path_of(self.server["authorization_endpoint"]), data=data, follow_redirects=False)

    def callback_params(self, r: httpx.Response) -> dict[str, str]:
        assert r.status_code == 303, r.text
        location = r.headers["location"]
        assert location.startswith(self.redirect_uri), location
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    def exchange(self, code: str, *, verifier: str | None = None, extra: dict[str, str] | None = None,
                 **proof_args: Any) -> httpx.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": self.verifier if verifier is None else verifier, "client_id": self.client_id,
                **(extra or {})}
        r = self.post_as(self.server["token_endpoint"], {k: v for k, v in data.items() if v}, **proof_args)
        self._take_tokens(r)
        return r

    def refresh(self, refresh_token: str | None = None, **proof_args: Any) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token or self.refresh_token,
                "client_id": self.client_id}
        r = self.post_as(self.server["token_endpoint"], data, **proof_args)
        self._take_tokens(r)
        return r

    def revoke(self, token: str) -> httpx.Response:
        return self.post_as(self.server["revocation_endpoint"], {"token": token, "client_id": self.client_id})

    def _take_tokens(self, r: httpx.Response) -> None:
        if r.status_code == 200:
            body = r.json()
            self.access_token, self.refresh_token, self.sub = body["access_token"], body["refresh_token"], body["sub"]

    def login(self, *, identifier: str, password: str, scope: str = "atproto transition:generic") -> dict[str, Any]:
        """The whole flow; returns the token response."""
        if not self.server:
            self.discover()
        r = self.par(scope=scope)
        assert r.status_code == 201, r.text
        request_uri = r.json()["request_uri"]
        params = self.callback_params(self.submit(request_uri, identifier=identifier, password=password))
        assert params["state"] == self.state and params["iss"] == self.server["issuer"]
        r = self.exchange(params["code"])
        assert r.status_code == 200, r.text
        return r.json()

    # -- resource server ------------------------------------------------------------------------------

    def xrpc(self, method: str, nsid: str, *, token: str | None = None, retry: bool = True,
             proof: str | None = None, **kwargs: Any) -> httpx.Response:
        token = token or self.access_token
        htu = f"{self.resource}/xrpc/{nsid}"

        def send() -> httpx.Response:
            headers = {"Authorization": f"DPoP {token}",
                       "DPoP": proof or self.proof(method, htu, access_token=token)}
            return self.http.request(method, f"/xrpc/{nsid}", headers=headers, **kwargs)

        r = send()
        self._remember_nonce(r)
        if retry and r.status_code == 401 and 'error="use_dpop_nonce"' in r.headers.get("www-authenticate", ""):
            self.nonce_retries += 1
            r = send()
            self._remember_nonce(r)
        return r


@contextmanager
def metadata_host() -> Iterator[MetadataHost]:
    host = MetadataHost().start()
    try:
        yield host
    finally:
        host.stop()
