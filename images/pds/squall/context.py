"""AppContext: everything a handler may use, built once from the settings (no module globals).

The core parts (settings, secrets, database, token issuer, auth verifier, TID clock) are made by
``squall.app`` before any feature starts. Each feature module's ``start`` then builds its service
and sets it on its own typed field, in the order ``squall.app.feature_modules`` lists them; a field
is unset until then. Handlers reach the context through ``XrpcRequest.ctx``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from argon2 import PasswordHasher

from .atproto.tid import TidClock
from .auth.tokens import TokenIssuer
from .auth.verifier import AuthVerifier
from .config import Settings
from .secrets import Secrets
from .store.db import Database

if TYPE_CHECKING:  # the service types, for annotations only: features import the context, not the reverse
    from .accounts.sessions import LoginChecker
    from .admin_web import AdminWeb
    from .metrics import Metrics
    from .blobs.service import BlobService
    from .firehose.service import Firehose
    from .identity.service import IdentityService
    from .mail.service import MailService
    from .oauth.provider import OAuthProvider
    from .proxy.service import ProxyService
    from .ratelimit import RateLimiter
    from .relays.service import RelayMonitor
    from .repo.service import RepoService
    from .xrpc.registry import Registry


@dataclass
class AppContext:
    settings: Settings
    secrets: Secrets
    db: Database
    registry: "Registry"
    issuer: TokenIssuer
    verifier: AuthVerifier
    hasher: PasswordHasher
    log: logging.Logger
    metrics: "Metrics"  # squall.metrics; its methods do nothing when PDS_METRICS_ENABLED=false
    # The one TID clock of the app: revs and record keys never go backwards, even across restarts
    # with a slow clock (squall.app moves it past the newest stored rev before any write).
    tid_clock: TidClock = field(default_factory=TidClock)
    started_at: float = field(default_factory=time.time)

    # Feature services, in start order (see squall.app.feature_modules).
    ratelimit: "RateLimiter | None" = None  # None when PDS_RATE_LIMITS_ENABLED=false
    firehose: "Firehose" = field(init=False)
    identity: "IdentityService" = field(init=False)
    mail: "MailService" = field(init=False)
    blobs: "BlobService" = field(init=False)
    login: "LoginChecker" = field(init=False)
    repo: "RepoService" = field(init=False)
    proxy: "ProxyService" = field(init=False)
    oauth: "OAuthProvider" = field(init=False)
    relays: "RelayMonitor | None" = None  # set by squall.relays (the relay monitor)
    admin_web: "AdminWeb" = field(init=False)
