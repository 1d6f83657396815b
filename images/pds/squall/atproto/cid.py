"""Content identifiers as atproto uses them (https://atproto.com/specs/data-model#link-and-cid-formats).

atproto only ever *creates* CIDv1 with a sha2-256 multihash and the dag-cbor (0x71) or raw (0x55)
codec, and writes them as base32 (``b…``). This module keeps that "blessed" form on a fast path: a
CID is just its binary form, hashing a block is one ``hashlib`` call and base32 is the standard
library's. The ``multiformats`` package is used only to *parse* the other multibase spellings a
peer may send (https://github.com/multiformats/multibase).

By default every constructor is strict and refuses what atproto never creates (other codecs,
other hash functions, CIDv0); ``strict=False`` accepts any well-formed CIDv1 (and CIDv0 in binary
form) for callers that only need to carry a foreign CID around. The class is immutable and hashable
so it can key block maps.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from .errors import DecodeError

DAG_CBOR = 0x71
RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12

_ALLOWED_CODECS = (DAG_CBOR, RAW)
_MAX_DIGEST = 64  # sha2-512 and friends; anything longer is not a hash we could ever check
_MAX_VARINT_BYTES = 9  # the multiformats unsigned-varint spec caps varints at 9 bytes


def read_varint(data: bytes | bytearray | memoryview, pos: int, what: str = "varint") -> tuple[int, int]:
    """Read one minimal unsigned LEB128 varint (https://github.com/multiformats/unsigned-varint)."""
    value = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= len(data):
            raise DecodeError(f"truncated {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise DecodeError(f"{what} is not minimally encoded")
            return value, pos
        shift += 7
    raise DecodeError(f"{what} is longer than {_MAX_VARINT_BYTES} bytes")


def encode_varint(value: int) -> bytes:
    """The unsigned LEB128 form of ``value`` (0 ≤ value < 2**63)."""
    if value < 0 or value >= 1 << 63:
        raise ValueError("varint out of range")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SHA256_PREFIX = {DAG_CBOR: b"\x01\x71\x12\x20", RAW: b"\x01\x55\x12\x20"}
_BLESSED_PREFIXES = frozenset(_SHA256_PREFIX.values())


class CID:
    """A CID held as its binary form; compares, orders and hashes by those bytes.

    Build one with ``from_block``, ``from_digest``, ``from_bytes``, ``read`` or ``decode``;
    ``CID(value)`` is ``CID.decode(value)``.
    """

    __slots__ = ("_bytes", "_codec", "_hash_code", "_digest_at", "_str")

    def __init__(self, value: "str | bytes | CID") -> None:
        other = CID.decode(value)
        for name in CID.__slots__:
            object.__setattr__(self, name, getattr(other, name))

    @classmethod
    def _make(cls, raw: bytes, codec: int, hash_code: int, digest_at: int, text: str | None = None) -> "CID":
        # The one place that sets fields, bypassing the immutability guard of __setattr__.
        cid = object.__new__(cls)
        setter = object.__setattr__
        setter(cid, "_bytes", raw)
        setter(cid, "_codec", codec)
        setter(cid, "_hash_code", hash_code)
        setter(cid, "_digest_at", digest_at)
        setter(cid, "_str", text)
        return cid

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("CID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CID is immutable")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_block(cls, data: bytes | bytearray | memoryview, codec: int = DAG_CBOR) -> "CID":
        """The CID of a block: sha2-256 of its bytes under ``codec`` (dag-cbor or raw)."""
        prefix = _SHA256_PREFIX.get(codec)
        if prefix is None:
            raise DecodeError(f"CID codec 0x{codec:x} is not dag-cbor or raw")
        return cls._make(prefix + hashlib.sha256(data).digest(), codec, SHA2_256, 4)

    @classmethod
    def from_digest(cls, digest: bytes, codec: int = DAG_CBOR) -> "CID":
        """The CID for a sha2-256 ``digest`` computed elsewhere (e.g. while streaming a blob)."""
        prefix = _SHA256_PREFIX.get(codec)
        if prefix is None:
            raise DecodeError(f"CID codec 0x{codec:x} is not dag-cbor or raw")
        if len(digest) != 32:
            raise DecodeError("sha2-256 digest must be 32 bytes")
        return cls._make(prefix + bytes(digest), codec, SHA2_256, 4)

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview, *, strict: bool = True) -> "CID":
        """Parse the binary form (no multibase prefix, no 0x00 tag-42 prefix), all of it."""
        raw = bytes(raw)
        if len(raw) == 36 and raw[:4] in _BLESSED_PREFIXES:
            # The only form atproto writes; every CID link in every record goes through here.
            return cls._make(raw, raw[1], SHA2_256, 4)
        if len(raw) == 34 and raw[0] == 0x12 and raw[1] == 0x20:
            if strict:
                raise DecodeError("CIDv0 is not allowed in atproto")
            return cls._make(raw, DAG_PB, SHA2_256, 2)
        cid, end = cls.read(raw, 0, strict=strict)
        if end != len(raw):
            raise DecodeError(f"{len(raw) - end} trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, data: bytes | bytearray | memoryview, pos: int = 0, *, strict: bool = True) -> tuple["CID", int]:
        """Read one binary CIDv1 starting at ``pos`` (as in CAR sections); return it and its end."""
        start = pos
        version, pos = read_varint(data, pos, "CID version")
        if version != 1:
            if version == 0x12:
                raise DecodeError("CIDv0 is not allowed here")
            raise DecodeError(f"unsupported CID version {version}")
        codec, pos = read_varint(data, pos, "CID codec")
        hash_code, pos = read_varint(data, pos, "CID hash code")
        length, pos = read_varint(data, pos, "CID digest length")
        if strict:
            if codec not in _ALLOWED_CODECS:
                raise DecodeError(f"CID codec 0x{codec:x} is not dag-cbor (0x71) or raw (0x55)")
            if hash_code != SHA2_256:
                raise DecodeError(f"CID hash 0x{hash_code:x} is not sha2-256")
            if length != 32:
                raise DecodeError(f"sha2-256 CID digest must be 32 bytes, not {length}")
        if length > _MAX_DIGEST:
            raise DecodeError(f"CID digest of {length} bytes is too long")
        digest_at = pos - start
        end = pos + length
        if end > len(data):
            raise DecodeError("truncated CID digest")
        return cls._make(bytes(data[start:end]), codec, hash_code, digest_at), end

    @classmethod
    def decode(cls, value: "str | bytes | bytearray | memoryview | CID", *, strict: bool = True) -> "CID":
        """Parse a CID from its string form (any multibase) or its binary form."""
        if isinstance(value, CID):
            if strict and not value.is_blessed:
                raise DecodeError(f"CID {value} is not a dag-cbor or raw sha2-256 CIDv1")
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(value, strict=strict)
        if not isinstance(value, str):
            raise DecodeError(f"CID must be a string, not {type(value).__name__}")
        if not value:
            raise DecodeError("CID must be a non-empty string")
        if value.startswith("Qm") and len(value) == 46:
            if strict:
                raise DecodeError("CIDv0 is not allowed in atproto")
            return cls._parse_other_multibase(value, strict=False)
        if value[0] == "b":
            return cls._parse_base32(value, strict=strict)
        return cls._parse_other_multibase(value, strict=strict)

    @classmethod
    def _parse_base32(cls, value: str, *, strict: bool) -> "CID":
        body = value[1:]
        # b32decode accepts upper case and ignores nothing else, but it tolerates non-zero pad
        # bits; the round trip below catches those so one CID has exactly one base32 spelling.
        if not body.isascii() or not body.isalnum() or body != body.lower():
            raise DecodeError(f"invalid base32 CID: {value!r}")
        try:
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"invalid base32 CID: {value!r}") from exc
        cid = cls.from_bytes(raw, strict=strict)
        if cid.encode() != value:
            raise DecodeError(f"non-canonical base32 CID: {value!r}")
        return cid

    @classmethod
    def _parse_other_multibase(cls, value: str, *, strict: bool) -> "CID":
        if not value.isascii() or len(value) > 512:
            raise DecodeError(f"invalid CID: {value[:80]!r}")
        try:
            # Imported here: other multibases are rare and multiformats is slow to import.
            from multiformats import CID as _MultiformatsCID

            parsed = _MultiformatsCID.decode(value)
            raw = bytes(parsed)
        except Exception as exc:  # multiformats raises a zoo of error types for bad input
            raise DecodeError(f"invalid CID: {value[:80]!r}") from exc
        if parsed.version == 0:
            if strict:
                raise DecodeError("CIDv0 is not allowed in atproto")
            return cls._make(bytes(parsed.digest), DAG_PB, SHA2_256, 2)
        return cls.from_bytes(raw, strict=strict)

    # -- views --------------------------------------------------------------------------------

    @property
    def bytes(self) -> bytes:
        """The binary form: version, codec, multihash (what CAR sections and tag 42 carry)."""
        return self._bytes

    @property
    def codec(self) -> int:
        return self._codec

    @property
    def hash_code(self) -> int:
        return self._hash_code

    @property
    def digest(self) -> bytes:
        """The hash digest (32 bytes for sha2-256)."""
        return self._bytes[self._digest_at :]

    @property
    def version(self) -> int:
        return 0 if self._digest_at == 2 and self._bytes[0] == 0x12 else 1

    @property
    def is_blessed(self) -> bool:
        """True for the only form atproto creates: CIDv1, dag-cbor or raw, sha2-256."""
        return self.version == 1 and self._codec in _ALLOWED_CODECS and self._hash_code == SHA2_256

    def verify(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` hashes to this CID. Only sha2-256 can be checked; others are False."""
        return self._hash_code == SHA2_256 and hashlib.sha256(data).digest() == self.digest

    def encode(self) -> str:
        """The string form: multibase base32 (lower case, no padding), or base58btc for CIDv0."""
        text = self._str
        if text is None:
            if self.version == 0:
                from multiformats import CID as _MultiformatsCID

                text = str(_MultiformatsCID.decode(self._bytes))
            else:
                text = "b" + base64.b32encode(self._bytes).decode("ascii").lower().rstrip("=")
            object.__setattr__(self, "_str", text)  # a cache, not a visible change
        return text

    def __bytes__(self) -> bytes:
        return self._bytes

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CID):
            return other._bytes == self._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __lt__(self, other: "CID") -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._bytes < other._bytes

    def __le__(self, other: "CID") -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._bytes <= other._bytes

    def __gt__(self, other: "CID") -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._bytes > other._bytes

    def __ge__(self, other: "CID") -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._bytes >= other._bytes

    def __reduce__(self) -> tuple[Any, ...]:
        return (_from_bytes_any, (self._bytes,))

    def __copy__(self) -> "CID":
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> "CID":
        return self


def _from_bytes_any(raw: bytes) -> CID:
    return CID.from_bytes(raw, strict=False)
