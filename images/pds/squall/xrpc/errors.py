"""XRPC errors: the JSON envelope ``{"error": Name, "message": text}`` with the reference's names.

Handlers raise these; the dispatcher turns them into responses. Anything else that escapes a
handler becomes a 500 ``InternalServerError`` with a generic message (the detail goes to the log,
never to the client).
"""

from __future__ import annotations


class XRPCError(Exception):
    status = 500
    default_name = "InternalServerError"
    default_text = "Internal Server Error"

    def __init__(self, message: str | None = None, name: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message()
        self.name = name or self.default_name
        self.headers = headers or {}
        super().__init__(self.message)

    def default_message(self) -> str:
        return self.default_text

    def body(self) -> dict[str, str]:
        return {"error": self.name, "message": self.message}


class InvalidRequest(XRPCError):
    status = 400
    default_name = "InvalidRequest"
    default_text = "Invalid request"


class AuthRequired(XRPCError):
    status = 401
    default_name = "AuthenticationRequired"
    default_text = "Authentication Required"


class Forbidden(XRPCError):
    status = 403
    default_name = "Forbidden"
    default_text = "Forbidden"


class NotFound(XRPCError):
    status = 404
    default_name = "NotFound"
    default_text = "Not Found"


class PayloadTooLarge(XRPCError):
    status = 413
    default_name = "PayloadTooLarge"
    default_text = "Request entity too large"


class RateLimitExceeded(XRPCError):
    status = 429
    default_name = "RateLimitExceeded"
    default_text = "Rate Limit Exceeded"


class InternalServerError(XRPCError):
    status = 500
    default_name = "InternalServerError"


class MethodNotImplemented(XRPCError):
    status = 501
    default_name = "MethodNotImplemented"
    default_text = "Method Not Implemented"


class UpstreamFailure(XRPCError):
    status = 502
    default_name = "UpstreamFailure"
    default_text = "Upstream Failure"


class NotEnoughResources(XRPCError):
    status = 503
    default_name = "NotEnoughResources"
    default_text = "Not Enough Resources"


class UpstreamTimeout(XRPCError):
    status = 504
    default_name = "UpstreamTimeout"
    default_text = "Upstream Timeout"
