"""Event-stream framing (https://atproto.com/specs/event-stream, "Streaming Wire Protocol (v0)").

Every WebSocket binary message is two concatenated DAG-CBOR objects: a header and a body. A
message frame's header is ``{op: 1, t: "#<type>"}``; an error frame's header is ``{op: -1}`` and
its body ``{error, message}``, after which the server closes the connection. ``#info`` is an
ordinary message type of ``com.atproto.sync.subscribeRepos`` (``OutdatedCursor``).

The sequencer stores each event body without ``seq`` (the row id is the seq); the frame adds it
here, and adds ``time`` from ``sequenced_at`` for a body written without one.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from ..atproto import dagcbor

# Message types of com.atproto.sync.subscribeRepos, by the sequencer's event_type column.
MESSAGE_TYPES = {"commit": "#commit", "sync": "#sync", "identity": "#identity", "account": "#account"}

# Event bodies are bounded by the #commit limits (blocks ≤ 2,000,000 bytes, ≤ 200 ops); leave
# room for the rest of the body without letting a corrupt row allocate without bound.
MAX_EVENT_BYTES = 8 * 1024 * 1024

_HEADERS = {name: dagcbor.encode({"op": 1, "t": t}) for name, t in MESSAGE_TYPES.items()}
_INFO_HEADER = dagcbor.encode({"op": 1, "t": "#info"})
_ERROR_HEADER = dagcbor.encode({"op": -1})


class FrameError(Exception):
    """A stored event that cannot be framed (unknown type or undecodable body)."""


def event_frame(seq: int, event_type: str, body: bytes, sequenced_at: str) -> bytes:
    """The binary message for one stored event."""
    header = _HEADERS.get(event_type)
    if header is None:
        raise FrameError(f"event {seq} has unknown type {event_type!r}")
    try:
        value = dagcbor.decode(body, max_size=MAX_EVENT_BYTES)
    except dagcbor.DecodeError as exc:
        raise FrameError(f"event {seq} has an undecodable body: {exc}") from exc
    if type(value) is not dict:
        raise FrameError(f"event {seq} body is not a map")
    value["seq"] = seq
    if "time" not in value:
        value["time"] = sequenced_at
    return header + dagcbor.encode(value)


def info_frame(name: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"name": name}
    if message is not None:
        body["message"] = message
    return _INFO_HEADER + dagcbor.encode(body)


def error_frame(error: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": error}
    if message is not None:
        body["message"] = message
    return _ERROR_HEADER + dagcbor.encode(body)


def decode_frame(data: bytes) -> tuple[dict, dict]:
    """Split a frame into its header and body (for consumers and tests); both strictly checked."""
    # The top level has no length prefix: let cbor2 read one value to learn where the header
    # ends, then decode both parts strictly.
    stream = io.BytesIO(data)
    try:
        cbor2.CBORDecoder(stream).decode()
    except Exception as exc:
        raise FrameError(f"no DAG-CBOR header at the start of the frame: {exc}") from exc
    end = stream.tell()
    try:
        header = dagcbor.decode(data[:end])
        body = dagcbor.decode(data[end:], max_size=MAX_EVENT_BYTES)
    except dagcbor.DecodeError as exc:
        raise FrameError(f"malformed frame: {exc}") from exc
    if type(header) is not dict or type(body) is not dict:
        raise FrameError("frame header and body must be maps")
    return header, body
