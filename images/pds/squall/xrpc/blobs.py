"""Blob XRPC methods and the blob feature module.

com.atproto.repo.uploadBlob, com.atproto.repo.listMissingBlobs, com.atproto.sync.getBlob and
com.atproto.sync.listBlobs (https://atproto.com/specs/blob, https://atproto.com/specs/sync and
their lexicons); error names follow the reference PDS. The storage and rules live in
``squall.blobs``; this module reads the input, checks who may see what and shapes the output.

getBlob serves untrusted bytes from the PDS's own origin, so every answer carries
``x-content-type-options: nosniff`` and ``content-security-policy: default-src 'none'; sandbox``
(a browser neither guesses a scriptable type nor runs anything in it).
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from ..atproto.cid import CID
from ..atproto.errors import DecodeError
from ..auth.verifier import ANONYMOUS, AuthResult
from ..blobs.service import BlobService
from ..blobs.store import BlobNotFoundError, BlobStoreError
from ..ratelimit import DAY, KeyBy, RateLimit
from ..store import blobs as blob_rows
from ..store.accounts import get_by_did
from .dispatch import check_declared_length
from .errors import InvalidRequest, RangeNotSatisfiable, UpstreamFailure
from .registry import Auth, Method
from .request import XrpcRequest

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox",
}
_RANGE = re.compile(r"^(\d{0,18})-(\d{0,18})$")


# -- feature module ------------------------------------------------------------------------------------


async def start(ctx: Any) -> None:
    service = BlobService.from_settings(ctx.db, ctx.settings, ctx.log)
    await service.start()
    ctx.blobs = service


async def stop(ctx: Any) -> None:
    await ctx.blobs.stop()


# -- helpers -----------------------------------------------------------------------------------------------


def _service(req: XrpcRequest) -> BlobService:
    return req.ctx.blobs


def _cid_arg(req: XrpcRequest, name: str) -> CID | None:
    """Parameter ``name`` decoded as a CID; None when absent. The Lexicon checks only the loose
    syntax of a ``cid`` (and ``cursor`` is a plain string to it, the last CID listed to Squall)."""
    raw = req.capped_param(name, 512)
    if raw is None:
        return None
    try:
        return CID.decode(raw)
    except (DecodeError, ValueError):
        raise InvalidRequest(f"Error: Params property \"{name}\" must be a cid string") from None


async def _optional_user_or_admin(req: XrpcRequest) -> AuthResult:
    """The reference's optional access-or-admin check: no credentials is fine, bad ones are not."""
    header = req.http.headers.get("authorization")
    if not header:
        return ANONYMOUS
    return await req.ctx.verifier.verify(Auth.ACCESS_OR_ADMIN, header)


async def _assert_repo_available(req: XrpcRequest, did: str) -> None:
    """Taken-down and deactivated repos are visible to their owner and the admin only."""
    auth = await _optional_user_or_admin(req)
    account = await get_by_did(req.ctx.db, did)
    if account is None:
        raise InvalidRequest(f"Could not find repo for DID: {did}", "RepoNotFound")
    if auth.is_admin or auth.did == did:
        return
    if account.takedown_ref is not None:
        raise InvalidRequest(f"Repo has been takendown: {did}", "RepoTakendown")
    if account.deactivated_at is not None:
        raise InvalidRequest(f"Repo has been deactivated: {did}", "RepoDeactivated")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``Range: bytes=…`` → (first, last) inclusive; None to send the whole blob.

    Several ranges are answered with the whole blob (allowed by RFC 9110 §14.2); a malformed or
    unsatisfiable single range raises RangeNotSatisfiable.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        raise _unsatisfiable(size, "Range must be of the form bytes=first-last")
    if "," in spec:
        return None
    m = _RANGE.match(spec.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise _unsatisfiable(size, "Range must be of the form bytes=first-last")
    if not m.group(1):
        suffix = int(m.group(2))
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size, "Range is empty")
        return max(0, size - suffix), size - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else size - 1
    if last < first:
        raise _unsatisfiable(size, "Range ends before it starts")
    if first >= size:
        raise _unsatisfiable(size, f"Range starts beyond the blob's {size} bytes")
    return first, min(last, size - 1)


def _unsatisfiable(size: int, message: str) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(message, headers={"content-range": f"bytes */{size}", **SECURITY_HEADERS})


