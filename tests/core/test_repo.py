"""The pure repo writer: many commits checked the way a relay checks them, errors, export, proofs."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.atproto import dagcbor
from squall.atproto.blockstore import MemoryBlockStore, MissingBlock
from squall.atproto.car import encode_car, read_car
from squall.atproto.cid import CID
from squall.atproto.commit import decode_commit, verify_commit
from squall.atproto.crypto import P256Keypair, Secp256k1Keypair
from squall.atproto.mst import EMPTY_ROOT_CID, NodeCache, NodeStore, NodeWrangler
from squall.atproto.repo import (
    CREATE,
    DELETE,
    UPDATE,
    InvalidWrite,
    RecordAlreadyExists,
    RecordNotFound,
    RepoOp,
    SyncVerificationError,
    Write,
    apply_writes,
    record_proof_blocks,
    repo_blocks,
    verify_commit_event,
)
from squall.atproto.tid import TidClock

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
COLLECTIONS = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"]


def post(text: str) -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-01-01T00:00:00.000Z"}


def persist(store: MemoryBlockStore, result, refs: dict[CID, int], old_head: CID | None) -> None:
    """What the service does after a commit: store new blocks, drop what nothing uses any more."""
    if old_head is not None:
        store.delete(old_head)
    for cid, block in result.new_blocks.items():
        store.put(cid, block)
    for cid in result.removed_nodes:
        store.delete(cid)
    for op in result.ops:
        if op.cid is not None:
            refs[op.cid] = refs.get(op.cid, 0) + 1
        if op.prev is not None:
            refs[op.prev] -= 1
    for cid in result.removed_records:
        if refs.get(cid, 0) == 0:
            store.delete(cid)


def relay_check(result, prev_data: CID | None, key) -> None:
    """Carry the #commit through a CAR as a relay would receive it, and check it."""
    car = encode_car([result.commit_cid], result.sync_blocks.items())
    roots, blocks = read_car(car)
    assert roots == [result.commit_cid]
    assert next(iter(blocks)) == result.commit_cid  # commit first
    events = [op.to_event() for op in result.ops]
    commit = verify_commit_event(blocks, result.commit_cid, events, prev_data, key.did_key(), did=DID, rev=result.rev)
    assert commit["data"] == result.data


@pytest.mark.parametrize("kind", [Secp256k1Keypair, P256Keypair], ids=lambda k: k.__name__)
def test_thousand_random_writes_in_checked_commits(kind) -> None:
    rnd = random.Random(1234)
    key = kind.generate()
    clock = TidClock()
    store = MemoryBlockStore()
    refs: dict[CID, int] = {}
    state: dict[str, CID] = {}
    head: CID | None = None
    prev_data: CID | None = None
    cache = NodeCache()
    done = 0
    n = 0
    while done < 1000:
        batch: list[Write] = []
        used: set[str] = set()
        for _ in range(rnd.choice([1, 1, 1, 2, 5, 12])):
            existing = [p for p in state if p not in used]
            roll = rnd.random()
            if existing and roll < 0.2:
                path = rnd.choice(existing)
                batch.append(Write(DELETE, *path.split("/")))
            elif existing and roll < 0.4:
                path = rnd.choice(existing)
                batch.append(Write(UPDATE, *path.split("/"), post(f"edit {n}")))
            else:
                path = f"{rnd.choice(COLLECTIONS)}/{clock.next_tid()}"
                batch.append(Write(CREATE, *path.split("/"), post(f"new {n}")))
            used.add(path)
            n += 1
        result = apply_writes(store, head, batch, key, DID, clock.next_tid(), node_cache=cache)
        relay_check(result, prev_data, key)
        assert result.prev_data == prev_data and result.since == (None if head is None else decode_commit(store.get(head))["rev"])
        for write, op in zip(batch, result.ops):
            assert (op.action, op.path) == (write.action, write.path)
            if write.action == DELETE:
                assert op.cid is None and op.prev == state.pop(write.path)
            else:
                assert op.prev == state.get(write.path)
                assert op.cid == CID.from_block(dagcbor.encode(write.record))
                state[write.path] = op.cid
        persist(store, result, refs, head)
        head, prev_data = result.commit_cid, result.data
        done += len(batch)

    # the stored repo is exactly the current commit's blocks: nothing missing, nothing left over
    exported = dict(repo_blocks(store, head))
    assert set(exported) == store.cids()
    roots, blocks = read_car(encode_car([head], repo_blocks(store, head)))
    assert roots == [head] and blocks == exported
    w = NodeWrangler(NodeStore(MemoryBlockStore(blocks)))
    assert list(w.list(decode_commit(blocks[head])["data"])) == sorted(state.items())
    assert verify_commit(blocks[head], key.public_key)


