"""Account migration into this PDS: createAccount with an existing DID, and the identity update
that completes a move (https://atproto.com/guides/account-migration).

A user moving here from another PDS ("the old PDS") goes through these steps:

1. ``createAccount`` with their existing ``did``, authorised by a service-auth token the old PDS
   minted for them (``iss`` the DID, ``aud`` this service's DID, ``lxm``
   ``com.atproto.server.createAccount``), checked against the ``#atproto`` key of the DID's
   current document. The account is created **deactivated** with a new signing key and an empty
   repo, and nothing is announced: the DID document still points at the old PDS, and no genesis
   PLC operation is made (the identity stays where it is until the user moves it).
2. ``importRepo`` (``squall.repo.importer``), then the blobs (``listMissingBlobs``/``uploadBlob``).
3. The DID document is updated to name this PDS and its new signing key (``submitPlcOperation``
   here, with an operation the old PDS's rotation key signed).
4. ``activateAccount`` here announces ``#account``, ``#identity`` and ``#sync``; the old PDS is
   deactivated.

Only did:plc can migrate in: a did:web's document is served by its own host, which this PDS
cannot take over.

Moving OUT of this PDS, the user needs the identity update signed by this PDS's rotation key
(:func:`sign_plc_operation`, com.atproto.identity.signPlcOperation). The reference e-mails a token
first (requestPlcOperationSignature); Squall sends no mail, so the operator issues it
(``squall account plc-token``, ``squall.accounts.operator_tokens`` purpose ``plc``). The signed
operation is returned, not published: the new PDS submits it.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ..atproto.crypto import PublicKey, Secp256k1Keypair
from ..auth.passwords import hash_password
from ..auth.service_jwt import ServiceJwtError, verify_service_jwt
from ..identity import plc
from ..store.sequencer import now_iso
from ..errors import AuthRequired, InvalidRequest, UpstreamFailure
from . import events, invites, operator_tokens, signing_keys
from .repo_init import build_initial_repo, store_initial_repo
from .sessions import mint, store_refresh_token
from .signup import NewAccount, SignupInput, check_available, check_signup_input
from ..store import accounts as accounts_store
from ..store.accounts import get_by_did, get_by_did_sync, insert_account

if TYPE_CHECKING:
    from ..context import AppContext

CREATE_ACCOUNT_NSID = "com.atproto.server.createAccount"


# -- step 1: createAccount with an existing DID ------------------------------------------------------


def _bearer(authorization: str | None) -> str:
    if not authorization:
        # 400, not the reference's 401: without any credential the request is simply incomplete
        # (and the existing signup tests pin a 400 for a bare "did").
        raise InvalidRequest(
            "Creating an account with an existing did needs a service-auth token from the account's "
            "current PDS (Authorization: Bearer <token from com.atproto.server.getServiceAuth>)")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthRequired(
            "Creating an account with an existing did needs a service-auth token from the account's "
            "current PDS (Authorization: Bearer <token from com.atproto.server.getServiceAuth>)",
            "AuthenticationRequired",
        )
    return value.strip()


async def verify_migration_token(ctx: "AppContext", authorization: str | None, did: str) -> None:
    """Check the service-auth token that lets ``did`` be created here; AuthRequired otherwise."""
    token = _bearer(authorization)
    identity = ctx.identity

    async def get_key(issuer: str, fresh: bool) -> PublicKey | None:
        try:
            doc = await identity.resolve_did(issuer, fresh=fresh)
        except Exception as exc:  # an unreachable directory cannot vouch for the token
            ctx.log.warning("could not resolve %s to check a migration token: %s", issuer, exc)
            return None
        return identity.signing_key_from_doc(doc) if doc is not None else None

    try:
        claims = await verify_service_jwt(token, audience=ctx.settings.service_did, lxm=CREATE_ACCOUNT_NSID,
                                          get_key=get_key)
    except ServiceJwtError as exc:
        raise AuthRequired(f"Service-auth token refused: {exc}", exc.name) from None
    if claims.iss.partition("#")[0] != did:
        raise AuthRequired(f"Missing auth to create account with did: {did} (the token was issued by {claims.iss})",
                           "AuthenticationRequired")


async def create_migrated_account(ctx: "AppContext", data: SignupInput, did: str,
                                  authorization: str | None) -> NewAccount:
    """An account for an existing ``did`` moving here: deactivated, new signing key, empty repo,
    no PLC operation and no firehose event. Returns the session and the DID's current document."""
    settings = ctx.settings
    if not plc.is_plc_did(did):
        if did.startswith("did:web:"):
            raise InvalidRequest(
                f"{did} is a did:web: its DID document is served by its own host, so it cannot be "
                "migrated to this PDS (only did:plc accounts can migrate in)", "IncompatibleDidDoc")
        raise InvalidRequest(f"Unsupported DID method for migration: {did} (only did:plc)", "IncompatibleDidDoc")
    # The cheap input checks first, then the token (which may cost a directory lookup).
    invite_code, email, handle = check_signup_input(settings, data)
    await verify_migration_token(ctx, authorization, did)
    if await get_by_did(ctx.db, did) is not None:
        raise InvalidRequest(f"An account with did {did} already exists on this PDS", "AlreadyExists")
    if invite_code:
        await ctx.db.write(invites.ensure_available, invite_code)
    await check_available(ctx, handle, email)

    identity = ctx.identity
    try:
        doc = await identity.resolve_did(did, fresh=True)
    except Exception as exc:
        raise UpstreamFailure(f"Could not resolve {did}: {exc}") from None
    if doc is None:
        raise InvalidRequest(f"Could not resolve DID document for {did}", "UnresolvableDid")

    password_hash = await hash_password(ctx.hasher, data.password)
    # the key reserved for this DID by reserveSigningKey, if the user asked for one
    keypair = await signing_keys.reserved_keypair(ctx.db, did) or Secp256k1Keypair.generate()
    repo = build_initial_repo(did, keypair, ctx.tid_clock.next_tid())
    session, jti, exp = mint(ctx.issuer, did, None)

    def store(conn: sqlite3.Connection) -> None:
        now = now_iso()
        if invite_code:
            invites.ensure_available(conn, invite_code)
        if accounts_store.did_exists(conn, did):
            raise InvalidRequest(f"An account with did {did} already exists on this PDS", "AlreadyExists")
        if accounts_store.handle_exists(conn, handle):
            raise InvalidRequest(f"Handle already taken: {handle}", "HandleNotAvailable")
        if accounts_store.email_exists(conn, email):
            raise InvalidRequest(f"Email already taken: {email}")
        insert_account(conn, did=did, handle=handle, email=email, password_hash=password_hash,
                       keypair=keypair, created_at=now, plc_pending_op=None)
        # Deactivated until the user calls activateAccount once the identity points here; no
        # event is sequenced now (the reference announces a migrated account only on activation).
        accounts_store.set_deactivated(conn, did, now)
        if invite_code:
            invites.record_use(conn, invite_code, did, now)
        store_initial_repo(conn, did, repo, now)
        store_refresh_token(conn, jti, did, None, exp)
        signing_keys.release(conn, did)

    await ctx.db.write(store)
    ctx.log.info("account created for migration (deactivated)", extra={"did": did, "handle": handle})
    return NewAccount(did, handle, session, doc)


