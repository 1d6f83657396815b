"""JSON from the network, parsed with a nesting bound.

``json.loads`` recurses once per nested array or object and raises ``RecursionError`` (not
``ValueError``) past the interpreter's recursion limit, so a 2 KB body of ``[[[[…`` escaped the
callers' ``except ValueError`` as a 500. Nothing Squall accepts nests deeply: every record must
also encode as DAG-CBOR, whose decoder refuses more than ``MAX_DEPTH`` (128) enclosing containers,
so the same bound applies to JSON input, checked without recursion after parsing.
"""

from __future__ import annotations

import json

import orjson
from typing import Any

MAX_DEPTH = 128  # as squall.atproto.dagcbor.MAX_DEPTH


class JsonTooDeep(ValueError):
    def __init__(self, limit: int = MAX_DEPTH):
        super().__init__(f"JSON input is nested more than {limit} levels deep")


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (``JsonTooDeep`` for nesting) and nothing else
    for bad input; ``UnicodeDecodeError`` is a ``ValueError`` too."""
    try:
        value = orjson.loads(raw)  # the fast path (it refuses lone surrogates and > 1024 levels itself)
    except orjson.JSONDecodeError:
        # What orjson refuses but the json module reads (a UTF-16 body, an integer over 64 bits,
        # NaN) gets the answer it always got; invalid JSON raises ValueError from here.
        try:
            value = json.loads(raw)
        except RecursionError:
            raise JsonTooDeep(max_depth) from None
    if depth_exceeds(value, max_depth):
        raise JsonTooDeep(max_depth)
    return value


class InvalidUnicode(ValueError):
    def __init__(self) -> None:
        super().__init__("JSON input holds a string that is not valid Unicode (a lone surrogate escape)")


def _check_str(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidUnicode() from None


def depth_exceeds(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """True when more than ``max_depth`` containers enclose some value of ``value`` (iterative).
    Raises ``InvalidUnicode`` for a string or key with a lone surrogate (JSON's ``\\ud800``
    escape parses to one; it cannot be stored, encoded as DAG-CBOR or written back as UTF-8)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_str(item)
            continue
        if isinstance(item, dict):
            for key in item:
                _check_str(key)
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= max_depth and children:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, str)))
    return False
