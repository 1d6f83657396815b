"""The mails themselves: Jinja2 templates (a text part and an HTML part) made into RFC 5322 messages.

What a spam filter expects is there — ``From``, ``To``, ``Date``, a ``Message-ID`` on the PDS's own
host name, ``Auto-Submitted: auto-generated`` (RFC 3834), a text part with an HTML alternative — and
nothing that tracks: no remote images, no links with identifiers, no pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

SUBJECTS = {
    "confirm_email": "Confirm your e-mail address",
    "reset_password": "Reset your password",
    "update_email": "Confirm your e-mail change",
    "delete_account": "Confirm the deletion of your account",
    "plc_operation": "Confirm a change of your identity",
    "sign_in": "Your sign-in code",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    data: bytes  # the whole message, CRLF line ends, ready for SMTP DATA


class MessageMaker:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._env: Any = None

    def _templates(self) -> Any:
        if self._env is None:  # Jinja2 is loaded with the first mail, not at start
            from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

            self._env = Environment(loader=PackageLoader("squall.mail", "templates"), undefined=StrictUndefined,
                                    autoescape=select_autoescape(enabled_extensions=("html",),
                                                                 default_for_string=False),
                                    keep_trailing_newline=True)
        return self._env

    def render(self, kind: str, *, sender: str, recipient: str, values: dict[str, Any],
               subject: str | None = None) -> Rendered:
        subject = subject or SUBJECTS[kind]
        env = self._templates()
        context = {"hostname": self.hostname, "subject": subject, **values}
        text = env.get_template(f"{kind}.txt").render(context)
        html = env.get_template(f"{kind}.html").render(context)
        msg = EmailMessage(policy=SMTP)
        msg["From"] = sender
        msg["To"] = recipient
        msg["Subject"] = f"{subject} — {self.hostname}" if kind != "moderation" else subject
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        msg["Message-ID"] = make_msgid(domain=self.hostname)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return Rendered(subject=str(msg["Subject"]), data=msg.as_bytes(policy=SMTP))


def envelope_address(header_value: str) -> str:
    """``Name <user@host>`` → ``user@host`` (the SMTP MAIL FROM)."""
    return parseaddr(header_value)[1]
