"""Firehose tuning knobs.

The protocol-facing settings come from ``Settings`` (``PDS_CRAWLERS``,
``PDS_REPO_BACKFILL_LIMIT_MS``, ``PDS_HOSTNAME``). The knobs here have safe defaults and exist so
tests can shrink intervals; they are read from ``SQUALL_FIREHOSE_*`` variables, kept out of the
``PDS_*`` namespace that ``squall.config`` validates against the reference distro.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..tuning import TuningError, read_tuning

OptionsError = TuningError  # the name callers and tests know


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
        return read_tuning(cls, "SQUALL_FIREHOSE_", environ, zero_allowed=frozenset({"ping_seconds"}))
