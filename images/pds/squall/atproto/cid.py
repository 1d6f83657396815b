"""Content identifiers as atproto uses them (https://atproto.com/specs/data-model#link-and-cid-formats).

atproto only ever *creates* CIDv1 with sha2-256 and the dag-cbor (0x71) or raw (0x55) codec, and
writes them as base32 (``b…``). This module keeps those on a fast path (a CID is just its binary
form; hashing a block is one ``hashlib`` call) and leans on ``multiformats`` only to *parse* the
other multibase spellings a peer may send. The class is immutable and hashable so it can key
block maps.
"""

from __future__ import annotations

import base64
import hashlib

from .errors import DecodeError

DAG_CBOR = 0x71
RAW = 0x55
SHA2_256 = 0x12

_ALLOWED_CODECS = (DAG_CBOR, RAW)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for i in range(9):  # multiformats caps unsigned varints at 9 bytes
        if pos >= len(data):
            raise DecodeError("truncated varint in CID")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise DecodeError("varint in CID is not minimally encoded")
            return value, pos
        shift += 7
    raise DecodeError("varint in CID is too long")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class CID:
    """A CIDv1 held as its binary form; compares and hashes by bytes."""

    __slots__ = ("_bytes", "codec", "_str")

    def __init__(self, raw: bytes, codec: int, _str: str | None = None):
        self._bytes = raw
        self.codec = codec
        self._str = _str

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_block(cls, data: bytes, codec: int = DAG_CBOR) -> "CID":
        """The CID of a block: sha2-256 of its bytes under ``codec``."""
        digest = hashlib.sha256(data).digest()
        return cls(b"\x01" + _varint(codec) + b"\x12\x20" + digest, codec)

    @classmethod
    def from_digest(cls, digest: bytes, codec: int = DAG_CBOR) -> "CID":
        if len(digest) != 32:
            raise DecodeError("sha2-256 digest must be 32 bytes")
        return cls(b"\x01" + _varint(codec) + b"\x12\x20" + digest, codec)

    @classmethod
    def from_bytes(cls, raw: bytes, *, strict: bool = True) -> "CID":
        """Parse the binary form (no multibase prefix, no 0x00 tag-42 prefix).

        ``strict`` refuses what atproto never creates: other hash functions, other codecs, CIDv0.
        """
        raw = bytes(raw)
        if len(raw) == 34 and raw[0] == 0x12 and raw[1] == 0x20:
            if strict:
                raise DecodeError("CIDv0 is not allowed in atproto")
            return cls(raw, 0x70)
        cid, end = cls.read(raw, 0, strict=strict)
        if end != len(raw):
            raise DecodeError("trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, data: bytes, pos: int, *, strict: bool = True) -> tuple["CID", int]:
        """Read one binary CIDv1 starting at ``pos`` (as found in CAR sections); return it and the end."""
        start = pos
        version, pos = _read_varint(data, pos)
        if version != 1:
            raise DecodeError(f"unsupported CID version {version}")
        codec, pos = _read_varint(data, pos)
        hash_code, pos = _read_varint(data, pos)
        length, pos = _read_varint(data, pos)
        if strict:
            if codec not in _ALLOWED_CODECS:
                raise DecodeError(f"CID codec 0x{codec:x} is not dag-cbor or raw")
            if hash_code != SHA2_256 or length != 32:
                raise DecodeError("CID hash must be sha2-256 with a 32-byte digest")
        if length > 64:
            raise DecodeError("CID digest too long")
        end = pos + length
        if end > len(data):
            raise DecodeError("truncated CID digest")
        return cls(bytes(data[start:end]), codec), end

    @classmethod
    def decode(cls, value: "str | bytes | CID", *, strict: bool = True) -> "CID":
        """Parse a CID from its string form (any multibase) or binary form."""
        if isinstance(value, CID):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value), strict=strict)
        if not isinstance(value, str) or not value:
            raise DecodeError("CID must be a non-empty string")
        if value[0] == "b":
            body = value[1:]
            if not body or body != body.lower() or not body.isascii():
                raise DecodeError(f"invalid base32 CID: {value!r}")
            try:
                raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            except (ValueError, TypeError) as exc:
                raise DecodeError(f"invalid base32 CID: {value!r}") from exc
            cid = cls.from_bytes(raw, strict=strict)
            cid._str = value
            return cid
        if value.startswith("Qm"):
            raise DecodeError("CIDv0 is not allowed in atproto")
        try:
            from multiformats import CID as _MfCID  # other multibases are rare; parse them lazily

            parsed = _MfCID.decode(value)
        except Exception as exc:  # multiformats raises a zoo of error types
            raise DecodeError(f"invalid CID: {value!r}") from exc
        if parsed.version != 1:
            raise DecodeError("CIDv0 is not allowed in atproto")
        return cls.from_bytes(bytes(parsed), strict=strict)

    # -- views --------------------------------------------------------------------------------

    @property
    def bytes(self) -> bytes:
        return self._bytes

    @property
    def digest(self) -> bytes:
        return self._bytes[-32:]

    @property
    def version(self) -> int:
        return 0 if self.codec == 0x70 and self._bytes[0] == 0x12 else 1

    def verify(self, data: bytes) -> bool:
        """True when ``data`` hashes to this CID (sha2-256 only)."""
        return hashlib.sha256(data).digest() == self.digest

    def encode(self) -> str:
        if self._str is None:
            self._str = "b" + base64.b32encode(self._bytes).decode("ascii").lower().rstrip("=")
        return self._str

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __lt__(self, other: "CID") -> bool:
        return self._bytes < other._bytes
