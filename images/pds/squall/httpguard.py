"""Slow and ambiguous clients on the bare HTTP port (issue #20, finding 4).

uvicorn bounds a keep-alive connection's idle time between requests, but not the time a client
takes to send a request: a client that opens a connection and trickles its headers one byte a
second (slowloris), or announces a body it never sends (a lying ``Content-Length`` or a chunked
body that never ends), held its connection and its request task for ever. Caddy in front of the
PDS has its own timeouts; the Railway profile and a bare port have none. This module bounds them
in the server's HTTP protocol itself (a subclass of uvicorn's httptools protocol — llhttp, the
parser Node uses, is also what makes the server fast enough for issue #21), where the bytes
arrive:

- **headers**: the request line and headers must be complete ``header_timeout`` seconds after the
  connection opens (or after the first byte of the next request on a kept-alive connection);
  the total, not the idle time, so a byte a second does not help. llhttp caps their size (80 KB)
  and answers 400 past it.
- **body**: while the body is being received, every ``body_timeout`` seconds at least
  ``MIN_BODY_RATE`` bytes a second must have arrived over that window; an idle or a dripping
  body is cut off. A real slow upload (a phone on a bad link) moves kilobytes a second.

On either timeout the client gets ``408 Request Timeout`` (RFC 9110 §15.5.9) when no response
has started, and the connection is closed; a request handler waiting for the body sees a client
disconnect. A request the parser refuses — among them one that carries both ``Content-Length``
and ``Transfer-Encoding`` (RFC 9112 §6.3: the stuff of request smuggling) — gets a JSON 400 that
names the parser's reason, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MIN_BODY_RATE = 1024  # bytes per second, averaged over each body_timeout window

_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n")
_408_BODY = b'{"error":"RequestTimeout","message":"The request was not received in time"}'
_400 = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n")


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the given timeouts (seconds), for ``uvicorn.Config(http=…)``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 20.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None
        self._guarding: str | None = None  # "headers" | "body" | None
        self._window_bytes = 0
        # Where the parser is: between on_message_begin and on_message_complete, and whether the
        # headers of that message are in (the parser's own state is not exposed).
        self._in_message = False
        self._headers_done = False

    # -- uvicorn's protocol hooks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, except that a request the parser refuses gets a JSON error
        # with the parser's reason (a bare "Invalid HTTP request received." explains nothing).
        self._unset_keepalive_if_required()
        self._window_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._disarm()
            reason = str(exc) or "malformed request"
            self.logger.info("invalid HTTP request: %s", reason,
                             extra={"client": self.client[0] if self.client else None})
            body = json.dumps({"error": "InvalidRequest", "message": f"Invalid HTTP request: {reason}"}).encode()
            self.transport.write(_400 % len(body) + body)
            self.transport.close()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        self._follow_state()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        self._headers_done = False
        if self._guarding is None:
            self._arm_headers()  # the first byte of the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_done = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False
        self._disarm()  # headers and body are in

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol takes the connection over
        super().handle_websocket_upgrade()

    # -- the guard ----------------------------------------------------------------------------------

    def _follow_state(self) -> None:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._disarm()
        elif self._in_message and self._headers_done and self._guarding != "body":
            self._arm_body()

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
        if not (self._in_message and self._headers_done):
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
        received_something = what == "body" or self._in_message
        self.logger.info("request %s not received in time; closing the connection", what,
                         extra={"client": self.client[0] if self.client else None})
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the handler waiting for the body sees http.disconnect
            cycle.message_event.set()
        if received_something and not started:
            self.transport.write(_408 % len(_408_BODY) + _408_BODY)
        self.transport.close()
