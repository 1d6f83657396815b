"""The pure repository writer and reader helpers
(https://atproto.com/specs/repository, https://atproto.com/specs/sync#commit-events).

:func:`apply_writes` turns the current repo (a block store and its commit) plus a batch of record
writes into the next signed commit. It reads blocks and writes none: the result lists the blocks
to persist, the record operations, and the exact block set a Sync 1.1 ``#commit`` event carries
(commit, new MST nodes, the covering proof of every touched key, the new record blocks), with
which a consumer can undo the operations and arrive at ``prevData``.
:func:`verify_commit_event` is that consumer's check.

:func:`repo_blocks` streams a whole repo for CAR export; :func:`record_proof_blocks` gives the
blocks ``com.atproto.sync.getRecord`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from . import dagcbor
from .blockstore import BlockStore, MemoryBlockStore, MissingBlock
from .cid import CID
from .commit import decode_commit, sign_commit, verify_commit
from .crypto import Keypair, PublicKey
from .errors import AtprotoError, DecodeError
from .syntax import ensure_valid_nsid, ensure_valid_record_key
from .mst import EMPTY_ROOT_CID, InvertError, NodeCache, NodeStore, NodeWrangler, ensure_valid_key, invert_ops

__all__ = [
    "CREATE",
    "UPDATE",
    "DELETE",
    "MAX_RECORD_BYTES",
    "MAX_OPS_PER_COMMIT",
    "Write",
    "RepoOp",
    "CommitResult",
    "RepoError",
    "InvalidWrite",
    "RecordAlreadyExists",
    "RecordNotFound",
    "SyncVerificationError",
    "apply_writes",
    "load_commit",
    "repo_blocks",
    "record_proof_blocks",
    "verify_commit_event",
]

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
_ACTIONS = (CREATE, UPDATE, DELETE)

# A #commit event may carry at most 200 operations and record blocks of at most 1,000,000 bytes
# (https://atproto.com/specs/sync#commit-events); a commit that breaks them could not be synced.
MAX_OPS_PER_COMMIT = 200
MAX_RECORD_BYTES = 1_000_000


class RepoError(AtprotoError):
    """Base of the repo writer's errors."""


class InvalidWrite(RepoError):
    """A write that cannot be applied (bad action, path, record, rev or batch)."""


class RecordAlreadyExists(InvalidWrite):
    """A create for a path that already holds a record."""


class RecordNotFound(InvalidWrite):
    """An update or delete for a path that holds no record."""


class SyncVerificationError(RepoError):
    """A ``#commit`` event that fails the consumer's checks."""


@dataclass(frozen=True)
class Write:
    """One record write: ``record`` is the data-model value (None for a delete)."""

    action: str
    collection: str
    rkey: str
    record: dict | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


@dataclass(frozen=True)
class RepoOp:
    """One record operation of a commit, as the firehose ``#repoOp`` carries it."""

    action: str
    path: str
    cid: CID | None
    prev: CID | None = None

    def to_event(self) -> dict:
        """The ``com.atproto.sync.subscribeRepos#repoOp`` map (``prev`` absent for creates)."""
        out: dict = {"action": self.action, "path": self.path, "cid": self.cid}
        if self.action != CREATE:
            out["prev"] = self.prev
        return out

    @classmethod
    def from_event(cls, op: Mapping) -> "RepoOp":
        action, path = op.get("action"), op.get("path")
        if action not in _ACTIONS or type(path) is not str:
            raise SyncVerificationError(f"malformed repo op {op!r}")
        cid, prev = op.get("cid"), op.get("prev")
        for value in (cid, prev):
            if value is not None and type(value) is not CID:
                raise SyncVerificationError(f"malformed repo op {op!r}")
        return cls(action, path, cid, prev)


@dataclass
class CommitResult:
    """Everything a new commit changes. Nothing has been stored yet."""

    did: str
    rev: str
    since: str | None  # rev of the previous commit
    commit_cid: CID
    commit_block: bytes
    commit: dict
    data: CID  # new MST root
    prev_data: CID | None  # MST root of the previous commit (None for a new repo)
    ops: list[RepoOp]
    new_blocks: dict[CID, bytes]  # commit, new MST nodes, new record blocks: to persist
    sync_blocks: dict[CID, bytes]  # the #commit CAR slice, commit first
    removed_nodes: set[CID] = field(default_factory=set)  # MST nodes the new tree no longer uses
    # Record blocks the ops replaced or deleted; another path may still hold the same record,
    # so the store must check its references before dropping one.
    removed_records: set[CID] = field(default_factory=set)

    @property
    def touched_paths(self) -> list[str]:
        return [op.path for op in self.ops]


