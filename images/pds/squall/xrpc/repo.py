"""com.atproto.repo.* — record writes and reads (https://atproto.com/specs/repository and the
com.atproto.repo lexicons; error names, statuses and the ``validate`` semantics follow the
reference PDS).

Handlers read and check the input, pick the account, and hand prepared writes to the repo service
(``ctx.repo``), which commits them in one transaction. Reads use the reader pool.
"""

from __future__ import annotations

from typing import Any

from ..store.accounts import find_account
from ..atproto.repo import CREATE, MAX_OPS_PER_COMMIT, UPDATE
from ..identity.document import handle_from_doc
from ..ratelimit import REPO_WRITE, WRITE_POINTS, apply_writes_points
from ..repo import reader
from ..repo.prepare import PUT, UNSET, PreparedWrite, parse_cid
from ..repo.service import RepoService
from ..repo.writer import check_account_row
from .errors import AuthRequired, InvalidRequest
from .registry import Auth, Method
from .request import XrpcRequest
from .sync import assert_repo_availability

INVALID_HANDLE = "handle.invalid"
WRITE_BODY_LIMIT = 1_000_000  # the reference's jsonLimit for record writes

_CREATE = "com.atproto.repo.applyWrites#create"
_UPDATE = "com.atproto.repo.applyWrites#update"
_DELETE = "com.atproto.repo.applyWrites#delete"


def _service(req: XrpcRequest) -> RepoService:
    return req.ctx.repo


async def _writer_did(req: XrpcRequest) -> str:
    """The repo being written: it must be the caller's own. Whether the account exists and is
    active is checked inside the write transaction, where it counts (AccountNotFound,
    AccountTakedown, AccountDeactivated), so the caller's own DID costs no lookup here."""
    identifier = req.body["repo"]
    if identifier == req.did:
        return identifier
    account = await find_account(req.ctx.db, identifier)
    check_account_row(None if account is None else {"takedown_ref": account.takedown_ref,
                                                    "deactivated_at": account.deactivated_at})
    assert account is not None
    if account.did != req.did:
        raise AuthRequired()
    return account.did


# The inputs below have been checked against the method's Lexicon by the dispatcher (types,
# required properties, formats); the preparer adds the record-type rules (key type, record schema).


def _swap_commit(req: XrpcRequest):
    value = req.body.get("swapCommit")
    return parse_cid(value, "Input/swapCommit") if value is not None else None


def _write_view(did: str, w: PreparedWrite) -> dict[str, Any]:
    out: dict[str, Any] = {"uri": w.uri(did), "cid": str(w.cid)}
    if w.validation_status is not None:
        out["validationStatus"] = w.validation_status
    return out


# -- writes ----------------------------------------------------------------------------------------


async def create_record(req: XrpcRequest) -> dict[str, Any]:
    did = await _writer_did(req)
    service = _service(req)
    write = service.preparer.record_write(
        CREATE, req.body["collection"], req.body.get("rkey"), req.body["record"],
        validate=req.body.get("validate"),
    )
    outcome = await service.apply(did, [write], _swap_commit(req))
    return {**_write_view(did, write), "commit": outcome.commit_view()}


async def put_record(req: XrpcRequest) -> dict[str, Any]:
    did = await _writer_did(req)
    service = _service(req)
    body = req.body
    raw_swap = body.get("swapRecord", UNSET)
    if raw_swap is UNSET or raw_swap is None:
        swap = raw_swap  # absent: no check; null: the record must not exist yet
    else:
        swap = parse_cid(raw_swap, "Input/swapRecord")
    write = service.preparer.record_write(
        PUT, req.body["collection"], req.body["rkey"], req.body["record"],
        validate=body.get("validate"), swap_record=swap,
    )
    outcome = await service.apply(did, [write], _swap_commit(req))
    out = _write_view(did, write)
    commit = outcome.commit_view()
    if commit is not None:
        out["commit"] = commit
    return out


async def delete_record(req: XrpcRequest) -> dict[str, Any]:
    did = await _writer_did(req)
    service = _service(req)
    swap_value = req.body.get("swapRecord")
    swap = parse_cid(swap_value, "Input/swapRecord") if swap_value is not None else UNSET
    write = service.preparer.delete(req.body["collection"], req.body["rkey"],
                                    swap_record=swap, missing_ok=True)
    outcome = await service.apply(did, [write], _swap_commit(req))
    commit = outcome.commit_view()
    return {"commit": commit} if commit is not None else {}


