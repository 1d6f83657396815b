"""Delivery of one message over SMTP with aiosmtplib (no hand-written SMTP).

A connection per message: a PDS sends a handful of mails an hour, and a fresh connection never
trips over a server that dropped an idle one. Failures are classified for the outbox: a refusal of
the recipient with a 5xx code is permanent (retrying cannot help); everything else — connection
refused, timeouts, 4xx answers, TLS or authentication trouble the operator may fix — is retried.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from .url import SmtpUrl

TIMEOUT = 20.0  # seconds, per SMTP command and for the connection


class SendFailed(Exception):
    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class SmtpTransport:
    url: SmtpUrl
    local_hostname: str | None = None  # the EHLO name: the PDS's hostname
    _tls: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        # Made on first use: the system trust store, plus SSL_CERT_FILE / SSL_CERT_DIR when set.
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def send(self, message: bytes, sender: str, recipient: str) -> None:
        import aiosmtplib

        url = self.url
        try:
            await aiosmtplib.send(
                message, sender=sender, recipients=[recipient], hostname=url.host, port=url.port,
                username=url.username, password=url.password, use_tls=url.implicit_tls,
                start_tls=url.starttls, tls_context=self.tls_context(),
                local_hostname=self.local_hostname, timeout=TIMEOUT)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [err.code for err in exc.recipients]
            text = "; ".join(f"{err.code} {err.message}" for err in exc.recipients)
            raise SendFailed(f"recipient refused: {text}"[:500], permanent=all(c >= 500 for c in codes)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SendFailed(f"SMTP {exc.code}: {exc.message}"[:500], permanent=False) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__, permanent=False) from None
