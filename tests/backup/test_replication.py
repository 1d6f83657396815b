"""Continuous replication with Litestream: crash rounds (kill -9 + the volume deleted mid-load), the
restored database checked by the restore drill's checks, point-in-time restore, and the settings."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from squall.config import load_settings as load_pds_settings
from squall_backup.drill import Drill
from squall_backup.settings import SettingsError, load_settings

from .replication import ReplicatedServer, present_uris, run_round

ROUNDS = 3


def test_crash_rounds_lose_nothing_older_than_one_second(tmp_path, s3_server):
    results = []
    for n in range(ROUNDS):
        root = tmp_path / f"round{n}"
        root.mkdir()
        r = run_round(root, s3_server.endpoint, s3_server.new_bucket("replica"), load_seconds=3.0)
        assert r["writes"] >= 20, r
        # Every write acknowledged more than one second before the kill is in the restored database.
        assert r["lost_older_than_1s"] == 0, r
        # The restored volume boots and verifies: every repo signed and walkable, blobs, seq contiguous.
        checks = Drill(r["restored"], login_sample=2).run()
        bad = [(c.name, c.faults) for c in checks if not c.ok]
        assert not bad, bad
        assert {c.name for c in checks} >= {"repos", "blobs", "firehose"}
        assert r["restore"]["blobs"] == 2 and r["restore"]["blobs_missing"] == []
        results.append(r)
    print("\nreplication RPO per round: " + "; ".join(
        f"round {i + 1}: {r['writes']} writes, {r['lost']} lost, RPO {r['rpo_seconds']:.3f} s "
        f"(last ack {r['last_ack_before_kill_seconds']:.3f} s before the kill)" for i, r in enumerate(results)))


def test_point_in_time_restore(tmp_path, s3_server):
    server = ReplicatedServer(tmp_path, s3_server.endpoint, s3_server.new_bucket("pitr")).start()
    try:
        first = server.load(0.5, max_writes=5)
        time.sleep(1.5)
        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        time.sleep(1.5)
        second = server.load(0.5, max_writes=5)
        time.sleep(2.0)  # several sync intervals
    finally:
        server.stop()
    server.restore(tmp_path / "then", at=at)
    then = present_uris(tmp_path / "then")
    assert {u for u, _ in first} <= then
    assert not ({u for u, _ in second} & then)
    server.restore(tmp_path / "now")
    now = present_uris(tmp_path / "now")
    assert {u for u, _ in first + second} <= now


def test_replication_needs_the_unencrypted_opt_in_and_a_target(tmp_path):
    base = {"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_REPLICATE": "true"}
    with pytest.raises(SettingsError, match=r"^BACKUP_REPLICATE: Litestream cannot encrypt"):
        load_settings({**base, "BACKUP_S3_BUCKET": "b"})
    with pytest.raises(SettingsError, match=r"^BACKUP_REPLICATE: needs a target"):
        load_settings({**base, "BACKUP_REPLICATE_UNENCRYPTED": "true"})
    with pytest.raises(SettingsError, match=r"^BACKUP_REPLICATE_SYNC_INTERVAL_MS:"):
        load_settings({**base, "BACKUP_REPLICATE_UNENCRYPTED": "true", "BACKUP_S3_BUCKET": "b",
                       "BACKUP_REPLICATE_SYNC_INTERVAL_MS": "5"})
    s = load_settings({**base, "BACKUP_REPLICATE_UNENCRYPTED": "true", "BACKUP_S3_BUCKET": "b"})
    assert s.replicate and s.replicate_sync_interval_ms <= 1000


def test_pds_leaves_checkpoints_to_litestream_when_replicating(tmp_path):
    settings, _ = load_pds_settings({"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_REPLICATE": "true"})
    assert settings.sqlite_wal_autocheckpoint == 0
    settings, _ = load_pds_settings({"PDS_DATA_DIRECTORY": str(tmp_path)})
    assert settings.sqlite_wal_autocheckpoint == 1000
    settings, _ = load_pds_settings({"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_REPLICATE": "true",
                                     "PDS_SQLITE_WAL_AUTOCHECKPOINT": "500"})
    assert settings.sqlite_wal_autocheckpoint == 500