# -- com.atproto.repo.uploadBlob ------------------------------------------------------------------------


async def upload_blob(req: XrpcRequest) -> dict[str, Any]:
    limit = req.ctx.settings.blob_upload_limit
    check_declared_length(req.http, limit, f"Blob exceeds the upload limit of {limit} bytes")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in req.http.stream():
                yield chunk
        except ClientDisconnect:
            raise InvalidRequest("Upload was cut off before the whole body arrived; nothing was stored") from None

    try:
        blob = await _service(req).upload(req.did, req.http.headers.get("content-type"), body())
    except BlobStoreError as exc:
        req.ctx.log.error("blob upload failed: %s", exc)
        raise UpstreamFailure("Blob storage is unavailable; the upload was not stored. Try again later.") from None
    return {"blob": blob}


# -- com.atproto.sync.getBlob ----------------------------------------------------------------------------


async def get_blob(req: XrpcRequest) -> StreamingResponse:
    did = req.args["did"]
    cid = _cid_arg(req, "cid")
    assert cid is not None  # required by the Lexicon
    await _assert_repo_available(req, did)
    service = _service(req)
    info = await service.info(did, cid)
    if info is None:
        raise InvalidRequest("Blob not found", "BlobNotFound")
    headers = {"content-type": info.mime_type, "accept-ranges": "bytes", **SECURITY_HEADERS}
    status = 200
    first, last = 0, info.size - 1
    range_header = req.http.headers.get("range")
    if range_header is not None:
        chosen = parse_range(range_header, info.size)
        if chosen is not None:
            first, last = chosen
            status = 206
            headers["content-range"] = f"bytes {first}-{last}/{info.size}"
    headers["content-length"] = str(max(0, last - first + 1))
    try:
        stream = await service.open(info, first, last if status == 206 else None)
    except BlobNotFoundError:
        req.ctx.log.error("blob %s of %s is recorded but missing from the store", cid, did)
        raise InvalidRequest("Blob not found", "BlobNotFound") from None
    except BlobStoreError as exc:
        req.ctx.log.error("blob read failed: %s", exc)
        raise UpstreamFailure("Blob storage is unavailable. Try again later.") from None
    return StreamingResponse(stream, status_code=status, headers=headers)


# -- com.atproto.sync.listBlobs ----------------------------------------------------------------------------


async def list_blobs(req: XrpcRequest) -> dict[str, Any]:
    did, since, limit = req.args["did"], req.args.get("since"), req.args["limit"]
    cursor = _cid_arg(req, "cursor")
    await _assert_repo_available(req, did)
    after = str(cursor) if cursor is not None else ""
    cids = await blob_rows.list_record_blob_cids(req.ctx.db, did, after, limit, since)
    out: dict[str, Any] = {"cids": cids}
    if len(cids) == limit:
        out["cursor"] = cids[-1]
    return out


# -- com.atproto.repo.listMissingBlobs ----------------------------------------------------------------------


async def list_missing_blobs(req: XrpcRequest) -> dict[str, Any]:
    limit = req.args["limit"]
    cursor = _cid_arg(req, "cursor")
    after = str(cursor) if cursor is not None else ""
    rows = await blob_rows.list_missing_blobs(req.ctx.db, req.did, after, limit)
    blobs = [{"cid": row["cid"], "recordUri": row["uri"]} for row in rows]
    out: dict[str, Any] = {"blobs": blobs}
    if len(blobs) == limit:
        out["cursor"] = blobs[-1]["cid"]
    return out


METHODS = (
    Method("com.atproto.repo.uploadBlob", "procedure", upload_blob, Auth.ACCESS, input="bytes",
           rate_limits=(RateLimit("upload-blob-day", 1000, DAY, KeyBy.DID_IP),)),
    Method("com.atproto.repo.listMissingBlobs", "query", list_missing_blobs, Auth.ACCESS, input=None),
    Method("com.atproto.sync.getBlob", "query", get_blob, Auth.NONE, input=None,
           errors=("BlobNotFound", "RepoNotFound", "RepoTakendown", "RepoSuspended", "RepoDeactivated")),
    Method("com.atproto.sync.listBlobs", "query", list_blobs, Auth.NONE, input=None,
           errors=("RepoNotFound", "RepoTakendown", "RepoSuspended", "RepoDeactivated")),
)
