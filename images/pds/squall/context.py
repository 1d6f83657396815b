"""AppContext: everything a handler may use, built once from the settings (no module globals).

Feature packages attach their service objects here at start (see ``squall.app``); handlers reach
them through ``XrpcRequest.ctx``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher

from .auth.tokens import TokenIssuer
from .auth.verifier import AuthVerifier
from .config import Settings
from .secrets import Secrets
from .store.db import Database
from .xrpc.registry import Registry


@dataclass
class AppContext:
    settings: Settings
    secrets: Secrets
    db: Database
    registry: Registry
    issuer: TokenIssuer
    verifier: AuthVerifier
    hasher: PasswordHasher
    log: logging.Logger
    started_at: float = field(default_factory=time.time)
    # Feature services, attached during start-up by squall.app (typed loosely to keep this module
    # free of imports from every feature package).
    services: dict[str, Any] = field(default_factory=dict)

    def service(self, name: str) -> Any:
        try:
            return self.services[name]
        except KeyError:
            raise RuntimeError(f"service {name!r} is not configured") from None
