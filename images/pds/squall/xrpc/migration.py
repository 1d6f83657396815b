"""Account migration XRPC methods (https://atproto.com/guides/account-migration):
com.atproto.repo.importRepo and com.atproto.identity.submitPlcOperation for an account moving in;
com.atproto.identity.requestPlcOperationSignature and signPlcOperation for one moving out.

createAccount with an existing ``did`` lives with the other account methods (squall.xrpc.server)
and hands over to ``squall.accounts.migration``; activateAccount and checkAccountStatus there
serve migrated accounts unchanged. The rules live in ``squall.accounts.migration`` and
``squall.repo.importer``; this module reads the input, picks the caller and shapes the output.

requestPlcOperationSignature mails the token signPlcOperation wants when SMTP is set up
(``squall.mail``); without it, it answers 400 with the way that works (the operator issues the
token with ``squall account plc-token``, which signPlcOperation takes either way).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..accounts import migration, operator_tokens
from ..atproto.crypto import PublicKey
from ..identity import plc
from ..atproto import syntax
from ..repo.importer import MAX_IMPORT_BYTES, ROLLBACK_ERROR, import_repo
from ..store.accounts import get_by_did
from .dispatch import check_declared_length, error_response
from .errors import InvalidRequest, UpstreamFailure, XRPCError
from .registry import Auth, Method
from .request import XrpcRequest

CAR_MIME = "application/vnd.ipld.car"


async def _commit_keys(ctx: Any, did: str, own_key: PublicKey) -> list[PublicKey]:
    """The keys an imported commit may be signed with: the DID document's ``#atproto`` key (the
    old PDS's, while the identity still points there). When the document already names this
    account's new key (the user moved the identity before importing), the earlier ``#atproto``
    keys of the did:plc log count too, since the commit was signed before the move."""
    identity = ctx.identity
    try:
        doc = await identity.resolve_did(did, fresh=True)
    except Exception as exc:
        raise UpstreamFailure(f"Could not resolve {did} to check the repository's signature: {exc}") from None
    key = identity.signing_key_from_doc(doc) if doc is not None else None
    if key is None:
        raise InvalidRequest(f"The DID document of {did} has no usable #atproto signing key", "InvalidDidDoc")
    keys = [key]
    if key == own_key and plc.is_plc_did(did):
        try:
            log = await identity.plc.get_audit_log(did) or []
        except plc.PlcUnavailable as exc:
            raise UpstreamFailure(f"Could not read the PLC log of {did}: {exc}") from None
        for entry in log:
            op = entry.get("operation") if isinstance(entry, dict) else None
            if not isinstance(op, dict) or entry.get("nullified"):
                continue
            if op.get("type") == plc.LEGACY_CREATE_TYPE:
                did_key = op.get("signingKey")
            else:
                methods = op.get("verificationMethods")
                did_key = methods.get("atproto") if isinstance(methods, dict) else None
            try:
                earlier = PublicKey.from_did_key(did_key) if isinstance(did_key, str) else None
            except Exception:
                earlier = None
            if earlier is not None and earlier not in keys:
                keys.append(earlier)
    return keys


async def import_repo_handler(req: XrpcRequest) -> dict[str, Any] | None:
    await _import(req.ctx, req.http, req.did, allow_rollback=False)
    return None


async def _import(ctx: Any, http: Request, did: str, *, allow_rollback: bool) -> None:
    ctype = http.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != CAR_MIME:
        raise InvalidRequest(f"Wrong request encoding (Content-Type): expected {CAR_MIME}")
    if not ctx.settings.accepting_repo_imports:  # PDS_ACCEPTING_REPO_IMPORTS=false
        raise InvalidRequest("Service is not accepting repo imports")
    limit = min(MAX_IMPORT_BYTES, ctx.settings.max_repo_import_size)  # PDS_MAX_REPO_IMPORT_SIZE
    check_declared_length(http, limit, f"Repository CAR exceeds the import limit of {limit} bytes")
    account = await get_by_did(ctx.db, did)
    if account is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    if account.is_takendown:
        raise InvalidRequest("Account has been taken down", "AccountTakedown")
    own_key = account.keypair().public_key

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in http.stream():
                if chunk:
                    yield chunk
        except ClientDisconnect:
            raise InvalidRequest("The upload was cut off before the whole CAR arrived; nothing was stored") from None

    async def keys() -> list[PublicKey]:
        return await _commit_keys(ctx, did, own_key)

    await import_repo(ctx, did, body(), keys, max_bytes=limit, allow_rollback=allow_rollback)


# -- the operator's override: ``squall account import --force`` ------------------------------------

FORCE_IMPORT_PATH = "/xrpc/_admin/import-repo"


def routes(app: Any, get_ctx: Callable[[], Any]) -> None:
    @app.post(FORCE_IMPORT_PATH)
    async def force_import_repo(request: Request) -> Response:
        """Admin only: import a CAR into ``?did=`` even when its rev is not newer (a deliberate
        rollback, e.g. restoring a repo from an export). The commit must still be signed by the
        account's DID-document key, so it can only be a state the repo really had."""
        ctx = get_ctx()
        try:
            await ctx.verifier.verify(Auth.ADMIN, request.headers.get("authorization"))
            did = request.query_params.get("did") or ""
            if not syntax.is_valid_did(did):  # noqa: the checker twin of ensure_valid_did
                raise InvalidRequest("Params/did must be a valid did")
            await _import(ctx, request, did, allow_rollback=True)
        except XRPCError as err:
            return error_response(err)
        ctx.log.warning("repository import forced by the operator", extra={"did": did})
        return Response(status_code=200)


