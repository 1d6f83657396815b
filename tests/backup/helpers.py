"""Helpers of the backup tests: a volume shaped like the PDS's, settings for it, and waiting.

The S3 server and the fault-injecting proxy are in tests/helpers/s3.py."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from squall_backup.settings import load_settings

from tests.helpers.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY


def make_data_dir(root: Path, rows: int = 500, blobs: int = 3, payload: int = 200, seed: int = 1) -> Path:
    """A volume shaped like the PDS's: WAL database with squall_meta, secrets (0600), blobs/<did>/<cid>."""
    data = root / "data"
    (data / "secrets").mkdir(parents=True)
    db = sqlite3.connect(data / "pds.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE squall_meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO squall_meta VALUES ('pds_version', '0.1.0-test')")
    db.execute("CREATE TABLE record (uri TEXT PRIMARY KEY, cid TEXT NOT NULL, body BLOB)")
    rnd = os.urandom
    db.executemany("INSERT INTO record VALUES (?, ?, ?)",
                   [(f"at://did:plc:alice/app.bsky.feed.post/{i:06d}", f"bafy{i}", rnd(payload)) for i in range(rows)])
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    for name, value in (("jwt_secret", "jwt-" + rnd(8).hex()), ("plc_rotation_key", rnd(32).hex())):
        p = data / "secrets" / name
        p.write_text(value)
        p.chmod(0o600)
    for i in range(blobs):
        did = "did:plc:alice" if i % 2 == 0 else "did:plc:bob"
        (data / "blobs" / did).mkdir(parents=True, exist_ok=True)
        (data / "blobs" / did / f"bafkrei{seed}x{i:04d}").write_bytes(rnd(1000 + 37 * i))
    return data


def table_rows(db_path: Path, table: str = "record") -> list[tuple]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        con.close()


def settings_for(data: Path, **env: str):
    environ = {"PDS_DATA_DIRECTORY": str(data), "BACKUP_VERIFY_AFTER_UPLOAD": "false", **env}
    return load_settings(environ)


def s3_env(endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    return {"BACKUP_S3_ENDPOINT": endpoint, "BACKUP_S3_BUCKET": bucket, "BACKUP_S3_REGION": REGION,
            "BACKUP_S3_ACCESS_KEY_ID": ACCESS_KEY_ID, "BACKUP_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "BACKUP_S3_PREFIX": "pds1/", "BACKUP_S3_MAX_ATTEMPTS": "2", "BACKUP_S3_CONNECT_TIMEOUT": "2",
            "BACKUP_S3_READ_TIMEOUT": "5", **extra}


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
