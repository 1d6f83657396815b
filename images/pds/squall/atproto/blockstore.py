"""Block stores: the content-addressed storage a repository lives in
(https://atproto.com/specs/repository#repo-data-structure-v3).

A repository is a graph of blocks (commit, MST nodes, records), each found by its CID. The MST,
commit and repo-writer code see storage only through :class:`BlockStore`; the service backs it
with SQLite, tests and relays with :class:`MemoryBlockStore`.

:class:`OverlayBlockStore` stages new blocks in memory over a read-only base, so that a commit
becomes visible in the base only after it has been built, signed and checked, and the exact set
of blocks it added can be listed for persisting and for the firehose.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol, runtime_checkable

from .cid import CID
from .errors import AtprotoError

__all__ = ["BlockStore", "MemoryBlockStore", "OverlayBlockStore", "MissingBlock"]


class MissingBlock(AtprotoError):
    """A block needed to answer a question is not in the store (e.g. not in a partial CAR)."""

    def __init__(self, cid: CID, what: str = "block") -> None:
        super().__init__(f"missing {what} {cid}")
        self.cid = cid


@runtime_checkable
class BlockStore(Protocol):
    """The read/write interface to blocks by CID. Implementations never alter a stored block."""

    def get(self, cid: CID) -> bytes | None:
        """The block's bytes, or None when the store does not hold it."""

    def put(self, cid: CID, data: bytes) -> None:
        """Store ``data`` under ``cid``; the caller guarantees that ``cid`` is its hash."""

    def has(self, cid: CID) -> bool:
        """True when the store holds the block."""


class MemoryBlockStore:
    """A dict of blocks. Used by tests, by relays checking a commit, and as overlay staging."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: dict[CID, bytes] | Iterable[tuple[CID, bytes]] | None = None) -> None:
        self._blocks: dict[CID, bytes] = dict(blocks) if blocks is not None else {}

    def get(self, cid: CID) -> bytes | None:
        return self._blocks.get(cid)

    def put(self, cid: CID, data: bytes) -> None:
        self._blocks[cid] = bytes(data)

    def put_block(self, data: bytes) -> CID:
        """Store a dag-cbor block and return its CID (computed here)."""
        cid = CID.from_block(data)
        self._blocks[cid] = bytes(data)
        return cid

    def has(self, cid: CID) -> bool:
        return cid in self._blocks

    def delete(self, cid: CID) -> None:
        self._blocks.pop(cid, None)

    def cids(self) -> set[CID]:
        return set(self._blocks)

    def items(self) -> Iterator[tuple[CID, bytes]]:
        return iter(list(self._blocks.items()))

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, cid: object) -> bool:
        return cid in self._blocks


class OverlayBlockStore:
    """Reads fall through to ``base``; writes stay in memory until the caller persists them.

    ``staged()`` lists exactly the blocks put since creation that the base did not already hold,
    in the order they were first put.
    """

    __slots__ = ("base", "_staged")

    def __init__(self, base: BlockStore) -> None:
        self.base = base
        self._staged: dict[CID, bytes] = {}

    def get(self, cid: CID) -> bytes | None:
        data = self._staged.get(cid)
        if data is None:
            data = self.base.get(cid)
        return data

    def put(self, cid: CID, data: bytes) -> None:
        if cid in self._staged or self.base.has(cid):
            return
        self._staged[cid] = bytes(data)

    def has(self, cid: CID) -> bool:
        return cid in self._staged or self.base.has(cid)

    def staged(self) -> dict[CID, bytes]:
        """The blocks put here and not present in the base (a copy, in first-put order)."""
        return dict(self._staged)

    def commit_to(self, target: BlockStore | None = None) -> None:
        """Write the staged blocks into ``target`` (default: the base) and clear the stage."""
        target = self.base if target is None else target
        for cid, data in self._staged.items():
            target.put(cid, data)
        self._staged.clear()

    def discard(self) -> None:
        self._staged.clear()
