"""Merkle Search Tree, repository format v3 (https://atproto.com/specs/repository#mst-structure).

The MST maps keys (repo paths ``<collection>/<rkey>``) to record CIDs. A key's height is the
number of leading zero bits of SHA-256(key) divided by two (fanout 4); a node holds the keys of one
height, in order, with links to subtrees one layer down between and around them. The shape depends
only on the contents, so the root CID is a commitment to the whole mapping.

A node is stored as DAG-CBOR ``{"e": [{"p", "k", "v", "t"}, ...], "l": link|null}``; each entry's
key is compressed against the previous key of the same node (``p`` shared bytes, ``k`` the rest).
The compression is mandatory, so this module writes the bytes itself (and checks every node it
reads by writing it again and comparing).

Pieces:

* :class:`Node` — one immutable node with its serialised bytes and CID cached.
* :class:`NodeStore` — nodes by CID over a :class:`~.blockstore.BlockStore`, remembering the nodes
  built in memory; an optional shared :class:`NodeCache` saves decoding.
* :class:`NodeWrangler` — the tree operations. Every mutation takes a root CID and returns the new
  root CID; nothing in the block store changes. New nodes live in the ``NodeStore`` until a caller
  (the repo writer) asks :meth:`NodeWrangler.diff` which ones the new tree really uses.
* Sync 1.1 (https://atproto.com/specs/sync#reliable-repository-synchronization): the covering proof
  a ``#commit`` carries for each operation, and :func:`invert_ops`, which undoes the operations on
  the partial tree such a commit carries, as a relay does to check it against ``prevData``.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left
from collections import OrderedDict
from typing import Iterable, Iterator, Sequence

from . import dagcbor
from .blockstore import BlockStore, MissingBlock
from .cid import CID
from .errors import AtprotoError, DecodeError, InvalidSyntax

__all__ = [
    "EMPTY_ROOT_CID",
    "MAX_KEY_BYTES",
    "InvertError",
    "MalformedTree",
    "Node",
    "NodeCache",
    "NodeStore",
    "NodeWrangler",
    "common_prefix_len",
    "empty_root",
    "ensure_valid_key",
    "invert_ops",
    "is_valid_key",
    "key_height",
]

MAX_KEY_BYTES = 1024
# The spec's path characters (letters, digits and ``/.-_~``) plus ``:``, which record keys allow.
_KEY_RE = re.compile(r"[A-Za-z0-9_~\-:.]+/[A-Za-z0-9_~\-:.]+")


class MalformedTree(DecodeError):
    """MST node bytes or tree structure that a correct implementation cannot have produced."""


class InvertError(AtprotoError):
    """The operations of a commit do not match the tree they claim to have produced."""


# -- keys -------------------------------------------------------------------------------------


def key_height(key: str | bytes) -> int:
    """Layer of ``key`` in the tree: leading zero bits of SHA-256(key), halved, rounded down."""
    if isinstance(key, str):
        key = key.encode()
    digest = int.from_bytes(hashlib.sha256(key).digest(), "big")
    return (256 - digest.bit_length()) >> 1


def common_prefix_len(a: str | bytes, b: str | bytes) -> int:
    """Number of leading bytes ``a`` and ``b`` share (strings are compared as UTF-8)."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    m = min(len(a), len(b))
    # XOR of the two prefixes as one big integer: its highest set bit is in the first
    # differing byte, which Python finds at C speed.
    x = int.from_bytes(a[:m], "big") ^ int.from_bytes(b[:m], "big")
    return m - ((x.bit_length() + 7) >> 3)


def is_valid_key(key: object) -> bool:
    """True for a repo path usable as an MST key: ``<collection>/<rkey>``, allowed characters only,
    at most 1024 bytes, neither segment ``.`` nor ``..``."""
    if not isinstance(key, str) or len(key) > MAX_KEY_BYTES or not _KEY_RE.fullmatch(key):
        return False
    collection, rkey = key.split("/")
    return collection not in (".", "..") and rkey not in (".", "..")


