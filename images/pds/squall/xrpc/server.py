"""com.atproto.server.* — the server description, accounts, sessions, app passwords, invites.

https://atproto.com/specs/xrpc and the com.atproto.server lexicons; error names and statuses
follow the reference PDS. The rules and the SQL live in ``squall.accounts``; the handlers here
read and check the input, pick the caller and shape the output.
"""

from __future__ import annotations

import time
from typing import Any

from ..accounts import app_passwords, invites, migration, sessions, signing_keys, signup, status
from ..accounts import events as account_events
from ..accounts.memory import pin_mmap_threshold
from ..accounts.sessions import LoginChecker, Session
from ..store import blobs as blobs_store
from ..store import repos as repos_store
from ..store.accounts import Account, get_by_did, list_app_passwords as list_app_password_rows
from ..auth.tokens import SCOPE_TAKENDOWN
from ..store.sequencer import now_iso
from ..ratelimit import MINUTE, SIGN_IN, RateLimit
from .errors import AuthRequired, InvalidRequest
from .registry import Auth, Method
from .request import XrpcRequest

INVALID_HANDLE = "handle.invalid"
MAX_USE_COUNT = 100_000
MAX_CODE_COUNT = 1000
MAX_FOR_ACCOUNTS = 100


async def start(ctx) -> None:
    ctx.login = LoginChecker(ctx.db, ctx.hasher)
    # Logins hash with argon2id (19 MiB each); without this the buffers stay resident after use.
    pin_mmap_threshold()


# -- helpers ------------------------------------------------------------------------------------------


# The dispatcher has checked the JSON input against the method's Lexicon (types, required
# properties, formats); the handlers check only Squall's own bounds, which no Lexicon states
# (string caps with ``req.capped``, integer ranges here).
def _in_range(req: XrpcRequest, name: str, maximum: int, default: int | None = None) -> int:
    """Integer input property ``name`` between 1 and ``maximum`` (the Lexicon sets no range)."""
    value = req.body.get(name, default)
    if value < 1 or value > maximum:
        raise InvalidRequest(f"Input/{name} must be between 1 and {maximum}")
    return value


async def _account(req: XrpcRequest, *, include_takendown: bool = False) -> Account:
    account = await get_by_did(req.ctx.db, req.did)
    if account is None or (account.is_takendown and not include_takendown):
        raise InvalidRequest(f"Could not find user info for account: {req.did}")
    return account


def _session_view(req: XrpcRequest, account: Account) -> dict[str, Any]:
    handle = account.handle or INVALID_HANDLE
    out: dict[str, Any] = {
        "handle": handle,
        "did": account.did,
        "didDoc": signup.did_document(req.ctx, account.did, handle, account.keypair().public_key),
        "emailConfirmed": account.email_confirmed_at is not None,
        "active": account.active,
    }
    # An OAuth session sees the address only with account:email (or transition:email).
    perms = req.auth.permissions
    if account.email is not None and (perms is None or perms.account("email") is None):
        out["email"] = account.email
    if account.status is not None:
        out["status"] = account.status
    return out


def _with_tokens(view: dict[str, Any], session: Session) -> dict[str, Any]:
    return {"accessJwt": session.access_jwt, "refreshJwt": session.refresh_jwt, **view}


# -- description --------------------------------------------------------------------------------------


async def describe_server(req: XrpcRequest) -> dict[str, Any]:
    s = req.ctx.settings
    out: dict[str, Any] = {
        "did": s.service_did,
        "availableUserDomains": list(s.service_handle_domains),
        "inviteCodeRequired": s.invite_required,
        "phoneVerificationRequired": False,
        "links": {},
    }
    if s.privacy_policy_url:
        out["links"]["privacyPolicy"] = s.privacy_policy_url
    if s.terms_of_service_url:
        out["links"]["termsOfService"] = s.terms_of_service_url
    if s.contact_email_address:
        out["contact"] = {"email": s.contact_email_address}
    return out


# -- accounts ------------------------------------------------------------------------------------------


async def create_account(req: XrpcRequest) -> dict[str, Any]:
    handle = req.body["handle"]  # handle syntax, so at most 253 characters
    email = req.capped("email", 512)
    password = req.capped("password", 1024)
    invite_code = req.capped("inviteCode", 256)
    for unsupported in ("plcOp", "recoveryKey", "verificationCode", "verificationPhone"):
        if req.body.get(unsupported) is not None:
            raise InvalidRequest(f"Unsupported input: \"{unsupported}\" is not supported by this server")
    did = req.body.get("did")
    if email is None:
        raise InvalidRequest("Email is required")
    if password is None:
        raise InvalidRequest("Password is required", "InvalidPassword")
    data = signup.SignupInput(handle, email, password, invite_code)
    if did is not None:
        # Migration in (squall.accounts.migration): an existing DID, authorised by a service-auth
        # token from its current PDS; the account starts deactivated.
        created = await migration.create_migrated_account(req.ctx, data, did,
                                                          req.http.headers.get("authorization"))
    else:
        created = await signup.create_account(req.ctx, data)
    return {
        "handle": created.handle,
        "did": created.did,
        "didDoc": created.did_doc,
        "accessJwt": created.session.access_jwt,
        "refreshJwt": created.session.refresh_jwt,
    }


async def check_account_status(req: XrpcRequest) -> dict[str, Any]:
    ctx = req.ctx
    account = await _account(req)
    did = account.did
    repo = await repos_store.account_repo_counts(ctx.db, did)
    if repo is None:
        raise InvalidRequest(f"Could not find repo for account: {did}")
    root, blocks, records = repo
    expected, imported = await blobs_store.account_blob_counts(ctx.db, did)
    return {
        "activated": account.deactivated_at is None,
        "validDid": await _valid_did(req, account),
        "repoCommit": root["cid"],
        "repoRev": root["rev"],
        "repoBlocks": blocks,
        "indexedRecords": records,
        "privateStateValues": 0,
        "expectedBlobs": expected,
        "importedBlobs": imported,
    }


async def _valid_did(req: XrpcRequest, account: Account) -> bool:
    """Does the published DID document name this server and the account's signing key?"""
    if account.plc_pending_op is not None:
        return False
    identity = req.ctx.identity
    try:
        doc = await identity.resolve_did(account.did, fresh=True)
    except Exception as exc:  # an unreachable directory means "not confirmed", not a failed call
        req.ctx.log.warning("could not resolve %s for checkAccountStatus: %s", account.did, exc)
        return False
    if doc is None:
        return False
    return (identity.signing_key_from_doc(doc) == account.keypair().public_key
            and identity.pds_endpoint_from_doc(doc) == req.ctx.settings.public_url.rstrip("/"))


async def activate_account(req: XrpcRequest) -> None:
    await req.ctx.db.write(status.activate, req.did)
    await account_events.wake_firehose(req.ctx)


async def deactivate_account(req: XrpcRequest) -> None:
    delete_after = req.body.get("deleteAfter")  # a datetime
    await req.ctx.db.write(status.deactivate, req.did, delete_after)
    await account_events.wake_firehose(req.ctx)


# -- sessions -------------------------------------------------------------------------------------------


async def create_session(req: XrpcRequest) -> dict[str, Any]:
    identifier = req.capped("identifier", 512)
    password = req.capped("password", 4096)
    allow_takendown = req.body.get("allowTakendown", False)
    auth_factor_token = req.body.get("authFactorToken")
    ctx = req.ctx
    account, app_password = await ctx.login.login(identifier, password)
    if app_password is None:  # e-mail two-factor (squall.mail): the account password wants a code too
        await ctx.mail.check_sign_in(account, auth_factor_token)
    if account.is_takendown:
        if not allow_takendown:
            raise AuthRequired("Account has been taken down", "AccountTakedown")
        # A taken-down account may read its own status but gets no refresh token to keep.
        refresh, _, _ = ctx.issuer.refresh_token(account.did)
        session = Session(ctx.issuer.access_token(account.did, SCOPE_TAKENDOWN), refresh)
    else:
        session, jti, exp = sessions.mint(ctx.issuer, account.did, app_password)
        await ctx.db.write(sessions.store_refresh_token, jti, account.did,
                           app_password.name if app_password else None, exp)
    return _with_tokens(await _with_auth_factor(req, _session_view(req, account)), session)


async def get_session(req: XrpcRequest) -> dict[str, Any]:
    return await _with_auth_factor(req, _session_view(req, await _account(req)))


async def _with_auth_factor(req: XrpcRequest, view: dict[str, Any]) -> dict[str, Any]:
    view["emailAuthFactor"] = await req.ctx.mail.auth_factor(view["did"])
    return view


async def refresh_session(req: XrpcRequest) -> dict[str, Any]:
    ctx = req.ctx
    account = await get_by_did(ctx.db, req.did)
    if account is None:
        raise InvalidRequest(f"Could not find user info for account: {req.did}")
    if account.is_takendown:
        raise AuthRequired("Account has been taken down", "AccountTakedown")
    session = await ctx.db.write(sessions.rotate, ctx.issuer, req.auth.refresh_jti, int(time.time()))
    return _with_tokens(await _with_auth_factor(req, _session_view(req, account)), session)


async def delete_session(req: XrpcRequest) -> None:
    await req.ctx.db.write(sessions.revoke, req.auth.refresh_jti)


# -- app passwords ------------------------------------------------------------------------------------


async def create_app_password(req: XrpcRequest) -> dict[str, Any]:
    name = req.capped("name", app_passwords.MAX_NAME_LENGTH).strip()
    privileged = req.body.get("privileged", False)
    if not name:
        raise InvalidRequest("Input/name must not be empty")
    ctx = req.ctx
    account = await _account(req, include_takendown=True)
    if account.is_takendown:
        raise InvalidRequest("Account has been taken down", "AccountTakedown")
    password = app_passwords.generate()
    digest = await app_passwords.hash_app_password(ctx.hasher, account.did, password)
    created_at = now_iso()
    try:
        inserted = await ctx.db.write(app_passwords.insert, account.did, name, digest, privileged, created_at)
    except app_passwords.TooManyAppPasswords:
        raise InvalidRequest(f"Too many app passwords (at most {app_passwords.MAX_PER_ACCOUNT}); "
                             "revoke one first") from None
    if not inserted:
        raise InvalidRequest(f"An app password named {name!r} already exists")
    return {"name": name, "password": password, "createdAt": created_at, "privileged": privileged}


async def list_app_passwords(req: XrpcRequest) -> dict[str, Any]:
    rows = await list_app_password_rows(req.ctx.db, req.did)
    return {"passwords": [{"name": r["name"], "createdAt": r["created_at"], "privileged": bool(r["privileged"])}
                          for r in rows]}


async def revoke_app_password(req: XrpcRequest) -> None:
    name = req.capped("name", app_passwords.MAX_NAME_LENGTH)
    await req.ctx.db.write(app_passwords.delete, req.did, name)
    req.ctx.verifier.forget_revocations(req.did)  # its access tokens stop now, not in 2 h


# -- invite codes -------------------------------------------------------------------------------------


async def create_invite_code(req: XrpcRequest) -> dict[str, Any]:
    use_count = _in_range(req, "useCount", MAX_USE_COUNT)
    account = req.body.get("forAccount") or invites.ADMIN
    code = invites.generate_code(req.ctx.settings.hostname)
    await req.ctx.db.write(invites.insert_codes, [(code, account)], use_count, invites.ADMIN, now_iso())
    return {"code": code}


async def create_invite_codes(req: XrpcRequest) -> dict[str, Any]:
    code_count = _in_range(req, "codeCount", MAX_CODE_COUNT, default=1)
    use_count = _in_range(req, "useCount", MAX_USE_COUNT)
    accounts = req.body.get("forAccounts", [invites.ADMIN])  # DIDs, per the Lexicon
    if len(accounts) > MAX_FOR_ACCOUNTS:
        raise InvalidRequest(f"Input/forAccounts may list at most {MAX_FOR_ACCOUNTS} accounts")
    hostname = req.ctx.settings.hostname
    out = [{"account": account, "codes": [invites.generate_code(hostname) for _ in range(code_count)]}
           for account in accounts]
    rows = [(code, entry["account"]) for entry in out for code in entry["codes"]]
    await req.ctx.db.write(invites.insert_codes, rows, use_count, invites.ADMIN, now_iso())
    return {"codes": out}


async def get_account_invite_codes(req: XrpcRequest) -> dict[str, Any]:
    include_used = req.args["includeUsed"]  # both default to true in the Lexicon
    create_available = req.args["createAvailable"]
    ctx = req.ctx
    account = await _account(req)
    settings = ctx.settings
    can_earn = create_available and settings.invite_required and settings.invite_interval

    def run(conn) -> list[dict[str, Any]]:
        codes = invites.account_codes(conn, account.did)
        if can_earn:
            count = invites.earned_codes_to_create(
                codes, account_created_at=account.created_at, now_ms=int(time.time() * 1000),
                interval_ms=settings.invite_interval, epoch_ms=settings.invite_epoch)
            if count:
                made = [(invites.generate_code(settings.hostname), account.did) for _ in range(count)]
                # An account barred from inviting still earns codes, born disabled, for bookkeeping.
                invites.insert_codes(conn, made, 1, account.did, now_iso(), disabled=account.invites_disabled)
                codes = invites.account_codes(conn, account.did)
        return codes

    codes = await ctx.db.write(run)
    codes = [c for c in codes if not c["disabled"] and (include_used or len(c["uses"]) < c["available"])]
    return {"codes": codes}


METHODS = (
    Method("com.atproto.server.describeServer", "query", describe_server, Auth.NONE),
    Method("com.atproto.server.createAccount", "procedure", create_account, Auth.NONE,
           errors=("InvalidHandle", "InvalidPassword", "InvalidInviteCode", "HandleNotAvailable",
                   "UnsupportedDomain", "UnresolvableDid", "IncompatibleDidDoc"), max_body=100_000,
           rate_limits=(RateLimit("create-account-ip", 100, 5 * MINUTE),)),
    Method("com.atproto.server.createSession", "procedure", create_session, Auth.NONE,
           errors=("AccountTakedown", "AuthFactorTokenRequired"), max_body=100_000,
           rate_limits=SIGN_IN),
    Method("com.atproto.server.getSession", "query", get_session, Auth.ACCESS),
    Method("com.atproto.server.refreshSession", "procedure", refresh_session, Auth.REFRESH,
           errors=("AccountTakedown", "InvalidToken", "ExpiredToken"), input=None, max_body=100_000),
    Method("com.atproto.server.deleteSession", "procedure", delete_session, Auth.REFRESH,
           errors=("InvalidToken", "ExpiredToken"), input=None, max_body=100_000),
    Method("com.atproto.server.createAppPassword", "procedure", create_app_password, Auth.FULL,
           errors=("AccountTakedown",), max_body=100_000),
    Method("com.atproto.server.listAppPasswords", "query", list_app_passwords, Auth.FULL,
           errors=("AccountTakedown",)),
    Method("com.atproto.server.revokeAppPassword", "procedure", revoke_app_password, Auth.FULL,
           max_body=100_000),
    Method("com.atproto.server.createInviteCode", "procedure", create_invite_code, Auth.ADMIN,
           max_body=100_000),
    Method("com.atproto.server.createInviteCodes", "procedure", create_invite_codes, Auth.ADMIN,
           max_body=100_000),
    Method("com.atproto.server.getAccountInviteCodes", "query", get_account_invite_codes, Auth.FULL,
           errors=("DuplicateCreate",)),
    Method("com.atproto.server.checkAccountStatus", "query", check_account_status, Auth.ACCESS),
    Method("com.atproto.server.activateAccount", "procedure", activate_account, Auth.FULL,
           input=None, max_body=100_000),
    Method("com.atproto.server.deactivateAccount", "procedure", deactivate_account, Auth.FULL,
           max_body=100_000),
)


# -- com.atproto.server.reserveSigningKey (issue #19) -------------------------------------------------


async def reserve_signing_key(req: XrpcRequest) -> dict[str, Any]:
    """A signing key kept for an account about to migrate here; no authentication, as the reference."""
    did = req.body.get("did")  # format did: checked by the dispatcher against the lexicon
    return {"signingKey": await signing_keys.reserve(req.ctx.db, did)}


METHODS = METHODS + (
    Method("com.atproto.server.reserveSigningKey", "procedure", reserve_signing_key, Auth.NONE, max_body=100_000,
           rate_limits=(RateLimit("reserve-signing-key-ip", 100, 5 * MINUTE),)),
)
