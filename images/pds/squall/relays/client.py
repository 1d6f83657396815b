"""Talking to one relay: ``com.atproto.sync.getHostStatus``, ``getRepoStatus`` (unauthenticated
GETs) and ``requestCrawl`` (https://atproto.com/specs/sync), through the SSRF-guarded client of
``squall.net``, at most one request per ``min_gap`` seconds, each bounded by ``timeout``.

Any failure to get a usable answer (connection error, timeout, a 5xx, a body that is not the
lexicon's shape) is a :class:`RelayUnreachable` whose message says what happened; "the relay does
not know it" (404, or the lexicon's ``HostNotFound``/``RepoNotFound``) is an answer, not an error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ..atproto.tid import is_valid_tid


class RelayUnreachable(Exception):
    """No usable answer from the relay; the message says why."""


@dataclass(frozen=True)
class HostAnswer:
    found: bool
    seq: int | None = None
    account_count: int | None = None
    status: str | None = None
    clock_skew_ms: int | None = None


@dataclass(frozen=True)
class RepoAnswer:
    found: bool
    active: bool | None = None
    status: str | None = None
    rev: str | None = None


@dataclass(frozen=True)
class CrawlAnswer:
    ok: bool
    detail: str


class RelayClient:
    def __init__(self, url: str, client: httpx.AsyncClient, *, min_gap: float, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._client = client
        self.min_gap = min_gap
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._last = 0.0

    async def _request(self, method: str, nsid: str, *, params: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> tuple[httpx.Response, Any, float]:
        """One paced, time-bounded request; (response, parsed JSON or None, local time mid-request)."""
        async with self._lock:
            wait = self._last + self.min_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.time()
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._client.request(method, f"{self.url}/xrpc/{nsid}", params=params,
                                                          json=body, timeout=self.timeout)
                    await response.aread()
            except TimeoutError:
                raise RelayUnreachable(f"{nsid}: no answer within {self.timeout:g}s") from None
            except httpx.HTTPError as exc:
                raise RelayUnreachable(f"{nsid}: {type(exc).__name__}: {exc}") from None
            finally:
                self._last = time.monotonic()
            midpoint = (started + time.time()) / 2
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code >= 500:
            raise RelayUnreachable(f"{nsid}: HTTP {response.status_code}{_error_text(data)}")
        return response, data, midpoint

    async def get_host_status(self, hostname: str) -> HostAnswer:
        nsid = "com.atproto.sync.getHostStatus"
        response, data, midpoint = await self._request("GET", nsid, params={"hostname": hostname})
        skew = _clock_skew_ms(response, midpoint)
        if _not_found(response, data, "HostNotFound"):
            return HostAnswer(found=False, clock_skew_ms=skew)
        if response.status_code != 200 or not isinstance(data, dict):
            raise RelayUnreachable(f"{nsid}: HTTP {response.status_code}{_error_text(data)}")
        seq, count, status = data.get("seq"), data.get("accountCount"), data.get("status")
        if (seq is not None and type(seq) is not int) or (count is not None and type(count) is not int) \
                or (status is not None and not isinstance(status, str)):
            raise RelayUnreachable(f"{nsid}: the answer does not match the lexicon: {str(data)[:200]}")
        return HostAnswer(found=True, seq=seq, account_count=count, status=status, clock_skew_ms=skew)

    async def get_repo_status(self, did: str) -> RepoAnswer:
        nsid = "com.atproto.sync.getRepoStatus"
        response, data, _ = await self._request("GET", nsid, params={"did": did})
        if _not_found(response, data, "RepoNotFound"):
            return RepoAnswer(found=False)
        if response.status_code != 200 or not isinstance(data, dict):
            raise RelayUnreachable(f"{nsid}: HTTP {response.status_code}{_error_text(data)}")
        active, status, rev = data.get("active"), data.get("status"), data.get("rev")
        if type(active) is not bool or (status is not None and not isinstance(status, str)) \
                or (rev is not None and not (isinstance(rev, str) and is_valid_tid(rev))):
            raise RelayUnreachable(f"{nsid}: the answer does not match the lexicon: {str(data)[:200]}")
        return RepoAnswer(found=True, active=active, status=status, rev=rev)

    async def request_crawl(self, hostname: str) -> CrawlAnswer:
        nsid = "com.atproto.sync.requestCrawl"
        try:
            response, data, _ = await self._request("POST", nsid, body={"hostname": hostname})
        except RelayUnreachable as exc:
            return CrawlAnswer(False, str(exc))
        if 200 <= response.status_code < 300:
            return CrawlAnswer(True, f"HTTP {response.status_code}")
        return CrawlAnswer(False, f"HTTP {response.status_code}{_error_text(data)}")


def _not_found(response: httpx.Response, data: Any, name: str) -> bool:
    if response.status_code == 404:
        return True
    return response.status_code == 400 and isinstance(data, dict) and data.get("error") == name


def _error_text(data: Any) -> str:
    if isinstance(data, dict) and (data.get("error") or data.get("message")):
        return f": {data.get('error') or ''} {str(data.get('message') or '')[:200]}".rstrip()
    return ""


def _clock_skew_ms(response: httpx.Response, midpoint: float) -> int | None:
    """The relay's Date header minus our clock at the middle of the request (Date has 1 s steps)."""
    header = response.headers.get("date")
    if not header:
        return None
    try:
        theirs = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return int(round((theirs - midpoint) * 1000))
