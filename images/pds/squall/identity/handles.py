"""Which handles an account on this PDS may take (https://atproto.com/specs/handle).

Beyond the syntax: a handle under one of the service's own domains (``PDS_SERVICE_HANDLE_DOMAINS``)
must be a single label of 3 to 18 characters in front of the domain and not a reserved name (the
same rules as signup, ``squall.accounts.handles``). Any other domain is the user's own: its TLD
must not be one atproto disallows (``.local``, ``.onion``, …) and it must already resolve to their
DID (checked by the caller, which can resolve).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..accounts.handles import MAX_NAME_LENGTH, MIN_NAME_LENGTH, service_domain_of
from ..accounts.reserved import is_reserved
from ..atproto import syntax
from ..atproto.errors import InvalidSyntax


class HandleError(ValueError):
    """A handle that may not be used; ``name`` is the XRPC error name to report."""

    def __init__(self, message: str, name: str = "InvalidHandle"):
        self.name = name
        super().__init__(message)


@dataclass(frozen=True)
class CheckedHandle:
    handle: str  # normalized (lower-case)
    service_domain: str | None  # the matching service domain (".example.com"), or None if external


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
    if len(front) < MIN_NAME_LENGTH:
        raise HandleError("Handle too short")
    if len(front) > MAX_NAME_LENGTH:
        raise HandleError("Handle too long")
    if not allow_reserved and is_reserved(front):
        raise HandleError("Reserved handle", "HandleNotAvailable")
    return CheckedHandle(handle, domain)
