"""``com.atproto.sync.subscribeRepos``: one WebSocket subscription
(https://atproto.com/specs/event-stream, "Sequence Numbers"; https://atproto.com/specs/sync).

Cursor handling, as the spec and the reference PDS define it:
  no cursor                 live from the current seq;
  cursor ≤ current seq      replay every event with seq > cursor, then live, no gap, no duplicate;
  cursor before the window  ``#info`` ``OutdatedCursor``, then replay from the oldest event inside
                            the retention window;
  cursor > current seq      error ``FutureCursor`` and close.
Malformed cursors get ``InvalidRequest``; other query parameters are ignored, as XRPC ignores
parameters a method does not define. The stream is one-way: a client that sends a data message
gets ``InvalidRequest`` and is closed. Error frames are followed by a close with 1008 (policy),
the error name as the reason, as the reference server does.

Replay joins the live stream without a gap: the subscriber reads pages from the database until
it has sent everything up to the fan-out's ``last_seq``, and registers for fan-out in the same
step of the event loop as that check, so the fan-out's next frame is the next seq. Frames the
fan-out offers with seq ≤ the last one sent (the database was ahead of the fan-out) are dropped.

A live subscriber has a bounded queue; the fan-out never waits for it. When the queue overflows
the subscriber is cut off with ``ConsumerTooSlow``; if it does not even take that frame within
a grace period the socket is dropped, so a peer that never reads costs bounded memory.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from ..store import sequencer
from .frames import error_frame, info_frame
from .wsctl import WsControl

if TYPE_CHECKING:
    from .service import Firehose

NSID = "com.atproto.sync.subscribeRepos"
PATH = f"/xrpc/{NSID}"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011

_CURSOR = re.compile(r"[0-9]{1,19}")
_INT64_MAX = 2**63 - 1


class StreamError(Exception):
    """Ends the subscription with an error frame ``{error: name, message}`` and a 1008 close."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def parse_cursor(values: list[str]) -> int | None:
    if not values:
        return None
    if len(values) > 1:
        raise StreamError("InvalidRequest", "cursor may be given only once")
    raw = values[0]
    if raw.isascii() and raw.isdigit() and len(raw) > 19:
        raise StreamError("InvalidRequest", "cursor is larger than any sequence number")
    if not _CURSOR.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise StreamError("InvalidRequest", f"cursor must be a non-negative integer, got {shown!r}")
    value = int(raw)
    if value > _INT64_MAX:
        raise StreamError("InvalidRequest", "cursor is larger than any sequence number")
    return value


