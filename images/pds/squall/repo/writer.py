"""One repository commit as one SQLite transaction
(https://atproto.com/specs/repository, https://atproto.com/specs/sync#commit-events).

:func:`commit_writes` runs on the writer thread inside ``Database.write``. In that single
transaction it checks the account and the swaps against what is stored, builds the next signed
commit with the pure core (:func:`squall.atproto.repo.apply_writes`, reading MST nodes through the
same connection), and stores everything the commit changes: new blocks, record rows, blob
references, the repo root, and the ``#commit`` firehose event. If anything raises, SQLite rolls it
all back, so the repo, its index and the firehose never disagree.

Blocks the new tree no longer uses (the previous commit, replaced MST nodes, records no path holds
any more) are deleted, as the reference PDS does: ``repo_block`` always holds exactly the current
repo, which is what ``sync.getRepo`` streams.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from ..atproto.car import encode_car
from ..atproto.cid import CID
from ..atproto.crypto import P256Keypair, Secp256k1Keypair
from ..atproto.mst import NodeCache
from ..atproto.repo import CREATE, DELETE, UPDATE, InvalidWrite, Write, apply_writes
from ..atproto.tid import TidClock
from ..errors import AuthRequired, Forbidden, InvalidRequest
from ..store import accounts, repos
from ..store.sequencer import append_event, now_iso
from .prepare import PUT, UNSET, PreparedWrite

# A #commit event's blocks may not exceed 2,000,000 bytes (https://atproto.com/specs/sync).
MAX_EVENT_BLOCKS_BYTES = 2_000_000


@dataclass
class CommitOutcome:
    did: str
    writes: list[PreparedWrite]  # as applied: put resolved to create/update, no-ops dropped
    commit_cid: CID | None = None  # None: nothing changed (a no-op put or delete)
    rev: str | None = None
    seq: int | None = None
    permanent_blobs: list[CID] = field(default_factory=list)
    block_bytes: int = 0  # bytes of the new blocks stored (squall.metrics)

    def commit_view(self) -> dict[str, str] | None:
        if self.commit_cid is None:
            return None
        return {"cid": str(self.commit_cid), "rev": self.rev or ""}


def check_account_row(row: Any) -> None:
    """The reference's refusals for writes to an account that is missing or not active."""
    if row is None:
        raise Forbidden("Account not found", "AccountNotFound")
    if row["takedown_ref"] is not None:
        raise AuthRequired("Account has been taken down", "AccountTakedown")
    if row["deactivated_at"] is not None:
        raise AuthRequired("Account is deactivated", "AccountDeactivated")


MAX_CACHED_KEYPAIRS = 1024


def _keypair(alg: str, raw: bytes, cache: dict | None):
    # Parsing a private key costs about as much as the signature itself; keep the parsed ones,
    # keyed by the stored bytes so a rotated key is never served stale.
    if cache is not None:
        keypair = cache.get((alg, raw))
        if keypair is not None:
            return keypair
    keypair = (Secp256k1Keypair if alg == "ES256K" else P256Keypair).from_private_bytes(raw)
    if cache is not None:
        if len(cache) >= MAX_CACHED_KEYPAIRS:
            cache.clear()
        cache[(alg, raw)] = keypair
    return keypair


def _check_swap(w: PreparedWrite, action: str, current: CID | None) -> None:
    swap = w.swap_record
    if swap is UNSET:
        return
    bad = InvalidRequest(f"Record was at {current if current is not None else 'null'}", "InvalidSwap")
    if action == CREATE and swap is not None:
        raise bad
    if action in (UPDATE, DELETE) and swap is None:
        raise bad
    if (current is not None or swap is not None) and not (swap is not None and current == swap):
        raise bad


def commit_writes(
    conn: sqlite3.Connection,
    did: str,
    writes: list[PreparedWrite],
    swap_commit: CID | None,
    clock: TidClock,
    node_cache: NodeCache | None,
    blob_refs: ModuleType | None,
    keypairs: dict | None = None,
) -> CommitOutcome:
    account = accounts.repo_signing_account(conn, did)
    check_account_row(account)
    root = repos.get_root_row(conn, did)
    if root is None:
        raise InvalidRequest(f"No repo root found for {did}")
    current_commit = CID.decode(root["cid"])
    if swap_commit is not None and swap_commit != current_commit:
        raise InvalidRequest(f"Commit was at {current_commit}", "InvalidSwap")

    applied: list[PreparedWrite] = []
    for w in writes:
        stored = repos.get_record_cid(conn, did, w.collection, w.rkey)
        current = CID.decode(stored) if stored is not None else None
        action = w.action
        if action == PUT:
            action = UPDATE if current is not None else CREATE
        if action == DELETE and current is None and w.missing_ok:
            continue  # deleteRecord of an absent record: nothing to do, as the reference
        _check_swap(w, action, current)
        if w.action == PUT and current is not None and current == w.cid:
            continue  # putRecord of the stored value: no new commit
        applied.append(replace(w, action=action) if action != w.action else w)
    outcome = CommitOutcome(did, applied)
    if not applied:
        return outcome

    # Blob references first: a record pointing at a blob that was never uploaded fails before any
    # signing work, and the whole transaction rolls back with it.
    for w in applied:
        if blob_refs is None:
            break
        uri = w.uri(did)
        if w.action in (UPDATE, DELETE):
            blob_refs.unlink_record_blobs(conn, did, uri)
        if w.action in (CREATE, UPDATE):
            outcome.permanent_blobs.extend(blob_refs.link_record_blobs(conn, did, uri, w.record))

    rev = clock.next_tid()
    if rev <= root["rev"]:
        clock.observe(root["rev"])
        rev = clock.next_tid()
    keypair = _keypair(account["signing_key_alg"], bytes(account["signing_key"]), keypairs)
    try:
        result = apply_writes(
            repos.SqliteBlockStore(conn, did), current_commit,
            [Write(w.action, w.collection, w.rkey, w.record) for w in applied],
            keypair, did, rev, node_cache=node_cache,
        )
    except InvalidWrite as exc:  # RecordAlreadyExists / RecordNotFound / a bad batch
        raise InvalidRequest(str(exc)) from None

    blocks_car = encode_car([result.commit_cid], result.sync_blocks.items())
    if len(blocks_car) > MAX_EVENT_BLOCKS_BYTES:
        raise InvalidRequest(f"Too many writes. Max event size: 2MB (this commit needs {len(blocks_car)} bytes)")

    now = now_iso()
    # Deletes before inserts: should a block ever be both dropped and re-added, it stays.
    gone = [current_commit, *result.removed_nodes]
    repos.delete_blocks(conn, did, gone)
    repos.put_blocks(conn, did, rev, result.new_blocks)
    repos.put_records(conn, did, rev, now,
                      [(w.collection, w.rkey, None if w.action == DELETE else str(w.cid)) for w in applied])
    # Another path may hold the same record (same content, same CID): its block is kept then.
    repos.delete_unheld_record_blocks(conn, did, result.removed_records)
    repos.set_root(conn, did, result.commit_cid, rev, now)
    body = {
        "repo": did,
        "commit": result.commit_cid,
        "rev": rev,
        "since": result.since,
        "blocks": blocks_car,
        "ops": [op.to_event() for op in result.ops],
        "prevData": result.prev_data,
        "time": now,
        "tooBig": False,
        "rebase": False,
        "blobs": [],
    }
    outcome.seq = append_event(conn, did, "commit", body)
    outcome.commit_cid = result.commit_cid
    outcome.block_bytes = sum(len(block) for block in result.new_blocks.values())
    outcome.rev = rev
    return outcome
