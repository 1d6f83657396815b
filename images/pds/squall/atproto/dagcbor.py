"""DAG-CBOR as atproto restricts it (https://atproto.com/specs/data-model, "DRISL").

The data model is: dict (str keys) / list / str / int (64-bit signed) / bool / None / bytes / CID.
Encoding is deterministic (https://ipld.io/specs/codecs/dag-cbor/spec/#strictness): map keys sorted
length-first then bytewise (cbor2's canonical order for text keys), shortest integer and length
forms, no floats, no indefinite lengths, no tags except 42. A CID link is tag 42 over the binary
CID behind a 0x00 multibase-identity prefix.

Decoding is strict and has two paths. The fast one lets cbor2 (C) parse, with every built-in
semantic tag switched off, indefinite lengths and duplicate keys refused and depth capped; one
Python walk checks types, integer range and map key order; then the value is re-encoded and
compared byte for byte with the input, which catches non-minimal integers and lengths and trailing
bytes. When anything fails, a slow pure-Python scanner walks the input to say exactly what is
wrong and where; bad input is rare, so its cost does not matter. Every failure raises
``DecodeError``. ``bench/cbor_libs.py`` compares this path with libipld and cbrrr.
"""

from __future__ import annotations

from typing import Any

import cbor2

from .cid import CID
from .errors import DecodeError

MAX_BLOCK_SIZE = 2 * 1024 * 1024  # atproto caps a repository block / record at 2 MB
MAX_DEPTH = 128  # how many containers may enclose a value; far beyond any real record
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
CID_TAG = 42

# cbor2 decodes these tags itself (dates, bignums, shared references, sets, ...) before any
# tag_hook sees them; shared references could even build cyclic or exponentially large values.
# DAG-CBOR allows none of them, so each is mapped to a refusal.
_CBOR2_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799)


# -- encoding ---------------------------------------------------------------------------------


def _default(encoder: Any, value: Any) -> None:
    # cbor2 calls this only for types it has no encoder for. A ``default`` hook is markedly
    # cheaper per call than an ``encoders=`` mapping, which cbor2 rebuilds on every dumps().
    if type(value) is CID:
        encoder.encode(cbor2.CBORTag(CID_TAG, b"\x00" + value.bytes))
    else:
        raise DecodeError(f"{type(value).__name__} is not an atproto data model type")


_SCALARS = frozenset({str, bytes, bool, type(None), CID})


def _keys_in_order(keys: Any) -> bool:
    """True when text keys are strictly increasing in DAG-CBOR order (UTF-8 length, then bytes)."""
    previous = None
    for key in keys:
        if previous is not None:
            if key.isascii() and previous.isascii():
                # For ASCII, characters are bytes, and str comparison is byte comparison.
                if len(key) < len(previous) or (len(key) == len(previous) and key <= previous):
                    return False
            else:
                # UTF-8 preserves code point order, but its length is what sorts first.
                kb, pb = key.encode(), previous.encode()
                if len(kb) < len(pb) or (len(kb) == len(pb) and kb <= pb):
                    return False
        previous = key
    return True


def _check_value(value: Any, depth: int = 0) -> bool:
    """Refuse anything outside the data model; return whether every map is already in order.

    cbor2 would otherwise happily encode floats, tuples, subclasses, non-string keys and
    bignum-tagged integers. The depth bound also stops cycles. Knowing the order lets both
    ``encode`` and ``decode`` skip cbor2's canonical mode, which costs ~0.4 µs per map key.
    """
    t = type(value)
    ordered = True
    if t is dict:
        if depth >= MAX_DEPTH and value:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
        for k, v in value.items():
            if type(k) is not str:
                raise DecodeError(f"map keys must be strings, not {type(k).__name__}")
            if type(v) not in _SCALARS and not _check_value(v, depth + 1):
                ordered = False
        if ordered and len(value) > 1:
            ordered = _keys_in_order(value)
    elif t is list:
        if depth >= MAX_DEPTH and value:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
        for v in value:
            if type(v) not in _SCALARS and not _check_value(v, depth + 1):
                ordered = False
    elif t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise DecodeError(f"integer {value} is outside the 64-bit signed range")
    elif t is float:
        raise DecodeError("floats are not allowed in the atproto data model")
    elif t not in _SCALARS:
        raise DecodeError(f"{t.__name__} is not an atproto data model type")
    return ordered


