"""CAR v1 files, streamed (https://ipld.io/specs/transport/car/carv1/, and the atproto repository
spec's "CAR File Serialization", https://atproto.com/specs/repository#car-file-serialization).

A CAR is a varint-prefixed DAG-CBOR header ``{"version": 1, "roots": [CID, ...]}`` followed by
sections, each ``varint(len(cid) + len(block)) ‖ cid ‖ block``. atproto puts the commit CID in
``roots`` and allows blocks in any order, with duplicates.

Reading never trusts the input: every block is checked against its CID (sha2-256), and sizes are
bounded before anything is buffered (header, section length varint, block size, optionally the
whole stream and the block count), so a hostile stream costs at most one block of memory.
``CarParser`` is the push parser (feed bytes, pull blocks); ``CarReader`` and ``AsyncCarReader``
drive it from files, byte strings or (async) iterators of chunks; ``read_car`` is the
all-in-memory convenience.

Writing is a generator of chunks (``write_car``, ``awrite_car``) so a whole repository never has
to sit in memory; ``encode_car`` joins them for small CARs.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from . import dagcbor
from .cid import CID, encode_varint
from .errors import DecodeError

MAX_BLOCK_SIZE = dagcbor.MAX_BLOCK_SIZE
MAX_HEADER_SIZE = 64 * 1024  # an atproto header holds one root (~45 bytes); leave room, not megabytes
MAX_VARINT_BYTES = 9  # the multiformats unsigned-varint cap
_MAX_CID_BYTES = 4 * MAX_VARINT_BYTES + 64  # version, codec, hash code, length varints + longest digest
READ_SIZE = 64 * 1024
WRITE_CHUNK_SIZE = 64 * 1024


def _try_varint(buf: bytearray, pos: int, what: str, offset: int) -> tuple[int, int] | None:
    """A varint at ``pos``, or None when more bytes are needed; refuses more than 9 bytes."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise DecodeError(f"{what} varint at byte {offset} is longer than {MAX_VARINT_BYTES} bytes")