# -- step 3: the identity update -----------------------------------------------------------------------


def check_submitted_op(ctx: "AppContext", op: Any, *, handle: str | None, signing_key: PublicKey) -> dict[str, Any]:
    """A PLC operation the user submits must leave the DID pointing at this PDS: our rotation key
    among its rotation keys, the account's signing key as ``#atproto``, our endpoint as
    ``#atproto_pds`` and the account's handle as an alias. InvalidRequest otherwise."""
    try:
        plc.check_op(op)
    except plc.PlcOpError as exc:
        raise InvalidRequest(f"Invalid PLC operation: {exc}") from None
    if op["type"] != plc.OP_TYPE:
        raise InvalidRequest(f"Only a {plc.OP_TYPE} can be submitted here, not {op['type']}")
    identity = ctx.identity
    if identity.rotation_key.did_key() not in op["rotationKeys"]:
        raise InvalidRequest("Rotation keys do not include server's rotation key")
    if op["verificationMethods"].get("atproto") != signing_key.did_key():
        raise InvalidRequest("Incorrect signing key")
    service = op["services"].get(plc.PDS_SERVICE_ID)
    public_url = ctx.settings.public_url.rstrip("/")
    if (service is None or service.get("type") != plc.PDS_SERVICE_TYPE
            or service.get("endpoint", "").rstrip("/") != public_url):
        raise InvalidRequest(f"Incorrect endpoint on atproto_pds service (expected {public_url})")
    if handle is not None and f"at://{handle}" not in op["alsoKnownAs"]:
        raise InvalidRequest(f"Incorrect handle in alsoKnownAs (expected at://{handle})")
    return op


async def submit_plc_operation(ctx: "AppContext", did: str, op: Any) -> None:
    """Check ``op`` (see :func:`check_submitted_op`), send it to the directory, sequence ``#identity``."""
    account = await get_by_did(ctx.db, did)
    if account is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    if not plc.is_plc_did(did):
        raise InvalidRequest(f"{did} is not a did:plc; there is no PLC operation to submit")
    check_submitted_op(ctx, op, handle=account.handle, signing_key=account.keypair().public_key)
    identity = ctx.identity
    try:
        await identity.plc.send_operation(did, op)
    except plc.PlcRejected as exc:
        raise InvalidRequest(f"The PLC directory refused the operation: {exc}") from None
    except plc.PlcUnavailable as exc:
        raise UpstreamFailure(f"The PLC directory is unavailable: {exc}") from None
    await identity.dids.forget(did)

    def announce(conn: sqlite3.Connection) -> None:
        current = get_by_did_sync(conn, did)
        if current is not None:
            events.identity(conn, did, current.handle, now_iso())

    await ctx.db.write(announce)
    await events.wake_firehose(ctx)
    ctx.log.info("PLC operation submitted for a migrating account", extra={"did": did})


# -- moving out: the identity update the new PDS will submit ---------------------------------------------


PLC_TOKEN_HOWTO = ("ask the operator of this server for a PLC token (they run `squall account plc-token "
                   "<your handle>`) and pass it as `token` to com.atproto.identity.signPlcOperation")


async def sign_plc_operation(ctx: "AppContext", did: str, token: str | None, *,
                             rotation_keys: list[str] | None = None, also_known_as: list[str] | None = None,
                             verification_methods: dict[str, Any] | None = None,
                             services: dict[str, Any] | None = None) -> dict[str, Any]:
    """The operation that follows the DID's last one with the given fields (the last one's values
    for those left out), signed with this PDS's rotation key; the operator-issued ``plc`` token is
    used up. Nothing is sent to the directory."""
    if not plc.is_plc_did(did):
        if did.startswith("did:web:"):
            raise InvalidRequest(
                f"{did} is a did:web: its DID document is served by its own host and has no PLC "
                "operations, so there is nothing for this PDS to sign (update the document there)")
        raise InvalidRequest(f"{did} is not a did:plc; there is no PLC operation to sign")
    if not token:
        raise InvalidRequest("A token is required to sign a PLC operation: " + PLC_TOKEN_HOWTO)
    if await get_by_did(ctx.db, did) is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    # The token is checked before the directory is asked; it is used up only once the operation is
    # signed, in one transaction with the deciding check.
    await operator_tokens.precheck(ctx.db, did, operator_tokens.PURPOSE_PLC, token)
    identity = ctx.identity
    try:
        last = await identity.plc.get_last_op(did)
    except plc.PlcUnavailable as exc:
        raise UpstreamFailure(f"Could not read the last PLC operation of {did}: {exc}") from None
    if last is None:
        raise InvalidRequest(f"The PLC directory has no operation for {did}")
    try:
        plc.check_op(last)
    except plc.PlcOpError as exc:
        raise UpstreamFailure(f"The PLC directory sent an invalid last operation for {did}: {exc}") from None
    if last["type"] == plc.TOMBSTONE_TYPE:
        raise InvalidRequest(f"{did} is tombstoned; it cannot be updated")
    current = plc.normalize_op(last)
    signer = identity.rotation_key
    if signer.did_key() not in current["rotationKeys"]:
        raise InvalidRequest(
            f"This server's rotation key is no longer a rotation key of {did}, so it cannot sign its "
            "PLC operations (sign with one of the DID's current rotation keys instead)")
    unsigned = {
        "type": plc.OP_TYPE,
        "rotationKeys": list(current["rotationKeys"] if rotation_keys is None else rotation_keys),
        "verificationMethods": dict(current["verificationMethods"] if verification_methods is None
                                    else verification_methods),
        "alsoKnownAs": list(current["alsoKnownAs"] if also_known_as is None else also_known_as),
        "services": dict(current["services"] if services is None else services),
        "prev": str(plc.op_cid(last)),
    }
    signed = plc.sign_op(unsigned, signer)
    try:
        plc.check_op(signed)
    except plc.PlcOpError as exc:
        raise InvalidRequest(f"Invalid PLC operation: {exc}") from None
    await ctx.db.write(operator_tokens.consume, did, operator_tokens.PURPOSE_PLC, token)
    ctx.log.info("PLC operation signed for a departing account", extra={"did": did})
    return signed