def encode(value: Any) -> bytes:
    """Encode a data-model value to canonical DAG-CBOR bytes.

    Raises ``DecodeError`` for anything outside the data model. The size is not limited here;
    callers storing a record or block compare the result with ``MAX_BLOCK_SIZE``.
    """
    ordered = _check_value(value)
    try:
        # Already-ordered maps (most of what the PDS builds itself) need no sorting pass.
        return cbor2.dumps(value, canonical=not ordered, default=_default)
    except DecodeError:
        raise
    except (cbor2.CBOREncodeError, TypeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"cannot encode value: {exc}") from exc


def cid_for(value: Any) -> tuple[CID, bytes]:
    """Encode ``value`` and return its dag-cbor CID with the block bytes."""
    block = encode(value)
    return CID.from_block(block), block


# -- decoding ---------------------------------------------------------------------------------


def _cid_from_tag(value: Any, immutable: bool = False) -> CID:
    if type(value) is not bytes:
        raise DecodeError("CID link (tag 42) must wrap a byte string")
    if not value or value[0] != 0:
        raise DecodeError("CID link (tag 42) must start with a 0x00 multibase prefix")
    return CID.from_bytes(value[1:])


def _refuse_tag(value: Any, immutable: bool = False) -> Any:
    raise DecodeError("CBOR tag is not allowed (only 42, CID links)")


def _tag_hook(tag: Any, *rest: Any) -> Any:
    # cbor2 6 calls tag_hook(tag, immutable); cbor2 5 called tag_hook(decoder, tag).
    if not isinstance(tag, cbor2.CBORTag):
        tag = rest[0]
    raise DecodeError(f"CBOR tag {tag.tag} is not allowed (only 42, CID links)")


_SEMANTIC_DECODERS: dict[int, Any] = {t: _refuse_tag for t in _CBOR2_BUILTIN_TAGS}
_SEMANTIC_DECODERS[CID_TAG] = _cid_from_tag


def decode(data: bytes | bytearray | memoryview, *, max_size: int = MAX_BLOCK_SIZE) -> Any:
    """Decode exactly one DAG-CBOR value, refusing anything that is not canonical atproto DAG-CBOR."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"DAG-CBOR input must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"block of {len(data)} bytes exceeds the {max_size}-byte limit")
    data = bytes(data)
    if not data:
        raise DecodeError("empty input: expected one DAG-CBOR value")
    try:
        value = cbor2.loads(
            data,
            tag_hook=_tag_hook,
            semantic_decoders=_SEMANTIC_DECODERS,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            max_depth=MAX_DEPTH,
        )
        ordered = _check_value(value)
        # cbor2 keeps map keys in input order and writes them back in that order, so a plain
        # (non-canonical) re-encode reproduces the input exactly when its integers and lengths
        # were minimal and nothing trailed it; the key order was checked by the walk above.
        again = cbor2.dumps(value, default=_default) if ordered else None
    except Exception as exc:  # cbor2 raises CBORDecodeError but also ValueError/TypeError/… on odd input
        raise _diagnose(data, exc) from exc
    if again != data:
        raise _diagnose(data, None)
    return value


def _diagnose(data: bytes, exc: BaseException | None) -> DecodeError:
    """The most specific error for input the fast path refused."""
    try:
        _strict_scan(data)
    except DecodeError as found:
        return found
    # The scanner found nothing: report what the fast path said rather than guess.
    if isinstance(exc, DecodeError):
        return exc
    cause = exc.__cause__ if exc is not None and isinstance(exc.__cause__, DecodeError) else None
    if cause is not None:
        return cause
    return DecodeError(f"invalid DAG-CBOR: {exc if exc is not None else 'does not re-encode identically'}")


# -- the diagnostic scanner -------------------------------------------------------------------

_MAJOR_NAMES = ("unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple/float")


def _strict_scan(data: bytes) -> None:
    """Validate ``data`` as one canonical DAG-CBOR value; raise DecodeError naming the first fault.

    An independent, byte-level statement of the rules: the tests check it agrees with ``decode``.
    """
    end = _scan_item(data, 0, 0)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes after the value (at byte {end})")


def _read_head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Return (major type, additional info, argument, position after the head)."""
    if pos >= len(data):
        raise DecodeError(f"truncated input at byte {pos}")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    if major == 7:
        if info in (25, 26, 27):
            raise DecodeError(f"floating-point number at byte {pos}: floats are not allowed in the atproto data model")
        if info == 31:
            raise DecodeError(f"unexpected 'break' byte at byte {pos}")
        if info == 23:
            raise DecodeError(f"'undefined' at byte {pos} is not allowed")
        if info not in (20, 21, 22):
            raise DecodeError(f"simple value at byte {pos} is not allowed (only false, true, null)")
        return major, info, info, pos + 1
    if info < 24:
        return major, info, info, pos + 1
    if info == 31:
        raise DecodeError(f"indefinite-length {_MAJOR_NAMES[major]} at byte {pos} is not allowed")
    if info > 27:
        raise DecodeError(f"reserved additional information {info} at byte {pos}")
    size = 1 << (info - 24)
    if pos + 1 + size > len(data):
        raise DecodeError(f"truncated {_MAJOR_NAMES[major]} head at byte {pos}")
    arg = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
    if arg < (24 if size == 1 else 1 << (4 * size)):
        raise DecodeError(f"{_MAJOR_NAMES[major]} at byte {pos} is not in its shortest form")
    return major, info, arg, pos + 1 + size


