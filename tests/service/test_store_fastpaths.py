"""The store's two fast paths (issue #21): ``Database.read_inline`` (a point read on the event
loop's thread that never waits) and ``Database.open_snapshot`` (pooled read transactions for CAR
exports)."""

from __future__ import annotations

import sqlite3

import pytest

from squall.store.db import Database, StoreError


@pytest.fixture
async def db(tmp_path):
    database = Database(tmp_path / "pds.sqlite", readers=1)
    await database.open()
    yield database
    await database.close()


def _count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM squall_meta").fetchone()[0]


def _add_meta(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("INSERT INTO squall_meta (key, value) VALUES (?, ?)", (key, "x"))


async def test_read_inline_answers_and_gives_way_to_a_lock(db):
    before = db.read_inline(_count)
    assert isinstance(before, int)
    await db.write(_add_meta, "bench-a")
    assert db.read_inline(_count) == before + 1  # sees what the writer committed

    # SQLite says "database is locked" / "busy" (in WAL mode rare: a reader meeting a WAL being
    # recovered or reset): the inline read must not wait — it would block the event loop — but
    # answer None, so the caller goes to the reader pool.
    def locked(conn):
        raise sqlite3.OperationalError("database is locked")

    def busy(conn):
        raise sqlite3.OperationalError("database is busy")

    assert db.read_inline(locked) is None
    assert db.read_inline(busy) is None
    assert db.read_inline(_count) == before + 1


async def test_read_inline_raises_other_errors(db):
    def bad(conn):
        return conn.execute("SELECT * FROM no_such_table").fetchall()

    with pytest.raises(sqlite3.OperationalError):
        db.read_inline(bad)


async def test_snapshot_is_one_read_transaction_and_connections_are_reused(db):
    before = await db.fetchone("SELECT COUNT(*) AS n FROM squall_meta")
    snap = await db.open_snapshot()
    first = await snap.run(_count)
    await db.write(_add_meta, "bench-c")  # committed while the snapshot is open
    assert await snap.run(_count) == first == before["n"]  # the snapshot does not see it
    await snap.close()
    with pytest.raises(StoreError):
        await snap.run(_count)

    snaps = [await db.open_snapshot() for _ in range(Database.SNAPSHOT_IDLE + 2)]
    for s in snaps:
        assert await s.run(_count) == first + 1  # a new snapshot sees the write
    for s in snaps:
        await s.close()
    assert len(db._idle_snapshots) == Database.SNAPSHOT_IDLE  # the rest were closed
    again = await db.open_snapshot()
    assert len(db._idle_snapshots) == Database.SNAPSHOT_IDLE - 1  # taken from the idle ones
    await again.close()


# -- inline writes (Database.write(..., inline=True)) ---------------------------------------------


def _where(conn: sqlite3.Connection, key: str) -> int:
    import threading

    _add_meta(conn, key)
    return threading.get_ident()


def _busy_timeout(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA busy_timeout").fetchone()[0]


async def test_an_inline_write_runs_on_the_loop_thread_only_when_the_writer_is_idle(db):
    import asyncio
    import threading

    here = threading.get_ident()
    assert await db.write(_where, "inline-1", inline=True) == here
    assert await db.write(_where, "thread-1") != here  # not asked for: the writer thread

    # A write already queued on the writer thread: the inline one queues behind it, in order.
    first = asyncio.ensure_future(db.write(_where, "thread-2"))
    await asyncio.sleep(0)
    assert db.pending_writes == 1
    second = await db.write(_where, "inline-2", inline=True)
    assert await first != here and second != here
    keys = [r[0] for r in await db.fetchall("SELECT key FROM squall_meta WHERE key LIKE '%-_' ORDER BY rowid")]
    assert keys == ["inline-1", "thread-1", "thread-2", "inline-2"]


async def test_an_inline_write_rolls_back_on_error(db):
    before = db.read_inline(_count)

    def fails(conn):
        _add_meta(conn, "never")
        raise ValueError("no")

    with pytest.raises(ValueError):
        await db.write(fails, inline=True)
    assert db.read_inline(_count) == before
    assert await db.write(_busy_timeout, inline=True) == 5000


async def test_an_inline_write_does_not_wait_on_the_loop_for_another_process_lock(db, tmp_path):
    import asyncio
    import threading
    import time

    other = sqlite3.connect(tmp_path / "pds.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process (a backup, Litestream) holds the write lock
    try:
        started = time.monotonic()
        task = asyncio.ensure_future(db.write(_where, "after-lock", inline=True))
        ticks = 0
        while time.monotonic() - started < 0.3:
            await asyncio.sleep(0.01)  # the loop keeps running: the write waits on the writer thread
            ticks += 1
        # A loop blocked by the write (waiting out the lock) would tick once; a loaded machine
        # may stretch each 10 ms sleep, so only a few ticks are asked for.
        assert ticks >= 3 and not task.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await asyncio.wait_for(task, 10) != threading.get_ident()
    assert await db.write(_busy_timeout) == 5000  # the writer waits for locks again
