"""The independent verification path for repositories served by Squall.

A repo (``sync.getRepo``) or a record proof (``sync.getRecord``) is checked the way a relay or
AppView would, from the bytes alone: the CAR is parsed with the core's reader (which checks every
block against its CID), the commit is decoded and its signature checked against the key in the
account's DID document (fetched by the test from the PLC double or the server), and the Merkle
Search Tree is walked HERE, from the raw node maps — not with the server's MST code — checking
key order, key heights per layer and that every record block is present.

https://atproto.com/specs/repository (commit, MST node format, key heights),
https://atproto.com/specs/sync (getRecord proofs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx

from squall.atproto import dagcbor
from squall.atproto.car import read_car
from squall.atproto.cid import CID
from squall.atproto.crypto import PublicKey


class VerificationFailed(AssertionError):
    pass


@dataclass
class VerifiedRepo:
    did: str
    rev: str
    commit_cid: CID
    data: CID
    records: dict[str, CID]  # path -> record CID
    blocks: dict[CID, bytes]

    def record(self, path: str) -> Any:
        return dagcbor.decode(self.blocks[self.records[path]])


def signing_key(doc: dict[str, Any]) -> PublicKey:
    for vm in doc.get("verificationMethod") or []:
        if str(vm.get("id", "")).endswith("#atproto"):
            return PublicKey.from_multibase(vm["publicKeyMultibase"])
    raise VerificationFailed(f"DID document of {doc.get('id')} has no #atproto verification method")


def fetch_did_doc(did: str, *, plc_url: str | None = None, pds: httpx.Client | None = None) -> dict[str, Any]:
    """did:plc from the directory (the PLC double); did:web from the server's well-known file."""
    if did.startswith("did:plc:"):
        assert plc_url is not None, "a did:plc needs the directory URL"
        r = httpx.get(f"{plc_url}/{did}", timeout=10)
    else:
        assert pds is not None, "a did:web is served by the PDS"
        r = pds.get("/.well-known/did.json", headers={"host": did.removeprefix("did:web:")})
    if r.status_code != 200:
        raise VerificationFailed(f"could not fetch the DID document of {did}: {r.status_code} {r.text[:200]}")
    doc = r.json()
    if doc.get("id") != did:
        raise VerificationFailed(f"DID document is for {doc.get('id')}, not {did}")
    return doc


def _height(key: bytes) -> int:
    # Leading zero bits of SHA-256(key), counted in 2-bit steps (fanout 4).
    digest = hashlib.sha256(key).digest()
    zeros = 0
    for byte in digest:
        if byte == 0:
            zeros += 8
            continue
        zeros += 8 - byte.bit_length()
        break
    return zeros // 2


def _node(blocks: dict[CID, bytes], cid: CID) -> tuple[CID | None, list[tuple[bytes, CID, CID | None]]]:
    block = blocks.get(cid)
    if block is None:
        raise VerificationFailed(f"MST node {cid} is missing")
    data = dagcbor.decode(block)
    if type(data) is not dict or set(data) != {"l", "e"}:
        raise VerificationFailed(f"MST node {cid} is not a node map: {data!r:.200}")
    entries = []
    prev = b""
    for e in data["e"]:
        if set(e) != {"p", "k", "v", "t"}:
            raise VerificationFailed(f"MST entry in {cid} has fields {sorted(e)}")
        key = prev[: e["p"]] + e["k"]
        entries.append((key, e["v"], e["t"]))
        prev = key
    return data["l"], entries


def _decode_commit(blocks: dict[CID, bytes], root: CID, did: str, key: PublicKey) -> dict[str, Any]:
    block = blocks.get(root)
    if block is None:
        raise VerificationFailed(f"commit block {root} is missing")
    commit = dagcbor.decode(block)
    if set(commit) != {"did", "version", "data", "rev", "prev", "sig"}:
        raise VerificationFailed(f"commit has fields {sorted(commit)}")
    if commit["did"] != did or commit["version"] != 3:
        raise VerificationFailed(f"commit is for {commit['did']} v{commit['version']}")
    unsigned = dagcbor.encode({k: v for k, v in commit.items() if k != "sig"})
    if not key.verify(unsigned, commit["sig"]):
        raise VerificationFailed("commit signature does not verify with the DID document's key")
    return commit


def verify_repo_car(car: bytes, did: str, key: PublicKey) -> VerifiedRepo:
    roots, blocks = read_car(car)
    if len(roots) != 1:
        raise VerificationFailed(f"a repo CAR has one root, not {roots}")
    commit = _decode_commit(blocks, roots[0], did, key)
    records: dict[str, CID] = {}
    last: list[bytes] = []

    def walk(cid: CID, layer: int | None) -> None:
        left, entries = _node(blocks, cid)
        if layer is None:  # the root: its layer is its keys' height (an empty root has none)
            layer = _height(entries[0][0]) if entries else 0
            if not entries and left is not None:
                raise VerificationFailed("an empty MST root must have no subtree")
        if left is not None:
            walk(left, layer - 1)
        for key, value, right in entries:
            if _height(key) != layer:
                raise VerificationFailed(f"key {key!r} has height {_height(key)} in a layer-{layer} node")
            if last and key <= last[-1]:
                raise VerificationFailed(f"keys out of order: {last[-1]!r} then {key!r}")
            last.append(key)
            if value not in blocks:
                raise VerificationFailed(f"record block {value} for {key!r} is missing")
            records[key.decode()] = value
            if right is not None:
                walk(right, layer - 1)

    walk(commit["data"], None)
    return VerifiedRepo(did, commit["rev"], roots[0], commit["data"], records, blocks)


def verify_record_proof(car: bytes, did: str, key: PublicKey, path: str) -> CID | None:
    """Check a ``sync.getRecord`` CAR: a signed commit and the MST path to ``path``. Returns the
    record's CID when the proof shows it present (its block included), None when it proves the
    record absent. Any node the search needs and the CAR lacks fails the proof."""
    roots, blocks = read_car(car)
    if len(roots) != 1:
        raise VerificationFailed(f"a proof CAR has one root, not {roots}")
    commit = _decode_commit(blocks, roots[0], did, key)
    target = path.encode()
    cid: CID | None = commit["data"]
    while cid is not None:
        left, entries = _node(blocks, cid)
        nxt = left
        for k, value, right in entries:
            if k == target:
                if value not in blocks:
                    raise VerificationFailed(f"proof for {path} lacks the record block {value}")
                if CID.from_block(blocks[value]) != value:
                    raise VerificationFailed("record block does not hash to its CID")
                return value
            if k > target:
                break
            nxt = right
        cid = nxt
    return None