def load_commit(store: BlockStore, commit_cid: CID) -> dict:
    block = store.get(commit_cid)
    if block is None:
        raise MissingBlock(commit_cid, "commit")
    return decode_commit(block)


def apply_writes(
    store: BlockStore,
    commit_cid: CID | None,
    writes: Iterable[Write],
    keypair: Keypair,
    did: str,
    rev: str,
    *,
    node_cache: NodeCache | None = None,
) -> CommitResult:
    """Apply ``writes`` to the repo whose current commit is ``commit_cid`` (None: a new, empty
    repo) and sign the next commit with ``rev``, which must sort after the current rev.

    Raises :class:`RecordAlreadyExists`, :class:`RecordNotFound` or :class:`InvalidWrite`
    before anything is signed; the store is only read.
    """
    writes = list(writes)
    if len(writes) > MAX_OPS_PER_COMMIT:
        raise InvalidWrite(f"a commit holds at most {MAX_OPS_PER_COMMIT} writes, got {len(writes)}")
    if commit_cid is None:
        old_root, since, prev_data = EMPTY_ROOT_CID, None, None
    else:
        current = load_commit(store, commit_cid)
        if current["did"] != did:
            raise InvalidWrite(f"commit {commit_cid} belongs to {current['did']}, not {did}")
        old_root, since = current["data"], current["rev"]
        prev_data = old_root
        if not rev > since:
            raise InvalidWrite(f"rev {rev!r} must sort after the current rev {since!r}")

    ns = NodeStore(store, node_cache)
    mst = NodeWrangler(ns)
    root = old_root
    ops: list[RepoOp] = []
    records: dict[CID, bytes] = {}
    seen: set[str] = set()
    for write in writes:
        if not isinstance(write, Write) or write.action not in _ACTIONS:
            raise InvalidWrite(f"not a create, update or delete write: {write!r}")
        path = write.path
        try:
            ensure_valid_nsid(write.collection)
            ensure_valid_record_key(write.rkey)
            ensure_valid_key(path)
        except AtprotoError as exc:
            raise InvalidWrite(f"invalid record path {path!r}: {exc}") from exc
        if path in seen:
            raise InvalidWrite(f"more than one write to {path} in one commit")
        seen.add(path)
        existing = mst.get(root, path)
        if write.action == DELETE:
            if write.record is not None:
                raise InvalidWrite(f"a delete carries no record ({path})")
            if existing is None:
                raise RecordNotFound(f"no record at {path} to delete")
            root = mst.delete(root, path)
            ops.append(RepoOp(DELETE, path, None, existing))
            continue
        if write.action == CREATE and existing is not None:
            raise RecordAlreadyExists(f"a record already exists at {path}")
        if write.action == UPDATE and existing is None:
            raise RecordNotFound(f"no record at {path} to update")
        if type(write.record) is not dict:
            raise InvalidWrite(f"a {write.action} needs a record object ({path})")
        try:
            cid, block = dagcbor.cid_for(write.record)
        except DecodeError as exc:
            raise InvalidWrite(f"record at {path} is not valid data: {exc}") from exc
        if len(block) > MAX_RECORD_BYTES:
            raise InvalidWrite(f"record at {path} is {len(block)} bytes; the limit is {MAX_RECORD_BYTES}")
        records[cid] = block
        root = mst.put(root, path, cid)
        ops.append(RepoOp(write.action, path, cid, existing))

    _, created, deleted = mst.diff(old_root, root)
    if commit_cid is None:
        # A new repo had no tree at all, not an empty one: its root is always a new block.
        created.add(root)
        deleted.clear()
    proof = mst.covering_proof_blocks(root, seen)
    commit_cid_new, commit_block, commit = sign_commit(did, root, rev, keypair)

    new_blocks: dict[CID, bytes] = {commit_cid_new: commit_block}
    sync_blocks: dict[CID, bytes] = {commit_cid_new: commit_block}
    for cid in sorted(created):
        node = ns.get(cid)
        new_blocks[cid] = node.serialised
        if node_cache is not None:
            # the next commit starts from these nodes: spare it decoding them again
            node_cache.put(cid, node)
    for cid in sorted(created | proof):
        sync_blocks[cid] = ns.block(cid)
    for cid, block in records.items():
        new_blocks[cid] = block
        sync_blocks[cid] = block
    replaced = {op.prev for op in ops if op.prev is not None}
    return CommitResult(
        did=did,
        rev=rev,
        since=since,
        commit_cid=commit_cid_new,
        commit_block=commit_block,
        commit=commit,
        data=root,
        prev_data=prev_data,
        ops=ops,
        new_blocks=new_blocks,
        sync_blocks=sync_blocks,
        removed_nodes=deleted,
        removed_records=replaced - records.keys(),
    )


