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
from ..store import repos as repos_store


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
    blocks = [(repo.commit_cid.bytes, repo.commit_block), (repo.data_cid.bytes, repo.data_block)]
    repos_store.insert_initial_repo_rows(conn, did, blocks, repo.rev, str(repo.commit_cid), indexed_at)


def sync_blocks(commit_cid: CID, commit_block: bytes) -> bytes:
    """The ``blocks`` of a ``#sync`` event: a CAR rooted at the commit, holding only the commit."""
    return encode_car([commit_cid], [(commit_cid, commit_block)])


def current_commit(conn: sqlite3.Connection, did: str) -> tuple[CID, bytes, str] | None:
    """The account's current commit (CID, block, rev), read on the writer connection."""
    root = repos_store.account_root_sync(conn, did)
    if root is None:
        return None
    cid = CID.decode(root["cid"])
    block = repos_store.account_block_sync(conn, did, cid.bytes)
    if block is None:
        return None
    return cid, block, root["rev"]