def _scan_text(data: bytes, pos: int) -> tuple[bytes, int]:
    major, _, length, start = _read_head(data, pos)
    end = start + length
    if end > len(data):
        raise DecodeError(f"text string at byte {pos} runs past the end of the input")
    raw = data[start:end]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in text string at byte {pos}: {exc.reason}") from None
    return raw, end


def _scan_item(data: bytes, pos: int, depth: int) -> int:
    major, _, arg, after = _read_head(data, pos)
    if major == 0:
        if arg > INT_MAX:
            raise DecodeError(f"integer at byte {pos} is outside the 64-bit signed range")
        return after
    if major == 1:
        if -1 - arg < INT_MIN:
            raise DecodeError(f"integer at byte {pos} is outside the 64-bit signed range")
        return after
    if major == 2:
        if after + arg > len(data):
            raise DecodeError(f"byte string at byte {pos} runs past the end of the input")
        return after + arg
    if major == 3:
        return _scan_text(data, pos)[1]
    if major in (4, 5):
        if arg and depth >= MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels at byte {pos}")
        # Every item takes at least one byte: a length beyond the input is a lie, refuse it now.
        if arg * (2 if major == 5 else 1) > len(data) - after:
            raise DecodeError(f"{_MAJOR_NAMES[major]} at byte {pos} claims {arg} entries, more than the input holds")
        pos = after
        if major == 4:
            for _ in range(arg):
                pos = _scan_item(data, pos, depth + 1)
            return pos
        previous: bytes | None = None
        for _ in range(arg):
            if pos >= len(data):
                raise DecodeError(f"truncated map at byte {pos}")
            if data[pos] >> 5 != 3:
                raise DecodeError(f"map key at byte {pos} is not a text string ({_MAJOR_NAMES[data[pos] >> 5]})")
            key_at = pos
            key, pos = _scan_text(data, pos)
            if previous is not None:
                if key == previous:
                    raise DecodeError(f"duplicate map key {key.decode()!r} at byte {key_at}")
                if (len(key), key) < (len(previous), previous):
                    raise DecodeError(
                        f"map key {key.decode()!r} at byte {key_at} is out of order after {previous.decode()!r}"
                        " (keys sort by length, then bytewise)"
                    )
            previous = key
            pos = _scan_item(data, pos, depth + 1)
        return pos
    if major == 6:
        if arg != CID_TAG:
            raise DecodeError(f"CBOR tag {arg} at byte {pos} is not allowed (only 42, CID links)")
        if after >= len(data):
            raise DecodeError(f"truncated CID link at byte {pos}")
        if data[after] >> 5 != 2:
            raise DecodeError(f"CID link (tag 42) at byte {pos} must wrap a byte string")
        _, _, length, start = _read_head(data, after)
        if start + length > len(data):
            raise DecodeError(f"CID link at byte {pos} runs past the end of the input")
        if length == 0 or data[start] != 0:
            raise DecodeError(f"CID link at byte {pos} must start with a 0x00 multibase prefix")
        try:
            CID.from_bytes(data[start + 1 : start + length])
        except DecodeError as exc:
            raise DecodeError(f"invalid CID link at byte {pos}: {exc}") from None
        return start + length
    return after  # major 7: false, true, null (everything else was refused in _read_head)
