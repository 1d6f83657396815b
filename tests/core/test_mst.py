"""Merkle Search Tree: interop vectors, node encoding, and tree operations as properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.atproto import dagcbor
from squall.atproto.blockstore import MemoryBlockStore, MissingBlock
from squall.atproto.cid import CID
from squall.atproto.errors import InvalidSyntax
from squall.atproto.mst import (
    EMPTY_ROOT_CID,
    MalformedTree,
    Node,
    NodeCache,
    NodeStore,
    NodeWrangler,
    common_prefix_len,
    empty_root,
    is_valid_key,
    key_height,
)

from .vectors import load_json, read_lines

EMPTY_ROOT = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


def value(n: int | str) -> CID:
    return CID.from_block(dagcbor.encode({"n": str(n)}))


def wrangler(store: MemoryBlockStore | None = None) -> NodeWrangler:
    return NodeWrangler(NodeStore(store if store is not None else MemoryBlockStore()))


def persist(w: NodeWrangler, root: CID) -> MemoryBlockStore:
    """Copy every node of the tree into a fresh store (what a repo writer would persist)."""
    return MemoryBlockStore({node.cid: node.serialised for node in w.walk_nodes(root)})


def check_tree(w: NodeWrangler, root: CID) -> list[tuple[str, CID]]:
    """Walk the whole tree checking the spec's structural rules; return its entries in order."""
    top = w.ns.get(root)
    out: list[tuple[str, CID]] = []
    if top.is_empty:
        return out
    assert top.keys, "the root must hold entries"

    def visit(cid: CID, height: int, lo: str | None, hi: str | None, is_root: bool) -> None:
        node = w.ns.get(cid)
        assert is_root or not node.is_empty, "empty node below the root"
        for k in node.keys:
            assert key_height(k) == height
            assert lo is None or k > lo
            assert hi is None or k < hi
        bounds = [lo, *node.keys, hi]
        for i, sub in enumerate(node.subtrees):
            if sub is not None:
                assert height > 0, "subtree below layer 0"
                visit(sub, height - 1, bounds[i], bounds[i + 1], False)
            if i < len(node.keys):
                out.append((node.keys[i], node.vals[i]))
        # a second decode from the bytes gives the same node
        again = Node.decode(node.serialised)
        assert again.keys == node.keys and again.subtrees == node.subtrees and again.vals == node.vals

    visit(root, top.height, None, None, True)
    return out


# -- interop vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("case", load_json("mst/key_heights.json"), ids=lambda c: c["key"] or "empty")
def test_key_heights(case: dict) -> None:
    assert key_height(case["key"]) == case["height"]
    assert key_height(case["key"].encode()) == case["height"]


@pytest.mark.parametrize("case", load_json("mst/common_prefix.json"), ids=repr)
def test_common_prefix(case: dict) -> None:
    assert common_prefix_len(case["left"], case["right"]) == case["len"]
    assert common_prefix_len(case["left"].encode(), case["right"].encode()) == case["len"]


def test_example_keys_heights() -> None:
    keys = read_lines("mst/example_keys.txt")
    assert len(keys) == 156
    for key in keys:
        assert key_height(key) == int(key[1]), key


def test_empty_root_cid() -> None:
    assert str(empty_root()) == EMPTY_ROOT
    assert str(EMPTY_ROOT_CID) == EMPTY_ROOT
    w = wrangler()
    assert w.build([]) == EMPTY_ROOT_CID
    # the empty node is known without being stored
    assert list(w.list(EMPTY_ROOT_CID)) == []
    assert w.get(EMPTY_ROOT_CID, "a/b") is None


def test_delete_last_key_gives_empty_root() -> None:
    w = wrangler()
    root = w.put(EMPTY_ROOT_CID, "com.example.a/x", value(1))
    assert w.delete(root, "com.example.a/x") == EMPTY_ROOT_CID


# -- key validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["app.bsky.feed.post/3jzfcijpj2z2a", "com.example.record/self", "a/b", "c.d/with:colon~x_y-z", "A0/374913"],
)
def test_valid_keys(key: str) -> None:
    assert is_valid_key(key)


