"""Which handles an account on this PDS may take (https://atproto.com/specs/handle).

Beyond the syntax: an external handle's TLD must not be one atproto disallows (``.local``, ``.onion``, …); a handle
under one of the service's own domains (``PDS_SERVICE_HANDLE_DOMAINS``) must be a single label of
3 to 18 characters in front of the domain and not a reserved name; any other domain is the user's
own and must already resolve to their DID (checked by the caller, which can resolve).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..atproto import syntax
from ..atproto.errors import InvalidSyntax

MIN_SERVICE_LABEL = 3
MAX_SERVICE_LABEL = 18

# Names under the service domain that would impersonate the service or its infrastructure.
RESERVED_LABELS = frozenset({
    "about", "abuse", "account", "accounts", "admin", "administrator", "api", "app", "atproto", "auth",
    "blog", "bsky", "bluesky", "cdn", "contact", "dev", "did", "docs", "email", "feed", "feeds", "ftp",
    "help", "helpdesk", "home", "host", "hostmaster", "imap", "info", "invite", "legal", "login", "mail",
    "mod", "moderation", "news", "noreply", "no-reply", "oauth", "official", "owner", "pds", "plc",
    "policy", "pop", "postmaster", "privacy", "relay", "root", "security", "server", "settings", "signup",
    "smtp", "staff", "status", "support", "sysadmin", "system", "team", "terms", "test", "tls", "webmaster",
    "www", "xrpc",
})


class HandleError(ValueError):
    """A handle that may not be used; ``name`` is the XRPC error name to report."""

    def __init__(self, message: str, name: str = "InvalidHandle"):
        self.name = name
        super().__init__(message)


@dataclass(frozen=True)
class CheckedHandle:
    handle: str  # normalized (lower-case)
    service_domain: str | None  # the matching service domain (".example.com"), or None if external


def service_domain_of(handle: str, domains: list[str]) -> str | None:
    for domain in domains:
        if handle.endswith(domain):
            return domain
    return None


def check_handle(value: object, service_domains: list[str], *, allow_reserved: bool = False) -> CheckedHandle:
    """Normalize and check a handle an account wants. Raises HandleError."""
    if not isinstance(value, str):
        raise HandleError("Handle must be a string")
    handle = syntax.normalize_handle(value.strip())
    try:
        syntax.ensure_valid_handle(handle)
    except InvalidSyntax as exc:
        raise HandleError(str(exc)) from None
    domain = service_domain_of(handle, service_domains)
    if domain is None:
        if syntax.handle_is_disallowed_tld(handle):
            raise HandleError("Handle TLD is invalid or disallowed")
        return CheckedHandle(handle, None)
    # Under a service domain the operator chose the TLD (".localhost" or ".lan" on a LAN PDS).
    front = handle[: -len(domain)]
    if "." in front:
        raise HandleError(f"Handle under {domain[1:]} must be a single name, without dots")
    if len(front) < MIN_SERVICE_LABEL:
        raise HandleError("Handle too short")
    if len(front) > MAX_SERVICE_LABEL:
        raise HandleError("Handle too long")
    if not allow_reserved and front in RESERVED_LABELS:
        raise HandleError("Reserved handle", "HandleNotAvailable")
    return CheckedHandle(handle, domain)
