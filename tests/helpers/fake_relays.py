"""A fake relay on loopback for the relay monitor's tests (issue #15).

It serves ``com.atproto.sync.getHostStatus``, ``getRepoStatus``, ``requestCrawl`` and ``listHosts``
with their parameters and input checked against the bundled lexicons, and it learns what it
reports the way a relay does: once asked to crawl the PDS's hostname it subscribes to the PDS's
``subscribeRepos`` over a real WebSocket and keeps, per repo, the active flag and the rev of the
last ``#commit``/``#sync`` it accepted, and for the host the last seq it consumed. Every event also
goes through ``tests.helpers.relay.RelayChecker`` (signatures, rev chain, MST inversion);
``check_errors`` lists what it refused.

Scenario knobs (set from the test thread): ``seq_override`` (a seq ahead of the PDS's),
``account_count_override``, ``host_status`` (idle, offline, throttled, banned), ``forget(did)``
(the relay loses an account), ``drop_commits_of`` (commits of these DIDs are ignored: dropped),
``throttled`` (DIDs the relay throttles), ``hang`` (answers only after ``hang_seconds``).
Every request is logged in ``requests`` with its arrival time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from squall.atproto.crypto import PublicKey
from squall.atproto.lexicon import load_bundled
from squall.atproto.lexicon.errors import LexiconValidationError
from squall.firehose.frames import decode_frame

from .net import ThreadedServer
from .relay import RelayChecker, SyncCheckFailed, stream_url

_LEXICONS = load_bundled()


@dataclass
class RepoView:
    active: bool = True
    status: str | None = None
    rev: str | None = None


class FakeRelay:
    def __init__(self, pds_hostname: str, pds_url: str, *, resolve_key: Callable[[str], PublicKey] | None = None,
                 name: str = "fake-relay") -> None:
        self.pds_hostname = pds_hostname
        self.pds_url = pds_url
        self.lock = threading.Lock()
        self.known_host = False
        self.host_status = "active"
        self.seq = 0
        self.seq_override: int | None = None
        self.account_count_override: int | None = None
        self.repos: dict[str, RepoView] = {}
        self.drop_commits_of: set[str] = set()
        self.throttled: set[str] = set()
        self.hang = False
        self.hang_seconds = 30.0
        self.requests: list[tuple[float, str, str]] = []  # (monotonic, nsid, query or body)
        self.crawl_requests: list[str] = []
        self.events: list[tuple[str, dict]] = []  # (type, body) of every event consumed
        self.checker = RelayChecker(resolve_key) if resolve_key is not None else None
        self.check_errors: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: asyncio.Task | None = None
        self._stopping = False
        app = Starlette(routes=[
            Route("/xrpc/com.atproto.sync.getHostStatus", self._get_host_status, methods=["GET"]),
            Route("/xrpc/com.atproto.sync.getRepoStatus", self._get_repo_status, methods=["GET"]),
            Route("/xrpc/com.atproto.sync.requestCrawl", self._request_crawl, methods=["POST"]),
            Route("/xrpc/com.atproto.sync.listHosts", self._list_hosts, methods=["GET"]),
        ])
        self.server = ThreadedServer(app, name=name)

    # -- lifecycle (test thread) ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> "FakeRelay":
        self.server.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._consumer is not None:
            self._loop.call_soon_threadsafe(self._consumer.cancel)
        self.server.stop()

    def __enter__(self) -> "FakeRelay":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def know_host(self) -> None:
        """Have the relay crawl the PDS now (as if someone had asked it to)."""
        r = httpx.post(f"{self.url}/xrpc/com.atproto.sync.requestCrawl", json={"hostname": self.pds_hostname},
                       timeout=5)
        assert r.status_code == 200, r.text
        self.crawl_requests.pop()  # not one of the PDS's

    def forget(self, did: str) -> None:
        with self.lock:
            self.repos.pop(did, None)

    def repo(self, did: str) -> RepoView | None:
        with self.lock:
            view = self.repos.get(did)
            return RepoView(view.active, view.status, view.rev) if view is not None else None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"fake relay: timed out waiting for {what}")

    def request_times(self) -> list[float]:
        with self.lock:
            return [t for t, _, _ in self.requests]

    # -- XRPC (server thread) ---------------------------------------------------------------------

    def _params(self, request: Request, nsid: str) -> dict[str, Any]:
        with self.lock:
            self.requests.append((time.monotonic(), nsid, str(request.url.query)))
        return _LEXICONS.method(nsid).validate_params(request.query_params.multi_items())

    async def _get_host_status(self, request: Request) -> Response:
        try:
            params = self._params(request, "com.atproto.sync.getHostStatus")
        except LexiconValidationError as exc:
            return _error(400, "InvalidRequest", str(exc))
        if self.hang:
            await self._hang()
        with self.lock:
            if params["hostname"] != self.pds_hostname or not self.known_host:
                return _error(404, "HostNotFound", f"unknown host {params['hostname']}")
            seq = self.seq if self.seq_override is None else self.seq_override
            count = len(self.repos) if self.account_count_override is None else self.account_count_override
            return JSONResponse({"hostname": self.pds_hostname, "seq": seq, "accountCount": count,
                                 "status": self.host_status})

    async def _get_repo_status(self, request: Request) -> Response:
        try:
            params = self._params(request, "com.atproto.sync.getRepoStatus")
        except LexiconValidationError as exc:
            return _error(400, "InvalidRequest", str(exc))
        if self.hang:
            await self._hang()
        did = params["did"]
        with self.lock:
            view = self.repos.get(did)
            if view is None:
                return _error(404, "RepoNotFound", f"unknown repo {did}")
            out: dict[str, Any] = {"did": did, "active": view.active}
            if did in self.throttled:
                out.update(active=False, status="throttled")
            elif view.status is not None:
                out["status"] = view.status
            if view.rev is not None:
                out["rev"] = view.rev
            return JSONResponse(out)

    async def _hang(self) -> None:
        deadline = time.monotonic() + self.hang_seconds
        while time.monotonic() < deadline and not self._stopping:
            await asyncio.sleep(0.05)

    async def _list_hosts(self, request: Request) -> Response:
        try:
            self._params(request, "com.atproto.sync.listHosts")
        except LexiconValidationError as exc:
            return _error(400, "InvalidRequest", str(exc))
        with self.lock:
            hosts = [{"hostname": self.pds_hostname, "seq": self.seq, "accountCount": len(self.repos),
                      "status": self.host_status}] if self.known_host else []
        return JSONResponse({"hosts": hosts})

    async def _request_crawl(self, request: Request) -> Response:
        raw = await request.body()
        with self.lock:
            self.requests.append((time.monotonic(), "com.atproto.sync.requestCrawl", raw.decode(errors="replace")))
        try:
            import json

            body = json.loads(raw)
            _LEXICONS.method("com.atproto.sync.requestCrawl").validate_input(body)
        except (ValueError, LexiconValidationError) as exc:
            return _error(400, "InvalidRequest", str(exc))
        if self.host_status == "banned":
            return _error(400, "HostBanned", "this host is banned")
        self.crawl_requests.append(body["hostname"])
        if body["hostname"] == self.pds_hostname:
            with self.lock:
                self.known_host = True
                if self.host_status in ("idle", "offline"):
                    self.host_status = "active"
            if self._consumer is None or self._consumer.done():
                self._loop = asyncio.get_running_loop()
                self._consumer = self._loop.create_task(self._consume())
        return JSONResponse({})

    # -- the firehose consumer (server thread) ------------------------------------------------------

    async def _consume(self) -> None:
        while not self._stopping:
            cursor = self.seq
            url = stream_url(self.pds_url, cursor=cursor) if cursor else stream_url(self.pds_url)
            try:
                async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                    async for message in ws:
                        await asyncio.to_thread(self._feed, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)

    def _feed(self, message: bytes) -> None:
        header, body = decode_frame(message)
        if header.get("op") != 1 or header.get("t") == "#info":
            return
        t = header["t"]
        did = body.get("repo") or body.get("did")
        dropped = t == "#commit" and did in self.drop_commits_of
        if self.checker is not None and not dropped:
            try:
                self.checker.feed(message)
            except SyncCheckFailed as exc:
                self.check_errors.append(str(exc))
        with self.lock:
            self.seq = max(self.seq, body["seq"])
            self.events.append((t, body))
            if dropped:
                return
            view = self.repos.setdefault(did, RepoView())
            if t in ("#commit", "#sync"):
                view.rev = body["rev"]
            elif t == "#account":
                view.active = body["active"]
                view.status = body.get("status")


def _error(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"error": name, "message": message}, status_code=status)
