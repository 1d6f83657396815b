"""Sync 1.1 covering proofs: the interop commit-proof fixtures, and inversion as a property."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.atproto import dagcbor
from squall.atproto.blockstore import MemoryBlockStore, MissingBlock
from squall.atproto.cid import CID
from squall.atproto.mst import EMPTY_ROOT_CID, InvertError, NodeStore, NodeWrangler, invert_ops

from .vectors import load_json, read_lines

FIXTURES = load_json("firehose/commit-proof-fixtures.json")


def value(n: object) -> CID:
    return CID.from_block(dagcbor.encode({"n": str(n)}))


def apply(w: NodeWrangler, root: CID, adds: list[str], dels: list[str], leaf: CID) -> CID:
    for k in adds:
        root = w.put(root, k, leaf)
    for k in dels:
        root = w.delete(root, k)
    return root


@pytest.mark.parametrize("case", FIXTURES, ids=lambda c: c["comment"])
def test_commit_proof_fixture(case: dict) -> None:
    leaf = CID.decode(case["leafValue"])
    w = NodeWrangler(NodeStore(MemoryBlockStore()))
    before = w.build([(k, leaf) for k in case["keys"]])
    assert str(before) == case["rootBeforeCommit"]
    incremental = EMPTY_ROOT_CID
    for k in case["keys"]:
        incremental = w.put(incremental, k, leaf)
    assert incremental == before

    after = apply(w, before, case["adds"], case["dels"], leaf)
    assert str(after) == case["rootAfterCommit"]

    ops, created, _ = w.diff(before, after)
    state = dict.fromkeys(case["keys"], leaf)
    state.update(dict.fromkeys(case["adds"], leaf))
    for k in case["dels"]:
        state.pop(k, None)
    start = dict.fromkeys(case["keys"], leaf)
    assert ops == sorted((k, start.get(k), state.get(k)) for k in start.keys() | state.keys() if start.get(k) != state.get(k))
    proof = w.covering_proof_blocks(after, [k for k, _, _ in ops])
    expected = {CID.decode(c) for c in case["blocksInProof"]}
    assert proof == expected
    assert created <= proof  # every new node is part of the proof in these cases

    partial = MemoryBlockStore({c: w.ns.block(c) for c in expected})
    assert invert_ops(partial, after, ops) == before

    # the new root is always read: without it there is nothing to invert
    without_root = {c: w.ns.block(c) for c in expected if c != after}
    with pytest.raises(MissingBlock):
        invert_ops(MemoryBlockStore(without_root), after, ops)


def test_fixture_keys_come_from_example_keys() -> None:
    known = set(read_lines("mst/example_keys.txt"))
    for case in FIXTURES:
        if case["comment"] != "split with earlier leaves on same layer":
            assert set(case["keys"]) | set(case["adds"]) <= known


def test_invert_rejects_ops_that_do_not_match_the_tree() -> None:
    w = NodeWrangler(NodeStore(MemoryBlockStore()))
    root = w.build([(f"a.b/{i}", value(i)) for i in range(20)])
    new = w.put(root, "a.b/new", value("n"))
    blocks = {n.cid: n.serialised for n in w.walk_nodes(new)}
    store = MemoryBlockStore(blocks)
    assert invert_ops(store, new, [("a.b/new", None, value("n"))]) == root
    with pytest.raises(InvertError):  # claims a different new value
        invert_ops(store, new, [("a.b/new", None, value("other"))])
    with pytest.raises(InvertError):  # claims a deletion of a key that is present
        invert_ops(store, new, [("a.b/3", value(3), None)])
    with pytest.raises(InvertError):  # same key twice
        invert_ops(store, new, [("a.b/new", None, value("n")), ("a.b/new", None, value("n"))])
    # an incomplete op list inverts to the wrong root
    newer = w.put(new, "a.b/more", value("m"))
    store2 = MemoryBlockStore({n.cid: n.serialised for n in w.walk_nodes(newer)})
    assert invert_ops(store2, newer, [("a.b/more", None, value("m"))]) != root


# -- random batches ---------------------------------------------------------------------------

collections = st.sampled_from(["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"])
mst_keys = st.builds(lambda c, r: f"{c}/{r}", collections, st.text(alphabet="234567abcdefghij", min_size=1, max_size=13))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.dictionaries(mst_keys, st.integers(0, 99).map(value), max_size=200),
    new_keys=st.lists(mst_keys, max_size=12, unique=True),
    data=st.data(),
)
def test_inversion_on_covering_proof_gives_previous_root(
    base: dict[str, CID], new_keys: list[str], data: st.DataObject
) -> None:
    w = NodeWrangler(NodeStore(MemoryBlockStore()))
    before = w.build(base.items())
    existing = sorted(base)
    touched = data.draw(st.lists(st.sampled_from(existing), max_size=12, unique=True)) if existing else []
    root = before
    for k in new_keys:
        if k not in base:
            root = w.put(root, k, value(("c", k)))
    for i, k in enumerate(touched):
        if k in new_keys:
            continue
        root = w.delete(root, k) if i % 2 else w.put(root, k, value(("u", k)))
    ops, created, _ = w.diff(before, root)
    proof = w.covering_proof_blocks(root, [k for k, _, _ in ops]) | created
    partial = MemoryBlockStore({c: w.ns.block(c) for c in proof})
    assert invert_ops(partial, root, ops) == before
    # the order of the ops does not matter to a consumer
    assert invert_ops(partial, root, ops[::-1]) == before
