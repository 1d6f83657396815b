"""Firehose tuning knobs.

The protocol-facing settings come from ``Settings`` (``PDS_CRAWLERS``,
``PDS_REPO_BACKFILL_LIMIT_MS``, ``PDS_HOSTNAME``). The knobs here have safe defaults and exist so
tests can shrink intervals; they are read from ``SQUALL_FIREHOSE_*`` variables, kept out of the
``PDS_*`` namespace that ``squall.config`` validates against the reference distro.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping


class OptionsError(ValueError):
    """A SQUALL_FIREHOSE_* variable that is not a usable number; the message names it."""


@dataclass(frozen=True)
class FirehoseOptions:
    # Seconds between WebSocket pings to each subscriber (0 disables).
    ping_seconds: float = 30.0
    # Frames a live subscriber may have waiting before it is cut off as too slow; the byte bound
    # keeps a subscriber stuck behind large commits from pinning unbounded memory.
    queue_frames: int = 2000
    queue_bytes: int = 64 * 1024 * 1024
    # Events read from the database per query (fan-out and backfill).
    page_size: int = 500
    # Fallback wake-up of the fan-out when no writer called notify() (e.g. another process).
    poll_seconds: float = 1.0
    # How often events older than the retention window are deleted.
    prune_seconds: float = 600.0
    # Crawl requests: at most one per crawler per this many seconds after writes, and an
    # unconditional re-announce every few hours (relays drop hosts that stay quiet).
    crawl_min_seconds: float = 20 * 60.0
    crawl_reannounce_seconds: float = 4 * 3600.0
    crawl_timeout_seconds: float = 10.0
    # On shutdown, how long subscribers get to receive what is queued before the 1001 close.
    drain_seconds: float = 5.0
    # How long a cut-off subscriber gets to take its error frame before the socket is dropped.
    close_grace_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "FirehoseOptions":
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in fields(cls):
            name = "SQUALL_FIREHOSE_" + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            kind = int if f.type in (int, "int") else float
            try:
                value = kind(raw)
            except ValueError:
                raise OptionsError(f"{name}: {raw!r} is not a {'whole ' if kind is int else ''}number") from None
            if value < 0 or (value == 0 and f.name not in ("ping_seconds",)):
                raise OptionsError(f"{name}: must be greater than zero")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]