def ensure_valid_key(key: object) -> None:
    if not is_valid_key(key):
        raise InvalidSyntax(f"invalid MST key (repo path): {key!r}")


# -- nodes ------------------------------------------------------------------------------------


def _head(major: int, n: int) -> bytes:
    """A CBOR head (major type + argument) in its shortest form, as DAG-CBOR requires."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


_NULL = b"\xf6"
_LINK36 = b"\xd8\x2a\x58\x25\x00"  # tag 42, byte string of 37: 0x00 + a 36-byte CIDv1 sha2-256


def _link(cid: CID | None) -> bytes:
    if cid is None:
        return _NULL
    raw = cid.bytes
    if len(raw) == 36:
        return _LINK36 + raw
    # tag 42, then a byte string holding the 0x00 multibase prefix and the binary CID
    return b"\xd8\x2a" + _head(2, len(raw) + 1) + b"\x00" + raw


def _key_parts(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    """Per entry, the bytes from the entry's map head up to its ``t`` value: they depend only on
    the entry's key and the key before it, so nodes with the same keys share them."""
    out = []
    prev = b""
    for key in keys:
        kb = key.encode()
        p = common_prefix_len(prev, kb)
        suffix = kb[p:]
        out.append(b"\xa4\x61k" + _head(2, len(suffix)) + suffix + b"\x61p" + _head(0, p) + b"\x61t")
        prev = kb
    return tuple(out)


def _val_parts(vals: tuple[CID, ...]) -> tuple[bytes, ...]:
    return tuple(b"\x61v" + _link(v) for v in vals)


class Node:
    """One MST node: ``keys[i]``/``vals[i]`` are its entries; ``subtrees`` has one more item, so
    ``subtrees[i]`` holds the keys just before ``keys[i]`` (``subtrees[0]`` is the spec's ``l``,
    ``subtrees[i + 1]`` is entry ``i``'s ``t``). Immutable: the bytes and CID are computed once."""

    __slots__ = ("keys", "vals", "subtrees", "_bytes", "_cid", "_height", "_kparts", "_vparts")

    def __init__(
        self,
        keys: tuple[str, ...],
        vals: tuple[CID, ...],
        subtrees: tuple[CID | None, ...],
    ) -> None:
        self.keys = keys
        self.vals = vals
        self.subtrees = subtrees
        self._bytes: bytes | None = None
        self._cid: CID | None = None
        self._height: int | None = None
        self._kparts: tuple[bytes, ...] | None = None
        self._vparts: tuple[bytes, ...] | None = None

    def with_subtree(self, i: int, cid: CID | None) -> "Node":
        """This node with ``subtrees[i]`` replaced; re-encodes only the changed link."""
        node = Node(self.keys, self.vals, self.subtrees[:i] + (cid,) + self.subtrees[i + 1 :])
        node._height = self._height
        node._kparts = self._kparts
        node._vparts = self._vparts
        return node

    def with_value(self, i: int, value: CID) -> "Node":
        """This node with entry ``i``'s value replaced."""
        node = Node(self.keys, self.vals[:i] + (value,) + self.vals[i + 1 :], self.subtrees)
        node._height = self._height
        node._kparts = self._kparts
        return node

    @property
    def is_empty(self) -> bool:
        """No entries and no subtree: only valid as the root of an empty tree."""
        return not self.keys and self.subtrees[0] is None

    @property
    def height(self) -> int | None:
        """The layer of this node's keys; None for a node without keys (it cannot know)."""
        if self._height is None and self.keys:
            self._height = key_height(self.keys[0])
        return self._height

    @property
    def serialised(self) -> bytes:
        if self._bytes is None:
            kparts = self._kparts
            if kparts is None:
                kparts = self._kparts = _key_parts(self.keys)
            vparts = self._vparts
            if vparts is None:
                vparts = self._vparts = _val_parts(self.vals)
            subtrees = self.subtrees
            n = len(kparts)
            parts = [b"\xa2\x61e" + _head(4, n)]
            for i in range(n):
                parts.append(kparts[i])
                parts.append(_link(subtrees[i + 1]))
                parts.append(vparts[i])
            parts.append(b"\x61l")
            parts.append(_link(subtrees[0]))
            self._bytes = b"".join(parts)
        return self._bytes

    @property
    def cid(self) -> CID:
        if self._cid is None:
            self._cid = CID.from_block(self.serialised)
        return self._cid

    def to_data(self) -> dict:
        """The node as a data-model value, in the spec's field names."""
        entries = []
        prev = b""
        for i, key in enumerate(self.keys):
            kb = key.encode()
            p = common_prefix_len(prev, kb)
            entries.append({"k": kb[p:], "p": p, "t": self.subtrees[i + 1], "v": self.vals[i]})
            prev = kb
        return {"e": entries, "l": self.subtrees[0]}

    @classmethod
    def decode(cls, data: bytes, cid: CID | None = None) -> "Node":
        """Parse and fully check one node's bytes (canonical form, key order, one height)."""
        try:
            value = dagcbor.decode(data)
        except DecodeError as exc:
            raise MalformedTree(f"MST node is not valid DAG-CBOR: {exc}") from exc
        if type(value) is not dict or value.keys() != {"e", "l"}:
            raise MalformedTree("MST node must be a map with exactly the fields 'e' and 'l'")
        left = value["l"]
        entries = value["e"]
        if left is not None and type(left) is not CID:
            raise MalformedTree("MST node 'l' must be a link or null")
        if type(entries) is not list:
            raise MalformedTree("MST node 'e' must be an array")
        keys: list[str] = []
        vals: list[CID] = []
        subtrees: list[CID | None] = [left]
        prev = b""
        for entry in entries:
            if type(entry) is not dict or entry.keys() != {"k", "p", "t", "v"}:
                raise MalformedTree("MST entry must be a map with exactly 'k', 'p', 't' and 'v'")
            p, suffix, tree, val = entry["p"], entry["k"], entry["t"], entry["v"]
            if type(p) is not int or not 0 <= p <= len(prev):
                raise MalformedTree(f"MST entry prefix length {p!r} is out of range")
            if type(suffix) is not bytes:
                raise MalformedTree("MST entry 'k' must be a byte string")
            if type(val) is not CID:
                raise MalformedTree("MST entry 'v' must be a link")
            if tree is not None and type(tree) is not CID:
                raise MalformedTree("MST entry 't' must be a link or null")
            kb = prev[:p] + suffix
            if not kb:
                raise MalformedTree("MST key must not be empty")
            if kb <= prev:
                raise MalformedTree("MST keys are not in strictly increasing order")
            try:
                key = kb.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedTree("MST key is not valid UTF-8") from exc
            keys.append(key)
            vals.append(val)
            subtrees.append(tree)
            prev = kb
        node = cls(tuple(keys), tuple(vals), tuple(subtrees))
        if keys:
            heights = {key_height(k) for k in keys}
            if len(heights) != 1:
                raise MalformedTree("MST node holds keys of different heights")
            node._height = heights.pop()
        # Writing the node again must give the same bytes; this catches a non-minimal prefix
        # length (the only freedom DAG-CBOR itself leaves).
        if node.serialised != data:
            raise MalformedTree("MST node is not in canonical form (key prefix compression)")
        node._bytes = bytes(data)
        node._cid = cid
        return node

    def __repr__(self) -> str:
        return f"Node(keys={self.keys!r}, subtrees={len(self.subtrees)})"


EMPTY_NODE = Node((), (), (None,))
EMPTY_ROOT_CID = EMPTY_NODE.cid


def empty_root() -> CID:
    """The root CID of a tree with no entries (one node with no entries and no subtree)."""
    return EMPTY_ROOT_CID


def _prune(node: Node) -> Node | None:
    return None if node.is_empty else node


# -- storage ----------------------------------------------------------------------------------


