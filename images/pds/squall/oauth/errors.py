"""OAuth error answers (RFC 6749 §5.2, RFC 9449 §7): ``{"error", "error_description"}``."""

from __future__ import annotations


class OAuthError(Exception):
    def __init__(self, error: str, description: str, *, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