async def submit_plc_operation(req: XrpcRequest) -> None:
    operation = req.body["operation"]
    await migration.submit_plc_operation(req.ctx, req.did, operation)


NO_MAIL_PLC = "This PDS sends no e-mail (its operator has not set PDS_EMAIL_SMTP_URL). To have it sign a PLC operation, " + migration.PLC_TOKEN_HOWTO + "."


async def request_plc_operation_signature(req: XrpcRequest) -> None:
    if req.ctx.mail.enabled:  # the token by mail (squall.mail); without SMTP, the operator's
        return await req.ctx.mail.request_plc_operation_signature(req.did)
    if await get_by_did(req.ctx.db, req.did) is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    raise InvalidRequest(NO_MAIL_PLC)


async def sign_plc_operation(req: XrpcRequest) -> dict[str, Any]:
    body = req.body  # checked against the Lexicon: token a string, the lists strings
    token = body.get("token")
    if token is not None and len(token) > operator_tokens.MAX_TOKEN_LENGTH:
        raise InvalidRequest("Token is invalid", "InvalidToken")
    operation = await migration.sign_plc_operation(
        req.ctx, req.did, token,
        rotation_keys=body.get("rotationKeys"),
        also_known_as=body.get("alsoKnownAs"),
        verification_methods=body.get("verificationMethods"),
        services=body.get("services"),
    )
    return {"operation": operation}


METHODS = (
    # max_body is not used for raw input (the importer bounds the stream itself); it states the limit.
    # A full session, as the reference: an app password may not replace the whole repository.
    Method("com.atproto.repo.importRepo", "procedure", import_repo_handler, Auth.FULL, input="bytes",
           errors=(ROLLBACK_ERROR,), max_body=MAX_IMPORT_BYTES),
    Method("com.atproto.identity.submitPlcOperation", "procedure", submit_plc_operation, Auth.FULL,
           max_body=100_000),
    Method("com.atproto.identity.requestPlcOperationSignature", "procedure", request_plc_operation_signature,
           Auth.FULL, input=None, max_body=100_000),
    Method("com.atproto.identity.signPlcOperation", "procedure", sign_plc_operation, Auth.FULL,
           errors=("InvalidToken", "ExpiredToken"), max_body=100_000),
)