class NodeCache:
    """A bounded LRU map of decoded nodes by CID. Safe to share between stores and requests:
    a CID names exactly one node, whatever store it came from."""

    __slots__ = ("_nodes", "maxsize")

    def __init__(self, maxsize: int = 65536) -> None:
        self._nodes: OrderedDict[CID, Node] = OrderedDict()
        self.maxsize = maxsize

    def get(self, cid: CID) -> Node | None:
        node = self._nodes.get(cid)
        if node is not None:
            self._nodes.move_to_end(cid)
        return node

    def put(self, cid: CID, node: Node) -> None:
        self._nodes[cid] = node
        self._nodes.move_to_end(cid)
        if len(self._nodes) > self.maxsize:
            self._nodes.popitem(last=False)

    def __len__(self) -> int:
        return len(self._nodes)


class NodeStore:
    """Nodes by CID: those built in memory (by a ``NodeWrangler``) first, then the block store.

    The block store is only read. Blocks are checked against their CID and decoded strictly.
    Do not give a shared ``cache`` to a store over a partial tree whose missing blocks matter
    (e.g. a relay's check): a cached node would hide a block the sender left out.
    """

    __slots__ = ("blocks", "cache", "_made")

    def __init__(self, blocks: BlockStore, cache: NodeCache | None = None) -> None:
        self.blocks = blocks
        self.cache = cache
        self._made: dict[CID, Node] = {}

    def get(self, cid: CID) -> Node:
        node = self._made.get(cid)
        if node is not None:
            return node
        cache = self.cache
        if cache is not None:
            node = cache.get(cid)
            if node is not None:
                return node
        data = self.blocks.get(cid)
        if data is None:
            if cid == EMPTY_ROOT_CID:
                return EMPTY_NODE  # its content is known; a new repo may not have stored it yet
            raise MissingBlock(cid, "MST node")
        if CID.from_block(data, cid.codec) != cid:
            raise MalformedTree(f"block {cid} does not hash to its CID")
        node = Node.decode(data, cid)
        if cache is not None:
            cache.put(cid, node)
        return node

    def add(self, node: Node) -> CID:
        """Remember a node built in memory; returns its CID."""
        cid = node.cid
        self._made[cid] = node
        return cid

    def block(self, cid: CID) -> bytes:
        """The serialised bytes of a node (in memory or stored)."""
        return self.get(cid).serialised

    def forget_made(self) -> None:
        """Drop the nodes built in memory (after they were persisted or abandoned)."""
        self._made.clear()


# -- tree operations --------------------------------------------------------------------------


DiffOp = tuple[str, "CID | None", "CID | None"]  # (key, old value, new value)


