"""Slow and ambiguous clients on the bare HTTP port (issue #20, finding 4).

uvicorn bounds a keep-alive connection's idle time between requests, but not the time a client
takes to send a request: a client that opens a connection and trickles its headers one byte a
second (slowloris), or announces a body it never sends (a lying ``Content-Length`` or a chunked
body that never ends), held its connection and its request task for ever. Caddy in front of the
PDS has its own timeouts; the Railway profile and a bare port have none. This module bounds them
in the server's HTTP protocol itself (a subclass of uvicorn's h11 protocol), where the bytes
arrive:

- **headers**: the request line and headers must be complete ``header_timeout`` seconds after the
  connection opens (or after the first byte of the next request on a kept-alive connection);
  the total, not the idle time, so a byte a second does not help. h11 already caps their size
  (16 KB) and answers 400 past it.
- **body**: while the body is being received, every ``body_timeout`` seconds at least
  ``MIN_BODY_RATE`` bytes a second must have arrived over that window; an idle or a dripping
  body is cut off. A real slow upload (a phone on a bad link) moves kilobytes a second.

On either timeout the client gets ``408 Request Timeout`` (RFC 9110 §15.5.9) when no response
has started, and the connection is closed; a request handler waiting for the body sees a client
disconnect. A request that carries both ``Content-Length`` and ``Transfer-Encoding`` is refused
with 400 and the connection closed (RFC 9112 §6.3: such a message is the stuff of request
smuggling; h11 itself would accept it and go by the chunked encoding).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MIN_BODY_RATE = 1024  # bytes per second, averaged over each body_timeout window

_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n")
_408_BODY = b'{"error":"RequestTimeout","message":"The request was not received in time"}'


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the given timeouts (seconds), for ``uvicorn.Config(http=…)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = 20.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None
        self._guarding: str | None = None  # "headers" | "body" | None
        self._window_bytes = 0

    # -- uvicorn's protocol hooks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._guarding is None and self.conn.their_state is h11.IDLE:
            self._arm_headers()  # the first byte of the next request on a kept-alive connection
        self._window_bytes += len(data)
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()  # the WebSocket protocol takes the connection over
        super().handle_websocket_upgrade(event)

    # -- the guard ----------------------------------------------------------------------------------

    def _follow_state(self) -> None:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._guarding != "body":
                self._arm_body()
        elif state is not h11.IDLE and self._guarding is not None:
            self._disarm()  # headers and body are in (DONE), or the connection is closing

    def _arm_headers(self) -> None:
        self._disarm()
        self._guarding = "headers"
        self._guard = self.loop.call_later(self.header_timeout, self._expired)

    def _arm_body(self) -> None:
        self._disarm()
        self._guarding = "body"
        self._window_bytes = 0
        self._guard = self.loop.call_later(self.body_timeout, self._body_window)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
        self._guard = None
        self._guarding = None

    def _body_window(self) -> None:
        self._guard = None
        if self.conn.their_state is not h11.SEND_BODY:
            self._guarding = None
            return
        if self._window_bytes < max(1, int(MIN_BODY_RATE * self.body_timeout)):
            self._expired()
            return
        self._window_bytes = 0
        self._guard = self.loop.call_later(self.body_timeout, self._body_window)

    def _expired(self) -> None:
        what = self._guarding
        self._guard = None
        self._guarding = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        started = cycle is not None and not cycle.response_complete and cycle.response_started
        received_something = what == "body" or bool(self.conn.trailing_data[0])
        self.logger.info("request %s not received in time; closing the connection", what,
                         extra={"client": self.client[0] if self.client else None})
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the handler waiting for the body sees http.disconnect
            cycle.message_event.set()
        if received_something and not started:
            self.transport.write(_408 % len(_408_BODY) + _408_BODY)
        self.transport.close()


def reject_ambiguous_length(app: Any) -> Any:
    """ASGI wrapper: 400 and close for a request with both Content-Length and Transfer-Encoding."""

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            names = {name for name, _ in scope.get("headers", ())}
            if b"content-length" in names and b"transfer-encoding" in names:
                body = (b'{"error":"InvalidRequest","message":"A request may not carry both Content-Length and '
                        b'Transfer-Encoding"}')
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded
