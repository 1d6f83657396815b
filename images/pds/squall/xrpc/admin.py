"""com.atproto.admin.* and account deletion (com.atproto.server.deleteAccount, requestAccountDelete).

The com.atproto.admin lexicons, with the reference PDS's semantics and error names. Every admin
method takes the admin credential only (``Auth.ADMIN``: user tokens are refused). The rules and
the SQL live in ``squall.accounts.takedown`` and ``squall.accounts.deletion``; the handlers here
read and check the input and shape the output.

With SMTP set up (``squall.mail``), ``com.atproto.admin.sendEmail`` mails through the moderation
transport and ``requestAccountDelete`` mails the deletion token. Without it:

* ``com.atproto.admin.sendEmail`` is refused with a message saying so;
* ``com.atproto.server.requestAccountDelete`` is refused with the way that does work: the operator
  issues a deletion token (``squall account delete-token <handle>``, which calls the admin route
  ``POST /xrpc/_admin/account-delete-token``) and the user passes it, with their password, to
  ``com.atproto.server.deleteAccount``. The operator can also delete the account outright
  (``com.atproto.admin.deleteAccount``, ``squall account delete``).

Feature module: ``routes`` adds the operator's token routes (deletion, and PLC signing for a user
moving away: ``squall account plc-token``, see ``squall.xrpc.migration``). Taken-down records are left out by the record
reader itself (``squall.repo.reader``).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import jsonin
from ..accounts import deletion, invites, operator_tokens, password_change, status, takedown
from ..accounts.events import wake_firehose
from ..accounts.sessions import MAX_PASSWORD_LENGTH
from ..accounts.signup import check_password, is_valid_email
from ..store import accounts as accounts_store
from ..store import invites as invites_store
from ..store.accounts import Account, get_by_did, get_by_handle
from ..atproto import syntax
from ..atproto.cid import CID
from ..atproto.errors import AtprotoError, InvalidSyntax
from ..auth.passwords import verify_password
from ..identity.handles import HandleError, check_handle
from ..ratelimit import DAY, HOUR, MINUTE, KeyBy, RateLimit
from .dispatch import error_response, read_body_capped
from .errors import AuthRequired, InvalidRequest, XRPCError
from .identity import change_handle
from .registry import Auth, Method
from .request import XrpcRequest

INVALID_HANDLE = "handle.invalid"
REPO_REF = "com.atproto.admin.defs#repoRef"
STRONG_REF = "com.atproto.repo.strongRef"
REPO_BLOB_REF = "com.atproto.admin.defs#repoBlobRef"
MAX_INFOS = 500
MAX_CODES = 1000
MAX_REF_LENGTH = 1024
SMALL_BODY = 100_000
# The operator's token routes (``squall account delete-token`` / ``plc-token``): path -> purpose.
TOKEN_ROUTES = {
    "/xrpc/_admin/account-delete-token": operator_tokens.PURPOSE_DELETE,
    "/xrpc/_admin/account-plc-token": operator_tokens.PURPOSE_PLC,
}

NO_MAIL = "This PDS sends no e-mail (its operator has not set PDS_EMAIL_SMTP_URL). "
DELETE_HOWTO = ("To delete your account, ask the operator of this server for an account-deletion "
                "token (they run `squall account delete-token <your handle>`) and send it with your "
                "password to com.atproto.server.deleteAccount, or ask them to delete the account.")


# -- feature module ---------------------------------------------------------------------------------


def routes(app: Any, get_ctx: Callable[[], Any]) -> None:
    for path, purpose in TOKEN_ROUTES.items():
        app.post(path)(_token_route(purpose, get_ctx))


def _token_route(purpose: str, get_ctx: Callable[[], Any]) -> Callable[[Request], Any]:
    async def issue_account_token(request: Request) -> Response:
        ctx = get_ctx()
        try:
            await ctx.verifier.verify(Auth.ADMIN, request.headers.get("authorization"))
            body = _json_object(await read_body_capped(request, 4096))
            did = _did(body.get("did"), "Input/did")
            token, expires_at = await ctx.db.write(operator_tokens.issue, did, purpose)
        except XRPCError as err:
            return error_response(err)
        account = await get_by_did(ctx.db, did)
        ctx.log.info("account token issued", extra={"did": did, "purpose": purpose})
        return JSONResponse({"did": did, "handle": account.handle if account else None, "token": token,
                             "expiresAt": _iso(expires_at)})

    return issue_account_token


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = jsonin.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):  # jsonin: nesting too deep is a ValueError
        raise InvalidRequest("Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return value


# -- input helpers ------------------------------------------------------------------------------------


def _did(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string" if value is not None else f"{where} is required")
    try:
        syntax.ensure_valid_did(value)
    except InvalidSyntax as exc:
        raise InvalidRequest(f"{where} must be a valid did: {exc}") from None
    return value


# The XRPC methods' inputs have been checked against their Lexicons by the dispatcher (types,
# required properties, formats such as did, at-uri and cid); what follows is Squall's own bounds
# and the meaning of values. ``_did`` serves the operator's token routes, which are not XRPC.


def _string_list(req: XrpcRequest, name: str) -> list[str]:
    """An optional array-of-strings input, with Squall's count and length caps."""
    values = req.body.get(name, [])
    if len(values) > MAX_CODES:
        raise InvalidRequest(f"Input/{name} may hold at most {MAX_CODES} items")
    for i, v in enumerate(values):
        if len(v) > 2048:
            raise InvalidRequest(f"Input/{name}/{i} must be a string")
    return values


