"""XRPC errors: the JSON envelope ``{"error": Name, "message": text}`` with the reference's names.

Handlers raise these; the dispatcher turns them into responses. Anything else that escapes a
handler becomes a 500 ``InternalServerError`` with a generic message (the detail goes to the log,
never to the client).
"""

from __future__ import annotations


class XRPCError(Exception):
    status = 500
    default_name = "InternalServerError"

    def __init__(self, message: str | None = None, name: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message()
        self.name = name or self.default_name
        self.headers = headers or {}
        super().__init__(self.message)

    def default_message(self) -> str:
        return "Internal Server Error"

    def body(self) -> dict[str, str]:
        return {"error": self.name, "message": self.message}


class InvalidRequest(XRPCError):
    status = 400
    default_name = "InvalidRequest"

    def default_message(self) -> str:
        return "Invalid request"


class AuthRequired(XRPCError):
    status = 401
    default_name = "AuthenticationRequired"

    def default_message(self) -> str:
        return "Authentication Required"


class Forbidden(XRPCError):
    status = 403
    default_name = "Forbidden"

    def default_message(self) -> str:
        return "Forbidden"


class NotFound(XRPCError):
    status = 404
    default_name = "NotFound"

    def default_message(self) -> str:
        return "Not Found"


class PayloadTooLarge(XRPCError):
    status = 413
    default_name = "PayloadTooLarge"

    def default_message(self) -> str:
        return "Request entity too large"


class RateLimitExceeded(XRPCError):
    status = 429
    default_name = "RateLimitExceeded"

    def default_message(self) -> str:
        return "Rate Limit Exceeded"


class InternalServerError(XRPCError):
    status = 500
    default_name = "InternalServerError"


class MethodNotImplemented(XRPCError):
    status = 501
    default_name = "MethodNotImplemented"

    def default_message(self) -> str:
        return "Method Not Implemented"


class UpstreamFailure(XRPCError):
    status = 502
    default_name = "UpstreamFailure"

    def default_message(self) -> str:
        return "Upstream Failure"


class NotEnoughResources(XRPCError):
    status = 503
    default_name = "NotEnoughResources"

    def default_message(self) -> str:
        return "Not Enough Resources"


class UpstreamTimeout(XRPCError):
    status = 504
    default_name = "UpstreamTimeout"

    def default_message(self) -> str:
        return "Upstream Timeout"
