"""The relay monitor's status model: what the admin status, the CLI, the dashboard and the metrics
show. Plain dataclasses; ``to_json()`` gives the admin API's camelCase shape.

A relay row (:class:`RelayView`) says what the relay reported of this host at the last check,
the status that gives (one of ``HOST_STATES``), the lag history, our event rate beside the
relay's published limits, warnings, and the actions taken. An account × relay cell
(:class:`AccountView`) says what the relay reported of one local account (``ACCOUNT_STATES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# Host states, worst first (a relay's status is the worst that applies).
HOST_STATES: dict[str, str] = {
    "unreachable": "the relay did not answer (error or timeout)",
    "error": "the relay's answer could not be understood",
    "banned": "the relay has banned this host",
    "unknown": "the relay doesn't know this host",
    "seq_ahead": "our sequence went backwards: the relay has seen a higher seq than ours",
    "offline": "the relay marks this host offline",
    "idle": "the relay marks this host idle",
    "throttled": "the relay throttles this host",
    "behind": "the relay is behind: its lag on our events grew over the last checks",
    "ok": "the relay follows this host",
    "pending": "not checked yet",
}

ACCOUNT_STATES: dict[str, str] = {
    "unreachable": "the relay did not answer (error or timeout)",
    "rolled_back": "the relay has a newer rev than ours: our repo was rolled back",
    "unknown": "the relay doesn't know this account",
    "commits_dropped": "the relay's rev is behind ours although it is caught up on the host",
    "status_mismatch": "the relay's active flag differs from ours",
    "throttled": "the relay throttles this account",
    "behind": "the relay's rev is behind ours (it may still be processing)",
    "ok": "the relay has our current rev",
    "not_hosted": "not active here and not carried by the relay",
}

# Actions the monitor takes or the operator asks for.
ACTIONS = ("requestCrawl", "reannounce", "emitAccount", "advanceSequence")


def iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LagPoint:
    checked_at: float
    our_seq: int
    their_seq: int

    @property
    def lag(self) -> int:
        return max(0, self.our_seq - self.their_seq)

    def to_json(self) -> dict[str, Any]:
        return {"checkedAt": iso(self.checked_at), "ourSeq": self.our_seq, "theirSeq": self.their_seq,
                "lag": self.lag}


@dataclass(frozen=True)
class RateWindow:
    """Our events in a window beside the relay's published per-host limit for it."""
    window_seconds: int
    events: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {"windowSeconds": self.window_seconds, "events": self.events, "limit": self.limit}


@dataclass(frozen=True)
class ActionView:
    at: float
    relay: str | None
    did: str | None
    action: str
    reason: str
    result: str

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "relay": self.relay, "did": self.did, "action": self.action,
                "reason": self.reason, "result": self.result}


@dataclass(frozen=True)
class AccountView:
    relay: str
    did: str
    handle: str | None
    status: str
    message: str | None
    their_active: bool | None
    their_status: str | None
    their_rev: str | None
    our_rev: str | None
    checked_at: float | None
    behind_since: float | None
    action: str | None
    action_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {"relay": self.relay, "did": self.did, "handle": self.handle, "status": self.status,
                "message": self.message, "theirActive": self.their_active, "theirStatus": self.their_status,
                "theirRev": self.their_rev, "ourRev": self.our_rev, "checkedAt": iso(self.checked_at),
                "behindSince": iso(self.behind_since), "action": self.action, "actionAt": iso(self.action_at)}


@dataclass(frozen=True)
class RelayView:
    url: str
    status: str
    message: str | None
    host_status: str | None  # what the relay said (active, idle, offline, throttled, banned)
    their_seq: int | None
    our_seq: int | None
    account_count: int | None
    account_limit: int
    clock_skew_ms: int | None
    last_checked: float | None
    last_error: str | None
    last_crawl_at: float | None
    warnings: list[str]
    lag_history: list[LagPoint]
    event_rate: list[RateWindow]
    actions: list[ActionView]
    accounts: dict[str, int] = field(default_factory=dict)  # account status → count

    @property
    def lag(self) -> int | None:
        if self.their_seq is None or self.our_seq is None:
            return None
        return max(0, self.our_seq - self.their_seq)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "message": self.message, "hostStatus": self.host_status,
                "theirSeq": self.their_seq, "ourSeq": self.our_seq, "lag": self.lag,
                "accountCount": self.account_count, "accountLimit": self.account_limit,
                "clockSkewMs": self.clock_skew_ms, "lastChecked": iso(self.last_checked),
                "lastError": self.last_error, "lastCrawlRequest": iso(self.last_crawl_at),
                "warnings": list(self.warnings), "lagHistory": [p.to_json() for p in self.lag_history],
                "eventRate": [r.to_json() for r in self.event_rate], "actions": [a.to_json() for a in self.actions],
                "accounts": dict(self.accounts)}


@dataclass(frozen=True)
class SelfCheck:
    name: str  # describeServer, subscribeRepos
    ok: bool
    detail: str
    checked_at: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "checkedAt": iso(self.checked_at)}


@dataclass(frozen=True)
class RelaysStatus:
    """Everything the monitor knows: one row per relay, the accounts × relays matrix (when asked
    for), the self-checks and the newest actions."""
    hostname: str
    public_url: str
    interval_seconds: float
    relays: list[RelayView]
    accounts: list[AccountView] | None
    self_checks: list[SelfCheck]
    actions: list[ActionView]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hostname": self.hostname, "publicUrl": self.public_url,
                               "intervalSeconds": self.interval_seconds,
                               "relays": [r.to_json() for r in self.relays],
                               "selfChecks": [c.to_json() for c in self.self_checks],
                               "actions": [a.to_json() for a in self.actions]}
        if self.accounts is not None:
            out["accounts"] = [a.to_json() for a in self.accounts]
        return out