@pytest.mark.parametrize(
    "key",
    ["", "nokey", "a/", "/b", "a/b/c", "a b/c", "coll/r#k", "coll/ü", "./x", "coll/..", "a/" + "x" * 1023, 5],
)
def test_invalid_keys(key: object) -> None:
    assert not is_valid_key(key)
    w = wrangler()
    with pytest.raises(InvalidSyntax):
        w.put(EMPTY_ROOT_CID, key, value(1))  # type: ignore[arg-type]


# -- node encoding ----------------------------------------------------------------------------

link_or_none = st.one_of(st.none(), st.integers(0, 10**6).map(value))


@given(
    keys=st.lists(st.text(alphabet="abcdef/.:", min_size=1, max_size=40), max_size=30, unique=True),
    links=st.data(),
)
def test_node_bytes_match_generic_dag_cbor(keys: list[str], links: st.DataObject) -> None:
    """The hand-written encoder gives exactly what the generic DAG-CBOR encoder gives."""
    keys = sorted(keys, key=str.encode)
    vals = tuple(links.draw(st.integers(0, 10**6).map(value)) for _ in keys)
    subtrees = tuple(links.draw(link_or_none) for _ in range(len(keys) + 1))
    node = Node(tuple(keys), vals, subtrees)
    assert node.serialised == dagcbor.encode(node.to_data())
    assert node.cid == CID.from_block(node.serialised)


def test_long_keys_and_many_entries_use_long_cbor_heads() -> None:
    keys = tuple(f"c/{'k' * 300}{i:03d}" for i in range(30))
    node = Node(keys, tuple(value(i) for i in range(30)), (None,) * 31)
    assert node.serialised == dagcbor.encode(node.to_data())


def _raw_node(entries: list[dict], left: CID | None = None) -> bytes:
    return dagcbor.encode({"e": entries, "l": left})


def test_decode_roundtrip_and_rejections() -> None:
    v = value(1)
    good = Node(("A0/374913", "A0/501344"), (v, v), (None, None, None))
    assert Node.decode(good.serialised).keys == good.keys
    bad = [
        # prefix length not maximal: p=0 where 5 bytes are shared
        _raw_node([{"k": b"A0/374913", "p": 0, "t": None, "v": v}, {"k": b"A0/501344", "p": 0, "t": None, "v": v}]),
        # keys out of order
        _raw_node([{"k": b"A0/501344", "p": 0, "t": None, "v": v}, {"k": b"374913", "p": 3, "t": None, "v": v}]),
        # prefix longer than the previous key
        _raw_node([{"k": b"A0", "p": 0, "t": None, "v": v}, {"k": b"x", "p": 5, "t": None, "v": v}]),
        # keys of different heights in one node (A0 is height 0, A1 height 1)
        _raw_node([{"k": b"A0/374913", "p": 0, "t": None, "v": v}, {"k": b"1/076595", "p": 1, "t": None, "v": v}]),
        # missing 't'
        _raw_node([{"k": b"A0/374913", "p": 0, "v": v}]),
        # extra top-level field
        dagcbor.encode({"e": [], "l": None, "x": 1}),
        # wrong types
        _raw_node([{"k": "A0/374913", "p": 0, "t": None, "v": v}]),
        _raw_node([{"k": b"A0/374913", "p": 0, "t": None, "v": None}]),
        _raw_node([{"k": b"", "p": 0, "t": None, "v": v}]),
        _raw_node([{"k": b"\xff\xfe", "p": 0, "t": None, "v": v}]),
        dagcbor.encode({"e": {}, "l": None}),
        dagcbor.encode([1, 2]),
        b"\xa2\x61e",  # truncated CBOR
    ]
    for data in bad:
        with pytest.raises(MalformedTree):
            Node.decode(data)


def test_store_checks_block_hash_and_missing_blocks() -> None:
    node = Node(("A0/374913",), (value(1),), (None, None))
    other = Node(("C0/451630",), (value(1),), (None, None))
    store = MemoryBlockStore({node.cid: other.serialised})
    with pytest.raises(MalformedTree):
        NodeStore(store).get(node.cid)
    with pytest.raises(MissingBlock):
        NodeStore(MemoryBlockStore()).get(node.cid)


