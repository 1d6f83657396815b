"""The atproto data model in JSON (https://atproto.com/specs/data-model#json-representation).

JSON and DAG-CBOR carry the same values. JSON has no bytes or links, so the spec maps them to
reserved single-key objects: ``{"$link": "<cid string>"}`` is a CID and ``{"$bytes": "<base64>"}``
is a byte string (standard alphabet, written without padding). Blobs are ordinary objects,
``{"$type": "blob", "ref": <link>, "mimeType": str, "size": int}``, whose ``ref`` is a CID.

``from_json`` turns parsed JSON into data-model values (what ``dagcbor.encode`` takes) and enforces
the data-model rules the spec states for both encodings: no floats (an integer-valued JSON number
such as ``123.0`` is read as the integer), 64-bit integers, ``$type`` a non-empty string, blob
objects exactly in the shape above. ``validate`` applies the same rules to values decoded from
DAG-CBOR. ``to_json`` is the inverse of ``from_json``, for API responses.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from .cid import CID
from .dagcbor import INT_MAX, INT_MIN, MAX_DEPTH
from .errors import DecodeError

_BLOB_KEYS = frozenset({"$type", "ref", "mimeType", "size"})
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def from_json(obj: Any) -> dict[str, Any]:
    """Convert a parsed JSON object (e.g. a record) to data-model values, validating as it goes."""
    if type(obj) is not dict:
        raise DecodeError(f"top level of a data-model object must be a JSON object, not {_kind(obj)}")
    return _from_json(obj, 0, "")


def value_from_json(obj: Any) -> Any:
    """Like ``from_json`` for any value, not only an object (e.g. one field of a request)."""
    return _from_json(obj, 0, "")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if type(value) in (int, float) else type(value).__name__
    )


def _from_json(value: Any, depth: int, path: str) -> Any:
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise DecodeError(f"{path or 'value'}: integer {value} is outside the 64-bit signed range")
        return value
    if t is float:
        # JSON has one number type; integer-valued numbers are integers, others are refused.
        if math.isfinite(value) and value.is_integer() and INT_MIN <= value <= INT_MAX:
            return int(value)
        raise DecodeError(f"{path or 'value'}: floats are not allowed in the atproto data model ({value!r})")
    if depth >= MAX_DEPTH:
        raise DecodeError(f"{path or 'value'}: nesting deeper than {MAX_DEPTH} levels")
    if t is list:
        return [_from_json(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)]
    if t is not dict:
        raise DecodeError(f"{path or 'value'}: {t.__name__} is not a JSON data-model type")
    if "$link" in value:
        return _link(value, path)
    if "$bytes" in value:
        return _bytes(value, path)
    out = {}
    for k, v in value.items():
        if type(k) is not str:
            raise DecodeError(f"{path or 'value'}: object keys must be strings")
        out[k] = _from_json(v, depth + 1, f"{path}.{k}" if path else k)
    _check_object(out, path)
    return out


def _link(value: dict[str, Any], path: str) -> CID:
    if len(value) != 1:
        raise DecodeError(f"{path or 'value'}: a $link object must have no other keys")
    text = value["$link"]
    if type(text) is not str:
        raise DecodeError(f"{path or 'value'}: $link must be a CID string, not {_kind(text)}")
    try:
        return CID.decode(text)
    except DecodeError as exc:
        raise DecodeError(f"{path or 'value'}: $link is not a valid CID: {exc}") from exc


def _bytes(value: dict[str, Any], path: str) -> bytes:
    if len(value) != 1:
        raise DecodeError(f"{path or 'value'}: a $bytes object must have no other keys")
    text = value["$bytes"]
    if type(text) is not str:
        raise DecodeError(f"{path or 'value'}: $bytes must be a base64 string, not {_kind(text)}")
    body = text.rstrip("=")
    # Standard alphabet only; padding is optional on input (the spec writes none).
    if len(text) - len(body) > 2 or not body.isascii() or not _B64_ALPHABET.issuperset(body.encode()):
        raise DecodeError(f"{path or 'value'}: $bytes is not standard base64")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{path or 'value'}: $bytes is not valid base64: {exc}") from exc


def _check_object(obj: dict[str, Any], path: str) -> None:
    """Rules for objects in either encoding: ``$type`` and blob shape."""
    if "$type" not in obj:
        return
    type_ = obj["$type"]
    where = path or "object"
    if type(type_) is not str:
        raise DecodeError(f"{where}: $type must be a string, not {_kind(type_)}")
    if not type_:
        raise DecodeError(f"{where}: $type must not be empty")
    if type_ != "blob":
        return
    if obj.keys() != _BLOB_KEYS:
        missing = sorted(_BLOB_KEYS - obj.keys())
        extra = sorted(obj.keys() - _BLOB_KEYS)
        raise DecodeError(
            f"{where}: blob must have exactly $type, ref, mimeType and size"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    if type(obj["ref"]) is not CID:
        raise DecodeError(f"{where}: blob ref must be a link")
    if type(obj["mimeType"]) is not str or not obj["mimeType"]:
        raise DecodeError(f"{where}: blob mimeType must be a non-empty string")
    if type(obj["size"]) is not int or obj["size"] < 0:
        raise DecodeError(f"{where}: blob size must be a non-negative integer")


def validate(value: Any) -> None:
    """Apply the data-model object rules (``$type``, blobs) to a value decoded from DAG-CBOR."""
    _validate(value, "", 0)


def _validate(value: Any, path: str, depth: int) -> None:
    t = type(value)
    if t is dict:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"{path or 'value'}: nesting deeper than {MAX_DEPTH} levels")
        for k, v in value.items():
            if type(v) in (dict, list):
                _validate(v, f"{path}.{k}" if path else str(k), depth + 1)
        _check_object(value, path)
    elif t is list:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"{path or 'value'}: nesting deeper than {MAX_DEPTH} levels")
        for i, v in enumerate(value):
            if type(v) in (dict, list):
                _validate(v, f"{path}[{i}]", depth + 1)


def to_json(value: Any) -> Any:
    """Data-model values to JSON-ready Python values (``json.dumps`` can write the result)."""
    t = type(value)
    if t is str or t is bool or t is int or value is None:
        return value
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise DecodeError(f"map keys must be strings, not {type(k).__name__}")
            out[k] = to_json(v)
        return out
    if t is list:
        return [to_json(v) for v in value]
    if t is CID:
        return {"$link": value.encode()}
    if t is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii").rstrip("=")}
    raise DecodeError(f"{t.__name__} is not an atproto data model type")
