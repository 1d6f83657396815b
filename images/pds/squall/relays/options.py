"""Relay monitor tuning knobs (``SQUALL_RELAY_MONITOR_*``), with safe defaults; tests shrink them.

The operator-facing settings are ``PDS_CRAWLERS``, ``PDS_RELAY_MONITOR_URLS``,
``PDS_RELAY_MONITOR_INTERVAL``, ``PDS_RELAY_MONITOR_ACCOUNT_LIMIT`` and
``PDS_RELAY_MONITOR_EVENT_LIMITS`` (``squall.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..tuning import read_tuning


@dataclass(frozen=True)
class RelayMonitorOptions:
    # At most one request per this many seconds to any one relay.
    min_request_gap: float = 1.0
    # Every request to a relay (and each self-check) is abandoned after this many seconds.
    request_timeout: float = 10.0
    # Accounts compared per relay per cycle (the rolling pass resumes where it stopped).
    accounts_per_cycle: int = 25
    # After an account change (creation, activation, handle change, import), how long the relays
    # get to process it before they are asked about the account.
    recheck_delay: float = 60.0
    # A relay's rev behind ours this long while the host lag is ~0 means commits were dropped.
    desync_seconds: float = 900.0
    # Host lag (events) that still counts as caught up.
    caught_up_lag: int = 10
    # Automatic actions: requestCrawl at most this often per relay, re-announcing (or #account)
    # at most this often per account.
    crawl_min_seconds: float = 3600.0
    reannounce_min_seconds: float = 3600.0
    # Clock skew against a relay's Date header worth a warning.
    skew_warn_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RelayMonitorOptions":
        return read_tuning(cls, "SQUALL_RELAY_MONITOR_", environ)