def verify_commit_event(
    blocks: Mapping[CID, bytes] | BlockStore,
    commit_cid: CID,
    ops: Iterable[RepoOp | Mapping],
    prev_data: CID | None,
    public_key: PublicKey | str,
    *,
    did: str | None = None,
    rev: str | None = None,
) -> dict:
    """Check a ``#commit`` event the way a Sync 1.1 relay does and return its commit.

    The commit block must be present, well-formed and signed by ``public_key`` (and match ``did``
    and ``rev`` when given); every created or updated record block must be present and hash to
    its op's CID; undoing the ops on the carried partial tree must give ``prev_data`` (the empty
    tree when None). Raises :class:`SyncVerificationError`, or ``MissingBlock`` for a missing node.
    """
    store: BlockStore = MemoryBlockStore(blocks) if isinstance(blocks, Mapping) else blocks
    block = store.get(commit_cid)
    if block is None:
        raise MissingBlock(commit_cid, "commit")
    if CID.from_block(block) != commit_cid:
        raise SyncVerificationError("commit block does not hash to the commit CID")
    commit = decode_commit(block)
    if did is not None and commit["did"] != did:
        raise SyncVerificationError(f"commit is for {commit['did']}, the event says {did}")
    if rev is not None and commit["rev"] != rev:
        raise SyncVerificationError(f"commit rev {commit['rev']} differs from the event's {rev}")
    if not verify_commit(commit, public_key):
        raise SyncVerificationError("commit signature does not verify")
    inverse = []
    for op in ops:
        if not isinstance(op, RepoOp):
            op = RepoOp.from_event(op)
        if op.action == CREATE:
            if op.cid is None or op.prev is not None:
                raise SyncVerificationError(f"create of {op.path} needs a cid and no prev")
        elif op.action == UPDATE:
            if op.cid is None or op.prev is None:
                raise SyncVerificationError(f"update of {op.path} needs cid and prev")
        elif op.cid is not None or op.prev is None:
            raise SyncVerificationError(f"delete of {op.path} needs prev and a null cid")
        if op.cid is not None:
            record = store.get(op.cid)
            if record is None:
                raise MissingBlock(op.cid, f"record for {op.path}")
            if CID.from_block(record, op.cid.codec) != op.cid:
                raise SyncVerificationError(f"record block for {op.path} does not hash to {op.cid}")
        inverse.append((op.path, op.prev, op.cid))
    try:
        old_root = invert_ops(store, commit["data"], inverse)
    except InvertError as exc:
        raise SyncVerificationError(str(exc)) from exc
    expected = EMPTY_ROOT_CID if prev_data is None else prev_data
    if old_root != expected:
        raise SyncVerificationError(f"inverted ops give {old_root}, prevData is {expected}")
    return commit


def repo_blocks(
    store: BlockStore, commit_cid: CID, *, node_cache: NodeCache | None = None
) -> Iterator[tuple[CID, bytes]]:
    """Every block of the repo at ``commit_cid``: the commit, then the tree depth first in key
    order, each node before its subtrees and each record right after the entry that links it, so
    a streaming reader never waits for a block it has been told about. Records held at several
    paths are sent once."""
    block = store.get(commit_cid)
    if block is None:
        raise MissingBlock(commit_cid, "commit")
    commit = decode_commit(block)
    yield commit_cid, block
    mst = NodeWrangler(NodeStore(store, node_cache))
    sent: set[CID] = set()
    for node, i in mst.walk_entries(commit["data"]):
        if i < 0:
            yield node.cid, node.serialised
            continue
        cid = node.vals[i]
        if cid in sent:
            continue
        record = store.get(cid)
        if record is None:
            raise MissingBlock(cid, f"record {node.keys[i]}")
        sent.add(cid)
        yield cid, record


def record_proof_blocks(
    store: BlockStore,
    commit_cid: CID,
    collection: str,
    rkey: str,
    *,
    node_cache: NodeCache | None = None,
) -> dict[CID, bytes]:
    """The blocks proving a record's presence or absence: the commit, the MST nodes from the root
    to the record's place, and the record itself when it exists (``sync.getRecord``)."""
    block = store.get(commit_cid)
    if block is None:
        raise MissingBlock(commit_cid, "commit")
    commit = decode_commit(block)
    ns = NodeStore(store, node_cache)
    mst = NodeWrangler(ns, validate_keys=False)
    path = f"{collection}/{rkey}"
    out: dict[CID, bytes] = {commit_cid: block}
    for cid in mst.proof_blocks(commit["data"], path):
        out[cid] = ns.block(cid)
    value = mst.get(commit["data"], path)
    if value is not None:
        record = store.get(value)
        if record is None:
            raise MissingBlock(value, f"record {path}")
        out[value] = record
    return out
