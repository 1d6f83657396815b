"""Rate limits: brute-force and abuse protection for the XRPC API, in memory, in one process.

Limits are data on the XRPC methods (``Method.rate_limits``) plus one global per-IP limit for
every XRPC call; ``squall.xrpc.dispatch`` consumes them and answers 429 ``RateLimitExceeded``.
The numbers follow the reference PDS so an operator gets the protection they expect from it.

Counting is a fixed window per key that opens with the key's first request and lasts the limit's
duration (as the reference's in-memory limiter does). Memory is bounded: each limit keeps its keys
in window-opening order, drops expired ones from the front as it goes, and past ``max_keys``
forgets the oldest live key (failing open for that key rather than growing without bound).

The limiter is built at start (``start``) into ``ctx.ratelimit`` only when
``PDS_RATE_LIMITS_ENABLED`` is true; there is no module-level state.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from starlette.requests import Request

    from .context import AppContext

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR

DEFAULT_MAX_KEYS = 50_000  # per limit; an entry is ~200 bytes, so ~10 MB per limit at worst
_MAX_IDENTIFIER = 256  # longer login identifiers are hashed so a key's size stays bounded


class KeyBy(enum.Enum):
    """What a limit counts per. IP-only limits are checked before authentication (failed logins and
    bad admin passwords count); the others need the caller or the body, so are checked after."""

    IP = "ip"
    IDENTIFIER_IP = "identifier_ip"  # createSession: the login identifier from the body, and the IP
    DID = "did"  # the authenticated user
    DID_IP = "did_ip"

    @property
    def before_auth(self) -> bool:
        return self is KeyBy.IP


@dataclass(frozen=True)
class RateLimit:
    name: str  # unique among limits; counters are kept per name
    points: int  # requests allowed per window
    window: int  # seconds
    key: KeyBy = KeyBy.IP

    def __post_init__(self) -> None:
        if self.points < 1 or self.window < 1:
            raise ValueError(f"rate limit {self.name}: points and window must be positive")


# Every XRPC call from one address (the reference's "global-ip").
GLOBAL_IP = RateLimit("global-ip", 3000, 5 * MINUTE)
# Password sign-in, shared by com.atproto.server.createSession and the OAuth sign-in form: the same
# counters, so using both doors does not double a password guesser's budget.
SIGN_IN = (RateLimit("create-session-5m", 30, 5 * MINUTE, KeyBy.IDENTIFIER_IP),
           RateLimit("create-session-day", 300, DAY, KeyBy.IDENTIFIER_IP))


# Per-account repository write budgets (the reference's "repo-write-hour" / "repo-write-day"): a
# create costs 3 points, an update 2, a delete 1; applyWrites costs the sum of its writes. The
# numbers are the reference's defaults; PDS_RATE_LIMIT_REPO_WRITE_HOUR / _DAY change them.
REPO_WRITE = (RateLimit("repo-write-hour", 5000, HOUR, KeyBy.DID),
              RateLimit("repo-write-day", 35000, DAY, KeyBy.DID))
WRITE_POINTS = {"create": 3, "update": 2, "delete": 1}


def apply_writes_points(body: Any) -> int:
    """What an applyWrites call costs: the points of each write by its ``$type`` (at least 1, so
    a malformed call, refused later by the Lexicon check, still counts)."""
    writes = body.get("writes") if isinstance(body, dict) else None
    total = 0
    if isinstance(writes, list):
        for write in writes:
            kind = write.get("$type", "") if isinstance(write, dict) else ""
            total += WRITE_POINTS.get(kind.rpartition("#")[2], 1) if isinstance(kind, str) else 1
    return max(1, total)


# The OAuth endpoints outside XRPC, per client address: a pushed authorization request fetches the
# client's metadata document, and the token endpoint checks DPoP proofs and client assertions.
OAUTH_PAR = RateLimit("oauth-par-ip", 100, 5 * MINUTE)
OAUTH_TOKEN = RateLimit("oauth-token-ip", 300, 5 * MINUTE)


@dataclass(frozen=True)
class RateLimitStatus:
    limit: RateLimit
    remaining: int
    reset_at: float  # clock time at which the current window ends
    exceeded: bool

    def headers(self, now: float) -> dict[str, str]:
        """The reference's ``RateLimit-*`` headers; a refusal adds ``Retry-After`` (seconds)."""
        headers = {
            "ratelimit-limit": str(self.limit.points),
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": str(math.ceil(self.reset_at)),
            "ratelimit-policy": f"{self.limit.points};w={self.limit.window}",
        }
        if self.exceeded:
            headers["retry-after"] = str(max(1, math.ceil(self.reset_at - now)))
        return headers


@dataclass
class _Window:
    opened: float
    count: int


@dataclass
class _Counter:
    """The windows of one limit, oldest first (the order in which they expire)."""

    limit: RateLimit
    max_keys: int
    windows: OrderedDict[str, _Window] = field(default_factory=OrderedDict)

    def consume(self, key: str, now: float, cost: int = 1) -> RateLimitStatus:
        self._expire(now)
        window = self.windows.get(key)
        if window is None or now >= window.opened + self.limit.window:
            if window is not None:
                del self.windows[key]
            while len(self.windows) >= self.max_keys:
                self.windows.popitem(last=False)
            window = self.windows[key] = _Window(opened=now, count=0)
        reset_at = window.opened + self.limit.window
        if window.count + cost > self.limit.points:
            return RateLimitStatus(self.limit, self.limit.points - window.count, reset_at, exceeded=True)
        window.count += cost
        return RateLimitStatus(self.limit, self.limit.points - window.count, reset_at, exceeded=False)

    def _expire(self, now: float) -> None:
        while self.windows:
            key, window = next(iter(self.windows.items()))
            if now < window.opened + self.limit.window:
                return
            del self.windows[key]


class RateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.time, max_keys: int = DEFAULT_MAX_KEYS,
                 bypass_ips: Iterable[str] = (), points: dict[str, int] | None = None):
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.points = dict(points or {})  # limit name -> the operator's number of points
        self.clock = clock
        self.max_keys = max_keys
        self.bypass_networks = tuple(ipaddress.ip_network(ip, strict=False) for ip in bypass_ips)
        self._counters: dict[str, _Counter] = {}

    def now(self) -> float:
        return self.clock()

    def bypassed(self, ip: str) -> bool:
        """PDS_RATE_LIMIT_BYPASS_IPS: the operator's own addresses or networks."""
        if not self.bypass_networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.bypass_networks)

    def consume(self, limit: RateLimit, key: str, cost: int = 1) -> RateLimitStatus:
        if limit.name in self.points:
            limit = replace(limit, points=self.points[limit.name])
        counter = self._counters.get(limit.name)
        if counter is None:
            counter = self._counters[limit.name] = _Counter(limit, self.max_keys)
        elif counter.limit != limit:
            raise ValueError(f"two different rate limits are named {limit.name!r}")
        return counter.consume(key, self.clock(), cost)

    def tracked_keys(self, limit: RateLimit) -> int:
        counter = self._counters.get(limit.name)
        return len(counter.windows) if counter else 0


def consume_sign_in(ctx: Any, request: "Request", identifier: str) -> RateLimitStatus | None:
    """Count one password attempt outside XRPC (the OAuth form); the first exceeded limit, or None."""
    limiter = ctx.ratelimit
    if limiter is None:
        return None
    ip = client_ip(request, ctx.settings.trust_proxy_headers)
    if limiter.bypassed(ip):
        return None
    for limit in SIGN_IN:
        status = limiter.consume(limit, limit_key(limit, ip=ip, identifier=identifier))
        if status.exceeded:
            return status
    return None


def consume_ip(ctx: Any, request: "Request", limit: RateLimit) -> RateLimitStatus | None:
    """Count one request outside XRPC against a per-IP ``limit``; its status, or None when limits
    are off or the address is exempt."""
    limiter = ctx.ratelimit
    if limiter is None:
        return None
    ip = client_ip(request, ctx.settings.trust_proxy_headers)
    if limiter.bypassed(ip):
        return None
    return limiter.consume(limit, limit_key(limit, ip=ip))


def limit_key(limit: RateLimit, *, ip: str, did: str | None = None, identifier: str | None = None) -> str:
    """The counter key of one request under ``limit``."""
    if limit.key is KeyBy.IP:
        return ip
    if limit.key is KeyBy.IDENTIFIER_IP:
        ident = (identifier or "").lower()  # the login is case-insensitive, so is its counter
        if len(ident) > _MAX_IDENTIFIER:
            ident = "sha256:" + hashlib.sha256(ident.encode()).hexdigest()
        return f"{ident} {ip}"
    if limit.key is KeyBy.DID:
        return did or ip
    return f"{did or ''} {ip}"


def client_ip(request: "Request", trust_proxy_headers: bool) -> str:
    """The address a limit counts: the peer, or the address the trusted proxy in front saw.

    With PDS_TRUST_PROXY_HEADERS uvicorn replaces ``request.client`` with the *leftmost*
    X-Forwarded-For entry, which a client can write itself when the proxy appends to the header
    rather than replacing it; a brute-forcer could then rotate it at will. The rightmost entry is
    the one the proxy next to us added, so limits count that.
    """
    if trust_proxy_headers:
        forwarded = request.headers.getlist("x-forwarded-for")
        if forwarded:
            hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
            if hops:
                return _normal_ip(_strip_port(hops[-1]))
    return _normal_ip(request.client.host if request.client else "")


def _strip_port(hop: str) -> str:
    if hop.startswith("["):  # [v6]:port
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:  # v4:port
        return hop.split(":", 1)[0]
    return hop


def _normal_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip().lower()


def tightest(statuses: Iterable[RateLimitStatus]) -> RateLimitStatus | None:
    """The status to report: a refusal if any, else the one with the fewest requests left."""
    best: RateLimitStatus | None = None
    for status in statuses:
        if status.exceeded:
            return status
        if best is None or status.remaining < best.remaining:
            best = status
    return best


async def start(ctx: "AppContext") -> None:
    settings = ctx.settings
    if settings.rate_limits_enabled:
        ctx.ratelimit = RateLimiter(bypass_ips=settings.rate_limit_bypass_ips, points={
            "repo-write-hour": settings.rate_limit_repo_write_hour,
            "repo-write-day": settings.rate_limit_repo_write_day,
        })
    else:
        ctx.log.warning("PDS_RATE_LIMITS_ENABLED=false: no brute-force protection on logins")
