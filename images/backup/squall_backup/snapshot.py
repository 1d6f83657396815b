"""Consistent snapshot of the live PDS database plus the secrets, staged for archiving.

The database is copied with SQLite's online backup API in ONE step (``pages=-1``): the copy runs inside a
single read transaction, so it is exactly the database as of one commit, and in WAL mode the PDS keeps
committing meanwhile (readers never block the writer). The copy is switched to rollback-journal mode so
it is one self-contained file, then ``PRAGMA integrity_check`` must answer ``ok``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from .manifest import DATABASE_NAME, FileEntry, hash_file


class SnapshotError(RuntimeError):
    """The database could not be snapshotted or the copy is not sound."""


@dataclass(frozen=True)
class DatabaseInfo:
    schema_version: int
    pds_version: str | None
    journal_mode: str
    sqlite_version: str
    integrity_check: str


def snapshot_database(source: Path, dest: Path) -> DatabaseInfo:
    if not source.is_file():
        raise SnapshotError(f"no database at {source}")
    try:
        # Read-only URI: the sidecar must never change the live database (it works while the PDS is down too).
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot open {source}: {exc}") from None
    try:
        journal_mode = src.execute("PRAGMA journal_mode").fetchone()[0]
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=-1)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise SnapshotError(f"online backup of {source} failed: {exc}") from None
    finally:
        src.close()

    dst = sqlite3.connect(dest)
    try:
        dst.execute("PRAGMA journal_mode=DELETE")
        rows = [r[0] for r in dst.execute("PRAGMA integrity_check")]
        schema_version = dst.execute("PRAGMA user_version").fetchone()[0]
        pds_version = _pds_version(dst)
        sqlite_version = sqlite3.sqlite_version
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot check the snapshot: {exc}") from None
    finally:
        dst.close()
    if rows != ["ok"]:
        raise SnapshotError("integrity_check failed on the snapshot: " + "; ".join(map(str, rows[:5])))
    return DatabaseInfo(schema_version, pds_version, journal_mode, sqlite_version, "ok")


def _pds_version(db: sqlite3.Connection) -> str | None:
    try:
        row = db.execute("SELECT value FROM squall_meta WHERE key = 'pds_version'").fetchone()
    except sqlite3.Error:
        return None  # table absent (older or foreign schema): the version is unknown
    return str(row[0]) if row and row[0] is not None else None


def stage_secrets(data_dir: Path, staging: Path) -> list[FileEntry]:
    """Copy ``<data>/secrets/`` (regular files only) into the staging dir, keeping 0600 modes."""
    src_root = data_dir / "secrets"
    entries: list[FileEntry] = []
    if not src_root.is_dir():
        return entries
    for dirpath, dirnames, filenames in os.walk(src_root):
        dirnames.sort()
        for name in sorted(filenames):
            src = Path(dirpath) / name
            st = src.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = src.relative_to(data_dir).as_posix()
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            size, digest = hash_file(dst)
            entries.append(FileEntry(rel, size, digest, stat.S_IMODE(st.st_mode)))
    return entries


def database_entry(staging: Path) -> FileEntry:
    size, digest = hash_file(staging / DATABASE_NAME)
    return FileEntry(DATABASE_NAME, size, digest, 0o644)


def _valid_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and not name.endswith(".tmp") and "/" not in name


def list_blobs(data_dir: Path, cache_path: Path) -> list[FileEntry]:
    """Every blob file ``blobs/<did>/<cid>`` with size and SHA-256.

    Blobs are immutable, so a digest is computed once and remembered in ``cache_path`` keyed by path,
    size and mtime; temporary (dot or ``.tmp``) files are skipped.
    """
    root = data_dir / "blobs"
    if not root.is_dir():
        return []
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    new_cache: dict[str, list] = {}
    out: list[FileEntry] = []
    for did_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not _valid_name(did_dir.name) or not did_dir.is_dir() or did_dir.is_symlink():
            continue
        for blob in sorted(did_dir.iterdir(), key=lambda p: p.name):
            if not _valid_name(blob.name):
                continue
            try:
                st = blob.lstat()
            except FileNotFoundError:
                continue  # deleted by the PDS meanwhile
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = f"blobs/{did_dir.name}/{blob.name}"
            hit = cache.get(rel)
            if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                digest = hit[2]
            else:
                try:
                    size, digest = hash_file(blob)
                except FileNotFoundError:
                    continue
                if size != st.st_size:
                    continue  # still being written; the next run takes it
            new_cache[rel] = [st.st_size, st.st_mtime_ns, digest]
            out.append(FileEntry(rel, st.st_size, digest, 0o644))
    write_atomic(cache_path, json.dumps(new_cache).encode())
    return out


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
