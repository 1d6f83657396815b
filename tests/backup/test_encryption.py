"""age encryption: round trip, the standard age tool, wrong identity, tampered archive or manifest."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile

import pytest
import zstandard

from squall_backup.archive import ArchiveError
from squall_backup.crypto import DecryptionFailed, IdentityError, generate_identity
from squall_backup.engine import Engine
from squall_backup.manifest import Manifest, Marker

from .helpers import settings_for, table_rows


def _key(tmp_path, name):
    secret, public = generate_identity()
    path = tmp_path / name
    path.write_text(f"# created by a test\n{secret}\n")
    return path, public


@pytest.fixture
def keys(tmp_path):
    return _key(tmp_path, "right.key"), _key(tmp_path, "wrong.key")


@pytest.fixture
def local_engine(tmp_path, data_dir, keys):
    (right, public), _ = keys
    settings = settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "offsite"), BACKUP_AGE_RECIPIENTS=public)
    engine = Engine(settings)
    engine.run_once()
    return engine


def _backup_files(engine):
    marker = engine.target().get_marker("latest")
    root = engine.target().root / "backups"
    return marker, root / marker.archive_name, root / f"{marker.id}.json"


def test_round_trip_with_identity(tmp_path, local_engine, data_dir, keys):
    (right, _), _ = keys
    out = tmp_path / "restored"
    local_engine.restore("latest", out, identity=right)
    assert table_rows(out / "pds.sqlite") == table_rows(data_dir / "pds.sqlite")


def test_two_recipients_either_identity_opens(tmp_path, data_dir):
    a, pa = _key(tmp_path, "a.key")
    b, pb = _key(tmp_path, "b.key")
    engine = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"), BACKUP_AGE_RECIPIENTS=f"{pa}, {pb}"))
    engine.run_once()
    assert engine.verify("latest", identity=a)["ok"]
    assert engine.verify("latest", identity=b)["ok"]


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command-line tool is not installed")
def test_standard_age_tool_opens_the_archive(tmp_path, local_engine, keys):
    (right, _), _ = keys
    _, archive, _ = _backup_files(local_engine)
    plain = subprocess.run(["age", "--decrypt", "-i", str(right), str(archive)], capture_output=True,
                           timeout=30, check=True).stdout
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plain)).read()
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert names[0] == "manifest.json" and "pds.sqlite" in names and "secrets/jwt_secret" in names


def test_wrong_identity_clear_error_nothing_written(tmp_path, local_engine, keys):
    _, (wrong, _) = keys
    out = tmp_path / "restored"
    with pytest.raises(DecryptionFailed, match="wrong key"):
        local_engine.restore("latest", out, identity=wrong)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".squall-")]


def test_missing_identity_is_explained(tmp_path, local_engine):
    with pytest.raises(DecryptionFailed, match="--identity"):
        local_engine.verify("latest")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(IdentityError, match="not an age identity"):
        local_engine.verify("latest", identity=bad)


def test_tampered_archive_clear_error_nothing_written(tmp_path, local_engine, keys):
    (right, _), _ = keys
    _, archive, _ = _backup_files(local_engine)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    archive.write_bytes(bytes(data))
    out = tmp_path / "restored"
    out.mkdir()
    with pytest.raises((DecryptionFailed, ArchiveError), match="damaged or was altered|does not match"):
        local_engine.restore("latest", out, identity=right)
    assert list(out.iterdir()) == []


def test_truncated_archive_is_refused(tmp_path, local_engine, keys):
    (right, _), _ = keys
    _, archive, _ = _backup_files(local_engine)
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises((DecryptionFailed, ArchiveError)):
        local_engine.verify("latest", identity=right)


def test_tampered_marker_is_refused(tmp_path, local_engine, keys):
    (right, _), _ = keys
    _, _, marker_path = _backup_files(local_engine)
    raw = json.loads(marker_path.read_text())
    raw["manifest_sha256"] = "0" * 64
    marker_path.write_text(json.dumps(raw))
    out = tmp_path / "restored"
    with pytest.raises(ArchiveError, match="manifest altered"):
        local_engine.restore("latest", out, identity=right)
    assert not out.exists()


def test_tampered_manifest_inside_archive_is_refused(tmp_path, data_dir):
    """Rewrite an (unencrypted) archive with a forged manifest and a marker that matches the new bytes:
    the file hashes no longer agree, and nothing is restored."""
    engine = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t")))
    engine.run_once()
    marker, archive, marker_path = _backup_files(engine)
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read_bytes())).read()
    src = tarfile.open(fileobj=io.BytesIO(raw))
    members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    manifest = Manifest.from_bytes(members[0][1])
    forged = [e if e.path != "pds.sqlite" else type(e)(e.path, e.size, "ab" * 32, e.mode) for e in manifest.files]
    manifest.files = forged
    new_manifest = manifest.to_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m, content in members:
            if m.name == "manifest.json":
                content = new_manifest
                m.size = len(content)
            dst.addfile(m, io.BytesIO(content))
    new_archive = zstandard.ZstdCompressor().compress(buf.getvalue())
    archive.write_bytes(new_archive)
    import hashlib
    m = json.loads(marker_path.read_text())
    m["archive"]["size"] = len(new_archive)
    m["archive"]["sha256"] = hashlib.sha256(new_archive).hexdigest()
    marker_path.write_text(json.dumps(m))
    with pytest.raises(ArchiveError, match="manifest"):
        engine.verify("latest")
    # Even with the marker's manifest hash forged as well, the content check catches it.
    m["manifest_sha256"] = hashlib.sha256(new_manifest).hexdigest()
    marker_path.write_text(json.dumps(m))
    out = tmp_path / "restored"
    with pytest.raises(ArchiveError, match="pds.sqlite: content does not match"):
        engine.restore("latest", out)
    assert not out.exists()


def test_unencrypted_marker_parses_and_says_so(tmp_path, data_dir):
    engine = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t")))
    engine.run_once()
    marker, archive, marker_path = _backup_files(engine)
    assert not Marker.from_bytes(marker_path.read_bytes()).encrypted
    assert archive.name.endswith(".tar.zst")


@pytest.mark.parametrize("field,entry", [
    ("blobs", {"path": "secrets/jwt_secret", "size": 1, "sha256": "0" * 64}),
    ("blobs", {"path": "blobs/did:plc:x/../../etc", "size": 1, "sha256": "0" * 64}),
    ("files", {"path": "../outside", "size": 1, "sha256": "0" * 64}),
    ("files", {"path": "/etc/passwd", "size": 1, "sha256": "0" * 64}),
])
def test_manifest_paths_cannot_escape(tmp_path, data_dir, field, entry):
    from squall_backup.manifest import ManifestError
    engine = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t")))
    engine.run_once()
    marker, archive, _ = _backup_files(engine)
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read_bytes())).read()
    manifest = json.loads(tarfile.open(fileobj=io.BytesIO(raw)).extractfile("manifest.json").read())
    manifest[field].append(entry)
    with pytest.raises(ManifestError):
        Manifest.from_bytes(json.dumps(manifest).encode())