async def _account_by_did(req: XrpcRequest, did: str) -> Account:
    account = await get_by_did(req.ctx.db, did)
    if account is None:
        raise deletion.AccountNotFound(did)
    return account


def _status_attr(value: dict[str, Any] | None, where: str) -> takedown.Takedown | None:
    """A com.atproto.admin.defs#statusAttr, with Squall's cap on its ``ref``."""
    if value is None:
        return None
    ref = value.get("ref")
    if ref is not None and len(ref) > MAX_REF_LENGTH:
        raise InvalidRequest(f"{where}/ref must be a string of at most {MAX_REF_LENGTH} characters")
    return takedown.Takedown(value["applied"], ref)


def _cid(value: str, where: str) -> str:
    """A CID in its canonical string form (the Lexicon checked the syntax; this re-encodes it)."""
    try:
        return str(CID.decode(value))
    except (AtprotoError, ValueError) as exc:
        raise InvalidRequest(f"{where} is not a valid CID: {exc}") from None


async def _record_path(req: XrpcRequest, uri: str, where: str) -> tuple[str, str, str]:
    """(did, collection, rkey) of a record at-uri; a handle authority must be a local account's."""
    parsed = syntax.AtUri.parse(uri)
    if parsed.collection is None or parsed.rkey is None:
        raise InvalidRequest(f"{where} must name a record (at://<did>/<collection>/<rkey>)")
    did = parsed.authority
    if not did.startswith("did:"):
        account = await get_by_handle(req.ctx.db, syntax.normalize_handle(did))
        if account is None:
            raise takedown.SubjectNotFound(f"Record not found: {uri} (no local account has that handle)")
        did = account.did
    return did, parsed.collection, parsed.rkey


# -- account views --------------------------------------------------------------------------------------


