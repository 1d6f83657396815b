"""The firehose service: fan-out of sequenced events to subscribers, retention, crawlers.

Writers append events to ``repo_seq`` inside their own transaction (``squall.store.sequencer``)
and then call :meth:`Firehose.notify`. One fan-out task reads the rows after the last seq it has
seen, frames each event once, and offers the same bytes to every live subscriber's bounded
queue. Everything runs on the event loop: between two awaits the fan-out has offered every
event up to ``last_seq`` to every registered subscriber, which is what lets a replaying
subscriber join the live stream without a gap (see ``subscription``).

Retention (https://atproto.com/specs/event-stream, "Sequence Numbers" / backfill window):
events older than ``PDS_REPO_BACKFILL_LIMIT_MS`` are deleted periodically, never the newest one,
so the current seq survives restarts and a cursor can always be told apart from the future.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..store import sequencer
from ..store.db import Database
from .crawlers import CrawlerNotifier
from .frames import FrameError, event_frame
from .options import FirehoseOptions
from .wsctl import binary_frame

if TYPE_CHECKING:
    from .subscription import Connection

_PRUNE_BATCH = 5000
# Frames of the most recent events, so reconnecting subscribers replay without re-encoding.
_FRAME_CACHE = 2048
_FRAME_CACHE_BYTES = 32 * 1024 * 1024


def iso_ms(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Firehose:
    def __init__(self, db: Database, log: logging.Logger, *, backfill_limit_ms: int,
                 options: FirehoseOptions | None = None, crawlers: CrawlerNotifier | None = None) -> None:
        self.db = db
        self.log = log
        self.options = options or FirehoseOptions()
        self.backfill_limit_ms = backfill_limit_ms
        self.crawlers = crawlers
        self.last_seq = 0  # every event up to here has been offered to every live subscriber
        self._seq_hint = 0  # the highest seq a writer's notify() reported
        self._seq_unknown = True  # a wake-up without a seq hint: ask the database
        self.closing = False
        self.connections: set[Connection] = set()  # every open subscription, replaying or live
        self._live: set[Connection] = set()  # those receiving fan-out frames
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._frames_bytes = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._bad_events: set[int] = set()
        self._restore_signal: Any = None
        # Read by squall.metrics at scrape time.
        self.events_sent = 0  # frames sent to subscribers (live and replay)
        self.events_replayed = 0  # of those, sent while replaying from a cursor
        self.slow_drops = 0  # subscribers cut off with ConsumerTooSlow

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last_seq = await sequencer.current_seq(self.db)
        self._tasks = [
            asyncio.create_task(self._fanout_loop(), name="firehose-fanout"),
            asyncio.create_task(self._prune_loop(), name="firehose-prune"),
        ]
        if self.options.ping_seconds > 0:
            self._tasks.append(asyncio.create_task(self._ping_loop(), name="firehose-ping"))
        if self.crawlers is not None:
            await self.crawlers.start()
        self._install_sigterm_drain()

    async def stop(self) -> None:
        self._uninstall_sigterm_drain()
        await self.drain_and_close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.crawlers is not None:
            await self.crawlers.stop()

    async def drain_and_close(self) -> None:
        """Refuse new subscribers, give each open one what is queued, close them all with 1001."""
        if not self.closing:
            self.closing = True
            try:
                await self._pump()  # anything committed before the signal goes out too
            except Exception as exc:
                self.log.warning("firehose: final fan-out failed", extra={"error": str(exc)})
        connections = list(self.connections)
        for conn in connections:
            conn.begin_shutdown()
        if connections:
            done, pending = await asyncio.wait([asyncio.ensure_future(c.finished.wait()) for c in connections],
                                               timeout=self.options.drain_seconds)
            for task in pending:
                task.cancel()
            for conn in list(self.connections):
                conn.abort()
            self.log.info("firehose: subscribers closed", extra={"subscribers": len(connections)})

    # -- writers' side -------------------------------------------------------------------------------

    def notify(self, seq: int | None = None) -> None:
        """Wake the fan-out (after a transaction that appended events has committed). Never blocks;
        safe from any thread. ``seq``: the highest seq that transaction appended, when the caller
        knows it; with no live subscriber the fan-out then moves on without asking the database."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if seq is None:
                self._seq_unknown = True
            elif seq > self._seq_hint:
                self._seq_hint = seq
            self._wake.set()
            if self.crawlers is not None:
                self.crawlers.announce()
        else:
            loop.call_soon_threadsafe(self.notify, seq)

    # -- subscribers ---------------------------------------------------------------------------------

    def join_live(self, conn: "Connection") -> None:
        """Start offering fan-out frames to ``conn``; its frames from here on have seq > last_seq."""
        self._live.add(conn)

    def leave(self, conn: "Connection") -> None:
        self._live.discard(conn)
        self.connections.discard(conn)

    async def current_seq(self) -> int:
        return await sequencer.current_seq(self.db)

    def backfill_cutoff(self) -> str:
        return iso_ms(datetime.now(timezone.utc) - timedelta(milliseconds=self.backfill_limit_ms))

    async def read_frames(self, after: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        """Framed events with seq > ``after``, oldest first, and the highest seq looked at (which
        moves past events that could not be framed). Recent events come from the cache."""
        out: list[tuple[int, bytes]] = []
        seq = after + 1
        while seq in self._frames and len(out) < limit:
            out.append((seq, self._frames[seq]))
            seq += 1
        last = seq - 1
        if len(out) == limit or (out and last >= self.last_seq):
            return out, last
        rows = await sequencer.read_events(self.db, last, limit - len(out))
        for row in rows:
            frame = self._frame(row)
            if frame is not None:
                out.append((row["seq"], frame))
            last = row["seq"]
        return out, last

    # -- internals -----------------------------------------------------------------------------------

    def _frame(self, row: Any) -> bytes | None:
        seq = row["seq"]
        cached = self._frames.get(seq)
        if cached is not None:
            return cached
        try:
            return event_frame(seq, row["event_type"], row["event"], row["sequenced_at"])
        except FrameError as exc:
            # A row the writer should never have stored; skipping it keeps the stream alive.
            if seq not in self._bad_events:
                self._bad_events.add(seq)
                self.log.error("firehose: skipping event that cannot be framed", extra={"seq": seq, "error": str(exc)})
            return None

    def _cache(self, seq: int, frame: bytes) -> None:
        self._frames[seq] = frame
        self._frames_bytes += len(frame)
        while len(self._frames) > _FRAME_CACHE or self._frames_bytes > _FRAME_CACHE_BYTES:
            _, old = self._frames.popitem(last=False)
            self._frames_bytes -= len(old)

    async def _fanout_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.options.poll_seconds)
            except asyncio.TimeoutError:
                self._seq_unknown = True  # events appended by something that did not notify
            self._wake.clear()
            try:
                await self._pump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("firehose: fan-out read failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(1.0)

    async def _pump(self) -> None:
        page = self.options.page_size
        if not self._live:
            # Nobody to offer frames to: skip decoding and framing; a subscriber arriving later
            # replays from the database. The writers' seq hints say how far the log reaches, unless
            # a wake-up came without one (or from the poll timer): then the database says.
            if self._seq_unknown:
                self._seq_unknown = False
                self.last_seq = max(self.last_seq, await self.current_seq())
            self.last_seq = max(self.last_seq, self._seq_hint)
            return
        while True:
            # On the loop's thread when the database allows it at once: a hop to a reader thread
            # and back waits for the GIL while the loop is busy fanning out (issue #21).
            rows = self.db.read_inline(sequencer.events_after, self.last_seq, page)
            if rows is None:
                rows = await sequencer.read_events(self.db, self.last_seq, page)
            for row in rows:
                seq = row["seq"]
                frame = self._frame(row)
                if frame is not None:
                    self._cache(seq, frame)
                    wire = binary_frame(frame)  # encoded once for every subscriber
                    for conn in list(self._live):
                        conn.offer(seq, frame, wire)
                self.last_seq = seq
            if len(rows) < page:
                return

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.ping_seconds)
            for conn in list(self.connections):
                conn.ping()

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.prune_seconds)
            try:
                deleted = await self.prune()
                if deleted:
                    self.log.info("firehose: pruned old events", extra={"deleted": deleted})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("firehose: pruning failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    async def prune(self) -> int:
        """Delete events older than the retention window, in batches, never the newest event."""
        cutoff = self.backfill_cutoff()
        total = 0
        while True:
            deleted = await self.db.write(sequencer.prune_events, cutoff, _PRUNE_BATCH)
            total += deleted
            if deleted < _PRUNE_BATCH:
                return total

    # SIGTERM: uvicorn closes every WebSocket with 1012 before the app's shutdown hooks run, so
    # the firehose handles the signal first: drain, close with 1001, then let uvicorn proceed.
    def _install_sigterm_drain(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # not under a server that handles SIGTERM itself; leave it alone
        loop = self._loop
        assert loop is not None

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.closing:
                previous(signum, frame)
                return

            async def drain_then_exit() -> None:
                try:
                    await self.drain_and_close()
                finally:
                    previous(signum, frame)

            loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_exit()))

        signal.signal(signal.SIGTERM, on_sigterm)
        self._restore_signal = (on_sigterm, previous)

    def _uninstall_sigterm_drain(self) -> None:
        if self._restore_signal is None or threading.current_thread() is not threading.main_thread():
            return
        ours, previous = self._restore_signal
        self._restore_signal = None
        if signal.getsignal(signal.SIGTERM) is ours:
            signal.signal(signal.SIGTERM, previous)
