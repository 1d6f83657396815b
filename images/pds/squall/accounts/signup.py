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

from ..atproto import dagcbor
from ..atproto.crypto import PublicKey, Secp256k1Keypair
from ..auth.passwords import hash_password
from ..store.sequencer import now_iso
from ..xrpc.errors import InvalidRequest, UpstreamFailure
from . import events, invites
from .handles import normalize_new_handle
from .repo_init import InitialRepo, build_initial_repo, store_initial_repo
from .sessions import Session, mint, store_refresh_token
from .store import get_by_email, get_by_handle, insert_account

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


def local_did_document(did: str, handle: str, signing_key: PublicKey, public_url: str) -> dict[str, Any]:
    """The DID document this server publishes for one of its accounts (https://atproto.com/specs/did)."""
    return {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
            "https://w3id.org/security/suites/secp256k1-2019/v1",
        ],
        "id": did,
        "alsoKnownAs": [f"at://{handle}"],
        "verificationMethod": [{
            "id": f"{did}#atproto",
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": signing_key.multibase(),
        }],
        "service": [{
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": public_url,
        }],
    }


def did_document(ctx: "AppContext", did: str, handle: str, signing_key: PublicKey) -> dict[str, Any]:
    identity = ctx.services.get("identity")
    if identity is not None:
        return identity.did_document(did, handle, signing_key)
    return local_did_document(did, handle, signing_key, ctx.settings.public_url)


def _identity_exceptions() -> tuple[type[BaseException], type[BaseException]] | None:
    try:
        from ..identity import IdentityRejected, IdentityUnpublished  # type: ignore[attr-defined]
    except ImportError:
        return None
    return IdentityRejected, IdentityUnpublished


async def _make_did(ctx: "AppContext", handle: str, signing_key: PublicKey) -> tuple[str, bytes | None]:
    """(did, pending PLC op as DAG-CBOR or None)."""
    identity = ctx.services.get("identity")
    if identity is None:
        if ctx.settings.did_method == "web":
            return f"did:web:{handle}", None
        raise UpstreamFailure("The identity service is not available; cannot create a did:plc")
    errors = _identity_exceptions()
    try:
        created = await identity.create_identity(handle, signing_key)
    except Exception as exc:
        if errors is not None and isinstance(exc, errors[1]):
            ctx.log.warning("PLC directory unreachable; account stored with its PLC operation pending",
                            extra={"did": exc.did})
            return exc.did, dagcbor.encode(exc.op)
        if errors is not None and isinstance(exc, errors[0]):
            ctx.log.error("PLC directory rejected the genesis operation: %s", exc)
            raise UpstreamFailure("The PLC directory refused to create the identity") from None
        raise
    return created.did, None


async def check_available(ctx: "AppContext", handle: str, email: str) -> None:
    if await get_by_handle(ctx.db, handle) is not None:
        raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable")
    if await get_by_email(ctx.db, email) is not None:
        raise InvalidRequest(f"Email already taken: {email}")


async def create_account(ctx: "AppContext", data: SignupInput) -> NewAccount:
    settings = ctx.settings
    invite_code = data.invite_code or None
    if settings.invite_required and not invite_code:
        raise InvalidRequest("No invite code provided", "InvalidInviteCode")
    email = data.email.strip()
    if not email:
        raise InvalidRequest("Email is required")
    if not is_valid_email(email):
        raise InvalidRequest("This email address is not supported, please use a different email.")
    check_password(data.password)
    handle = normalize_new_handle(data.handle, settings.service_handle_domains)
    if invite_code:
        await ctx.db.write(invites.ensure_available, invite_code)
    await check_available(ctx, handle, email)

    password_hash = await hash_password(ctx.hasher, data.password)
    keypair = Secp256k1Keypair.generate()
    did, pending_op = await _make_did(ctx, handle, keypair.public_key)
    repo = build_initial_repo(did, keypair, ctx.services["tid_clock"].next_tid())
    session, jti, exp = mint(ctx.issuer, did, None)

    def store(conn: sqlite3.Connection) -> None:
        now = now_iso()
        if invite_code:
            invites.ensure_available(conn, invite_code)
        # Checked again inside the transaction: another signup may have won the race.
        if conn.execute("SELECT 1 FROM account WHERE handle = ? OR did = ?", (handle, did)).fetchone():
            raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable")
        if conn.execute("SELECT 1 FROM account WHERE email = ?", (email,)).fetchone():
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
