"""com.atproto.sync.* — the repository sync read API (https://atproto.com/specs/sync and the
com.atproto.sync lexicons): getRepo, getLatestCommit, getRecord, getBlocks, listRepos,
getRepoStatus. getBlob, listBlobs and subscribeRepos live with the blob store and the firehose.

Repos that are taken down or deactivated are hidden from everyone but their owner and the admin,
with the reference's error names. CAR answers stream (``application/vnd.ipld.car``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from starlette.responses import Response, StreamingResponse

from ..atproto.car import encode_car
from ..auth.tokens import ACCESS_SCOPES, SCOPE_TAKENDOWN, TokenError
from ..repo import reader
from ..repo.export import WHOLE_BYTES, RepoExport, RepoNotStored, get_blocks as read_blocks, record_proof
from ..repo.prepare import parse_cid
from ..store import repos as repo_rows
from ..store.accounts import Account, find_account
from .errors import InvalidRequest
from .registry import Auth, Method
from .request import XrpcRequest

CAR_TYPE = "application/vnd.ipld.car"
MAX_GET_BLOCKS = 1000


async def _caller(req: XrpcRequest) -> tuple[str | None, bool]:
    """(caller DID, is admin) from an optional Authorization header. A taken-down account's own
    token (scope takendown) counts as its owner here, as the reference allows it to export."""
    header = req.http.headers.get("authorization")
    if not header:
        return None, False
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value.count(".") == 2:
        try:
            claims = req.ctx.issuer.decode(value, expect_typ="at+jwt")
        except TokenError as exc:
            name = "ExpiredToken" if exc.expired else "InvalidToken"
            raise InvalidRequest("Token has expired" if exc.expired else "Token could not be verified", name) from None
        if claims.scope not in ACCESS_SCOPES and claims.scope != SCOPE_TAKENDOWN:
            raise InvalidRequest("Bad token scope", "InvalidToken")
        cutoffs = req.ctx.verifier.revocations
        if cutoffs is not None and await cutoffs.revoked(claims.did, claims.app_password, claims.issued_ms):
            raise InvalidRequest("Token has been revoked", "ExpiredToken")
        return claims.did, False
    result = await req.ctx.verifier.verify(Auth.ADMIN, header)
    return None, result.is_admin


async def assert_repo_availability(req: XrpcRequest, identifier: str, *, self_or_admin: bool | None = None) -> Account:
    """The account whose repo is asked for, or the reference's RepoNotFound / RepoTakendown /
    RepoDeactivated. ``self_or_admin`` None: decided from the request's credentials."""
    account = await find_account(req.ctx.db, identifier)
    if account is None:
        raise InvalidRequest(f"Could not find repo for DID: {identifier}", "RepoNotFound")
    if self_or_admin is None:
        caller, is_admin = await _caller(req)
        self_or_admin = is_admin or caller == account.did
    if self_or_admin:
        return account
    if account.takedown_ref is not None:
        raise InvalidRequest(f"Repo has been takendown: {identifier}", "RepoTakendown")
    if account.deactivated_at is not None:
        raise InvalidRequest(f"Repo has been deactivated: {identifier}", "RepoDeactivated")
    return account


def _car(body: bytes) -> Response:
    return Response(body, media_type=CAR_TYPE)


async def get_repo(req: XrpcRequest) -> Response:
    did = req.args["did"]
    since = req.args.get("since")  # a repo rev (tid)
    await assert_repo_availability(req, did)
    try:
        export = await RepoExport.open(req.ctx.db, did, since, read_ahead=WHOLE_BYTES)
    except RepoNotStored:
        raise InvalidRequest(f"Could not find repo for DID: {did}", "RepoNotFound") from None
    whole = await export.whole_if_small()
    if whole is not None:
        return _ReadCar(whole)
    return StreamingResponse(export.chunks(), media_type=CAR_TYPE)


class _ReadCar(Response):
    """A CAR already read whole (small; the snapshot is closed): sent chunked like a streamed one,
    without StreamingResponse's disconnect-listening task group, which costs more than the send
    (issue #21). A large CAR streams, and a client that leaves stops the reading."""

    def __init__(self, body: bytes):
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-type", CAR_TYPE.encode("latin-1"))]

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def get_latest_commit(req: XrpcRequest) -> dict[str, Any]:
    did = req.args["did"]
    await assert_repo_availability(req, did)
    root = await reader.get_root(req.ctx.db, did)
    if root is None:
        raise InvalidRequest(f"Could not find root for DID: {did}", "RepoNotFound")
    return {"cid": root.cid, "rev": root.rev}


