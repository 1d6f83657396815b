"""XRPC errors: the JSON envelope ``{"error": Name, "message": text}`` with the reference's names.

Services raise the domain errors of ``squall.errors``, whose one status table is XRPC's own; this
module re-exports them under the names handlers use (``XRPCError`` is the domain base class) and
adds the one failure that only HTTP knows (a Range outside a blob). Anything else that escapes a
handler becomes a 500 ``InternalServerError`` with a generic message (the detail goes to the log,
never to the client).
"""

from __future__ import annotations

from ..errors import (
    XRPC_STATUS,
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
    "UpstreamError", "UpstreamFailure", "UpstreamTimeout", "XRPCError", "XRPC_STATUS",
]


class RangeNotSatisfiable(DomainError):
    """An HTTP Range header outside the blob (getBlob): a web-layer failure, not a domain one."""
    default_name = "InvalidRange"
    default_text = "Requested range not satisfiable"
    status = 416  # type: ignore[assignment]  # HTTP's, not XRPC's
