"""The backup manifest and the completion marker.

``manifest.json`` is the first member of every archive. It lists every file of the backup with its size
and SHA-256, the database schema version (``PRAGMA user_version``), the PDS version when readable, the
creation time, and the blobs (stored beside the archives by content address, not inside them):

    {"format": "squall-backup-manifest/1", "id": "20260101T120000Z", "created_at": "2026-01-01T12:00:00Z",
     "schema_version": 3, "pds_version": "0.1.0" | null, "journal_mode": "wal", "sqlite_version": "3.45.1",
     "integrity_check": "ok", "blobs_on_volume": true,
     "files": [{"path": "pds.sqlite", "size": 1234, "sha256": "…", "mode": 420}, …],
     "blobs": [{"path": "blobs/did:plc:…/bafkrei…", "size": 99, "sha256": "…"}, …]}

The marker ``backups/<id>.json`` is written to a target only after the archive and every blob are
stored, so a target lists a backup as good only when all of it is there. It holds the archive's key,
size, SHA-256 and whether it is encrypted, plus the SHA-256 of the manifest inside, which ties the two:

    {"format": "squall-backup/1", "id": …, "created_at": …, "schema_version": …, "pds_version": …,
     "archive": {"name": "20260101T120000Z.tar.zst.age", "size": …, "sha256": …, "encrypted": true},
     "manifest_sha256": …, "database_size": …, "file_count": …, "blob_count": …, "blob_bytes": …}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

MANIFEST_FORMAT = "squall-backup-manifest/1"
MARKER_FORMAT = "squall-backup/1"
MANIFEST_NAME = "manifest.json"
DATABASE_NAME = "pds.sqlite"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
CHUNK = 1024 * 1024

# Backup ids are UTC timestamps, optionally with a counter when two fall in the same second.
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z(?:-\d{1,3})?$")


class ManifestError(ValueError):
    """A manifest or marker is malformed or does not match the data it describes."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    mode: int = 0o644


@dataclass
class Manifest:
    id: str
    created_at: str
    schema_version: int
    pds_version: str | None
    journal_mode: str
    sqlite_version: str
    integrity_check: str
    blobs_on_volume: bool
    files: list[FileEntry] = field(default_factory=list)
    blobs: list[FileEntry] = field(default_factory=list)
    format: str = MANIFEST_FORMAT

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        try:
            raw = json.loads(data)
            if raw.get("format") != MANIFEST_FORMAT:
                raise ManifestError(f"unknown manifest format {raw.get('format')!r}")
            files = [FileEntry(**_entry(e)) for e in raw.pop("files")]
            blobs = [FileEntry(**_entry(e)) for e in raw.pop("blobs")]
            m = cls(**raw, files=files, blobs=blobs)
        except ManifestError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from None
        for entry in m.files + m.blobs:
            check_relative_path(entry.path)
        # Blobs are fetched by these paths from the target: they must stay under blobs/, files outside it.
        if any(not e.path.startswith("blobs/") or e.path.count("/") != 2 for e in m.blobs):
            raise ManifestError("a blob path in the manifest is not blobs/<did>/<cid>")
        if any(e.path.startswith("blobs/") for e in m.files):
            raise ManifestError("an archive file in the manifest claims a blob path")
        if DATABASE_NAME not in {e.path for e in m.files}:
            raise ManifestError("manifest lists no pds.sqlite")
        return m


def _entry(e: dict) -> dict:
    if not isinstance(e, dict) or set(e) - {"path", "size", "sha256", "mode"}:
        raise ManifestError(f"malformed file entry {e!r}")
    if not isinstance(e.get("size"), int) or e["size"] < 0:
        raise ManifestError(f"bad size in entry for {e.get('path')!r}")
    if not isinstance(e.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
        raise ManifestError(f"bad sha256 in entry for {e.get('path')!r}")
    return e


def check_relative_path(path: str) -> str:
    """Archive and blob paths are plain relative paths: no absolute path, no ``..``, no empty part."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path or "\0" in path:
        raise ManifestError(f"unsafe path in manifest: {path!r}")
    return path


@dataclass
class Marker:
    id: str
    created_at: str
    schema_version: int
    pds_version: str | None
    archive: dict
    manifest_sha256: str
    database_size: int
    file_count: int
    blob_count: int
    blob_bytes: int
    format: str = MARKER_FORMAT

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @property
    def archive_name(self) -> str:
        return self.archive["name"]

    @property
    def encrypted(self) -> bool:
        return bool(self.archive["encrypted"])

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Marker":
        try:
            raw = json.loads(data)
            if raw.get("format") != MARKER_FORMAT:
                raise ManifestError(f"unknown marker format {raw.get('format')!r}")
            m = cls(**raw)
            a = m.archive
            if not (isinstance(a.get("name"), str) and isinstance(a.get("size"), int)
                    and isinstance(a.get("sha256"), str) and isinstance(a.get("encrypted"), bool)):
                raise ManifestError("malformed archive entry in marker")
            if not BACKUP_ID.match(m.id) or not a["name"].startswith(m.id + ".tar.zst"):
                raise ManifestError(f"marker id {m.id!r} does not match its archive {a['name']!r}")
            m.created  # noqa: B018 - validates the timestamp
        except ManifestError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"malformed marker: {exc}") from None
        return m


def format_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def backup_id_for(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