class Connection:
    def __init__(self, firehose: "Firehose", websocket: WebSocket) -> None:
        self.firehose = firehose
        self.ws = websocket
        self.ctl = WsControl.from_scope(websocket.scope)
        self.last_sent = 0
        self.queue: deque[tuple[int, bytes, bytes]] = deque()  # (seq, frame, its WebSocket frame)
        self.queued_bytes = 0
        self.too_slow = False
        self.shutting_down = False
        self.finished = asyncio.Event()
        self._wake = asyncio.Event()
        self._cut_off = asyncio.Event()
        self._closed = False

    # -- called by the service ---------------------------------------------------------------------

    def offer(self, seq: int, frame: bytes, wire: bytes) -> None:
        """Queue event ``seq``: ``frame`` is its message, ``wire`` the same already encoded as a
        WebSocket frame (once, by the fan-out, for every subscriber)."""
        if self.too_slow:
            return
        opts = self.firehose.options
        if len(self.queue) >= opts.queue_frames or self.queued_bytes + len(frame) > opts.queue_bytes:
            self.too_slow = True
            self.firehose.slow_drops += 1
            self.queue.clear()
            self.queued_bytes = 0
            self.firehose.leave(self)
            self._cut_off.set()
            return
        self.queue.append((seq, frame, wire))
        self.queued_bytes += len(frame)
        self._wake.set()

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self._wake.set()

    def ping(self) -> None:
        self.ctl.ping()

    def abort(self) -> None:
        self.ctl.abort()

    # -- the subscription --------------------------------------------------------------------------

    async def run(self) -> None:
        fh = self.firehose
        try:
            await self.ws.accept()
        except Exception:
            self.finished.set()
            return
        fh.connections.add(self)
        try:
            if fh.closing:
                await self._close(CLOSE_GOING_AWAY, "server shutting down")
                return
            await self._run()
        finally:
            fh.leave(self)
            self.finished.set()

    async def _run(self) -> None:
        sender = asyncio.create_task(self._stream())
        receiver = asyncio.create_task(self._receive())
        cut_off = asyncio.create_task(self._cut_off.wait())
        tasks = {sender, receiver, cut_off}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if receiver.done() and not receiver.cancelled():
            if receiver.result() == "message":
                await self._fail(StreamError("InvalidRequest", "subscribeRepos is one-way; clients send no messages"))
            return  # else the client went away
        if self.too_slow:
            await self._fail(StreamError("ConsumerTooSlow", "Stream consumer too slow"))
            return
        if sender.done() and not sender.cancelled():
            exc = sender.exception()
            if isinstance(exc, StreamError):
                await self._fail(exc)
            elif exc is not None and not _is_disconnect(exc):
                self.firehose.log.error("firehose: subscription failed",
                                        extra={"error": f"{type(exc).__name__}: {exc}"})
                await self._close(CLOSE_INTERNAL, "internal error")

    async def _receive(self) -> str:
        message = await self.ws.receive()
        return "message" if message["type"] == "websocket.receive" else "gone"

    async def _stream(self) -> None:
        fh = self.firehose
        cursor = parse_cursor(self.ws.query_params.getlist("cursor"))
        if cursor is None:
            self.last_sent = fh.last_seq
            fh.join_live(self)
        else:
            await self._replay(cursor)
            if fh.closing:
                await self._close(CLOSE_GOING_AWAY, "server shutting down")
                return
        await self._live()

    async def _replay(self, cursor: int) -> None:
        fh = self.firehose
        current = await fh.current_seq()
        if cursor > current:
            raise StreamError("FutureCursor", f"Cursor {cursor} is in the future; the current seq is {current}")
        after = cursor
        first = await sequencer.first_event_after(fh.db, cursor)
        if first is not None:
            cutoff = fh.backfill_cutoff()
            if first["seq"] > cursor + 1 or first["sequenced_at"] < cutoff:
                # Events after the cursor have been pruned or are past the window: say so, then
                # replay what the window holds.
                await self._send(info_frame("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events"))
                start = await sequencer.first_seq_since(fh.db, cutoff)
                after = (start - 1) if start is not None else current
        page = fh.options.page_size
        while not fh.closing:
            frames, last = await fh.read_frames(after, page)
            for seq, frame in frames:
                await self._send(frame)
                self.last_sent = seq
                fh.events_replayed += 1
                fh.events_sent += 1
            after = max(after, last)
            self.last_sent = max(self.last_sent, after)
            # No await between this check and joining: the fan-out has offered exactly the
            # events up to last_seq to live subscribers, and this one has sent them already.
            if not frames or self.last_sent >= fh.last_seq:
                fh.join_live(self)
                return

    async def _live(self) -> None:
        while True:
            if not self.queue:
                if self.shutting_down:
                    await self._close(CLOSE_GOING_AWAY, "server shutting down")
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # Everything queued goes out in one write when the server allows it (WsControl).
            batch: list[bytes] = []
            wires: list[bytes] = []
            last = self.last_sent
            while self.queue and len(batch) < 256:
                seq, frame, wire = self.queue.popleft()
                self.queued_bytes -= len(frame)
                if seq > last:
                    batch.append(frame)
                    wires.append(wire)
                    last = seq
            if not batch:
                continue
            if not await self.ctl.send_frames(b"".join(wires)):
                for frame in batch:
                    await self._send(frame)
            self.firehose.events_sent += len(batch)
            self.last_sent = last

    # -- sending -----------------------------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        await self.ws.send({"type": "websocket.send", "bytes": frame})

    async def _fail(self, err: StreamError) -> None:
        """Send an error frame and close; drop the socket if the peer will not take it."""
        grace = self.firehose.options.close_grace_seconds
        try:
            await asyncio.wait_for(self._send(error_frame(err.name, err.message)), timeout=grace)
        except Exception:
            self.abort()
            return
        await self._close(CLOSE_POLICY, err.name)

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        grace = self.firehose.options.close_grace_seconds
        try:
            await asyncio.wait_for(self.ws.close(code, reason), timeout=grace)
        except Exception:
            self.abort()
            return
        # The server waits for the peer's close reply before dropping the socket; a peer that
        # never reads never replies.
        asyncio.get_running_loop().call_later(grace, self.abort)


def _is_disconnect(exc: BaseException) -> bool:
    from starlette.websockets import WebSocketDisconnect

    return isinstance(exc, (WebSocketDisconnect, OSError, ConnectionError)) or (
        isinstance(exc, RuntimeError) and "close" in str(exc).lower())


async def subscribe_repos(websocket: WebSocket, firehose: Any) -> None:
    await Connection(firehose, websocket).run()