def _code_view(row: sqlite3.Row, uses: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    return {
        "code": row["code"],
        "available": row["available_uses"],
        "disabled": bool(row["disabled"]),
        "forAccount": row["for_account"],
        "createdBy": row["created_by"],
        "createdAt": row["created_at"],
        "uses": uses.get(row["code"], []),
    }


async def _code_uses(req: XrpcRequest, codes: list[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for i in range(0, len(codes), MAX_INFOS):
        chunk = codes[i:i + MAX_INFOS]
        for r in await invites_store.list_uses_of_codes(req.ctx.db, chunk):
            out.setdefault(r["code"], []).append({"usedBy": r["used_by"], "usedAt": r["used_at"]})
    return out


async def _account_views(req: XrpcRequest, dids: list[str]) -> list[dict[str, Any]]:
    """com.atproto.admin.defs#accountView of each existing account, in the order asked."""
    if not dids:
        return []
    db = req.ctx.db
    accounts = {r["did"]: r for r in await accounts_store.list_account_views(db, dids)}
    found = [d for d in dids if d in accounts]
    if not found:
        return []
    owned = await invites_store.list_codes_for_accounts(db, found)
    used = await invites_store.list_codes_used_by(db, found)
    uses = await _code_uses(req, sorted({r["code"] for r in owned} | {r["code"] for r in used}))
    invites_of: dict[str, list[dict[str, Any]]] = {}
    for r in owned:
        invites_of.setdefault(r["for_account"], []).append(_code_view(r, uses))
    invited_by = {r["used_by"]: _code_view(r, uses) for r in used}
    views = []
    for did in found:
        a = accounts[did]
        view: dict[str, Any] = {"did": did, "handle": a["handle"] or INVALID_HANDLE, "indexedAt": a["created_at"]}
        if a["email"] is not None:
            view["email"] = a["email"]
        if a["email_confirmed_at"] is not None:
            view["emailConfirmedAt"] = a["email_confirmed_at"]
        if did in invited_by:
            view["invitedBy"] = invited_by[did]
        view["invites"] = invites_of.get(did, [])
        view["invitesDisabled"] = bool(a["invites_disabled"])
        if a["deactivated_at"] is not None:
            view["deactivatedAt"] = a["deactivated_at"]
        views.append(view)
    return views


async def get_account_info(req: XrpcRequest) -> dict[str, Any]:
    did = req.args["did"]
    views = await _account_views(req, [did])
    if not views:
        raise InvalidRequest("Account not found", "NotFound")
    return views[0]


async def get_account_infos(req: XrpcRequest) -> dict[str, Any]:
    dids = list(dict.fromkeys(req.capped_list_param("dids", MAX_INFOS)))
    return {"infos": await _account_views(req, dids)}


# -- subject status ------------------------------------------------------------------------------------


async def update_subject_status(req: XrpcRequest) -> dict[str, Any]:
    ctx = req.ctx
    subject = req.body["subject"]
    take = _status_attr(req.body.get("takedown"), "Input/takedown")
    deactivated = _status_attr(req.body.get("deactivated"), "Input/deactivated")
    if take is not None and take.applied and deactivated is not None and not deactivated.applied:
        raise InvalidRequest("Cannot activate and takedown an account at the same time")
    kind = subject.get("$type")
    if kind == REPO_REF:
        did = subject["did"]

        def run(conn: sqlite3.Connection) -> None:
            if take is not None:
                takedown.set_account_takedown(conn, did, take)
            if deactivated is not None:
                if deactivated.applied:
                    status.deactivate(conn, did, None)
                else:
                    status.activate(conn, did)
            if take is None and deactivated is None:
                # As the reference: a bare call re-announces the account's status.
                takedown.sequence_account_status(conn, did)

        await ctx.db.write(run)
        await wake_firehose(ctx)
        out_subject: dict[str, Any] = {"$type": REPO_REF, "did": did}
    elif kind == STRONG_REF:
        did, collection, rkey = await _record_path(req, subject["uri"], "Input/subject/uri")
        cid = _cid(subject["cid"], "Input/subject/cid")
        out_subject = {"$type": STRONG_REF, "uri": subject["uri"], "cid": cid}
        if take is not None:
            await ctx.db.write(takedown.set_record_takedown, did, collection, rkey, take)
    elif kind == REPO_BLOB_REF:
        did = subject["did"]
        cid = _cid(subject["cid"], "Input/subject/cid")
        out_subject = {"$type": REPO_BLOB_REF, "did": did, "cid": cid}
        record_uri = subject.get("recordUri")
        if record_uri is not None:
            await _record_path(req, record_uri, "Input/subject/recordUri")
            out_subject["recordUri"] = record_uri
        if take is not None:
            await ctx.db.write(takedown.set_blob_takedown, did, cid, take)
    else:
        raise InvalidRequest(f"Invalid subject ($type must be one of {REPO_REF}, {STRONG_REF}, {REPO_BLOB_REF}; "
                             f"got {kind!r})")
    if take is not None:
        ctx.log.info("subject status updated", extra={"subject": out_subject, "takedown": take.applied})
    out: dict[str, Any] = {"subject": out_subject}
    if take is not None:
        out["takedown"] = {"applied": take.applied, **({"ref": take.ref} if take.ref else {})}
    return out


async def get_subject_status(req: XrpcRequest) -> dict[str, Any]:
    db = req.ctx.db
    did = req.args.get("did")
    uri = req.args.get("uri")
    blob = req.args.get("blob")
    if blob is not None:
        if did is None:
            raise InvalidRequest("Must provide a did to request blob state")
        body = await takedown.blob_status(db, did, _cid(blob, "Params/blob"))
    elif uri is not None:
        path = await _record_path(req, uri, "Params/uri")
        body = await takedown.record_status(db, *path)
    elif did is not None:
        body = await takedown.account_status(db, did)
    else:
        raise InvalidRequest("No provided subject: give did, uri or did and blob")
    if body is None:
        raise InvalidRequest("Subject not found", "NotFound")
    return body


# -- account changes --------------------------------------------------------------------------------


async def delete_account_admin(req: XrpcRequest) -> None:
    did = req.body["did"]
    await deletion.delete(req.ctx, did)


async def update_account_handle(req: XrpcRequest) -> None:
    ctx = req.ctx
    did = req.body["did"]
    try:
        checked = check_handle(req.body["handle"], list(ctx.settings.service_handle_domains), allow_reserved=True)
    except HandleError as exc:
        raise InvalidRequest(str(exc), exc.name) from None
    account = await _account_by_did(req, did)
    await change_handle(ctx, did, account.handle, checked)
    ctx.log.info("admin changed handle", extra={"did": did, "handle": checked.handle})


async def update_account_email(req: XrpcRequest) -> None:
    ctx = req.ctx
    identifier = req.body["account"]  # a handle or DID
    email = req.capped("email", 512).strip()
    if not is_valid_email(email):
        raise InvalidRequest("This email address is not supported, please use a different email.")
    if identifier.startswith("did:"):
        account = await get_by_did(ctx.db, identifier)
    else:
        account = await get_by_handle(ctx.db, syntax.normalize_handle(identifier))
    if account is None:
        raise InvalidRequest(f"Account does not exist: {identifier}", "AccountNotFound")

    def run(conn: sqlite3.Connection) -> None:
        holder = accounts_store.did_for_email(conn, email)
        if holder is not None and holder != account.did:
            raise InvalidRequest(f"Email already taken: {email}")
        accounts_store.set_email(conn, account.did, email)

    await ctx.db.write(run)


async def update_account_password(req: XrpcRequest) -> None:
    ctx = req.ctx
    did = req.body["did"]
    password = req.capped("password", 4096)
    check_password(password)
    await _account_by_did(req, did)
    digest = await password_change.new_password_hash(ctx.hasher, password)
    # As the reference: every session of the account ends with the old password; beyond it, its
    # access tokens and OAuth grants end now too (squall.accounts.password_change).
    await ctx.db.write(password_change.set_password, did, digest)
    ctx.verifier.forget_revocations(did)
    ctx.log.info("admin changed password", extra={"did": did})


# -- invites ------------------------------------------------------------------------------------------


async def disable_invite_codes(req: XrpcRequest) -> None:
    codes = _string_list(req, "codes")
    accounts = _string_list(req, "accounts")
    if invites.ADMIN in accounts:
        raise InvalidRequest("cannot disable admin invite codes")

    def run(conn: sqlite3.Connection) -> None:
        invites_store.disable_invite_codes(conn, [(c,) for c in codes])
        invites_store.disable_invite_codes_of(conn, [(a,) for a in accounts])

    await req.ctx.db.write(run)


def _account_invites(disabled: bool):
    async def handler(req: XrpcRequest) -> None:
        did = req.body["account"]
        req.capped("note", 10_000)  # unused, but bounded

        def run(conn: sqlite3.Connection) -> None:
            if not accounts_store.set_invites_disabled(conn, did, disabled):
                raise deletion.AccountNotFound(did)

        await req.ctx.db.write(run)

    return handler


async def get_invite_codes(req: XrpcRequest) -> dict[str, Any]:
    sort = req.args["sort"]
    limit = req.args["limit"]
    cursor = req.capped_param("cursor", 1024)
    if sort not in invites_store.ORDER_KEYS:
        raise InvalidRequest(f"unknown sort method: {sort} (use recent or usage)")
    after = None
    if cursor is not None:
        primary, sep, code = cursor.partition("::")
        if not sep or not code:
            raise InvalidRequest("Malformed cursor")
        value: Any = primary
        if sort == "usage":
            try:
                value = int(primary, 10)
            except ValueError:
                raise InvalidRequest("Malformed cursor") from None
        after = (value, code)
    rows = await invites_store.list_invite_codes(req.ctx.db, sort, limit, after)
    uses = await _code_uses(req, [r["code"] for r in rows])
    out: dict[str, Any] = {"codes": [_code_view(r, uses) for r in rows]}
    if len(rows) == limit:
        last = rows[-1]
        out["cursor"] = f"{last['created_at'] if sort == 'recent' else last['uses']}::{last['code']}"
    return out


# -- no mail ------------------------------------------------------------------------------------------


async def send_email(req: XrpcRequest) -> dict[str, Any]:
    recipient = req.body["recipientDid"]
    if req.ctx.mail.moderation_enabled:  # PDS_MODERATION_EMAIL_* (squall.mail)
        await req.ctx.mail.send_moderation(recipient, req.capped("subject", 500), req.capped("content", 50_000))
        return {"sent": True}
    raise InvalidRequest("This PDS sends no moderation e-mail (PDS_MODERATION_EMAIL_SMTP_URL and "
                         "PDS_MODERATION_EMAIL_ADDRESS are not set). Reach the account holder another way; "
                         "nothing was sent.")


async def request_account_delete(req: XrpcRequest) -> None:
    if req.ctx.mail.enabled:  # the token by mail (squall.mail); without SMTP, the operator's
        return await req.ctx.mail.request_account_delete(req.did)
    account = await get_by_did(req.ctx.db, req.did)
    if account is None:
        raise InvalidRequest("account not found", "AccountNotFound")
    raise InvalidRequest(NO_MAIL + DELETE_HOWTO)


async def delete_account(req: XrpcRequest) -> None:
    """com.atproto.server.deleteAccount: the account's password and its live deletion token.

    The token is checked before the password: a request without a live token costs no argon2
    hash, and the token is checked again in the deleting transaction.
    """
    ctx = req.ctx
    did = req.body["did"]
    password = req.capped("password", 4096)
    token = req.capped("token", 64)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AuthRequired("Password too long. Consider resetting your password.")
    account = await get_by_did(ctx.db, did)
    if account is None:
        raise InvalidRequest("account not found", "AccountNotFound")
    await operator_tokens.precheck(ctx.db, did, operator_tokens.PURPOSE_DELETE, token)
    if account.password_hash is None or not await verify_password(ctx.hasher, account.password_hash, password):
        raise AuthRequired("Invalid did or password")
    await deletion.delete(ctx, did, token=token)


METHODS = (
    Method("com.atproto.admin.getAccountInfo", "query", get_account_info, Auth.ADMIN, errors=("NotFound",)),
    Method("com.atproto.admin.getAccountInfos", "query", get_account_infos, Auth.ADMIN),
    Method("com.atproto.admin.updateSubjectStatus", "procedure", update_subject_status, Auth.ADMIN,
           errors=("NotFound",), max_body=SMALL_BODY),
    Method("com.atproto.admin.getSubjectStatus", "query", get_subject_status, Auth.ADMIN, errors=("NotFound",)),
    Method("com.atproto.admin.deleteAccount", "procedure", delete_account_admin, Auth.ADMIN,
           errors=("AccountNotFound",), max_body=SMALL_BODY),
    Method("com.atproto.admin.updateAccountHandle", "procedure", update_account_handle, Auth.ADMIN,
           errors=("InvalidHandle", "HandleNotAvailable"), max_body=SMALL_BODY),
    Method("com.atproto.admin.updateAccountEmail", "procedure", update_account_email, Auth.ADMIN,
           max_body=SMALL_BODY),
    Method("com.atproto.admin.updateAccountPassword", "procedure", update_account_password, Auth.ADMIN,
           errors=("InvalidPassword",), max_body=SMALL_BODY),
    Method("com.atproto.admin.disableInviteCodes", "procedure", disable_invite_codes, Auth.ADMIN,
           max_body=SMALL_BODY),
    Method("com.atproto.admin.enableAccountInvites", "procedure", _account_invites(False), Auth.ADMIN,
           max_body=SMALL_BODY),
    Method("com.atproto.admin.disableAccountInvites", "procedure", _account_invites(True), Auth.ADMIN,
           max_body=SMALL_BODY),
    Method("com.atproto.admin.getInviteCodes", "query", get_invite_codes, Auth.ADMIN),
    Method("com.atproto.admin.sendEmail", "procedure", send_email, Auth.ADMIN, max_body=SMALL_BODY),
    Method("com.atproto.server.requestAccountDelete", "procedure", request_account_delete, Auth.FULL,
           input=None, max_body=SMALL_BODY,
           rate_limits=(RateLimit("request-account-delete-hour", 5, HOUR, KeyBy.DID),
                        RateLimit("request-account-delete-day", 15, DAY, KeyBy.DID))),
    Method("com.atproto.server.deleteAccount", "procedure", delete_account, Auth.NONE,
           errors=("ExpiredToken", "InvalidToken"), max_body=SMALL_BODY,
           rate_limits=(RateLimit("delete-account-ip", 50, 5 * MINUTE),)),
)
