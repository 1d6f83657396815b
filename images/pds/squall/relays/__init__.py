"""The relay monitor feature module (issue #15): does the network see this PDS?

``start`` builds ``ctx.relays`` (a :class:`~.service.RelayMonitor`) and its background tasks when
relays are configured (``PDS_CRAWLERS``, ``PDS_RELAY_MONITOR_URLS``); with none, the service still
exists and answers an empty status. ``squall.accounts.events.wake_firehose`` pokes it after account
events, so new, reactivated, renamed and imported accounts are checked soon after. The admin routes
are ``squall.xrpc.relays``.
"""

from __future__ import annotations

from typing import Any

from .model import ACCOUNT_STATES, ACTIONS, HOST_STATES, AccountView, RelaysStatus, RelayView
from .options import RelayMonitorOptions
from .service import RelayMonitor

__all__ = ["ACCOUNT_STATES", "ACTIONS", "HOST_STATES", "AccountView", "RelayMonitor", "RelayMonitorOptions",
           "RelayView", "RelaysStatus", "start", "stop"]


async def start(ctx: Any) -> None:
    from ..net import make_client  # the SSRF-guarded client (dev mode allows loopback)

    options = RelayMonitorOptions.from_env()
    monitor = RelayMonitor(ctx.db, ctx.settings, ctx.log, options=options,
                           client=make_client(ctx.settings, timeout=options.request_timeout,
                                              max_response_bytes=64 * 1024),
                           notify_firehose=lambda: ctx.firehose.notify())
    await monitor.start()
    ctx.relays = monitor


async def stop(ctx: Any) -> None:
    if ctx.relays is not None:
        await ctx.relays.stop()
