"""Domain errors: what a service raises when a request cannot be served, named as atproto names it.

These live below the web layer so that accounts/, repo/, identity/, blobs/, firehose/, auth/,
store/, oauth/ and proxy/ never import ``squall.xrpc``. Each class carries the spec's (or the
reference PDS's) error *name* and a human message. The XRPC spec gives each kind of failure its
status; that is protocol data, kept here in one table (``XRPC_STATUS``) that ``status`` reads, and
the XRPC layer renders ``{"error": name, "message": text}`` with it.

A service may subclass one of these to give a more precise name (``InvalidSwap`` is an
``InvalidRequest``); the status then follows the base class.
"""

from __future__ import annotations

from types import MappingProxyType


class DomainError(Exception):
    default_name = "InternalServerError"
    default_text = "Internal Server Error"

    def __init__(self, message: str | None = None, name: str | None = None, *,
                 headers: dict[str, str] | None = None):
        self.message = message or self.default_text
        self.name = name or self.default_name
        # Response headers the failure implies (rate-limit counters, WWW-Authenticate, …).
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status XRPC gives this kind of failure (a subclass takes its base's)."""
        for cls in type(self).__mro__:
            status = XRPC_STATUS.get(cls)
            if status is not None:
                return status
        return 500

    def body(self) -> dict[str, str]:
        return {"error": self.name, "message": self.message}


class InvalidRequest(DomainError):
    """The input is malformed or names something that cannot be acted on."""
    default_name = "InvalidRequest"
    default_text = "Invalid request"


class AuthRequired(DomainError):
    """No credential, or one that is not (or no longer) valid."""
    default_name = "AuthenticationRequired"
    default_text = "Authentication Required"


class Forbidden(DomainError):
    """A valid credential that does not allow this."""
    default_name = "Forbidden"
    default_text = "Forbidden"


class NotFound(DomainError):
    default_name = "NotFound"
    default_text = "Not Found"


class PayloadTooLarge(DomainError):
    default_name = "PayloadTooLarge"
    default_text = "Request entity too large"


class RateLimitExceeded(DomainError):
    default_name = "RateLimitExceeded"
    default_text = "Rate Limit Exceeded"


class InternalServerError(DomainError):
    default_name = "InternalServerError"


class MethodNotImplemented(DomainError):
    default_name = "MethodNotImplemented"
    default_text = "Method Not Implemented"


class UpstreamFailure(DomainError):
    """A service this PDS depends on (PLC directory, AppView, …) failed or answered nonsense."""
    default_name = "UpstreamFailure"
    default_text = "Upstream Failure"


class NotEnoughResources(DomainError):
    default_name = "NotEnoughResources"
    default_text = "Not Enough Resources"


class UpstreamTimeout(DomainError):
    default_name = "UpstreamTimeout"
    default_text = "Upstream Timeout"


class UpstreamError(DomainError):
    """An error answer of a proxied upstream, relayed to the caller with the upstream's own status
    and envelope (the only error whose status is data rather than a property of its class)."""

    def __init__(self, status: int, name: str, message: str, headers: dict[str, str]):
        super().__init__(message, name, headers=headers)
        self.upstream_status = status

    @property
    def status(self) -> int:
        return self.upstream_status


# The one map from kind of failure to status (https://atproto.com/specs/xrpc, error responses).
XRPC_STATUS: "MappingProxyType[type[DomainError], int]" = MappingProxyType({
    InvalidRequest: 400,
    AuthRequired: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    RateLimitExceeded: 429,
    InternalServerError: 500,
    MethodNotImplemented: 501,
    UpstreamFailure: 502,
    NotEnoughResources: 503,
    UpstreamTimeout: 504,
})