def test_wrong_layer_subtree_is_rejected() -> None:
    v = value(1)
    child = Node(("B1/986427",), (v,), (None, None))  # height 1 placed below a height-1 node
    parent = Node(("F1/085263",), (v,), (child.cid, None))
    store = MemoryBlockStore({child.cid: child.serialised, parent.cid: parent.serialised})
    w = wrangler(store)
    with pytest.raises(MalformedTree):
        list(w.list(parent.cid))
    with pytest.raises(MalformedTree):
        w.get(parent.cid, "A0/374913")


def test_root_that_is_only_a_link_is_rejected() -> None:
    leaf = Node(("A0/374913",), (value(1),), (None, None))
    top = Node((), (), (leaf.cid,))
    store = MemoryBlockStore({leaf.cid: leaf.serialised, top.cid: top.serialised})
    with pytest.raises(MalformedTree):
        wrangler(store).get(top.cid, "A0/374913")


# -- tree operations --------------------------------------------------------------------------

collections = st.sampled_from(["app.bsky.feed.post", "app.bsky.feed.like", "com.example.x", "a.b.c"])
rkeys = st.text(alphabet="abcdefghij234567", min_size=1, max_size=13)
mst_keys = st.builds(lambda c, r: f"{c}/{r}", collections, rkeys)
entries = st.dictionaries(mst_keys, st.integers(0, 1000).map(value), max_size=150)
slow = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def insert_all(w: NodeWrangler, items: list[tuple[str, CID]], root: CID = EMPTY_ROOT_CID) -> CID:
    for k, v in items:
        root = w.put(root, k, v)
    return root


@slow
@given(entries, st.randoms(use_true_random=False))
def test_root_does_not_depend_on_insertion_order(data: dict[str, CID], rnd) -> None:
    w = wrangler()
    items = list(data.items())
    built = w.build(items)
    forward = insert_all(w, items)
    rnd.shuffle(items)
    shuffled = insert_all(w, items)
    assert built == forward == shuffled
    assert check_tree(w, built) == sorted(data.items())


@slow
@given(entries, entries)
def test_insert_then_delete_returns_original_root(base: dict[str, CID], extra: dict[str, CID]) -> None:
    w = wrangler()
    root = w.build(base.items())
    added = [(k, v) for k, v in extra.items() if k not in base]
    grown = insert_all(w, added, root)
    for k, _ in reversed(added):
        grown = w.delete(grown, k)
    assert grown == root


@slow
@given(entries, st.data())
def test_delete_matches_rebuild(data: dict[str, CID], draw: st.DataObject) -> None:
    w = wrangler()
    root = w.build(data.items())
    doomed = draw.draw(st.lists(st.sampled_from(sorted(data)), unique=True)) if data else []
    for k in doomed:
        root = w.delete(root, k)
        assert w.get(root, k) is None
    remaining = {k: v for k, v in data.items() if k not in doomed}
    assert root == w.build(remaining.items())
    assert check_tree(w, root) == sorted(remaining.items())


@slow
@given(entries, st.data())
def test_get_and_range_listing(data: dict[str, CID], draw: st.DataObject) -> None:
    store = MemoryBlockStore()
    w0 = wrangler(store)
    root = w0.build(data.items())
    w = wrangler(persist(w0, root))  # read back from stored bytes only
    for k, v in data.items():
        assert w.get(root, k) == v
    probe = draw.draw(mst_keys)
    assert w.get(root, probe) == data.get(probe)
    start = draw.draw(st.one_of(st.none(), mst_keys))
    end = draw.draw(st.one_of(st.none(), mst_keys))
    expected = sorted(
        (k, v) for k, v in data.items() if (start is None or k >= start) and (end is None or k < end)
    )
    assert list(w.list(root, start, end)) == expected
    assert list(w.list(root, start, end, reverse=True)) == expected[::-1]


