"""Blob references of records (https://atproto.com/specs/data-model#blob-type, https://atproto.com/specs/blob).

Called by the repository writer INSIDE its write transaction, so a record and its blob references
are stored together or not at all:

- :func:`link_record_blobs` checks every blob a record references against what this account
  uploaded (same CID, mime type and size) and stores the references. It returns the blobs still
  staged as temp uploads; the writer hands them to ``BlobService.make_permanent`` after commit.
- :func:`unlink_record_blobs` drops a record's references (delete, or before an update re-links);
  a blob left without any reference is stamped ``unreferenced_since`` and collected by the garbage
  collector once the grace period has passed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Iterator

from ..atproto.cid import CID
from ..atproto.dagcbor import MAX_DEPTH
from ..atproto.errors import DecodeError
from ..store import blobs as blob_rows
from ..store.sequencer import now_iso
from ..errors import InvalidRequest


@dataclass(frozen=True)
class BlobRef:
    cid: CID
    mime_type: str
    size: int | None  # None for legacy refs, which carry no size


def find_blob_refs(record: Any) -> list[BlobRef]:
    """Every blob reference in a data-model value, in document order, without duplicates."""
    seen: dict[CID, BlobRef] = {}
    for ref in _walk(record):
        seen.setdefault(ref.cid, ref)
    return list(seen.values())


def _walk(value: Any) -> Iterator[BlobRef]:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"Record is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            ref = _as_blob_ref(node)
            if ref is not None:
                yield ref
                continue
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        for child in reversed(children):
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def _as_blob_ref(node: dict[str, Any]) -> BlobRef | None:
    if node.get("$type") == "blob":
        ref, mime, size = node.get("ref"), node.get("mimeType"), node.get("size")
        if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
            ref = ref["$link"]  # a JSON-form link, if a caller passes one
        cid = _cid(ref)
        if not isinstance(mime, str) or not mime:
            raise InvalidRequest("Blob reference must have a mimeType", "InvalidBlob")
        if type(size) is not int or size < 0:
            raise InvalidRequest("Blob reference must have a non-negative integer size", "InvalidBlob")
        return BlobRef(cid, mime, size)
    # Legacy blob references: {cid: "<cid string>", mimeType}, written before the blob type existed.
    if "$type" not in node and set(node) == {"cid", "mimeType"} and isinstance(node["cid"], str) \
            and isinstance(node["mimeType"], str):
        return BlobRef(_cid(node["cid"]), node["mimeType"], None)
    return None


def _cid(value: Any) -> CID:
    if isinstance(value, CID):
        return value
    if isinstance(value, str):
        try:
            return CID.decode(value)
        except (DecodeError, ValueError):
            pass
    raise InvalidRequest("Blob reference has an invalid CID", "InvalidBlob")


def link_record_blobs(conn: sqlite3.Connection, did: str, uri: str, record: dict) -> list[CID]:
    """Check and store the blob references of ``record`` (at ``uri``); return CIDs still to make permanent.

    Raises InvalidRequest ``BlobNotFound`` for a blob this account did not upload (or that was
    taken down), ``InvalidMimeType`` / ``InvalidSize`` when the reference disagrees with the upload.
    """
    pending: list[CID] = []
    refs = find_blob_refs(record)
    for ref in refs:
        cid = str(ref.cid)
        row = blob_rows.get_blob_for_ref(conn, did, cid)
        if row is None or row[3] is not None:
            raise InvalidRequest(f"Could not find blob: {cid}", "BlobNotFound")
        mime_type, size, temp_key = row[0], row[1], row[2]
        if ref.mime_type != mime_type:
            raise InvalidRequest(
                f"Referenced Mimetype does not match stored blob. Expected: {mime_type}, Got: {ref.mime_type}",
                "InvalidMimeType",
            )
        if ref.size is not None and ref.size != size:
            raise InvalidRequest(
                f"Referenced Size does not match stored blob. Expected: {size}, Got: {ref.size}", "InvalidSize"
            )
        blob_rows.add_record_blob_ref(conn, did, cid, uri)
        if temp_key is not None:
            pending.append(ref.cid)
    return pending


def unlink_record_blobs(conn: sqlite3.Connection, did: str, uri: str) -> None:
    """Drop the blob references of the record at ``uri``; stamp blobs left unreferenced."""
    cids = blob_rows.remove_record_blob_refs(conn, did, uri)
    if cids:
        blob_rows.mark_unreferenced(conn, did, cids, now_iso())
