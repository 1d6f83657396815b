"""WebSocket control frames that ASGI cannot express: keepalive pings and an abortive close.

ASGI lets an application send messages and a close frame, nothing else. The firehose needs two
more things: a ping on an interval, so proxies (Caddy, Railway's edge) keep idle subscriptions
open, and a hard abort for a peer that never reads, whose close frame would otherwise wait
behind unread data forever and keep the socket alive. Both need the server's connection object.

``CaptureAsgiSend`` is an outermost ASGI middleware that records the server's own ``send``
callable in the scope (inner middleware wrap it in closures); ``WsControl`` recognises uvicorn's
WebSocket protocols behind it. With any other server, pings are skipped and aborts fall back to
the ordinary close: the stream still works, only those two extras are missing.
"""

from __future__ import annotations

import os
from typing import Any

from websockets.protocol import State

_OPEN = State.OPEN

SCOPE_KEY = "squall.asgi_send"


class CaptureAsgiSend:
    """Put the server's ``send`` in ``scope`` for WebSocket requests to ``paths``."""

    def __init__(self, app: Any, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope.get("path") in self.paths:
            scope[SCOPE_KEY] = send
        await self.app(scope, receive, send)


class WsControl:
    """Pings and aborts for one connection; a no-op when the server is not recognised."""

    def __init__(self, protocol: Any | None) -> None:
        self._proto = protocol
        self._kind = _kind_of(protocol)

    @classmethod
    def from_scope(cls, scope: dict) -> "WsControl":
        send = scope.get(SCOPE_KEY)
        return cls(getattr(send, "__self__", None))

    @property
    def supported(self) -> bool:
        return self._kind is not None

    def ping(self) -> bool:
        """Send a ping frame now; False when it could not be sent (closing or unsupported)."""
        proto = self._proto
        try:
            if self._kind == "sansio":
                if proto.close_sent or proto.disconnected or proto.transport.is_closing():
                    return False
                # No payload: uvicorn matches pongs against its own keepalive pings only, so
                # the client's answer to ours is ignored there.
                proto.conn.send_ping(os.urandom(4))
                proto.transport.write(b"".join(proto.conn.data_to_send()))
                return True
            if self._kind == "legacy":
                if proto.transport is None or proto.transport.is_closing() or proto.closed:
                    return False
                proto.loop.create_task(_legacy_ping(proto))
                return True
        except Exception:
            # The connection went away between the check and the write; the receive side
            # reports the disconnect.
            return False
        return False

    async def send_frames(self, wire: bytes) -> bool:
        """Write already encoded server frames (``binary_frame``, joined) to the socket in ONE
        write, after the protocol's own flow control allows it (as uvicorn's send waits). The
        firehose encodes each event's frame once for all its subscribers and sends whatever a
        subscriber has queued at once: with 1,000 subscribers, framing per subscriber and a write
        per message were most of the fan-out's CPU (issue #21). The bytes are what the protocol's
        ``send_binary`` would write (unmasked, unfragmented, uncompressed frames: the firehose
        turns permessage-deflate off), so its state machine has nothing to track. False when
        that cannot be done here (an unrecognised server, the connection closing): the caller
        then uses the ASGI send, which reports a disconnect as it always did."""
        proto = self._proto
        if self._kind != "sansio":
            return False
        if not proto.writable.is_set():
            await proto.writable.wait()  # the peer reads slowly
        try:
            if (proto.close_sent or proto.disconnected or proto.transport.is_closing()
                    or proto.conn.state is not _OPEN):
                return False
            proto.transport.write(wire)
        except Exception:
            return False
        return True

    def abort(self) -> None:
        """Drop the TCP connection without waiting for unread data to drain."""
        transport = getattr(self._proto, "transport", None)
        if transport is not None and not getattr(self._proto, "disconnected", False):
            try:
                transport.abort()
            except Exception:
                pass


def binary_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked binary WebSocket frame (RFC 6455 §5.2), as a server
    sends it."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, n))
    elif n < 1 << 16:
        head = bytes((0x82, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 127)) + n.to_bytes(8, "big")
    return head + payload


def _kind_of(protocol: Any | None) -> str | None:
    if protocol is None:
        return None
    module = type(protocol).__module__
    if module.startswith("uvicorn.protocols.websockets.websockets_sansio_impl"):
        return "sansio"
    if module.startswith("uvicorn.protocols.websockets.websockets_impl"):
        return "legacy"
    return None


async def _legacy_ping(proto: Any) -> None:
    try:
        await proto.ping()
    except Exception:
        pass
