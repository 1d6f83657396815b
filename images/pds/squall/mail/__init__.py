"""E-mail: the reference PDS's mailed tokens over SMTP, through a durable outbox.

``url`` parses ``PDS_EMAIL_SMTP_URL``; ``transport`` sends one message with aiosmtplib;
``messages`` renders the Jinja2 templates; ``tokens`` issues and uses up the mailed tokens;
``outbox`` is the background sender; ``service`` holds the flows (``ctx.mail``). The XRPC
methods are in ``squall.xrpc.mail`` (and the existing handlers that hand over to ``ctx.mail``).
"""

from __future__ import annotations

from typing import Any


async def start(ctx: Any) -> None:
    from .messages import MessageMaker
    from .outbox import MailSender
    from .service import ACCOUNT_TRANSPORT, MODERATION_TRANSPORT, MailService
    from .transport import SmtpTransport
    from .url import parse_smtp_url

    s = ctx.settings
    transports = {}
    for name, url, sender in ((ACCOUNT_TRANSPORT, s.email_smtp_url, s.email_from_address),
                              (MODERATION_TRANSPORT, s.moderation_email_smtp_url, s.moderation_email_address)):
        if url and sender:  # squall.config already refused a URL without its From address
            transports[name] = (SmtpTransport(parse_smtp_url(url), local_hostname=s.hostname), sender)
    sender = MailSender(ctx.db, transports, ctx.log)
    ctx.mail = MailService(db=ctx.db, hasher=ctx.hasher, maker=MessageMaker(s.hostname), sender=sender,
                           from_address=s.email_from_address, moderation_address=s.moderation_email_address,
                           log=ctx.log)
    if transports:
        ctx.log.info("e-mail on", extra={"smtp": {n: t.url.describe() for n, (t, _) in transports.items()}})
    else:
        ctx.log.info("e-mail off (PDS_EMAIL_SMTP_URL unset): confirmation, reset and sign-in-code mails "
                     "are refused; operator tokens work")
    sender.start()


async def stop(ctx: Any) -> None:
    await ctx.mail.sender.stop()
