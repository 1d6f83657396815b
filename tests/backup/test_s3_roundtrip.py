"""Backup → list → verify → restore against a real S3 API server (moto, server mode, loopback)."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from squall_backup.crypto import generate_identity
from squall_backup.engine import Engine, RestoreError
from squall_backup.manifest import Manifest

from .helpers import s3_env, settings_for, table_rows


@pytest.fixture
def identity(tmp_path):
    secret, public = generate_identity()
    path = tmp_path / "backup.key"
    path.write_text(secret + "\n")
    return path, public


def _all_rows(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}, \
            con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def test_backup_list_verify_restore(tmp_path, data_dir, moto_server, bucket, s3, identity):
    key_path, public = identity
    settings = settings_for(data_dir, **s3_env(moto_server, bucket), BACKUP_AGE_RECIPIENTS=public)
    engine = Engine(settings)
    source_before, version = _all_rows(data_dir / "pds.sqlite")

    result = engine.run_once()

    # The source keeps changing after the snapshot; the restore must show the snapshot point.
    con = sqlite3.connect(data_dir / "pds.sqlite")
    con.execute("INSERT INTO record VALUES ('at://late', 'bafylate', x'00')")
    con.commit()
    con.close()

    markers = engine.target().list_markers()
    assert [m.id for m in markers] == [result["id"]]
    m = markers[0]
    assert m.encrypted and m.archive_name.endswith(".tar.zst.age")
    assert m.schema_version == 4 and m.pds_version == "0.1.0-test" and m.blob_count == 3

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert f"pds1/backups/{m.id}.json" in keys and f"pds1/backups/{m.archive_name}" in keys
    blob_keys = [k for k in keys if k.startswith("pds1/blobs/")]
    assert len(blob_keys) == 3
    # The archive on S3 is an age file, not plaintext: the secrets never travel in the clear.
    head = s3.get_object(Bucket=bucket, Key=f"pds1/backups/{m.archive_name}")["Body"].read(64)
    assert head.startswith(b"age-encryption.org/v1\n")

    report = engine.verify("latest", identity=key_path, deep=True)
    assert report["ok"] and report["blobs"] == 3 and report["blobs_checked"] == "sha256"

    target = tmp_path / "restored"
    target.mkdir()
    engine.restore("latest", target, identity=key_path)
    restored, restored_version = _all_rows(target / "pds.sqlite")
    assert restored == source_before and restored_version == version
    assert ("at://late", "bafylate", b"\x00") not in restored["record"]
    for src in (data_dir / "blobs").rglob("*"):
        if src.is_file():
            assert (target / src.relative_to(data_dir)).read_bytes() == src.read_bytes()
    for name in ("jwt_secret", "plc_rotation_key"):
        restored_secret = target / "secrets" / name
        assert restored_secret.read_bytes() == (data_dir / "secrets" / name).read_bytes()
        assert restored_secret.stat().st_mode & 0o777 == 0o600
    # The database comes back in WAL mode, as the PDS had it.
    con = sqlite3.connect(target / "pds.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()

    status = json.loads((data_dir / "backups" / "status.json").read_text())
    assert status["last_success"]["id"] == m.id
    assert status["backup_count"] == {"s3": 1}
    assert status["state"] == "idle" and status["pending_uploads"] == []
    assert status["encrypted"] is True
    assert "testing-secret-value-123" not in json.dumps(status)


def test_restore_refuses_non_empty_target_unless_forced(tmp_path, data_dir, moto_server, bucket):
    settings = settings_for(data_dir, **s3_env(moto_server, bucket))
    engine = Engine(settings)
    engine.run_once()
    target = tmp_path / "busy"
    target.mkdir()
    (target / "pds.sqlite").write_bytes(b"not a database")
    (target / "pds.sqlite-wal").write_bytes(b"stale wal of another database")
    (target / "keep.txt").write_text("operator file")
    with pytest.raises(RestoreError, match="not empty"):
        engine.restore("latest", target)
    assert (target / "pds.sqlite").read_bytes() == b"not a database"

    engine.restore("latest", target, force=True)
    assert table_rows(target / "pds.sqlite") == table_rows(data_dir / "pds.sqlite")
    assert not (target / "pds.sqlite-wal").exists() or (target / "pds.sqlite-wal").read_bytes() != b"stale wal of another database"
    assert (target / "keep.txt").read_text() == "operator file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".squall-restore-")]


def test_blobs_are_uploaded_incrementally(data_dir, moto_server, bucket, s3):
    settings = settings_for(data_dir, **s3_env(moto_server, bucket), BACKUP_KEEP_HOURLY="10")
    engine = Engine(settings)
    first = engine.run_once()
    assert first["blobs_uploaded"] == 3
    second = engine.run_once()
    assert second["blobs_uploaded"] == 0 and second["blob_count"] == 3
    new_blob = data_dir / "blobs" / "did:plc:carol" / "bafkreinew"
    new_blob.parent.mkdir()
    new_blob.write_bytes(os.urandom(4321))
    third = engine.run_once()
    assert third["blobs_uploaded"] == 1 and third["blob_bytes_uploaded"] == 4321 and third["blob_count"] == 4
    got = s3.get_object(Bucket=bucket, Key="pds1/blobs/did:plc:carol/bafkreinew")["Body"].read()
    assert got == new_blob.read_bytes()


def test_manifest_describes_every_file(tmp_path, data_dir, moto_server, bucket):
    settings = settings_for(data_dir, **s3_env(moto_server, bucket))
    engine = Engine(settings)
    engine.run_once()
    marker = engine.target().get_marker("latest")
    from squall_backup.archive import read_archive
    with engine.target().open_archive(marker) as f:
        result = read_archive(f, marker, None, None)
    manifest: Manifest = result.manifest
    paths = {e.path for e in manifest.files}
    assert paths == {"pds.sqlite", "secrets/jwt_secret", "secrets/plc_rotation_key"}
    assert all(len(e.sha256) == 64 and e.size > 0 for e in manifest.files + manifest.blobs)
    assert manifest.schema_version == 4 and manifest.pds_version == "0.1.0-test"
    assert manifest.integrity_check == "ok" and manifest.created_at == marker.created_at


def test_pds_version_unknown_without_meta_table(tmp_path, moto_server, bucket):
    data = tmp_path / "bare"
    data.mkdir()
    con = sqlite3.connect(data / "pds.sqlite")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    engine = Engine(settings_for(data, **s3_env(moto_server, bucket)))
    result = engine.run_once()
    assert result["pds_version"] is None and result["blob_count"] == 0 and result["schema_version"] == 0
    target = tmp_path / "out"
    engine.restore(result["id"], target)
    assert (target / "pds.sqlite").is_file() and not (target / "blobs").exists()
