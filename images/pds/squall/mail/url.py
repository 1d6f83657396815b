"""``PDS_EMAIL_SMTP_URL``: the reference's SMTP URL, parsed into what aiosmtplib needs.

Forms (as the reference distribution documents them, after nodemailer's URLs):

* ``smtps://user:password@host[:port]`` — TLS from the first byte ("implicit TLS"), port 465 by default;
* ``smtp://user:password@host[:port]`` — plain connection upgraded with STARTTLS when the server
  offers it, port 587 by default; ``?requireTLS=true`` refuses to send unless STARTTLS succeeds,
  ``?ignoreTLS=true`` never upgrades (a relay on the same host or LAN only).

User name and password are URL-encoded (``%40`` for ``@``). Certificates are verified against the
system's trust store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` extend it). Pure parsing: importing this
module loads no SMTP library, so ``squall.config`` can check the setting at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORTS = {"smtps": 465, "smtp": 587}
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class SmtpUrlError(ValueError):
    """The URL cannot be used; the message never repeats the URL (it may hold a password)."""


@dataclass(frozen=True)
class SmtpUrl:
    host: str
    port: int
    implicit_tls: bool  # smtps://
    starttls: bool | None  # True: required; None: when offered; False: never
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Loggable: no credentials."""
        mode = "TLS" if self.implicit_tls else {True: "STARTTLS required", None: "STARTTLS when offered",
                                                False: "no TLS"}[self.starttls]
        return f"{self.host}:{self.port} ({mode}{', authenticated' if self.username else ''})"


def parse_smtp_url(url: str) -> SmtpUrl:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise SmtpUrlError("not a valid URL (expected smtp://user:password@host:port or smtps://…)") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise SmtpUrlError("must start with smtp:// (STARTTLS) or smtps:// (implicit TLS)")
    if not host:
        raise SmtpUrlError("has no host name")
    if parts.path not in ("", "/") or parts.fragment:
        raise SmtpUrlError("must not have a path or fragment (only ?requireTLS=true or ?ignoreTLS=true)")
    options: dict[str, bool] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in ("requireTLS", "ignoreTLS") or value.lower() not in _BOOL:
            raise SmtpUrlError(f"unknown option {name!r} (only requireTLS=true|false, ignoreTLS=true|false)")
        options[name] = _BOOL[value.lower()]
    implicit = scheme == "smtps"
    require, ignore = options.get("requireTLS", False), options.get("ignoreTLS", False)
    if require and ignore:
        raise SmtpUrlError("requireTLS and ignoreTLS contradict each other")
    if implicit and (require or ignore):
        raise SmtpUrlError("smtps:// is TLS from the start; requireTLS/ignoreTLS apply to smtp:// only")
    starttls = False if implicit or ignore else (True if require else None)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise SmtpUrlError("has a password but no user name")
    return SmtpUrl(host=host, port=port or DEFAULT_PORTS[scheme], implicit_tls=implicit, starttls=starttls,
                   username=username, password=password)
