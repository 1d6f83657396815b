"""The firehose feature module: ``com.atproto.sync.subscribeRepos`` and relay crawl requests
(https://atproto.com/specs/event-stream, https://atproto.com/specs/sync).

Registers ``ctx.firehose`` (a :class:`~.service.Firehose`); writers call its
``notify()`` after a transaction that appended events to ``repo_seq``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from .crawlers import CrawlerNotifier
from .options import FirehoseOptions
from .service import Firehose
from .subscription import PATH, subscribe_repos
from .wsctl import CaptureAsgiSend

__all__ = ["Firehose", "FirehoseOptions", "routes", "start", "stop"]


def routes(app: Any, get_ctx: Callable[[], Any]) -> None:
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await subscribe_repos(websocket, get_ctx().firehose)

    async def http_endpoint(request: Request) -> JSONResponse:
        # A plain GET (no upgrade) is a client mistake, not an unknown method.
        return JSONResponse({"error": "InvalidRequest",
                             "message": "com.atproto.sync.subscribeRepos is a WebSocket subscription"},
                            status_code=400)

    app.add_api_websocket_route(PATH, websocket_endpoint)
    app.add_api_route(PATH, http_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(CaptureAsgiSend, paths=frozenset({PATH}))


def options_for(settings: Any, environ: Any = None) -> FirehoseOptions:
    """The SQUALL_FIREHOSE_* knobs, with PDS_MAX_SUBSCRIPTION_BUFFER (the reference's name for
    the per-subscriber queue, in frames) winning over SQUALL_FIREHOSE_QUEUE_FRAMES."""
    options = FirehoseOptions.from_env(environ)
    if settings.max_subscription_buffer is not None:
        options = dataclasses.replace(options, queue_frames=settings.max_subscription_buffer)
    return options


async def start(ctx: Any) -> None:
    s = ctx.settings
    options = options_for(s)
    crawlers = None
    if s.crawlers:
        from ..net import make_client  # the SSRF-guarded client (dev mode allows loopback)
        observe = ctx.metrics.outbound("crawler")

        crawlers = CrawlerNotifier(list(s.crawlers), s.hostname, ctx.log, min_interval=options.crawl_min_seconds,
                                   reannounce_interval=options.crawl_reannounce_seconds,
                                   timeout=options.crawl_timeout_seconds,
                                   client_factory=lambda: make_client(s, timeout=options.crawl_timeout_seconds,
                                                                                      observe=observe))
    firehose = Firehose(ctx.db, ctx.log, backfill_limit_ms=s.repo_backfill_limit_ms, options=options,
                        crawlers=crawlers)
    await firehose.start()
    ctx.firehose = firehose


async def stop(ctx: Any) -> None:
    await ctx.firehose.stop()
