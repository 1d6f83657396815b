"""Account creation (com.atproto.server.createAccount) on this PDS.

Checks come first and cost nothing to undo: handle rules, email, password, invite code,
availability. Then the DID is made (did:web is derived from the handle; did:plc is published to
the directory, and an op the directory could not be reached for is kept for a later retry). Last,
ONE transaction stores the account, the invite use, the first commit with its empty MST, the
session's refresh token and the firehose events ``#identity``, ``#account``, ``#sync`` — so a
failure anywhere leaves nothing behind.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..atproto.crypto import PublicKey, Secp256k1Keypair
from ..auth.passwords import hash_password
from ..store.sequencer import now_iso
from ..errors import InvalidRequest, UpstreamFailure
from . import events, invites
from .handles import normalize_new_handle
from .repo_init import InitialRepo, build_initial_repo, store_initial_repo
from .sessions import Session, mint, store_refresh_token
from ..store import accounts as accounts_store
from ..store.accounts import get_by_email, get_by_handle, insert_account

if TYPE_CHECKING:
    from ..context import AppContext

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
MAX_EMAIL_LENGTH = 254
# Deliberately plain: one @, no spaces, a dotted domain. Deliverability is the mailer's problem.
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True)
class SignupInput:
    handle: str
    email: str
    password: str
    invite_code: str | None = None

    def __repr__(self) -> str:
        return f"SignupInput(handle={self.handle!r})"


@dataclass(frozen=True)
class NewAccount:
    did: str
    handle: str
    session: Session
    did_doc: dict[str, Any]


def is_valid_email(email: str) -> bool:
    return len(email) <= MAX_EMAIL_LENGTH and bool(_EMAIL_RE.match(email))


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"Password too short: use at least {MIN_PASSWORD_LENGTH} characters", "InvalidPassword")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"Password too long. Maximum length is {MAX_PASSWORD_LENGTH} characters.", "InvalidPassword")


def did_document(ctx: "AppContext", did: str, handle: str, signing_key: PublicKey) -> dict[str, Any]:
    return ctx.identity.did_document(did, handle, signing_key)


async def _make_did(ctx: "AppContext", handle: str, signing_key: PublicKey) -> tuple[str, bytes | None]:
    """(did, the signed PLC operation still to publish as DAG-CBOR, or None)."""
    from ..identity import IdentityRejected, IdentityUnpublished

    identity = ctx.identity
    if identity is None:
        raise UpstreamFailure("The identity service is not available; cannot create a DID")
    try:
        created = await identity.create_identity(handle, signing_key)
    except IdentityUnpublished as exc:
        # The directory is unreachable: the account is created anyway and the identity
        # service's retry loop publishes the stored operation later.
        ctx.log.warning("PLC directory unreachable; account stored with its PLC operation pending",
                        extra={"did": exc.did})
        return exc.did, exc.pending_op_blob
    except IdentityRejected as exc:
        ctx.log.error("PLC directory refused the genesis operation: %s", exc)
        raise UpstreamFailure("The PLC directory refused to create the identity") from None
    return created.did, None


async def check_available(ctx: "AppContext", handle: str, email: str) -> None:
    if await get_by_handle(ctx.db, handle) is not None:
        raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable")
    if await get_by_email(ctx.db, email) is not None:
        raise InvalidRequest(f"Email already taken: {email}")


def check_signup_input(settings: Any, data: SignupInput) -> tuple[str | None, str, str]:
    """The input checks every sign-up shares (new account or migration in): invite presence,
    e-mail, password and handle rules. Returns (invite code, e-mail, normalised handle)."""
    invite_code = data.invite_code or None
    if settings.invite_required and not invite_code:
        raise InvalidRequest("No invite code provided", "InvalidInviteCode")
    email = data.email.strip()
    if not email:
        raise InvalidRequest("Email is required")
    if not is_valid_email(email):
        raise InvalidRequest("This email address is not supported, please use a different email.")
    check_password(data.password)
    return invite_code, email, normalize_new_handle(data.handle, settings.service_handle_domains)


async def create_account(ctx: "AppContext", data: SignupInput) -> NewAccount:
    settings = ctx.settings
    invite_code, email, handle = check_signup_input(settings, data)
    if invite_code:
        await ctx.db.write(invites.ensure_available, invite_code)
    await check_available(ctx, handle, email)

    password_hash = await hash_password(ctx.hasher, data.password)
    keypair = Secp256k1Keypair.generate()
    did, pending_op = await _make_did(ctx, handle, keypair.public_key)
    repo = build_initial_repo(did, keypair, ctx.tid_clock.next_tid())
    session, jti, exp = mint(ctx.issuer, did, None)

    def store(conn: sqlite3.Connection) -> None:
        now = now_iso()
        if invite_code:
            invites.ensure_available(conn, invite_code)
        # Checked again inside the transaction: another signup may have won the race.
        if accounts_store.handle_or_did_exists(conn, handle, did):
            raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable")
        if accounts_store.email_exists(conn, email):
            raise InvalidRequest(f"Email already taken: {email}")
        insert_account(conn, did=did, handle=handle, email=email, password_hash=password_hash,
                       keypair=keypair, created_at=now, plc_pending_op=pending_op)
        if invite_code:
            invites.record_use(conn, invite_code, did, now)
        store_initial_repo(conn, did, repo, now)
        store_refresh_token(conn, jti, did, None, exp)
        _announce(conn, did, handle, repo, now)

    await ctx.db.write(store)
    await events.wake_firehose(ctx)
    return NewAccount(did, handle, session, did_document(ctx, did, handle, keypair.public_key))


def _announce(conn: sqlite3.Connection, did: str, handle: str, repo: InitialRepo, now: str) -> None:
    events.identity(conn, did, handle, now)
    events.account(conn, did, None, now)
    events.sync(conn, did, repo.commit_cid, repo.commit_block, repo.rev, now)