class NodeWrangler:
    """Operations on trees named by their root CID. Mutations return the new root CID and leave
    every existing block untouched; the nodes they build are kept in the ``NodeStore``."""

    __slots__ = ("ns", "validate_keys")

    def __init__(self, ns: NodeStore, *, validate_keys: bool = True) -> None:
        self.ns = ns
        self.validate_keys = validate_keys

    # -- loading with structure checks ------------------------------------------------------

    def _root(self, cid: CID) -> tuple[Node, int]:
        node = self.ns.get(cid)
        if node.keys:
            return node, node.height  # type: ignore[return-value]
        if node.subtrees[0] is not None:
            raise MalformedTree(f"MST root {cid} has no entries but a subtree (must be trimmed)")
        return node, 0

    def _load(self, cid: CID, height: int) -> Node:
        if height < 0:
            raise MalformedTree(f"MST node {cid} is below layer 0")
        node = self.ns.get(cid)
        if node.keys:
            if node.height != height:
                raise MalformedTree(f"MST node {cid} has keys of height {node.height} at layer {height}")
        elif node.subtrees[0] is None:
            raise MalformedTree(f"MST node {cid} below the root is empty")
        return node

    def _cid(self, node: Node | None) -> CID | None:
        return None if node is None else self.ns.add(node)

    # -- reads ------------------------------------------------------------------------------

    def get(self, root: CID, key: str) -> CID | None:
        """The value stored under ``key``, or None."""
        node, height = self._root(root)
        h = key_height(key)
        while True:
            if h > height:
                return None
            keys = node.keys
            i = bisect_left(keys, key)
            if h == height:
                return node.vals[i] if i < len(keys) and keys[i] == key else None
            sub = node.subtrees[i]
            if sub is None:
                return None
            height -= 1
            node = self._load(sub, height)

    def list(
        self,
        root: CID,
        start: str | None = None,
        end: str | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[str, CID]]:
        """(key, value) pairs with ``start <= key < end`` in key order (descending if ``reverse``),
        loading only the nodes the range touches."""
        node, height = self._root(root)
        if reverse:
            return self._walk_reverse(node, height, start, end)
        return self._walk(node, height, start, end)

    def _walk(self, node: Node, height: int, start: str | None, end: str | None) -> Iterator[tuple[str, CID]]:
        keys, vals, subtrees = node.keys, node.vals, node.subtrees
        n = len(keys)
        i0 = bisect_left(keys, start) if start is not None else 0
        for i in range(i0, n + 1):
            sub = subtrees[i]
            if sub is not None:
                # only the first subtree can hold keys below ``start``
                yield from self._walk(self._load(sub, height - 1), height - 1, start if i == i0 else None, end)
            if i < n:
                key = keys[i]
                if end is not None and key >= end:
                    return
                yield key, vals[i]

    def _walk_reverse(
        self, node: Node, height: int, start: str | None, end: str | None
    ) -> Iterator[tuple[str, CID]]:
        keys, vals, subtrees = node.keys, node.vals, node.subtrees
        i1 = bisect_left(keys, end) if end is not None else len(keys)
        for i in range(i1, -1, -1):
            sub = subtrees[i]
            if sub is not None:
                yield from self._walk_reverse(
                    self._load(sub, height - 1), height - 1, start, end if i == i1 else None
                )
            if i > 0:
                key = keys[i - 1]
                if start is not None and key < start:
                    return
                yield key, vals[i - 1]

    def walk_nodes(self, root: CID) -> Iterator[Node]:
        """Every node, depth first in key order, each before its subtrees (streaming order)."""
        node, height = self._root(root)
        yield node
        stack: list[tuple[Node, int, int]] = [(node, height, 0)]
        while stack:
            node, height, i = stack.pop()
            subtrees = node.subtrees
            while i < len(subtrees) and subtrees[i] is None:
                i += 1
            if i == len(subtrees):
                continue
            stack.append((node, height, i + 1))
            child = self._load(subtrees[i], height - 1)  # type: ignore[arg-type]
            yield child
            stack.append((child, height - 1, 0))

    def walk_entries(self, root: CID) -> Iterator[tuple[Node, int]]:
        """Interleaves nodes and entries for streaming export: yields ``(node, -1)`` when a node
        is first reached and ``(node, i)`` for its entry ``i``, in key order."""
        node, height = self._root(root)
        yield node, -1
        stack: list[tuple[Node, int, int]] = [(node, height, 0)]
        while stack:
            node, height, i = stack.pop()
            if i > 0:
                yield node, i - 1  # the entry between subtrees[i - 1] and subtrees[i]
            if i < len(node.keys):
                stack.append((node, height, i + 1))
            sub = node.subtrees[i]
            if sub is not None:
                child = self._load(sub, height - 1)
                yield child, -1
                stack.append((child, height - 1, 0))

    # -- writes -----------------------------------------------------------------------------

    def put(self, root: CID, key: str, value: CID) -> CID:
        """Set ``key`` to ``value`` (insert or replace)."""
        if self.validate_keys:
            ensure_valid_key(key)
        node, height = self._root(root)
        if node.is_empty:
            return self.ns.add(Node((key,), (value,), (None, None)))
        new = self._put(node, height, key, value, key_height(key))
        return root if new is node else self.ns.add(new)

    def _put(self, node: Node, height: int, key: str, value: CID, h: int) -> Node:
        if h > height:
            # The key belongs above this node: split the node around it and lift the halves
            # through empty intermediate layers up to the key's layer.
            left, right = self._split_node(node, height, key)
            for _ in range(h - height - 1):
                left = None if left is None else Node((), (), (self.ns.add(left),))
                right = None if right is None else Node((), (), (self.ns.add(right),))
            return Node((key,), (value,), (self._cid(left), self._cid(right)))
        keys = node.keys
        i = bisect_left(keys, key)
        if h < height:
            sub = node.subtrees[i]
            if sub is None:
                child = self._chain(key, value, h, height - 1)
            else:
                old = self._load(sub, height - 1)
                child = self._put(old, height - 1, key, value, h)
                if child is old:
                    return node
            return node.with_subtree(i, self.ns.add(child))
        if i < len(keys) and keys[i] == key:
            if node.vals[i] == value:
                return node
            return node.with_value(i, value)
        left, right = self._split(node.subtrees[i], height - 1, key)
        return Node(
            keys[:i] + (key,) + keys[i:],
            node.vals[:i] + (value,) + node.vals[i:],
            node.subtrees[:i] + (left, right) + node.subtrees[i + 1 :],
        )

    def _chain(self, key: str, value: CID, h: int, top: int) -> Node:
        """A new subtree at layer ``top`` holding only ``key`` (at layer ``h``)."""
        node = Node((key,), (value,), (None, None))
        for _ in range(top - h):
            node = Node((), (), (self.ns.add(node),))
        return node

    def _split(self, cid: CID | None, height: int, key: str) -> tuple[CID | None, CID | None]:
        if cid is None:
            return None, None
        left, right = self._split_node(self._load(cid, height), height, key)
        return self._cid(left), self._cid(right)

    def _split_node(self, node: Node, height: int, key: str) -> tuple[Node | None, Node | None]:
        """The parts of ``node``'s subtree below and above ``key`` (which it does not hold)."""
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            raise MalformedTree(f"MST key {key!r} found at the wrong layer")
        if i == len(keys) and node.subtrees[i] is None:
            return node, None
        if i == 0 and node.subtrees[0] is None:
            return None, node
        sub_left, sub_right = self._split(node.subtrees[i], height - 1, key)
        left = Node(keys[:i], node.vals[:i], node.subtrees[:i] + (sub_left,))
        right = Node(keys[i:], node.vals[i:], (sub_right,) + node.subtrees[i + 1 :])
        return _prune(left), _prune(right)

    def delete(self, root: CID, key: str) -> CID:
        """Remove ``key``; the same root if it was not there."""
        node, height = self._root(root)
        if node.is_empty or key_height(key) > height:
            return root
        new = self._delete(node, height, key, key_height(key))
        if new is node:
            return root
        # An emptied top is trimmed: the root must hold entries (or be the empty node).
        while new is not None and not new.keys:
            sub = new.subtrees[0]
            if sub is None:
                break
            height -= 1
            new = self._load(sub, height)
        if new is None:
            return self.ns.add(EMPTY_NODE)
        return self.ns.add(new)

    def _delete(self, node: Node, height: int, key: str, h: int) -> Node | None:
        keys = node.keys
        i = bisect_left(keys, key)
        if h < height:
            sub = node.subtrees[i]
            if sub is None:
                return node
            old = self._load(sub, height - 1)
            child = self._delete(old, height - 1, key, h)
            if child is old:
                return node
            return _prune(node.with_subtree(i, self._cid(child)))
        if i == len(keys) or keys[i] != key:
            return node
        merged = self._merge(node.subtrees[i], node.subtrees[i + 1], height - 1)
        return _prune(
            Node(
                keys[:i] + keys[i + 1 :],
                node.vals[:i] + node.vals[i + 1 :],
                node.subtrees[:i] + (merged,) + node.subtrees[i + 2 :],
            )
        )

    def _merge(self, left: CID | None, right: CID | None, height: int) -> CID | None:
        """Join two adjacent subtrees of one layer (every key of ``left`` is below ``right``'s)."""
        if left is None:
            return right
        if right is None:
            return left
        a = self._load(left, height)
        b = self._load(right, height)
        mid = self._merge(a.subtrees[-1], b.subtrees[0], height - 1)
        return self.ns.add(Node(a.keys + b.keys, a.vals + b.vals, a.subtrees[:-1] + (mid,) + b.subtrees[1:]))

    def build(self, items: Iterable[tuple[str, CID]]) -> CID:
        """The root of a tree holding exactly ``items`` (built bottom-up, one pass per layer)."""
        pairs = sorted(items, key=lambda kv: kv[0])
        for j in range(1, len(pairs)):
            if pairs[j][0] == pairs[j - 1][0]:
                raise AtprotoError(f"duplicate MST key {pairs[j][0]!r}")
        if self.validate_keys:
            for key, _ in pairs:
                ensure_valid_key(key)
        if not pairs:
            return self.ns.add(EMPTY_NODE)
        keys = [k for k, _ in pairs]
        vals = [v for _, v in pairs]
        heights = [key_height(k) for k in keys]

        def build_range(lo: int, hi: int, height: int) -> CID | None:
            if lo == hi:
                return None
            at = [j for j in range(lo, hi) if heights[j] == height]
            subtrees: list[CID | None] = []
            prev = lo
            for j in at:
                subtrees.append(build_range(prev, j, height - 1))
                prev = j + 1
            subtrees.append(build_range(prev, hi, height - 1))
            node = Node(tuple(keys[j] for j in at), tuple(vals[j] for j in at), tuple(subtrees))
            node._height = height if at else None
            return self.ns.add(node)

        root = build_range(0, len(keys), max(heights))
        assert root is not None
        return root

    # -- comparing trees --------------------------------------------------------------------

    def diff(self, old_root: CID, new_root: CID) -> tuple[list[DiffOp], set[CID], set[CID]]:
        """What changed from ``old_root`` to ``new_root``: record operations ``(key, old value,
        new value)`` in key order, the node CIDs only the new tree has (created) and those only the
        old tree has (deleted). Subtrees with equal CIDs are skipped, so the cost follows the size
        of the change, not of the trees."""
        ops: list[DiffOp] = []
        if old_root == new_root:
            return ops, set(), set()
        created: set[CID] = set()
        deleted: set[CID] = set()
        # Each side is a stack of pending items in reverse key order: a subtree is
        # (True, cid, None, layer), an entry is (False, key, value, layer).
        a: list[tuple] = []
        b: list[tuple] = []
        self._expand_root(old_root, a, deleted)
        self._expand_root(new_root, b, created)
        while a and b:
            x = a[-1]
            y = b[-1]
            if x[0]:
                if y[0]:
                    if x[1] == y[1]:
                        a.pop()
                        b.pop()
                    elif x[3] > y[3]:
                        self._expand(a, deleted)
                    elif y[3] > x[3]:
                        self._expand(b, created)
                    else:
                        self._expand(a, deleted)
                        self._expand(b, created)
                else:
                    self._expand(a, deleted)
                continue
            if y[0]:
                self._expand(b, created)
                continue
            if x[1] == y[1]:
                if x[2] != y[2]:
                    ops.append((x[1], x[2], y[2]))
                a.pop()
                b.pop()
            elif x[1] < y[1]:
                ops.append((x[1], x[2], None))
                a.pop()
            else:
                ops.append((y[1], None, y[2]))
                b.pop()
        while a:
            if a[-1][0]:
                self._expand(a, deleted)
            else:
                x = a.pop()
                ops.append((x[1], x[2], None))
        while b:
            if b[-1][0]:
                self._expand(b, created)
            else:
                y = b.pop()
                ops.append((y[1], None, y[2]))
        # A node can be opened on both sides when the walks were out of step; it is in both trees.
        both = created & deleted
        created -= both
        deleted -= both
        return ops, created, deleted

    def _expand_root(self, root: CID, stack: list[tuple], seen: set[CID]) -> None:
        node, height = self._root(root)
        seen.add(root)
        self._push_items(node, height, stack)

    def _expand(self, stack: list[tuple], seen: set[CID]) -> None:
        _, cid, _, height = stack.pop()
        seen.add(cid)
        self._push_items(self._load(cid, height), height, stack)

    @staticmethod
    def _push_items(node: Node, height: int, stack: list[tuple]) -> None:
        keys, vals, subtrees = node.keys, node.vals, node.subtrees
        n = len(keys)
        sub = subtrees[n]
        if sub is not None:
            stack.append((True, sub, None, height - 1))
        for i in range(n - 1, -1, -1):
            stack.append((False, keys[i], vals[i], height))
            sub = subtrees[i]
            if sub is not None:
                stack.append((True, sub, None, height - 1))

    # -- proofs -----------------------------------------------------------------------------

    def proof_blocks(self, root: CID, key: str) -> list[CID]:
        """The nodes from the root down to the node holding ``key``, or down to where it would be
        (an absence proof): what ``com.atproto.sync.getRecord`` returns with the commit. The walk
        follows keys, not heights, so verifiers that search by key alone find every node."""
        path: list[CID] = []
        cid: CID | None = root
        while cid is not None:
            path.append(cid)
            node = self.ns.get(cid)
            i = bisect_left(node.keys, key)
            if i < len(node.keys) and node.keys[i] == key:
                break
            cid = node.subtrees[i]
        return path

    def covering_proof_blocks(self, root: CID, keys: Iterable[str]) -> set[CID]:
        """The MST nodes a Sync 1.1 ``#commit`` must carry for operations on ``keys`` in the tree
        ``root`` (the new tree): for each key, the path to it and down both sides of it to its
        neighbouring entries. With them a consumer can undo each operation (a removal merges the
        subtrees on both sides of the key; an insertion splits the subtree in the gap)."""
        out: set[CID] = set()
        for key in keys:
            self._left_path(root, key, out)
            self._right_path(root, key, out)
        return out

    def _left_path(self, root: CID, key: str, out: set[CID]) -> None:
        # Down the subtree just before the key's position: where the key would split, or the
        # right edge of what comes before an existing key.
        cid: CID | None = root
        while cid is not None:
            out.add(cid)
            node = self.ns.get(cid)
            cid = node.subtrees[bisect_left(node.keys, key)]

    def _right_path(self, root: CID, key: str, out: set[CID]) -> None:
        # Down to the entry just after the key: the left edge of the subtree after an existing
        # key, or the same gap as the left path when the key is absent.
        cid: CID | None = root
        while cid is not None:
            out.add(cid)
            node = self.ns.get(cid)
            keys = node.keys
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                cid = node.subtrees[i + 1]
            else:
                cid = node.subtrees[i]


def invert_ops(partial_store: BlockStore, new_root: CID, ops: Sequence[DiffOp]) -> CID:
    """Undo ``ops`` (``(key, old value, new value)``; None for absent) on the tree ``new_root``,
    reading only ``partial_store`` (the blocks of a ``#commit``), and return the old root.

    Each operation is first checked against the tree: the key must hold the operation's new value
    (or be absent for a deletion), else :class:`InvertError`. A node that the inversion needs and
    the store lacks raises :class:`~.blockstore.MissingBlock`. A relay compares the result with
    the event's ``prevData``.
    """
    wrangler = NodeWrangler(NodeStore(partial_store), validate_keys=False)
    root = new_root
    seen: set[str] = set()
    for key, old, new in reversed(ops):
        if key in seen:
            raise InvertError(f"more than one operation on {key!r}")
        seen.add(key)
        if old is None and new is None:
            raise InvertError(f"operation on {key!r} has neither an old nor a new value")
        current = wrangler.get(root, key)
        if current != new:
            raise InvertError(f"tree holds {current} at {key!r}, the operation says {new}")
        root = wrangler.delete(root, key) if old is None else wrangler.put(root, key, old)
    return root
