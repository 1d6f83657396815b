"""Fault injection between the sidecar and S3 (a proxy on loopback in front of moto's server):
retries, then the failure is recorded, the local snapshot kept, and the next run uploads it.
A partial upload is never listed as a good backup."""

from __future__ import annotations

import json

import pytest

from squall_backup.engine import BackupFailed, Engine

from tests.helpers.net import free_port

from .helpers import make_data_dir, s3_env, settings_for
from .test_retention import T0, FakeClock

# The failed run happens at T0, the recovering run an hour later (retention keeps one backup per hour).
LATER = FakeClock(T0.replace(hour=1))


def _status(data):
    return json.loads((data / "backups" / "status.json").read_text())


def _objects(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _archive_request(method, path):
    return method == "PUT" and ".tar.zst" in path


def _assert_failed_and_kept(engine, data, s3, bucket, stage="upload"):
    status = _status(data)
    failed_id = status["last_failure"]["id"]
    assert status["last_failure"]["stage"] == stage
    assert status["consecutive_failures"] >= 1
    assert failed_id in status["pending_uploads"]
    assert (data / "backups" / "pending" / failed_id).is_dir()
    # nothing half-uploaded is presented as a backup
    assert failed_id not in {m.id for m in engine.target().list_markers()}
    assert not [k for k in _objects(s3, bucket) if failed_id in k]
    return failed_id


def _recover(engine_factory, data, failed_id):
    engine = engine_factory()
    result = engine.run_once()
    ids = {m.id for m in engine.target().list_markers()}
    assert {failed_id, result["id"]} <= ids
    for backup_id in (failed_id, result["id"]):
        assert engine.verify(backup_id, deep=True)["ok"]
    status = _status(data)
    assert status["pending_uploads"] == [] and status["consecutive_failures"] == 0
    assert status["last_success"]["id"] == result["id"]
    assert not (data / "backups" / "pending" / failed_id).exists()


def test_http_500_retries_then_records_failure_and_next_run_uploads(tmp_path, data_dir, proxy, bucket, s3):
    settings = settings_for(data_dir, **s3_env(proxy.endpoint, bucket), BACKUP_KEEP_HOURLY="10")
    engine = Engine(settings, clock=FakeClock(T0))
    proxy.always("error", match=_archive_request)
    with pytest.raises(BackupFailed, match="InternalError"):
        engine.run_once()
    archive_attempts = [entry for entry in proxy.actions() if _archive_request(entry[0], entry[1])]
    assert len(archive_attempts) == 2  # BACKUP_S3_MAX_ATTEMPTS=2: one retry, then give up
    assert "InternalError" in _status(data_dir)["last_failure"]["error"]
    failed_id = _assert_failed_and_kept(engine, data_dir, s3, bucket)
    # blobs went up before the archive failed; they are content-addressed and reused next time
    assert len([k for k in _objects(s3, bucket) if "/blobs/" in k]) == 3

    proxy.clear()
    _recover(lambda: Engine(settings, clock=LATER), data_dir, failed_id)


def test_hanging_server_times_out(tmp_path, data_dir, proxy, bucket, s3):
    settings = settings_for(data_dir, **s3_env(proxy.endpoint, bucket, BACKUP_S3_READ_TIMEOUT="1"),
                            BACKUP_KEEP_HOURLY="10")
    engine = Engine(settings, clock=FakeClock(T0))
    proxy.always("hang", match=_archive_request)
    with pytest.raises(BackupFailed, match="timeout|Read timeout|timed out"):
        engine.run_once()
    failed_id = _assert_failed_and_kept(engine, data_dir, s3, bucket)
    proxy.clear()
    _recover(lambda: Engine(settings, clock=LATER), data_dir, failed_id)


def test_server_dies_in_the_middle_of_a_multipart_upload(tmp_path, proxy, bucket, s3):
    data = make_data_dir(tmp_path, rows=4000, payload=3000, blobs=2)  # ~12 MB, incompressible
    env = s3_env(proxy.endpoint, bucket, BACKUP_S3_MULTIPART_THRESHOLD_MB="5", BACKUP_S3_MULTIPART_CHUNK_MB="5",
                 BACKUP_S3_MAX_CONCURRENCY="1")
    settings = settings_for(data, **env, BACKUP_KEEP_HOURLY="10")
    engine = Engine(settings, clock=FakeClock(T0))

    def part_upload(method, path):
        return method == "PUT" and "partNumber=" in path
    # the first part goes through, then the server is gone for every further part
    proxy.always("drop", match=part_upload, pass_first=1)
    with pytest.raises(BackupFailed):
        engine.run_once()
    parts = [entry for entry in proxy.actions() if part_upload(entry[0], entry[1])]
    assert parts[0][2] == "pass" and all(p[2] == "drop" for p in parts[1:]) and len(parts) >= 3
    failed_id = _assert_failed_and_kept(engine, data, s3, bucket)

    proxy.clear()
    _recover(lambda: Engine(settings, clock=LATER), data, failed_id)
    # the archive really went up in parts
    marker = engine.target().get_marker(failed_id)
    head = s3.head_object(Bucket=bucket, Key=f"pds1/backups/{marker.archive_name}")
    assert head["ContentLength"] == marker.archive["size"] > 5 * 2**20
    assert "-" in head["ETag"]  # multipart ETag


def test_server_down_then_back(tmp_path, data_dir, moto_server, bucket, s3):
    dead = f"http://127.0.0.1:{free_port()}"
    engine = Engine(settings_for(data_dir, **s3_env(dead, bucket)), clock=FakeClock(T0))
    with pytest.raises(BackupFailed, match="Could not connect|connect"):
        engine.run_once()
    status = _status(data_dir)
    failed_id = status["last_failure"]["id"]
    assert failed_id in status["pending_uploads"]
    settings = settings_for(data_dir, **s3_env(moto_server, bucket), BACKUP_KEEP_HOURLY="10")
    _recover(lambda: Engine(settings, clock=LATER), data_dir, failed_id)


def test_pending_snapshots_are_capped(tmp_path, data_dir, bucket):
    dead = f"http://127.0.0.1:{free_port()}"
    engine = Engine(settings_for(data_dir, **s3_env(dead, bucket), BACKUP_MAX_PENDING="2"), clock=FakeClock(T0))
    for _ in range(4):
        with pytest.raises(BackupFailed):
            engine.run_once()
    pending = _status(data_dir)["pending_uploads"]
    assert len(pending) == 2 and _status(data_dir)["consecutive_failures"] == 4
