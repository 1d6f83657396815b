"""Handles for new accounts: https://atproto.com/specs/handle plus this server's own rules.

A new account's handle must be a valid handle under one of the server's handle domains
(``PDS_SERVICE_HANDLE_DOMAINS``), with a first label of 3 to 18 characters that is not a reserved
name. Custom domains come later, through ``identity.updateHandle``, once the DID exists.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..atproto import syntax
from ..atproto.errors import InvalidSyntax
from ..errors import InvalidRequest
from .reserved import is_reserved

MIN_NAME_LENGTH = 3
MAX_NAME_LENGTH = 18


def service_domain_of(handle: str, domains: Sequence[str]) -> str | None:
    """The handle domain (".example.com") the handle sits directly or indirectly under, if any."""
    for domain in domains:
        if handle.endswith(domain) and len(handle) > len(domain):
            return domain
    return None


def normalize_new_handle(raw: str, domains: Sequence[str]) -> str:
    """Return the normalised (lower-case) handle or raise the reference's error for it."""
    handle = syntax.normalize_handle(raw.strip()) if isinstance(raw, str) else raw
    try:
        syntax.ensure_valid_handle(handle)
    except InvalidSyntax as exc:
        raise InvalidRequest(f"Invalid handle: {exc}", "InvalidHandle") from None
    domain = service_domain_of(handle, domains)
    if domain is None:
        # The operator chose the service domains (".localhost", ".lan" included), so the
        # disallowed-TLD rule applies only to other domains, which a signup cannot use anyway.
        if syntax.handle_is_disallowed_tld(handle):
            raise InvalidRequest("Handle TLD is invalid or disallowed", "InvalidHandle")
        raise InvalidRequest(
            f"Not a supported handle domain; use one of: {', '.join(domains)}", "UnsupportedDomain"
        )
    name = handle[: -len(domain)]
    if "." in name:
        raise InvalidRequest("Invalid characters in handle: the name may not contain dots", "InvalidHandle")
    if len(name) < MIN_NAME_LENGTH:
        raise InvalidRequest(f"Handle too short: the name needs at least {MIN_NAME_LENGTH} characters", "InvalidHandle")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"Handle too long: the name may have at most {MAX_NAME_LENGTH} characters", "InvalidHandle")
    if is_reserved(name):
        raise InvalidRequest("Reserved handle", "HandleNotAvailable")
    return handle
