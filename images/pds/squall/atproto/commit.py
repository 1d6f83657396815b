"""Signed repository commits, format v3 (https://atproto.com/specs/repository#commit-objects).

A commit is the DAG-CBOR map ``{did, version: 3, data, rev, prev, sig}``. The signature covers the
DAG-CBOR bytes of the same map without ``sig`` (the "UnsignedCommit"), hashed with SHA-256 by the
key (``Keypair.sign`` / ``PublicKey.verify``), and must be a 64-byte low-S ``r || s``. ``prev``
must be present; in v3 it is virtually always null. The commit's CID is that of the signed map.
"""

from __future__ import annotations

from typing import Any

from . import dagcbor
from .cid import CID
from .crypto import Keypair, PublicKey, parse_did_key
from .errors import AtprotoError, DecodeError, InvalidSyntax
from .syntax import ensure_valid_did
from .tid import ensure_valid_tid

__all__ = ["COMMIT_VERSION", "sign_commit", "verify_commit", "decode_commit", "check_commit", "unsigned_bytes"]

COMMIT_VERSION = 3
_FIELDS = frozenset({"did", "version", "data", "rev", "prev", "sig"})


def _check_did(did: object) -> None:
    try:
        ensure_valid_did(did)  # type: ignore[arg-type]
    except InvalidSyntax as exc:
        raise DecodeError(f"commit 'did' is not a DID: {exc}") from exc


def check_commit(commit: object) -> dict:
    """Check the shape of a decoded commit and return it; ``DecodeError`` on anything else."""
    if type(commit) is not dict:
        raise DecodeError(f"commit must be a map, not {type(commit).__name__}")
    fields = set(commit)
    if fields != _FIELDS:
        missing = sorted(_FIELDS - fields)
        extra = sorted(fields - _FIELDS)
        detail = "; ".join(
            part
            for part in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "")
            if part
        )
        raise DecodeError(f"commit fields are wrong: {detail}")
    _check_did(commit["did"])
    version = commit["version"]
    if type(version) is not int or version != COMMIT_VERSION:
        raise DecodeError(f"commit 'version' must be 3, got {version!r}")
    if type(commit["data"]) is not CID:
        raise DecodeError("commit 'data' must be a CID link")
    rev = commit["rev"]
    if type(rev) is not str:
        raise DecodeError("commit 'rev' must be a TID string")
    try:
        ensure_valid_tid(rev)
    except InvalidSyntax as exc:
        raise DecodeError(f"commit 'rev' is not a TID: {rev!r}") from exc
    prev = commit["prev"]
    if prev is not None and type(prev) is not CID:
        raise DecodeError("commit 'prev' must be a CID link or null")
    if type(commit["sig"]) is not bytes:
        raise DecodeError("commit 'sig' must be a byte string")
    return commit


def decode_commit(block: bytes) -> dict:
    """Decode a commit block and check its shape."""
    return check_commit(dagcbor.decode(block))


def unsigned_bytes(commit: dict) -> bytes:
    """The bytes a commit's signature covers: the commit without ``sig``, as DAG-CBOR."""
    return dagcbor.encode({k: v for k, v in commit.items() if k != "sig"})


def sign_commit(
    did: str,
    data: CID,
    rev: str,
    keypair: Keypair,
    prev: CID | None = None,
) -> tuple[CID, bytes, dict]:
    """Build and sign a v3 commit over the MST root ``data``; returns (CID, block bytes, commit)."""
    unsigned: dict[str, Any] = {"did": did, "version": COMMIT_VERSION, "data": data, "rev": rev, "prev": prev}
    check_commit({**unsigned, "sig": b""})
    signed = {**unsigned, "sig": keypair.sign(dagcbor.encode(unsigned))}
    block = dagcbor.encode(signed)
    return CID.from_block(block), block, signed


def verify_commit(commit: dict | bytes, public_key: PublicKey | str) -> bool:
    """True when ``commit`` (decoded, or its block) is well-formed and signed by ``public_key``
    (a ``PublicKey`` or a ``did:key``). A malformed commit raises ``DecodeError``; a wrong, high-S
    or malformed signature gives False."""
    if isinstance(commit, (bytes, bytearray, memoryview)):
        commit = decode_commit(bytes(commit))
    else:
        check_commit(commit)
    if isinstance(public_key, str):
        public_key = parse_did_key(public_key)
    if not isinstance(public_key, PublicKey):
        raise AtprotoError("verify_commit needs a PublicKey or a did:key string")
    return public_key.verify(unsigned_bytes(commit), commit["sig"])
