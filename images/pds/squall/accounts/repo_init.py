"""The repository every new account starts with: an empty MST and one signed commit.

https://atproto.com/specs/repository — a repo is a signed commit over an MST root. A new account's
tree has no entries, so its root is the empty MST node; the commit (``prev`` null, a fresh TID as
``rev``) is signed with the account's own signing key. The ``#sync`` firehose event announces it
as a CAR whose root is the commit, holding just the commit block (Sync 1.1).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..atproto import mst
from ..atproto.car import encode_car
from ..atproto.cid import CID
from ..atproto.commit import sign_commit
from ..atproto.crypto import Keypair


@dataclass(frozen=True)
class InitialRepo:
    commit_cid: CID
    commit_block: bytes
    data_cid: CID
    data_block: bytes
    rev: str


def build_initial_repo(did: str, keypair: Keypair, rev: str) -> InitialRepo:
    data_cid = mst.empty_root()
    commit_cid, commit_block, _ = sign_commit(did, data_cid, rev, keypair)
    return InitialRepo(commit_cid, commit_block, data_cid, mst.EMPTY_NODE.serialised, rev)


def store_initial_repo(conn: sqlite3.Connection, did: str, repo: InitialRepo, indexed_at: str) -> None:
    for cid, block in ((repo.commit_cid, repo.commit_block), (repo.data_cid, repo.data_block)):
        conn.execute(
            "INSERT INTO repo_block (did, cid, repo_rev, size, content) VALUES (?, ?, ?, ?, ?)",
            (did, cid.bytes, repo.rev, len(block), block),
        )
    conn.execute(
        "INSERT INTO repo_root (did, cid, rev, indexed_at) VALUES (?, ?, ?, ?)",
        (did, str(repo.commit_cid), repo.rev, indexed_at),
    )


def sync_blocks(commit_cid: CID, commit_block: bytes) -> bytes:
    """The ``blocks`` of a ``#sync`` event: a CAR rooted at the commit, holding only the commit."""
    return encode_car([commit_cid], [(commit_cid, commit_block)])


def current_commit(conn: sqlite3.Connection, did: str) -> tuple[CID, bytes, str] | None:
    """The account's current commit (CID, block, rev), read on the writer connection."""
    root = conn.execute("SELECT cid, rev FROM repo_root WHERE did = ?", (did,)).fetchone()
    if root is None:
        return None
    cid = CID.decode(root["cid"])
    row = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (did, cid.bytes)).fetchone()
    if row is None:
        return None
    return cid, bytes(row["content"]), root["rev"]
