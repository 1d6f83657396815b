"""Schema migrations: a database made by an older Squall is upgraded in place, data intact."""

from __future__ import annotations

import sqlite3

from squall.store import migrations
from squall.store.db import Database


def _make_v1(path):
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in migrations._split_sql(dict(migrations.MIGRATIONS)[1]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO blob (did, cid, mime_type, size, temp_key, created_at) "
                 "VALUES ('did:web:a.test', 'bafkrei', 'image/png', 3, 'tmp1', '2026-01-01T00:00:00Z')")
    conn.close()


async def test_v1_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "pds.sqlite"
    _make_v1(path)
    db = Database(path, pds_version="test")
    await db.open()
    try:
        assert db.schema_version == migrations.LATEST
        row = await db.fetchone("SELECT did, temp_key FROM blob")
        assert tuple(row) == ("did:web:a.test", "tmp1")
        names = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"blob_temp_key", "blob_unreferenced", "record_cid"} <= names
        meta = await db.fetchone("SELECT value FROM squall_meta WHERE key = 'pds_version'")
        assert meta[0] == "test"
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST
    conn.close()


async def test_reopening_is_idempotent(tmp_path):
    path = tmp_path / "pds.sqlite"
    for _ in range(2):
        db = Database(path)
        await db.open()
        assert db.schema_version == migrations.LATEST
        await db.close()
