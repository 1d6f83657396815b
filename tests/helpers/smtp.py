"""A real SMTP server on loopback for the e-mail tests: aiosmtpd in a thread of the test process,
in the three ways a PDS meets one — plain, STARTTLS, implicit TLS — with certificates from a test
CA made here with ``cryptography`` (the PDS trusts it through ``SSL_CERT_FILE``).

``SmtpCapture`` keeps every accepted message; it can be stopped and started again on the same
port (an outage). ``token_in`` reads the code out of a captured mail as a user would.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .net import free_port

TOKEN_RE = re.compile(r"\b[A-Z2-7]{5}-[A-Z2-7]{5}\b")
Mode = Literal["plain", "starttls", "tls"]


@dataclass
class TestCA:
    ca_path: Path  # PEM of the CA certificate: give it to the PDS as SSL_CERT_FILE
    cert_path: Path  # the server's certificate (localhost, 127.0.0.1) and key
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def make_test_ca(directory: Path) -> TestCA:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Squall test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TestCA(ca_path, cert_path, key_path)


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    authenticated_as: str | None
    tls: bool

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    def text(self) -> str:
        return self.message().get_body(preferencelist=("plain",)).get_content()

    def html(self) -> str:
        return self.message().get_body(preferencelist=("html",)).get_content()


def token_in(mail: Captured) -> str:
    found = TOKEN_RE.findall(mail.text())
    assert len(set(found)) == 1, mail.text()
    return found[0]


def _tls_transport(server) -> bool:
    transport = getattr(server, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Handler:
    def __init__(self, capture: "SmtpCapture") -> None:
        self.capture = capture

    async def handle_DATA(self, server, session, envelope) -> str:
        self.capture._add(Captured(envelope.mail_from, list(envelope.rcpt_tos),
                                   envelope.original_content or envelope.content,
                                   self.capture.user if session.authenticated else None,
                                   session.ssl is not None or _tls_transport(server)))
        return "250 OK"


@dataclass
class SmtpCapture:
    mode: Mode = "plain"
    ca: TestCA | None = None
    user: str | None = None  # when set, AUTH is required with this user and password
    password: str | None = None
    port: int = field(default_factory=free_port)
    messages: list[Captured] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def _add(self, mail: Captured) -> None:
        with self._lock:
            self.messages.append(mail)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False)

    def start(self) -> "SmtpCapture":
        kwargs: dict = {}
        if self.mode == "starttls":
            kwargs.update(tls_context=self.ca.server_context(), require_starttls=True)
        elif self.mode == "tls":
            kwargs.update(ssl_context=self.ca.server_context(), server_hostname="localhost")
        if self.user is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.mode != "plain")
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, scheme: str | None = None, *, userinfo: str | None = None, query: str = "") -> str:
        scheme = scheme or ("smtps" if self.mode == "tls" else "smtp")
        host = "localhost" if self.mode != "plain" else "127.0.0.1"
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{auth}{host}:{self.port}{query}"

    def to(self, recipient: str) -> list[Captured]:
        with self._lock:
            return [m for m in self.messages if recipient.lower() in (r.lower() for r in m.rcpt_tos)]

    def wait_for(self, recipient: str, count: int = 1, timeout: float = 20.0) -> list[Captured]:
        """The mails to ``recipient`` once there are ``count`` of them (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(recipient)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{count} mail(s) to {recipient} not received within {timeout}s; "
                             f"got {len(self.to(recipient))}")

    def __enter__(self) -> "SmtpCapture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