def test_first_commit_and_empty_commits() -> None:
    key = Secp256k1Keypair.generate()
    clock = TidClock()
    store = MemoryBlockStore()
    first = apply_writes(store, None, [], key, DID, clock.next_tid())
    assert first.data == EMPTY_ROOT_CID and first.prev_data is None and first.since is None
    assert EMPTY_ROOT_CID in first.new_blocks and EMPTY_ROOT_CID in first.sync_blocks
    relay_check(first, None, key)
    for cid, block in first.new_blocks.items():
        store.put(cid, block)
    second = apply_writes(store, first.commit_cid, [Write(CREATE, "app.bsky.feed.post", "3jzfcijpj2z2a", post("hi"))], key, DID, clock.next_tid())
    assert second.prev_data == EMPTY_ROOT_CID and second.since == first.rev
    assert EMPTY_ROOT_CID in second.removed_nodes
    relay_check(second, EMPTY_ROOT_CID, key)
    for cid, block in second.new_blocks.items():
        store.put(cid, block)
    # a commit with no writes (e.g. after a key rotation) keeps the tree and only adds the commit
    third = apply_writes(store, second.commit_cid, [], key, DID, clock.next_tid())
    assert third.data == second.data and list(third.new_blocks) == [third.commit_cid]
    relay_check(third, second.data, key)
    for cid, block in third.new_blocks.items():
        store.put(cid, block)
    # deleting the last record leaves the empty tree, whose node is a block of the new commit
    fourth = apply_writes(store, third.commit_cid, [Write(DELETE, "app.bsky.feed.post", "3jzfcijpj2z2a")], key, DID, clock.next_tid())
    assert fourth.data == EMPTY_ROOT_CID
    assert EMPTY_ROOT_CID in fourth.new_blocks and EMPTY_ROOT_CID in fourth.sync_blocks
    assert fourth.removed_nodes == {second.data} and fourth.removed_records == {second.ops[0].cid}
    relay_check(fourth, second.data, key)


def _repo_with(paths: list[str]):
    key = Secp256k1Keypair.generate()
    clock = TidClock()
    store = MemoryBlockStore()
    head = None
    for i in range(0, max(len(paths), 1), 200):
        writes = [Write(CREATE, *p.split("/"), post(p)) for p in paths[i : i + 200]]
        result = apply_writes(store, head, writes, key, DID, clock.next_tid())
        if head is not None:
            store.delete(head)
        for cid in result.removed_nodes:
            store.delete(cid)
        for cid, block in result.new_blocks.items():
            store.put(cid, block)
        head = result.commit_cid
    return store, result, key, clock


def test_write_errors() -> None:
    store, result, key, clock = _repo_with(["app.bsky.feed.post/aaa", "app.bsky.feed.post/bbb"])
    head = result.commit_cid

    def attempt(*writes: Write, rev: str | None = None, did: str = DID):
        return apply_writes(store, head, list(writes), key, did, rev or clock.next_tid())

    with pytest.raises(RecordAlreadyExists):
        attempt(Write(CREATE, "app.bsky.feed.post", "aaa", post("again")))
    with pytest.raises(RecordNotFound):
        attempt(Write(UPDATE, "app.bsky.feed.post", "zzz", post("x")))
    with pytest.raises(RecordNotFound):
        attempt(Write(DELETE, "app.bsky.feed.post", "zzz"))
    with pytest.raises(InvalidWrite, match="more than one write"):
        attempt(Write(UPDATE, "app.bsky.feed.post", "aaa", post("x")), Write(DELETE, "app.bsky.feed.post", "aaa"))
    with pytest.raises(InvalidWrite, match="sort after"):
        attempt(Write(CREATE, "app.bsky.feed.post", "ccc", post("x")), rev=result.rev)
    with pytest.raises(InvalidWrite, match="invalid record path"):
        attempt(Write(CREATE, "not an nsid", "ccc", post("x")))
    with pytest.raises(InvalidWrite, match="invalid record path"):
        attempt(Write(CREATE, "app.bsky.feed.post", "..", post("x")))
    with pytest.raises(InvalidWrite, match="record object"):
        attempt(Write(CREATE, "app.bsky.feed.post", "ccc", None))
    with pytest.raises(InvalidWrite, match="not valid data"):
        attempt(Write(CREATE, "app.bsky.feed.post", "ccc", {"n": 1.5}))
    with pytest.raises(InvalidWrite, match="limit"):
        attempt(Write(CREATE, "app.bsky.feed.post", "ccc", {"b": b"x" * 1_000_001}))
    with pytest.raises(InvalidWrite, match="no record"):
        attempt(Write(DELETE, "app.bsky.feed.post", "aaa", post("x")))
    with pytest.raises(InvalidWrite, match="belongs to"):
        attempt(Write(CREATE, "app.bsky.feed.post", "ccc", post("x")), did="did:plc:other")
    with pytest.raises(InvalidWrite, match="at most"):
        attempt(*[Write(CREATE, "app.bsky.feed.post", f"k{i}", post("x")) for i in range(201)])
    with pytest.raises(MissingBlock):
        apply_writes(MemoryBlockStore(), head, [], key, DID, clock.next_tid())
    # nothing was signed or stored by the failures: the head still accepts a good write
    ok = attempt(Write(UPDATE, "app.bsky.feed.post", "aaa", post("fine")))
    assert ok.ops == [RepoOp(UPDATE, "app.bsky.feed.post/aaa", ok.ops[0].cid, result.ops[0].cid)]


