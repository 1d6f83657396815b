"""Telling relays to crawl us: ``com.atproto.sync.requestCrawl`` (https://atproto.com/specs/sync,
"Relay Operation" / host announcement).

A relay only subscribes to hosts it knows about. For each ``PDS_CRAWLERS`` URL the PDS posts
``{"hostname": PDS_HOSTNAME}`` at start, after writes (at most once per crawler per
``crawl_min_seconds``, 20 minutes as the reference does), and unconditionally every few hours so
a relay that dropped a quiet host picks it up again. Requests run in the background: a slow or
failing crawler is logged and never delays a write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import httpx

PostJson = Callable[[str, dict[str, Any], float], Awaitable[int]]


class CrawlerNotifier:
    def __init__(
        self,
        crawlers: list[str],
        hostname: str,
        log: logging.Logger,
        *,
        min_interval: float,
        reannounce_interval: float,
        timeout: float,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
        post_json: PostJson | None = None,
    ) -> None:
        self.crawlers = [c.rstrip("/") for c in crawlers]
        self.hostname = hostname
        self.log = log
        self.min_interval = min_interval
        self.reannounce_interval = reannounce_interval
        self.timeout = timeout
        self._client_factory = client_factory
        self._post_json = post_json
        self._client: httpx.AsyncClient | None = None
        self._last_attempt: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Task] = {}
        self._periodic: asyncio.Task | None = None
        self._closed = False

    async def start(self) -> None:
        if not self.crawlers:
            return
        if self._post_json is None:
            # Redirects are not followed: a crawler answers requestCrawl itself.
            self._client = (self._client_factory() if self._client_factory is not None
                            else httpx.AsyncClient(follow_redirects=False, timeout=self.timeout, trust_env=False))
            self._post_json = self._httpx_post
        self.announce(force=True)
        self._periodic = asyncio.create_task(self._reannounce_loop(), name="firehose-crawl-reannounce")

    async def stop(self) -> None:
        self._closed = True
        tasks = [t for t in (self._periodic, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def announce(self, *, force: bool = False) -> None:
        """Ask every crawler that is due (all of them when ``force``); never waits."""
        if self._closed or self._post_json is None:
            return
        now = time.monotonic()
        for crawler in self.crawlers:
            if crawler in self._in_flight:
                continue
            last = self._last_attempt.get(crawler)
            if not force and last is not None and now - last < self.min_interval:
                continue
            # The attempt, not the success, starts the interval: a failing relay is not retried
            # on every write.
            self._last_attempt[crawler] = now
            task = asyncio.create_task(self._request(crawler), name=f"firehose-crawl {crawler}")
            self._in_flight[crawler] = task
            task.add_done_callback(lambda _t, c=crawler: self._in_flight.pop(c, None))

    async def _reannounce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reannounce_interval)
            self.announce(force=True)

    async def _request(self, crawler: str) -> None:
        url = f"{crawler}/xrpc/com.atproto.sync.requestCrawl"
        assert self._post_json is not None
        try:
            status = await self._post_json(url, {"hostname": self.hostname}, self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.warning("crawl request failed", extra={"crawler": crawler, "error": f"{type(exc).__name__}: {exc}"})
            return
        if 200 <= status < 300:
            self.log.info("crawl requested", extra={"crawler": crawler})
        else:
            self.log.warning("crawl request refused", extra={"crawler": crawler, "status": status})

    async def _httpx_post(self, url: str, body: dict[str, Any], timeout: float) -> int:
        assert self._client is not None
        response = await self._client.post(url, json=body, timeout=timeout)
        return response.status_code