@slow
@given(entries, entries, st.data())
def test_diff_gives_ops_and_node_sets(a: dict[str, CID], changes: dict[str, CID], draw: st.DataObject) -> None:
    w = wrangler()
    b = dict(a)
    b.update(list(changes.items())[: len(changes) // 2])
    for k in draw.draw(st.lists(st.sampled_from(sorted(a)), unique=True)) if a else []:
        b.pop(k, None)
    root_a = w.build(a.items())
    root_b = w.build(b.items())
    ops, created, deleted = w.diff(root_a, root_b)
    expected = sorted(
        (k, a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)
    )
    assert ops == expected
    nodes_a = {n.cid for n in w.walk_nodes(root_a)}
    nodes_b = {n.cid for n in w.walk_nodes(root_b)}
    assert created == nodes_b - nodes_a
    assert deleted == nodes_a - nodes_b
    # applying the ops to a gives b
    root = root_a
    for k, _, new in ops:
        root = w.delete(root, k) if new is None else w.put(root, k, new)
    assert root == root_b


def test_diff_walks_only_the_changed_path() -> None:
    """A one-key change in a 3000-key tree reads a handful of nodes, not the tree."""
    w0 = wrangler()
    items = [(f"app.bsky.feed.post/{i:08d}", value(i)) for i in range(3000)]
    root = w0.build(items)
    store = persist(w0, root)
    new = w0.put(root, "app.bsky.feed.post/00001500x", value("new"))
    for cid in w0.walk_nodes(new):
        store.put(cid.cid, cid.serialised)

    reads: list[CID] = []

    class Counting(MemoryBlockStore):
        def get(self, cid: CID) -> bytes | None:
            reads.append(cid)
            return super().get(cid)

    w = wrangler(Counting(dict(store.items())))
    ops, created, deleted = w.diff(root, new)
    assert ops == [("app.bsky.feed.post/00001500x", None, value("new"))]
    total = sum(1 for _ in w0.walk_nodes(root))
    assert len(reads) <= 4 * len(created) + 4 < total // 10


def test_big_tree_build_matches_incremental_and_walks_in_order() -> None:
    items = [(f"app.bsky.feed.post/{hashlib.sha256(str(i).encode()).hexdigest()[:13]}", value(i)) for i in range(2000)]
    w = wrangler()
    root = w.build(items)
    assert insert_all(w, items[::-1]) == root
    entries_seen = check_tree(w, root)
    assert entries_seen == sorted(items)
    # walk_entries interleaves each node before its subtrees and entries in key order
    keys = [node.keys[i] for node, i in w.walk_entries(root) if i >= 0]
    assert keys == sorted(k for k, _ in items)


def test_build_rejects_duplicates() -> None:
    with pytest.raises(Exception, match="duplicate"):
        wrangler().build([("a/b", value(1)), ("a/b", value(2))])


def test_put_same_value_is_a_no_op_and_update_changes_root() -> None:
    w = wrangler()
    root = w.build([(f"a.b/{i}", value(i)) for i in range(50)])
    assert w.put(root, "a.b/7", value(7)) == root
    changed = w.put(root, "a.b/7", value("x"))
    assert changed != root and w.get(changed, "a.b/7") == value("x")
    assert w.delete(root, "a.b/missing") == root


def test_proof_blocks_for_present_and_absent_keys() -> None:
    w0 = wrangler()
    items = [(f"app.bsky.feed.like/{i:06d}", value(i)) for i in range(500)]
    root = w0.build(items)
    for key in ["app.bsky.feed.like/000250", "app.bsky.feed.like/000250a", "zzz.zzz/zz", "aaa.aaa/a"]:
        path = w0.proof_blocks(root, key)
        assert path[0] == root
        partial = MemoryBlockStore({c: w0.ns.block(c) for c in path})
        # the proof alone answers the question, present or absent
        assert wrangler(partial).get(root, key) == dict(items).get(key)


def test_node_cache_is_used_and_bounded() -> None:
    w0 = wrangler()
    root = w0.build([(f"a.b/{i}", value(i)) for i in range(300)])
    store = persist(w0, root)
    cache = NodeCache(maxsize=8)
    w = NodeWrangler(NodeStore(store, cache))
    assert w.get(root, "a.b/5") == value(5)
    assert 0 < len(cache) <= 8
    # a second store sharing the cache reads nothing for cached nodes
    empty = NodeWrangler(NodeStore(MemoryBlockStore(), cache))
    assert empty.ns.get(root).keys == w0.ns.get(root).keys