class CarParser:
    """Push parser for one CAR v1 stream: ``feed`` bytes, then ``next_block`` until it returns None.

    ``roots`` is None until the header has been parsed. Call ``close`` at the end of the input:
    it refuses a stream that stops inside the header or a section.
    """

    def __init__(
        self,
        *,
        max_block_size: int = MAX_BLOCK_SIZE,
        max_header_size: int = MAX_HEADER_SIZE,
        max_total_size: int | None = None,
        max_blocks: int | None = None,
    ) -> None:
        self.max_block_size = max_block_size
        self.max_header_size = max_header_size
        self.max_total_size = max_total_size
        self.max_blocks = max_blocks
        self.roots: list[CID] | None = None
        self.block_count = 0
        self._buf = bytearray()
        self._pos = 0  # parse position inside _buf
        self._offset = 0  # stream offset of _buf[0], for error messages
        self._received = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise DecodeError(f"CAR input chunks must be bytes, not {type(chunk).__name__}")
        self._received += len(chunk)
        if self.max_total_size is not None and self._received > self.max_total_size:
            raise DecodeError(f"CAR exceeds the {self.max_total_size}-byte limit")
        if self._pos:
            # Drop what was parsed so the buffer holds at most one section plus one chunk.
            del self._buf[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buf += chunk

    def read_header(self) -> list[CID] | None:
        """Parse the header if enough bytes are buffered; return the roots, or None for "need more"."""
        if self.roots is not None:
            return self.roots
        start = self._offset + self._pos
        got = _try_varint(self._buf, self._pos, "CAR header length", start)
        if got is None:
            return None
        length, body = got
        if length == 0:
            raise DecodeError("CAR header is empty")
        if length > self.max_header_size:
            raise DecodeError(f"CAR header of {length} bytes exceeds the {self.max_header_size}-byte limit")
        if body + length > len(self._buf):
            return None
        try:
            header = dagcbor.decode(bytes(self._buf[body : body + length]), max_size=self.max_header_size)
        except DecodeError as exc:
            raise DecodeError(f"CAR header is not valid DAG-CBOR: {exc}") from exc
        self.roots = _check_header(header)
        self._pos = body + length
        return self.roots

    def next_block(self) -> tuple[CID, bytes] | None:
        """The next verified ``(cid, block)``, or None when more input is needed."""
        if self.roots is None and self.read_header() is None:
            return None
        start = self._offset + self._pos
        got = _try_varint(self._buf, self._pos, "CAR section length", start)
        if got is None:
            return None
        length, body = got
        if length == 0:
            raise DecodeError(f"empty CAR section at byte {start}")
        if length > self.max_block_size + _MAX_CID_BYTES:
            raise DecodeError(
                f"CAR section at byte {start} is {length} bytes, over the {self.max_block_size}-byte block limit"
            )
        end = body + length
        if end > len(self._buf):
            return None
        try:
            cid, data_at = CID.read(self._buf, body)
        except DecodeError as exc:
            raise DecodeError(f"bad CID in CAR section at byte {start}: {exc}") from exc
        if data_at > end:
            raise DecodeError(f"CID in CAR section at byte {start} is longer than the section")
        data = bytes(self._buf[data_at:end])
        if len(data) > self.max_block_size:
            raise DecodeError(f"block {cid} of {len(data)} bytes exceeds the {self.max_block_size}-byte limit")
        if not cid.verify(data):
            raise DecodeError(f"block at byte {start} does not hash to its CID {cid}")
        self.block_count += 1
        if self.max_blocks is not None and self.block_count > self.max_blocks:
            raise DecodeError(f"CAR holds more than {self.max_blocks} blocks")
        self._pos = end
        return cid, data

    def close(self) -> None:
        """Refuse input that ended inside the header or a section."""
        if self.roots is None:
            if len(self._buf) == self._pos:
                raise DecodeError("empty CAR: no header")
            raise DecodeError("CAR ends inside its header")
        if self._pos != len(self._buf):
            raise DecodeError(f"CAR ends inside a section at byte {self._offset + self._pos}")


def _check_header(header: Any) -> list[CID]:
    if type(header) is not dict:
        raise DecodeError("CAR header must be a map")
    version = header.get("version")
    if type(version) is not int:
        raise DecodeError("CAR header has no integer 'version'")
    if version != 1:
        raise DecodeError(f"CAR version {version} is not supported (only CAR v1)")
    roots = header.get("roots")
    if type(roots) is not list or not all(type(r) is CID for r in roots):
        raise DecodeError("CAR header 'roots' must be a list of CIDs")
    return roots


# -- readers ----------------------------------------------------------------------------------


def _sync_chunks(source: Any, read_size: int) -> Iterator[bytes | bytearray | memoryview]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for i in range(0, len(view), 1 << 20):  # slices, so the parser never copies it all at once
            yield view[i : i + (1 << 20)]
    elif hasattr(source, "read"):
        while True:
            chunk = source.read(read_size)
            if not chunk:
                return
            yield chunk
    elif isinstance(source, Iterable):
        yield from source
    else:
        raise DecodeError(f"cannot read a CAR from {type(source).__name__}")


class CarReader:
    """Read a CAR from bytes, a binary file or an iterable of byte chunks.

    The header is read on construction (``roots``); iterating yields verified ``(cid, block)``
    pairs in stream order, duplicates included. Limits are those of ``CarParser``.
    """

    def __init__(self, source: Any, *, read_size: int = READ_SIZE, **limits: Any) -> None:
        self._parser = CarParser(**limits)
        self._chunks = iter(_sync_chunks(source, read_size))
        self._done = False
        while self._parser.read_header() is None:
            if not self._pull():
                self._parser.close()
        self.roots: list[CID] = self._parser.roots  # type: ignore[assignment]

    def _pull(self) -> bool:
        for chunk in self._chunks:
            self._parser.feed(chunk)
            return True
        return False

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        parser = self._parser
        while not self._done:
            item = parser.next_block()
            if item is not None:
                yield item
            elif not self._pull():
                parser.close()
                self._done = True


class AsyncCarReader:
    """Read a CAR from an async iterable of byte chunks (e.g. a request body) or an object with
    an async ``read(n)``; sync sources are accepted too.

    ``roots = await reader.read_header()``, then ``async for cid, block in reader``.
    """

    def __init__(self, source: Any, *, read_size: int = READ_SIZE, **limits: Any) -> None:
        self._parser = CarParser(**limits)
        self._source = source
        self._read_size = read_size
        self._chunks: AsyncIterator[Any] | Iterator[Any] | None = None
        self._done = False
        self.roots: list[CID] | None = None

    async def _pull(self) -> bool:
        if self._chunks is None:
            self._chunks = self._open()
        if isinstance(self._chunks, Iterator):
            chunk = next(self._chunks, None)
        else:
            chunk = await anext(self._chunks, None)
        if chunk is None:
            return False
        self._parser.feed(chunk)
        return True

    def _open(self) -> AsyncIterator[Any] | Iterator[Any]:
        source = self._source
        if isinstance(source, AsyncIterable):
            return aiter(source)
        read = getattr(source, "read", None)
        if read is not None and not isinstance(source, (bytes, bytearray, memoryview)):
            return self._read_loop(read)
        return iter(_sync_chunks(source, self._read_size))

    async def _read_loop(self, read: Any) -> AsyncIterator[Any]:
        while True:
            chunk = read(self._read_size)
            if hasattr(chunk, "__await__"):
                chunk = await chunk
            if not chunk:
                return
            yield chunk

    async def read_header(self) -> list[CID]:
        while self._parser.read_header() is None:
            if not await self._pull():
                self._parser.close()
        self.roots = self._parser.roots
        return self.roots  # type: ignore[return-value]

    def __aiter__(self) -> AsyncIterator[tuple[CID, bytes]]:
        return self._blocks()

    async def _blocks(self) -> AsyncIterator[tuple[CID, bytes]]:
        await self.read_header()
        parser = self._parser
        while not self._done:
            item = parser.next_block()
            if item is not None:
                yield item
            elif not await self._pull():
                parser.close()
                self._done = True


def read_car(data: bytes | bytearray | memoryview, **limits: Any) -> tuple[list[CID], dict[CID, bytes]]:
    """Parse a whole CAR held in memory: its roots and its blocks by CID (duplicates collapse)."""
    reader = CarReader(data, **limits)
    return reader.roots, dict(reader)


# -- writers ----------------------------------------------------------------------------------


def car_header(roots: Iterable[CID]) -> bytes:
    """The header section: varint length and the DAG-CBOR ``{"roots": [...], "version": 1}``."""
    roots = list(roots)
    for root in roots:
        if type(root) is not CID:
            raise DecodeError(f"CAR root must be a CID, not {type(root).__name__}")
    header = dagcbor.encode({"version": 1, "roots": roots})
    return encode_varint(len(header)) + header


def _section(cid: Any, data: Any, verify: bool) -> bytes:
    if type(cid) is not CID:
        raise DecodeError(f"CAR block key must be a CID, not {type(cid).__name__}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"CAR block must be bytes, not {type(data).__name__}")
    if verify and not cid.verify(data):
        raise DecodeError(f"block does not hash to its CID {cid}")
    raw = cid.bytes
    return encode_varint(len(raw) + len(data)) + raw + bytes(data)


def write_car(
    roots: Iterable[CID],
    blocks: Iterable[tuple[CID, bytes]],
    *,
    chunk_size: int = WRITE_CHUNK_SIZE,
    verify: bool = False,
) -> Iterator[bytes]:
    """Yield a CAR v1 as chunks of about ``chunk_size`` bytes, consuming ``blocks`` lazily.

    ``verify`` re-hashes every block against its CID (blocks from our own store were checked when
    they were written, so it is off by default).
    """
    buf = bytearray(car_header(roots))
    for cid, data in blocks:
        buf += _section(cid, data, verify)
        if len(buf) >= chunk_size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def awrite_car(
    roots: Iterable[CID],
    blocks: AsyncIterable[tuple[CID, bytes]] | Iterable[tuple[CID, bytes]],
    *,
    chunk_size: int = WRITE_CHUNK_SIZE,
    verify: bool = False,
) -> AsyncIterator[bytes]:
    """``write_car`` for async block sources (e.g. a database cursor), for streaming responses."""
    if not isinstance(blocks, AsyncIterable):
        for chunk in write_car(roots, blocks, chunk_size=chunk_size, verify=verify):
            yield chunk
        return
    buf = bytearray(car_header(roots))
    async for cid, data in blocks:
        buf += _section(cid, data, verify)
        if len(buf) >= chunk_size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def encode_car(roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]], *, verify: bool = False) -> bytes:
    """A whole CAR v1 as bytes (for small CARs: proofs, firehose commit slices)."""
    return b"".join(write_car(roots, blocks, verify=verify))