def test_relay_check_catches_bad_events() -> None:
    paths = [f"app.bsky.feed.like/{i:04d}" for i in range(300)]
    store, first, key, clock = _repo_with(paths)
    result = apply_writes(
        store,
        first.commit_cid,
        [Write(CREATE, "app.bsky.feed.like", "0150x", post("n")), Write(DELETE, "app.bsky.feed.like", "0007")],
        key,
        DID,
        clock.next_tid(),
    )
    relay_check(result, first.data, key)
    events = [op.to_event() for op in result.ops]
    blocks = dict(result.sync_blocks)
    with pytest.raises(SyncVerificationError, match="prevData"):
        verify_commit_event(blocks, result.commit_cid, events[:1], first.data, key.public_key)
    with pytest.raises(SyncVerificationError, match="prevData"):
        verify_commit_event(blocks, result.commit_cid, events, EMPTY_ROOT_CID, key.public_key)
    with pytest.raises(SyncVerificationError, match="signature"):
        verify_commit_event(blocks, result.commit_cid, events, first.data, Secp256k1Keypair.generate().public_key)
    with pytest.raises(SyncVerificationError, match="rev"):
        verify_commit_event(blocks, result.commit_cid, events, first.data, key.public_key, rev="3jzfcijpj2z2a")
    record_cid = result.ops[0].cid
    without_record = {c: b for c, b in blocks.items() if c != record_cid}
    with pytest.raises(MissingBlock):
        verify_commit_event(without_record, result.commit_cid, events, first.data, key.public_key)
    # dropping any MST node of the slice other than those a consumer can do without fails
    mst_nodes = [c for c in blocks if c != result.commit_cid and c != record_cid]
    failures = 0
    for cid in mst_nodes:
        try:
            verify_commit_event({c: b for c, b in blocks.items() if c != cid}, result.commit_cid, events, first.data, key.public_key)
        except MissingBlock:
            failures += 1
    assert failures >= 1
    with pytest.raises(SyncVerificationError):
        verify_commit_event(blocks, result.commit_cid, [{"action": "create", "path": "x"}], first.data, key.public_key)


def test_record_proof_blocks() -> None:
    paths = [f"app.bsky.feed.post/{i:05d}" for i in range(400)]
    store, result, key, _ = _repo_with(paths)
    for rkey, present in [("00123", True), ("00123a", False)]:
        proof = record_proof_blocks(store, result.commit_cid, "app.bsky.feed.post", rkey)
        assert next(iter(proof)) == result.commit_cid
        commit = decode_commit(proof[result.commit_cid])
        assert verify_commit(commit, key.public_key)
        w = NodeWrangler(NodeStore(MemoryBlockStore(proof)))
        found = w.get(commit["data"], f"app.bsky.feed.post/{rkey}")
        assert (found is not None) == present
        if present:
            assert dagcbor.decode(proof[found]) == post(f"app.bsky.feed.post/{rkey}")
        assert len(proof) < 12


def test_repo_blocks_order_streams_nodes_before_their_records() -> None:
    paths = [f"{c}/{i:04d}" for c in COLLECTIONS for i in range(200)]
    store, result, _, _ = _repo_with(paths)
    order = list(repo_blocks(store, result.commit_cid))
    assert order[0][0] == result.commit_cid
    assert len(order) == len({c for c, _ in order}) == len(store)
    records = {cid for cid, block in order if "$type" in dagcbor.decode(block)}
    assert len(records) == len(paths)
    ns = NodeStore(store)
    # every block comes after a block that links it
    linked_before = {result.data}
    for cid, _ in order[1:]:
        assert cid in linked_before, "block sent before anything linked it"
        if cid not in records:
            node = ns.get(cid)
            linked_before.update(c for c in node.subtrees if c is not None)
            linked_before.update(node.vals)


_rkeys = st.text(alphabet="234567abcdefghij", min_size=1, max_size=13)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    base=st.lists(st.tuples(st.sampled_from(COLLECTIONS), _rkeys), max_size=150, unique=True),
    fresh=st.lists(st.tuples(st.sampled_from(COLLECTIONS), _rkeys), max_size=10, unique=True),
    data=st.data(),
)
def test_random_batches_invert_to_prev_data(base, fresh, data) -> None:
    store, first, key, clock = _repo_with([f"{c}/{r}" for c, r in base])
    existing = [tuple(p) for p in base]
    touched = data.draw(st.lists(st.sampled_from(existing), max_size=10, unique=True)) if existing else []
    writes = [Write(CREATE, c, r, post(f"{c}{r}")) for c, r in fresh if (c, r) not in set(existing)]
    for i, (c, r) in enumerate(touched):
        writes.append(Write(DELETE, c, r) if i % 2 else Write(UPDATE, c, r, post("changed")))
    head = first.commit_cid
    result = apply_writes(store, head, writes, key, DID, clock.next_tid())
    relay_check(result, first.data, key)
