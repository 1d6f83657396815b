"""The e-mail flows of the reference PDS: each request makes a token and the mail that carries it
in one transaction, and wakes the sender (``squall.mail.outbox``); each completing call checks and
uses up the token in the transaction that makes the change.

* confirm the address:  requestEmailConfirmation → confirmEmail
* reset the password:   requestPasswordReset (same answer for an unknown address) → resetPassword
                        (every refresh token and OAuth grant of the account ends)
* change the address:   requestEmailUpdate (a token only once the address is confirmed) → updateEmail
* delete the account:   requestAccountDelete → deleteAccount (squall.accounts.deletion)
* sign a PLC operation: requestPlcOperationSignature → signPlcOperation (squall.accounts.migration)
* sign in with a code:  updateEmail(emailAuthFactor) turns it on; createSession and the OAuth page
                        then mail a code and want it back (AuthFactorTokenRequired).

Without ``PDS_EMAIL_SMTP_URL`` every flow that needs a mail answers :data:`NO_SMTP`; the
operator-token commands (``squall account delete-token`` / ``plc-token``) work either way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..accounts import operator_tokens, password_change
from ..accounts.signup import is_valid_email
from ..store.accounts import Account, get_by_did, get_by_did_sync, get_by_email
from ..errors import AuthRequired, InvalidRequest
from ..store import accounts as accounts_store
from ..store import mail as mail_store
from ..store.sequencer import now_iso
from . import tokens
from .messages import MessageMaker
from .outbox import MailSender

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from ..store.db import Database

NO_SMTP = ("This server cannot send e-mail: its operator has not set PDS_EMAIL_SMTP_URL (and "
           "PDS_EMAIL_FROM_ADDRESS). Ask them to, or to act for you with the operator commands.")
NO_MODERATION_SMTP = ("Moderation e-mail is not configured: set PDS_MODERATION_EMAIL_SMTP_URL and "
                      "PDS_MODERATION_EMAIL_ADDRESS.")
EMAIL_NOT_SUPPORTED = "This email address is not supported, please use a different email."
ACCOUNT_TRANSPORT = "account"
MODERATION_TRANSPORT = "moderation"


class AuthFactorTokenRequired(AuthRequired):
    def __init__(self) -> None:
        super().__init__("A sign in code has been sent to your email address", "AuthFactorTokenRequired")


@dataclass
class MailService:
    db: "Database"
    hasher: "PasswordHasher"
    maker: MessageMaker
    sender: MailSender
    from_address: str | None
    moderation_address: str | None
    log: logging.Logger

    @property
    def enabled(self) -> bool:
        return ACCOUNT_TRANSPORT in self.sender.transports

    @property
    def moderation_enabled(self) -> bool:
        return MODERATION_TRANSPORT in self.sender.transports

    def require(self) -> None:
        if not self.enabled:
            raise InvalidRequest(NO_SMTP)

    # -- the common step: a token and its mail, one transaction -----------------------------------

    async def _send_token(self, account: Account, purpose: str, kind: str, *,
                          recipient: str | None = None, extra: dict[str, Any] | None = None) -> None:
        self.require()
        recipient = recipient or account.email
        if not recipient:
            raise InvalidRequest("account does not have an email address")
        token = tokens.generate()
        rendered = self.maker.render(kind, sender=self.from_address, recipient=recipient, values={
            "handle": account.handle or account.did, "token": token, "minutes": tokens.TOKEN_TTL // 60,
            "email": recipient, **(extra or {})})

        def run(conn) -> None:
            if get_by_did_sync(conn, account.did) is None:
                raise InvalidRequest("Account not found", "AccountNotFound")
            now = int(time.time())
            tokens.issue(conn, account.did, purpose, token, now)
            mail_store.enqueue(conn, transport=ACCOUNT_TRANSPORT, did=account.did, recipient=recipient,
                               subject=rendered.subject, message=rendered.data, now=now)

        await self.db.write(run)
        self.sender.notify()
        self.log.info("mail queued", extra={"did": account.did, "kind": kind})

    async def _account(self, did: str) -> Account:
        account = await get_by_did(self.db, did)
        if account is None:
            raise InvalidRequest("Account not found", "AccountNotFound")
        if account.is_takendown:
            raise InvalidRequest("Account has been taken down", "AccountTakedown")
        return account

    # -- confirm the address -------------------------------------------------------------------------

    async def request_email_confirmation(self, did: str) -> None:
        account = await self._account(did)
        await self._send_token(account, tokens.CONFIRM_EMAIL, "confirm_email")

    async def confirm_email(self, did: str, email: str, token: str) -> None:
        account = await self._account(did)
        if not account.email or account.email.lower() != email.strip().lower():
            raise InvalidRequest("invalid email", "InvalidEmail")

        def run(conn) -> None:
            tokens.consume(conn, did, tokens.CONFIRM_EMAIL, token)
            if not accounts_store.mail_confirm_email(conn, did, email.strip(), now_iso()):
                raise InvalidRequest("invalid email", "InvalidEmail")

        await self.db.write(run)

    # -- reset the password ----------------------------------------------------------------------------

    async def request_password_reset(self, email: str) -> None:
        """The same answer whether or not an account has this address (no enumeration)."""
        self.require()
        account = await get_by_email(self.db, email.strip())
        if account is None or account.is_takendown:
            self.log.info("password reset asked for an unknown address")
            return
        await self._send_token(account, tokens.RESET_PASSWORD, "reset_password")

    async def reset_password(self, token: str, password: str) -> str:
        """Set the password named by an e-mailed token; the account's DID (its access tokens are cut
        off: the caller tells the verifier)."""
        digest = await password_change.new_password_hash(self.hasher, password)

        def run(conn) -> str:
            did = tokens.consume_any(conn, tokens.RESET_PASSWORD, token)
            # As the reference: every session ends with the old password (OAuth grants too).
            password_change.set_password(conn, did, digest)
            return did

        did = await self.db.write(run)
        self.log.info("password reset by e-mailed token", extra={"did": did})
        return did

    # -- change the address ----------------------------------------------------------------------------

    async def request_email_update(self, did: str) -> bool:
        """Whether updateEmail will want a token (then one is mailed to the current address)."""
        account = await self._account(did)
        if account.email_confirmed_at is None:
            return False
        await self._send_token(account, tokens.UPDATE_EMAIL, "update_email")
        return True

    async def update_email(self, did: str, email: str, token: str | None, auth_factor: bool | None) -> None:
        account = await self._account(did)
        email = email.strip()
        if not is_valid_email(email):
            raise InvalidRequest(EMAIL_NOT_SUPPORTED)
        confirmed = account.email_confirmed_at is not None
        if confirmed and not token:
            raise InvalidRequest("confirmation token required", "TokenRequired")
        same = (account.email or "").lower() == email.lower()
        if auth_factor:
            self.require()  # the codes go by mail
            if not (confirmed and same):
                raise InvalidRequest("Confirm your e-mail address before turning on sign-in codes by e-mail")

        def run(conn) -> None:
            if confirmed:
                tokens.consume(conn, did, tokens.UPDATE_EMAIL, token)
            if not same:
                holder = accounts_store.mail_email_holder(conn, email)
                if holder is not None and holder != did:
                    raise InvalidRequest("This email address is already taken")
            accounts_store.mail_set_email(conn, did, email)
            if auth_factor is not None:
                mail_store.set_auth_factor(conn, did, auth_factor, now_iso())

        await self.db.write(run)

    # -- tokens for squall.accounts.deletion and .migration ---------------------------------------

    async def request_account_delete(self, did: str) -> None:
        account = await get_by_did(self.db, did)
        if account is None:
            raise InvalidRequest("account not found", "AccountNotFound")
        await self._send_token(account, operator_tokens.PURPOSE_DELETE, "delete_account")

    async def request_plc_operation_signature(self, did: str) -> None:
        account = await self._account(did)
        await self._send_token(account, operator_tokens.PURPOSE_PLC, "plc_operation")

    # -- sign-in codes -----------------------------------------------------------------------------------

    async def auth_factor(self, did: str) -> bool:
        return await mail_store.auth_factor(self.db, did)

    async def check_sign_in_did(self, did: str, token: str | None) -> None:
        """:meth:`check_sign_in` for the OAuth page, which knows the DID."""
        account = await get_by_did(self.db, did)
        if account is not None:
            await self.check_sign_in(account, token)

    async def check_sign_in(self, account: Account, token: str | None) -> None:
        """For a sign-in with the account password: nothing unless the account wants a code; then
        mail one (AuthFactorTokenRequired) or use up the one given (InvalidToken / ExpiredToken)."""
        if account.is_takendown or not await self.auth_factor(account.did):
            return
        if not token:
            await self._send_token(account, tokens.SIGN_IN, "sign_in")
            raise AuthFactorTokenRequired()
        if len(token) > tokens.MAX_TOKEN_LENGTH:
            raise InvalidRequest("Token is invalid", "InvalidToken")
        await self.db.write(tokens.consume, account.did, tokens.SIGN_IN, token)

    # -- moderation mail (com.atproto.admin.sendEmail) --------------------------------------------

    async def send_moderation(self, did: str, subject: str | None, content: str) -> None:
        if not self.moderation_enabled:
            raise InvalidRequest(NO_MODERATION_SMTP)
        account = await get_by_did(self.db, did)
        if account is None or not account.email:
            raise InvalidRequest("Recipient not found", "AccountNotFound")
        rendered = self.maker.render("moderation", sender=self.moderation_address, recipient=account.email,
                                     subject=subject or "Message via your PDS",
                                     values={"handle": account.handle or did, "content": content})

        def run(conn) -> None:
            mail_store.enqueue(conn, transport=MODERATION_TRANSPORT, did=did, recipient=account.email,
                               subject=rendered.subject, message=rendered.data, now=int(time.time()))

        await self.db.write(run)
        self.sender.notify()

    # -- the operator's view ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        s = await mail_store.summary(self.db)
        oldest = s["oldest_queued_at"]
        return {
            "configured": self.enabled,
            "moderationConfigured": self.moderation_enabled,
            "smtp": {name: t.url.describe() for name, (t, _) in self.sender.transports.items()},
            "queued": s["queued"], "sent": s["sent"], "failed": s["failed"],
            "oldestQueuedAgeSeconds": None if oldest is None else max(0, int(time.time()) - oldest),
            "lastError": s["last_error"], "lastErrorAt": s["last_error_at"],
        }
