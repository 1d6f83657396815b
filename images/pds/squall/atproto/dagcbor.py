"""DAG-CBOR as atproto restricts it (https://atproto.com/specs/data-model, "DRISL").

The data model is: dict (str keys) / list / str / int (64-bit signed) / bool / None / bytes / CID.
Encoding is deterministic: map keys sorted length-first then bytewise (cbor2's canonical order for
text keys), shortest integer forms, no floats, no indefinite lengths. CIDs are tag 42 over the
binary CID with a 0x00 multibase prefix.

Decoding is strict: cbor2 does the parsing (C speed), refusing indefinite lengths and duplicate
keys and capping depth; then the value is re-encoded and compared byte for byte with the input.
Anything DAG-CBOR forbids but cbor2 accepts (unsorted keys, non-minimal integers, floats, other
tags, undefined) changes the bytes and is refused. Every failure raises ``DecodeError``.
"""

from __future__ import annotations

from typing import Any

import cbor2

from .cid import CID
from .errors import DecodeError

MAX_BLOCK_SIZE = 2 * 1024 * 1024  # atproto caps a block at 2 MB
MAX_DEPTH = 128
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1


def _encode_cid(encoder: Any, value: CID) -> None:
    encoder.encode(cbor2.CBORTag(42, b"\x00" + value.bytes))


def _refuse_float(encoder: Any, value: float) -> None:
    raise DecodeError("floats are not allowed in the atproto data model")


def _refuse(encoder: Any, value: Any) -> None:
    raise DecodeError(f"{type(value).__name__} is not an atproto data model type")


_ENCODERS = {CID: _encode_cid, float: _refuse_float}


def _check_value(value: Any, depth: int = 0) -> None:
    # One walk enforces what cbor2 would otherwise encode happily: only data-model types,
    # string keys, 64-bit integers (cbor2 writes bignum tags for larger ones), bounded depth.
    if depth > MAX_DEPTH:
        raise DecodeError("nesting too deep")
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise DecodeError("map keys must be strings")
            _check_value(v, depth + 1)
    elif t is list:
        for v in value:
            _check_value(v, depth + 1)
    elif t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise DecodeError("integer out of 64-bit range")
    elif t not in _SCALARS:
        raise DecodeError(f"{t.__name__} is not an atproto data model type")


_SCALARS = frozenset({str, bytes, bool, type(None), CID})


def encode(value: Any) -> bytes:
    """Encode a data-model value to canonical DAG-CBOR bytes."""
    _check_value(value)
    try:
        return cbor2.dumps(value, canonical=True, encoders=_ENCODERS, default=_refuse)
    except DecodeError:
        raise
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise DecodeError(f"cannot encode value: {exc}") from exc


def _tag_hook(tag: cbor2.CBORTag, *_: Any) -> Any:
    # cbor2 6 calls tag_hook(tag, immutable); older releases called tag_hook(decoder, tag).
    if not isinstance(tag, cbor2.CBORTag):
        tag = _[0]
    if tag.tag != 42:
        raise DecodeError(f"CBOR tag {tag.tag} is not allowed (only 42, CID links)")
    raw = tag.value
    if not isinstance(raw, bytes) or not raw or raw[0] != 0:
        raise DecodeError("CID link must be a byte string with a 0x00 prefix")
    return CID.from_bytes(raw[1:])


def decode(data: bytes, *, max_size: int = MAX_BLOCK_SIZE) -> Any:
    """Decode one DAG-CBOR object, refusing anything that is not canonical DAG-CBOR."""
    if len(data) > max_size:
        raise DecodeError(f"block of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        value = cbor2.loads(
            data,
            tag_hook=_tag_hook,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            max_depth=MAX_DEPTH,
        )
    except DecodeError:
        raise
    except Exception as exc:  # cbor2 raises CBORDecodeError but also ValueError/TypeError/… on odd input
        raise DecodeError(f"invalid CBOR: {exc}") from exc
    try:
        again = encode(value)
    except DecodeError as exc:
        raise DecodeError(f"not DAG-CBOR: {exc}") from exc
    if again != bytes(data):
        raise DecodeError("not canonical DAG-CBOR (key order, integer width, float or trailing bytes)")
    return value


def cid_for(value: Any) -> tuple[CID, bytes]:
    """Encode ``value`` and return its dag-cbor CID with the block bytes."""
    block = encode(value)
    return CID.from_block(block), block
