"""What every check shares: the options, one HTTP client, the TLS settings, and the state the
write checks hand to each other (the disposable account, its commits, its blob)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from .runner import CheckFailed, Skipped

USER_AGENT = "squall-smoke/1"
EXCERPT = 200


@dataclass
class Options:
    base_url: str
    admin_password: str | None = None
    ca_cert: str | None = None
    write: bool = False
    handle: str | None = None
    hostname: str | None = None
    public_url: str | None = None
    plc_url: str = "https://plc.directory"
    invite_code: str | None = None
    blob: str | None = None
    crawler_hostname: str | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--base-url must be an http(s) URL with a host, got {self.base_url!r}")
        if parts.path or parts.query:
            raise ValueError(f"--base-url must not have a path or query, got {self.base_url!r}")
        self.hostname = (self.hostname or parts.hostname).lower()
        self.public_url = (self.public_url or self.base_url).rstrip("/")
        self.plc_url = self.plc_url.rstrip("/")
        if self.timeout <= 0:
            raise ValueError("--timeout must be positive")
        if self.blob is not None and self.blob.count("/") != 1:
            raise ValueError("--blob must be <did>/<cid>")

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.base_url.startswith("https://") else "ws"
        return scheme + self.base_url[self.base_url.index("://"):]


def ssl_context(ca_cert: str | None) -> ssl.SSLContext:
    """The system's roots, plus ``ca_cert`` (a private CA, e.g. Caddy's internal one) when given:
    the crawler check may talk to a public relay in the same run."""
    context = ssl.create_default_context()
    if ca_cert:
        context.load_verify_locations(cafile=ca_cert)
    return context


def excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")


def seen(response: httpx.Response) -> str:
    body = excerpt(response)
    return f"HTTP {response.status_code}" + (f" {body}" if body else " with an empty body")


@dataclass
class Smoke:
    options: Options
    http: httpx.AsyncClient
    ssl: ssl.SSLContext
    step: str = "starting"
    state: dict[str, Any] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def doing(self, what: str) -> None:
        """Name the current step: a timeout or transport error reports it."""
        self.step = what

    def need(self, key: str, producer: str) -> Any:
        """A value an earlier check produced; skip (not fail twice) when that check did not pass."""
        if key not in self.state:
            raise Skipped(f"needs {producer}, which did not pass")
        return self.state[key]

    def url(self, path: str) -> str:
        return self.options.base_url + path

    async def request(self, method: str, path: str, *, what: str | None = None, **kw: Any) -> httpx.Response:
        self.doing(what or f"waiting for {method} {path}")
        return await self.http.request(method, self.url(path), **kw)

    async def expect(self, method: str, path: str, status: int = 200, **kw: Any) -> httpx.Response:
        response = await self.request(method, path, **kw)
        if response.status_code != status:
            raise CheckFailed(f"HTTP {status} from {method} {path}", seen(response))
        return response

    async def expect_json(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        return json_body(await self.expect(method, path, status, **kw), f"{method} {path}")


def json_body(response: httpx.Response, what: str) -> Any:
    kind = response.headers.get("content-type", "")
    if not kind.split(";")[0].strip().endswith("json"):
        raise CheckFailed(f"a JSON answer from {what}", f"content-type {kind or '(none)'}: {excerpt(response)}")
    try:
        return json.loads(response.content)
    except ValueError:
        raise CheckFailed(f"valid JSON from {what}", excerpt(response)) from None


def xrpc_error(response: httpx.Response) -> tuple[str, str] | None:
    """(error, message) when the body is an XRPC error envelope, else None."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body.get("message")
        return body["error"], message if isinstance(message, str) else ""
    return None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
