"""XRPC errors: the JSON envelope ``{"error": Name, "message": text}`` with the reference's names.

Services raise the domain errors of ``squall.errors``; this module is the one table that maps each
class to its HTTP status, and re-exports the classes under the names handlers use (``XRPCError`` is
the domain base class). Anything else that escapes a handler becomes a 500
``InternalServerError`` with a generic message (the detail goes to the log, never to the client).
"""

from __future__ import annotations

from ..errors import (
    AuthRequired,
    DomainError,
    Forbidden,
    InternalServerError,
    InvalidRequest,
    MethodNotImplemented,
    NotEnoughResources,
    NotFound,
    PayloadTooLarge,
    RateLimitExceeded,
    UpstreamError,
    UpstreamFailure,
    UpstreamTimeout,
)

XRPCError = DomainError

__all__ = [
    "AuthRequired", "Forbidden", "InternalServerError", "InvalidRequest", "MethodNotImplemented",
    "NotEnoughResources", "NotFound", "PayloadTooLarge", "RangeNotSatisfiable", "RateLimitExceeded",
    "STATUS", "UpstreamError", "UpstreamFailure", "UpstreamTimeout", "XRPCError", "status_of",
]


class RangeNotSatisfiable(DomainError):
    """An HTTP Range header outside the blob (getBlob): a web-layer failure, not a domain one."""
    default_name = "InvalidRange"
    default_text = "Requested range not satisfiable"


# The one map from failure to status. A subclass (a more precise name) takes its base's status.
STATUS: dict[type[DomainError], int] = {
    InvalidRequest: 400,
    AuthRequired: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    RangeNotSatisfiable: 416,
    RateLimitExceeded: 429,
    InternalServerError: 500,
    MethodNotImplemented: 501,
    UpstreamFailure: 502,
    NotEnoughResources: 503,
    UpstreamTimeout: 504,
}


def status_of(err: DomainError) -> int:
    if isinstance(err, UpstreamError):
        return err.upstream_status
    for cls in type(err).__mro__:
        status = STATUS.get(cls)  # type: ignore[arg-type]
        if status is not None:
            return status
    return 500