async def get_record(req: XrpcRequest) -> Response:
    did = req.args["did"]
    collection, rkey = req.args["collection"], req.args["rkey"]
    await assert_repo_availability(req, did)
    service = req.ctx.repo
    cache = service.node_cache if service is not None else None
    async with req.ctx.db.reader() as conn:
        car = await record_proof(conn, did, collection, rkey, cache)
    if car is None:
        raise InvalidRequest(f"Could not find repo for DID: {did}", "RepoNotFound")
    return _car(car)


async def get_blocks(req: XrpcRequest) -> Response:
    did = req.args["did"]
    raw = req.capped_list_param("cids", MAX_GET_BLOCKS)
    cids = [parse_cid(value, f"Params/cids/{i}") for i, value in enumerate(raw)]
    await assert_repo_availability(req, did)
    async with req.ctx.db.reader() as conn:
        found, missing = await read_blocks(conn, did, cids)
    if missing:
        raise InvalidRequest(f"Could not find cids: {', '.join(str(c) for c in missing)}", "BlockNotFound")
    return _car(encode_car([], found))


def _status(row: Any) -> tuple[bool, str | None]:
    if row["takedown_ref"] is not None:
        return False, "takendown"
    if row["deactivated_at"] is not None:
        return False, "deactivated"
    return True, None


def _cursor(created_at: str, did: str) -> str:
    ms = int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp() * 1000)
    return f"{ms}::{did}"


def _parse_cursor(cursor: str) -> tuple[str, str]:
    ms, sep, did = cursor.partition("::")
    try:
        if not sep or not ms.isdigit():
            raise ValueError
        when = datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest("Malformed cursor") from None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), did


async def list_repos(req: XrpcRequest) -> dict[str, Any]:
    limit = req.args["limit"]
    cursor = req.capped_param("cursor", 4096)
    after = _parse_cursor(cursor) if cursor is not None else None
    rows = await repo_rows.list_repos(req.ctx.db, limit, after)
    repos = []
    for row in rows:
        active, status = _status(row)
        entry: dict[str, Any] = {"did": row["did"], "head": row["cid"], "rev": row["rev"] or "", "active": active}
        if status is not None:
            entry["status"] = status
        repos.append(entry)
    out: dict[str, Any] = {"repos": repos}
    if rows:
        out["cursor"] = _cursor(rows[-1]["created_at"], rows[-1]["did"])
    return out


async def get_repo_status(req: XrpcRequest) -> dict[str, Any]:
    did = req.args["did"]
    account = await assert_repo_availability(req, did, self_or_admin=True)
    out: dict[str, Any] = {"did": did, "active": account.active}
    if account.status is not None:
        out["status"] = account.status
    if account.active:
        root = await reader.get_root(req.ctx.db, did)
        if root is not None:
            out["rev"] = root.rev
    return out


_HIDDEN = ("RepoNotFound", "RepoTakendown", "RepoSuspended", "RepoDeactivated")

METHODS = (
    Method("com.atproto.sync.getRepo", "query", get_repo, Auth.NONE, errors=_HIDDEN),
    Method("com.atproto.sync.getLatestCommit", "query", get_latest_commit, Auth.NONE, errors=_HIDDEN),
    Method("com.atproto.sync.getRecord", "query", get_record, Auth.NONE, errors=("RecordNotFound", *_HIDDEN)),
    Method("com.atproto.sync.getBlocks", "query", get_blocks, Auth.NONE, errors=("BlockNotFound", *_HIDDEN)),
    Method("com.atproto.sync.listRepos", "query", list_repos, Auth.NONE),
    Method("com.atproto.sync.getRepoStatus", "query", get_repo_status, Auth.NONE, errors=("RepoNotFound",)),
)


# -- small methods the reference still serves (issue #19) ---------------------------------------------


async def get_head(req: XrpcRequest) -> dict[str, Any]:
    """Deprecated (getLatestCommit replaces it), still called by old tools: the root commit CID."""
    did = req.args["did"]
    await assert_repo_availability(req, did)
    root = await reader.get_root(req.ctx.db, did)
    if root is None:
        raise InvalidRequest(f"Could not find root for DID: {did}", "HeadNotFound")
    return {"root": root.cid}


async def get_checkout(req: XrpcRequest) -> Response:
    """Deprecated (getRepo replaces it): the whole current repo as a CAR."""
    did = req.args["did"]
    await assert_repo_availability(req, did)
    try:
        export = await RepoExport.open(req.ctx.db, did, None)
    except RepoNotStored:
        raise InvalidRequest(f"Could not find repo for DID: {did}", "RepoNotFound") from None
    return StreamingResponse(export.chunks(), media_type=CAR_TYPE)


METHODS = METHODS + (
    Method("com.atproto.sync.getHead", "query", get_head, Auth.NONE, errors=("HeadNotFound", *_HIDDEN)),
    Method("com.atproto.sync.getCheckout", "query", get_checkout, Auth.NONE, errors=_HIDDEN),
)
