"""The outbox sender: one background task that delivers queued mails, with retry and backoff.

A request only writes the mail to ``mail_outbox`` (in the transaction that makes its token) and
wakes this task, so an SMTP outage delays mail but never blocks, fails or loses the request. A mail
is tried at once, then after 5 s, 10 s, 20 s … (doubling, at most an hour between tries); it is
given up ("failed", visible in the admin status) when its recipient is refused for good or it is
still undelivered a day after it was queued. It is marked sent only once the SMTP server has
accepted it, and there is one sender per server, so a mail is not sent twice (short of a crash
between the server's acceptance and that mark, when the same ``Message-ID`` goes again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from ..store import mail as mail_store
from .messages import envelope_address
from .transport import SendFailed, SmtpTransport

if TYPE_CHECKING:
    from ..store.db import Database

FIRST_RETRY = 5  # seconds
MAX_RETRY = 3600
GIVE_UP_AFTER = 24 * 3600
BATCH = 20  # mails per pass; the loop comes straight back while more are due
IDLE_WAKE = 60  # seconds between passes when nothing is due (also runs the sweep)
KEEP_SENT = 7 * 24 * 3600
KEEP_FAILED = 30 * 24 * 3600


def retry_delay(attempts: int) -> int:
    """Seconds before the next try, after ``attempts`` failed ones (1, 2, …)."""
    return min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempts - 1, 20))


class MailSender:
    def __init__(self, db: "Database", transports: dict[str, tuple[SmtpTransport, str]],
                 log: logging.Logger) -> None:
        self.db = db
        self.transports = transports  # name → (transport, From header)
        self.log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.transports and self._task is None:
            self._task = asyncio.create_task(self._run(), name="squall-mail-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def notify(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        last_sweep = 0.0
        while True:
            more = False
            try:
                more = await self.deliver_due()
                if time.time() - last_sweep > 3600:
                    now = int(time.time())
                    await self.db.write(partial(mail_store.sweep, sent_before=now - KEEP_SENT,
                                                failed_before=now - KEEP_FAILED, now=now))
                    last_sweep = time.time()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("mail sender pass failed; retrying in %s s", FIRST_RETRY)
                await asyncio.sleep(FIRST_RETRY)
            if more:
                continue
            self._wake.clear()
            wait = IDLE_WAKE
            next_at = await mail_store.next_attempt_at(self.db, tuple(self.transports))
            if next_at is not None:
                wait = max(0.0, min(IDLE_WAKE, next_at - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def deliver_due(self) -> bool:
        """One pass over the due mails; True when a full batch was due (so more may be)."""
        # A mail of a transport that is not configured (any more) waits for it to come back.
        rows = await mail_store.due(self.db, tuple(self.transports), int(time.time()), BATCH)
        for row in rows:
            transport, from_header = self.transports[row["transport"]]
            mail_id = row["id"]
            try:
                await transport.send(row["message"], envelope_address(from_header), row["recipient"])
            except SendFailed as exc:
                now = int(time.time())
                attempts = row["attempts"] + 1
                if exc.permanent or now - row["created_at"] >= GIVE_UP_AFTER:
                    await self.db.write(mail_store.mark_failed, mail_id, str(exc), now)
                    self.log.error("mail given up", extra={"mail_id": mail_id, "attempts": attempts,
                                                           "error": str(exc)})
                else:
                    delay = retry_delay(attempts)
                    await self.db.write(mail_store.mark_retry, mail_id, now + delay, str(exc), now)
                    self.log.warning("mail not delivered; will retry", extra={
                        "mail_id": mail_id, "attempts": attempts, "retry_in_s": delay, "error": str(exc),
                        "smtp": transport.url.describe()})
                continue
            await self.db.write(mail_store.mark_sent, mail_id, int(time.time()))
            self.log.info("mail sent", extra={"mail_id": mail_id, "attempts": row["attempts"] + 1})
        return len(rows) == BATCH