async def apply_writes(req: XrpcRequest) -> dict[str, Any]:
    did = await _writer_did(req)
    service = _service(req)
    raw = req.body["writes"]
    if len(raw) > MAX_OPS_PER_COMMIT:
        raise InvalidRequest(f"Too many writes. Max: {MAX_OPS_PER_COMMIT}")
    if not raw:
        raise InvalidRequest("Input/writes must hold at least one write")
    validate = req.body.get("validate")
    prepared: list[PreparedWrite] = []
    for i, item in enumerate(raw):
        # A closed union: each item is one of the three, with its required properties.
        where = f"Input/writes/{i}"
        kind = item["$type"]
        if kind == _CREATE:
            prepared.append(service.preparer.record_write(
                CREATE, item["collection"], item.get("rkey"), item["value"], validate=validate, where=where))
        elif kind == _UPDATE:
            prepared.append(service.preparer.record_write(
                UPDATE, item["collection"], item["rkey"], item["value"], validate=validate, where=where))
        else:  # _DELETE
            prepared.append(service.preparer.delete(item["collection"], item["rkey"], where=where))
    outcome = await service.apply(did, prepared, _swap_commit(req))
    results = []
    for w in prepared:
        if w.action == CREATE:
            results.append({"$type": "com.atproto.repo.applyWrites#createResult", **_write_view(did, w)})
        elif w.action == UPDATE:
            results.append({"$type": "com.atproto.repo.applyWrites#updateResult", **_write_view(did, w)})
        else:
            results.append({"$type": "com.atproto.repo.applyWrites#deleteResult"})
    return {"commit": outcome.commit_view(), "results": results}


# -- reads -----------------------------------------------------------------------------------------


async def _readable_did(req: XrpcRequest, identifier: str) -> str | None:
    """The DID of an active local account (the reference's getDidForActor), else None."""
    return await reader.active_did(req.ctx.db, identifier)


async def get_record(req: XrpcRequest) -> dict[str, Any]:
    repo, collection, rkey = req.args["repo"], req.args["collection"], req.args["rkey"]
    cid = req.args.get("cid")
    if cid is not None:  # its canonical form
        cid = str(parse_cid(cid, "Params/cid"))
    record = await reader.get_active_record(req.ctx.db, repo, collection, rkey, cid,
                                            prepared=_service(req).prepared_readers)
    if record is None:
        raise InvalidRequest(f"Could not locate record: at://{repo}/{collection}/{rkey}", "RecordNotFound")
    return record.view()


async def list_records(req: XrpcRequest) -> dict[str, Any]:
    repo, collection, limit = req.args["repo"], req.args["collection"], req.args["limit"]
    cursor = req.capped_param("cursor", 512)
    reverse = req.args.get("reverse", False)
    did = await _readable_did(req, repo)
    if did is None:
        raise InvalidRequest(f"Could not find repo: {repo}")
    records = await reader.list_records(req.ctx.db, did, collection, limit=limit, cursor=cursor, reverse=reverse)
    out: dict[str, Any] = {"records": [r.view() for r in records]}
    if records:
        out["cursor"] = records[-1].uri.rsplit("/", 1)[1]
    return out


async def describe_repo(req: XrpcRequest) -> dict[str, Any]:
    repo = req.args["repo"]
    account = await assert_repo_availability(req, repo, self_or_admin=False)
    identity = req.ctx.identity
    doc = None
    if identity is not None:
        try:
            doc = await identity.resolve_did(account.did)
        except Exception as exc:
            raise InvalidRequest(f"Could not resolve DID: {exc}") from None
    if doc is None:
        raise InvalidRequest(f"Could not resolve DID: {account.did}")
    collections = await reader.list_collections(req.ctx.db, account.did)
    return {
        "handle": account.handle or INVALID_HANDLE,
        "did": account.did,
        "didDoc": doc,
        "collections": collections,
        "handleIsCorrect": account.handle is not None and handle_from_doc(doc) == account.handle,
    }


_WRITE_ERRORS = ("InvalidSwap", "AccountTakedown", "AccountDeactivated", "AccountNotFound")

METHODS = (
    Method("com.atproto.repo.createRecord", "procedure", create_record, Auth.ACCESS,
           errors=_WRITE_ERRORS, max_body=WRITE_BODY_LIMIT, rate_limits=REPO_WRITE, rate_cost=WRITE_POINTS["create"]),
    Method("com.atproto.repo.putRecord", "procedure", put_record, Auth.ACCESS,
           errors=_WRITE_ERRORS, max_body=WRITE_BODY_LIMIT, rate_limits=REPO_WRITE, rate_cost=WRITE_POINTS["update"]),
    Method("com.atproto.repo.deleteRecord", "procedure", delete_record, Auth.ACCESS,
           errors=_WRITE_ERRORS, max_body=WRITE_BODY_LIMIT, rate_limits=REPO_WRITE, rate_cost=WRITE_POINTS["delete"]),
    Method("com.atproto.repo.applyWrites", "procedure", apply_writes, Auth.ACCESS,
           errors=_WRITE_ERRORS, max_body=WRITE_BODY_LIMIT, rate_limits=REPO_WRITE, rate_cost=apply_writes_points),
    Method("com.atproto.repo.getRecord", "query", get_record, Auth.NONE, errors=("RecordNotFound",)),
    Method("com.atproto.repo.listRecords", "query", list_records, Auth.NONE),
    Method("com.atproto.repo.describeRepo", "query", describe_repo, Auth.NONE,
           errors=("RepoNotFound", "RepoTakendown", "RepoDeactivated")),
)
