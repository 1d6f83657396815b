"""The database handle: one writer thread, a small pool of aiosqlite readers, WAL mode.

Why the writer is a plain ``sqlite3`` connection on its own thread: a record write reads MST
nodes, builds the commit with the pure core and stores blocks, records, blob refs and the firehose
event in ONE transaction. Running that whole unit as one function on the writer's thread costs a
single thread hop; driving it statement by statement through an async driver would cost a hop per
statement (tens per commit). Reads are many and short, so they go through aiosqlite connections
that never block the event loop. WAL lets readers proceed while the writer commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

import aiosqlite

from .migrations import apply_migrations

T = TypeVar("T")

WRITER_BUSY_MS = 5000


class _LockBusy(Exception):
    """Another connection holds the write lock (Database.write's inline path does not wait)."""


_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",  # durable at checkpoints; a power cut may lose the last commits only
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={WRITER_BUSY_MS}",  # the backup sidecar's snapshot may hold a lock briefly
)


class StoreError(Exception):
    """The database cannot be used (newer schema, corrupt file, closed handle)."""


class Snapshot:
    """One read transaction on a private connection (``Database.open_snapshot``): every ``run``
    sees the same state of the database. ``run(fn, *args)`` calls ``fn(conn, *args)`` on a worker
    thread, one hop per call, so a reader can do a page of work (query, framing) per hop."""

    def __init__(self, db: "Database", conn: sqlite3.Connection):
        self._db = db
        self._conn: sqlite3.Connection | None = conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None or self._db._snapshot_executor is None:
            raise StoreError("snapshot is closed")
        return await asyncio.get_running_loop().run_in_executor(self._db._snapshot_executor, fn, self._conn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._db._release_snapshot(conn)


class Database:
    def __init__(self, path: Path, *, readers: int = 2, pds_version: str = "unknown",
                 wal_autocheckpoint: int | None = None):
        self.path = Path(path)
        # 0 while Litestream replicates the database: it must own checkpoints (its docs).
        self._wal_autocheckpoint = wal_autocheckpoint
        self._reader_count = readers
        self._pds_version = pds_version
        self._executor: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all_readers: list[aiosqlite.Connection] = []
        self.schema_version = 0
        # Snapshot connections (CAR exports): reused, at most SNAPSHOT_IDLE kept open when idle;
        # their work runs on a small pool of threads of its own.
        self._snapshot_executor: ThreadPoolExecutor | None = None
        self._inline: sqlite3.Connection | None = None
        # Background WAL checkpoints (see _checkpointer); None when Litestream owns them (0).
        self._checkpoint_wake: threading.Event | None = None
        self._checkpoint_stop = threading.Event()
        self._checkpoint_thread: threading.Thread | None = None
        self._idle_snapshots: list[sqlite3.Connection] = []
        # Observability (squall.metrics): optional duration hooks and the writer's queue depth.
        self.on_transaction: Callable[[float], None] | None = None
        self.on_read: Callable[[float], None] | None = None
        self.pending_writes = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._executor, self._open_writer)
        if self._checkpoint_wake is not None:
            self._checkpoint_stop.clear()
            self._checkpoint_thread = threading.Thread(target=self._checkpointer, name="sqlite-checkpoint",
                                                       daemon=True)
            self._checkpoint_thread.start()
        self._snapshot_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqlite-snapshot")
        self._inline = sqlite3.connect(self.path, isolation_level=None)  # this (the loop's) thread only
        self._inline.execute("PRAGMA query_only=ON")
        self._inline.execute("PRAGMA busy_timeout=0")
        self._readers = asyncio.Queue()
        for _ in range(self._reader_count):
            conn = await aiosqlite.connect(self.path)
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.execute("PRAGMA query_only=ON")
            self._all_readers.append(conn)
            self._readers.put_nowait(conn)

    CHECKPOINT_DELAY = 0.25  # seconds after a commit before the background checkpoint

    def _checkpointer(self) -> None:
        """PASSIVE checkpoints (never waiting for readers or blocking the writer) on a connection
        of its own, at most every CHECKPOINT_DELAY seconds while commits come in."""
        wake, stop = self._checkpoint_wake, self._checkpoint_stop
        assert wake is not None
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not stop.is_set():
                wake.wait()
                if stop.wait(self.CHECKPOINT_DELAY):  # let a burst of commits gather
                    break
                wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy (a backup, a long reader): the next commit wakes us again
        finally:
            conn.close()

    SNAPSHOT_IDLE = 4

    async def open_snapshot(self) -> Snapshot:
        """A read transaction on a private read-only connection, for reads that outlive a request's
        share of the reader pool (a whole-repo CAR streamed to a slow client). Close it."""
        if self._snapshot_executor is None:
            raise StoreError("database is closed")
        conn = self._idle_snapshots.pop() if self._idle_snapshots else None
        conn = await asyncio.get_running_loop().run_in_executor(self._snapshot_executor, self._begin_snapshot, conn)
        return Snapshot(self, conn)

    def _begin_snapshot(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("BEGIN")
        return conn

    async def _release_snapshot(self, conn: sqlite3.Connection) -> None:
        def end() -> bool:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                conn.close()
                return False
            return True

        executor = self._snapshot_executor
        if executor is None:
            conn.close()
            return
        if await asyncio.get_running_loop().run_in_executor(executor, end):
            if len(self._idle_snapshots) < self.SNAPSHOT_IDLE and self._snapshot_executor is not None:
                self._idle_snapshots.append(conn)
            else:
                conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        if self._wal_autocheckpoint is not None:
            pages = int(self._wal_autocheckpoint)
            # A checkpoint writes the WAL's pages into the database and syncs it: ~6 ms every
            # ~70 commits when the committing writer runs it, half of a write's average cost
            # (issue #21). So a thread of its own checkpoints shortly after writes; the writer
            # still does it itself only if the WAL grows past 8× the setting (the thread fell
            # behind). 0 (Litestream owns checkpoints) stays 0, and no thread runs.
            conn.execute(f"PRAGMA wal_autocheckpoint={pages * 8}")
            if pages > 0:
                self._checkpoint_wake = threading.Event()
        try:
            self.schema_version = apply_migrations(conn, self._pds_version)
        except Exception:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._checkpoint_thread is not None:
            self._checkpoint_stop.set()
            if self._checkpoint_wake is not None:
                self._checkpoint_wake.set()
            thread, self._checkpoint_thread = self._checkpoint_thread, None
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        for conn in self._all_readers:
            await conn.close()
        self._all_readers.clear()
        if self._snapshot_executor is not None:
            executor, self._snapshot_executor = self._snapshot_executor, None
            idle, self._idle_snapshots = self._idle_snapshots, []
            for conn in idle:
                conn.close()
            executor.shutdown(wait=False)
        if self._writer is not None and self._executor is not None:
            writer = self._writer
            self._writer = None

            def _close() -> None:
                try:
                    writer.execute("PRAGMA optimize")
                finally:
                    writer.close()

            await asyncio.get_running_loop().run_in_executor(self._executor, _close)
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- writing -----------------------------------------------------------------------------------

    # An inline write's wait (ms) for another process's write lock (the backup sidecar, Litestream)
    # on the event loop's thread: none — it queues on the writer thread instead.
    INLINE_BUSY_MS = 0

    async def write(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """Run ``fn(conn, *args)`` in one IMMEDIATE transaction on the writer connection.

        Commits when ``fn`` returns, rolls back when it raises (the exception propagates).
        Transactions run one at a time, in order, on the writer thread. ``inline=True`` is for a
        short transaction (one commit of a few records): when no other write is queued it runs
        right here, on the event loop's thread — the hand-off to the writer thread and back cost
        a createRecord ~20 % of its time (issue #21), and the transaction holds the loop only
        ~0.5 ms. Nothing else can write meanwhile (the loop is ours and the
        writer thread is idle), so the order is the same. If another process holds the write lock
        at that instant the transaction is not waited for here: it queues on the writer thread.
        """
        if self._writer is None or self._executor is None:
            raise StoreError("database is closed")
        if inline and self.pending_writes == 0:
            try:
                return self._transact(fn, args, wait_for_lock=False)
            except _LockBusy:
                pass  # another process writes or checkpoints: wait for it on the writer thread
        self.pending_writes += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._transact, fn, args)
        finally:
            self.pending_writes -= 1

    def _transact(self, fn: Callable[..., T], args: tuple, wait_for_lock: bool = True) -> T:
        conn = self._writer
        assert conn is not None
        started = time.perf_counter()
        if wait_for_lock:
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute(f"PRAGMA busy_timeout={self.INLINE_BUSY_MS}")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise _LockBusy() from exc
                raise
            finally:
                conn.execute(f"PRAGMA busy_timeout={WRITER_BUSY_MS}")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if self._checkpoint_wake is not None:
            self._checkpoint_wake.set()
        if self.on_transaction is not None:
            self.on_transaction(time.perf_counter() - started)
        return result

    # -- reading -----------------------------------------------------------------------------------

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._readers is None:
            raise StoreError("database is closed")
        conn = await self._readers.get()
        started = time.perf_counter()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)
            if self.on_read is not None:
                self.on_read(time.perf_counter() - started)

    def read_inline(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(conn, *args)`` right here, on the event loop's thread, on a read-only connection of
        its own; None when that cannot be done at once (closed, or the database busy).

        Only for a few indexed point lookups (getRecord): a hop to a reader thread and back costs
        several times such a query (issue #21). It never waits: busy_timeout is 0, and a busy or
        locked database answers None so the caller uses the reader pool instead."""
        conn = self._inline
        if conn is None:
            return None
        started = time.perf_counter()
        try:
            result = fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            raise
        if self.on_read is not None:
            self.on_read(time.perf_counter() - started)
        return result

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        async with self.reader() as conn:
            async with conn.execute(sql, params) as cur:
                return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        async with self.reader() as conn:
            async with conn.execute(sql, params) as cur:
                return await cur.fetchone()

    async def check(self) -> None:
        """Raise when the database cannot answer (used by /xrpc/_health)."""
        row = await self.fetchone("SELECT 1")
        if row is None or row[0] != 1:
            raise StoreError("database did not answer")

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total
