"""One backup run, and the verify / restore / prune operations on stored backups.

A run, under an exclusive lock (``<data>/backups/.lock``, so runs never overlap, even across processes):

1. uploads snapshots left in ``backups/pending/`` by earlier runs whose upload failed;
2. snapshots the database (online backup API, one step), checks it, stages the secrets, lists the blobs
   and writes the archive + marker into ``backups/pending/<id>/`` (renamed into place only when whole);
3. uploads to every target: missing blobs first, then the archive, then the marker LAST;
4. applies retention on every target; with an identity configured, verifies the new backup end to end.

A pending snapshot is removed only once every target has it. Everything is reported in status.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs
from .archive import Aborted, ArchiveError, archive_name, read_archive, write_archive
from .crypto import DecryptionFailed, load_identities
from .manifest import (BACKUP_ID, DATABASE_NAME, MANIFEST_NAME, Manifest, Marker,
                       backup_id_for, format_time)
from .retention import select_keep
from .snapshot import database_entry, list_blobs, snapshot_database, stage_secrets, write_atomic
from .status import StatusFile
from .targets import LocalTarget, S3Target, Target, TargetError, build_targets

if TYPE_CHECKING:
    from .progress import Progress


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Busy(RuntimeError):
    """Another backup run holds the lock."""


class BackupFailed(RuntimeError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


class RestoreError(RuntimeError):
    """Restore refused or failed; the target directory was left as it was."""


class PendingBroken(RuntimeError):
    """A pending snapshot can no longer be uploaded (a blob it lists has vanished)."""


IGNORED_IN_EMPTY_TARGET = {"lost+found"}


class Engine:
    def __init__(self, settings, *, clock=utcnow, targets: list[Target] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.targets = targets if targets is not None else build_targets(settings)
        self.stop = stop or threading.Event()
        self.data_dir: Path = settings.data_directory
        self.backups_dir: Path = settings.backups_dir
        self.pending_dir = self.backups_dir / "pending"
        self.staging_dir = self.backups_dir / "staging"
        self.status = StatusFile(self.backups_dir / "status.json", clock)
        self.recipients = settings.recipients

    # -- helpers ---------------------------------------------------------------------------------
    def check_cancel(self) -> None:
        if self.stop.is_set():
            raise Aborted("stop requested (SIGTERM)")

    def target(self, name: str | None = None) -> Target:
        if name is None:
            return self.targets[0]
        for t in self.targets:
            if t.name == name:
                return t
        raise TargetError(f"no target named {name!r}; configured: {', '.join(t.name for t in self.targets)}")

    def warnings(self) -> list[str]:
        out = []
        if not self.recipients and any(t.remote for t in self.targets):
            out.append("archives are NOT encrypted and go to a remote target, yet they hold the PDS signing "
                       "keys and secrets: set BACKUP_AGE_RECIPIENTS")
        if self.recipients and self.settings.verify_after_upload and self.settings.age_identity_file is None:
            out.append("uploads are NOT verified: archives are encrypted to BACKUP_AGE_RECIPIENTS but no "
                       "BACKUP_AGE_IDENTITY_FILE is set to decrypt and check them (see `squall-backup keygen` "
                       "in the README)")
        data = self.data_dir.resolve()
        for t in self.targets:
            if isinstance(t, LocalTarget) and (t.root.resolve() == data or data in t.root.resolve().parents):
                out.append(f"backups are kept on the data volume itself ({t.root}): not off-site, "
                           "set BACKUP_S3_BUCKET or BACKUP_LOCAL_DIR")
        return out

    def announce(self) -> None:
        for w in self.warnings():
            level = logs.error if "NOT encrypted" in w else logs.warning
            level("backup.config_warning", warning=w)

    @contextlib.contextmanager
    def lock(self):
        self.backups_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.backups_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy("another backup run is in progress") from None
            yield
        finally:
            os.close(fd)

    def pending_ids(self) -> list[str]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(p.name for p in self.pending_dir.iterdir() if BACKUP_ID.match(p.name) and p.is_dir())

    def _base_status(self) -> dict:
        return {"schedule": self.settings.schedule, "encrypted": bool(self.recipients),
                "targets": [t.describe() for t in self.targets], "warnings": self.warnings(),
                "pending_uploads": self.pending_ids()}

    # -- a backup run ----------------------------------------------------------------------------
    def run_once(self) -> dict:
        with self.lock():
            return self._run()

    def _new_id(self, now: datetime) -> str:
        base = backup_id_for(now)
        last = (self.status.read().get("last_success") or {}).get("id")
        taken = set(self.pending_ids()) | ({last} if last else set())
        candidate, n = base, 1
        while candidate in taken:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    def _run(self) -> dict:
        started = self.clock()
        t0 = time.monotonic()
        backup_id = self._new_id(started)
        current = {"id": backup_id, "started_at": format_time(started), "stage": "snapshot"}
        self.status.update(state="running", current_run=current, **self._base_status())
        self.announce()  # every run: an unencrypted remote target must not go unnoticed
        logs.info("backup.start", id=backup_id)

        def stage(name: str) -> None:
            current["stage"] = name
            self.status.update(current_run=current)

        try:
            try:
                marker, stats, pruned, verified = self._steps(backup_id, started, stage)
            except Exception as exc:
                if not self.stop.is_set() or isinstance(exc, Aborted):
                    raise
                # A request cut short by the stop request failed: that is an abort, not a backup failure.
                raise Aborted(f"stop requested during {current['stage']}") from exc
        except Aborted as exc:
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            self._clean_partial_pending()
            finished = self.clock()
            self.status.update(state="idle", current_run=None, pending_uploads=self.pending_ids(), last_run={
                "id": backup_id, "started_at": format_time(started), "finished_at": format_time(finished),
                "duration_seconds": round(time.monotonic() - t0, 3), "ok": False, "aborted": True})
            logs.warning("backup.aborted", id=backup_id, stage=current["stage"], reason=str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then reported to the caller
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            self._clean_partial_pending()
            finished = self.clock()
            message = str(exc) or type(exc).__name__
            prev = self.status.read().get("consecutive_failures", 0) or 0
            self.status.update(
                state="idle", current_run=None, pending_uploads=self.pending_ids(),
                consecutive_failures=prev + 1,
                last_failure={"id": backup_id, "at": format_time(finished), "stage": current["stage"],
                              "error": message},
                last_run={"id": backup_id, "started_at": format_time(started),
                          "finished_at": format_time(finished), "ok": False, "aborted": False,
                          "duration_seconds": round(time.monotonic() - t0, 3)})
            logs.error("backup.failed", id=backup_id, stage=current["stage"], error=message,
                       pending_uploads=self.pending_ids())
            raise BackupFailed(current["stage"], message) from exc

        finished = self.clock()
        duration = round(time.monotonic() - t0, 3)
        counts = {t.name: len(t.list_markers()) for t in self.targets}
        success = {
            "id": backup_id, "finished_at": format_time(finished), "duration_seconds": duration,
            "archive_bytes": marker.archive["size"], "database_bytes": marker.database_size,
            "schema_version": marker.schema_version, "pds_version": marker.pds_version,
            "blob_count": marker.blob_count, "blobs_uploaded": stats["blobs_uploaded"],
            "blob_bytes_uploaded": stats["blob_bytes_uploaded"], "verified": bool(verified)}
        self.status.update(
            state="idle", current_run=None, last_success=success, consecutive_failures=0,
            backup_count=counts, pending_uploads=self.pending_ids(),
            last_run={"id": backup_id, "started_at": format_time(started), "finished_at": format_time(finished),
                      "duration_seconds": duration, "ok": True, "aborted": False})
        logs.info("backup.done", **success, pruned=pruned, backup_count=counts)
        return success

    def _steps(self, backup_id: str, started: datetime, stage) -> tuple:
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self._clean_partial_pending()
        stage("upload")
        for pid in self.pending_ids():
            self.check_cancel()
            try:
                self.upload_pending(pid)
            except PendingBroken as exc:
                logs.error("backup.pending_dropped", id=pid, error=str(exc))
                shutil.rmtree(self.pending_dir / pid, ignore_errors=True)
            except TargetError as exc:
                logs.warning("backup.pending_upload_failed", id=pid, error=str(exc))
        stage("snapshot")
        marker = self.create(backup_id, started)
        self._enforce_max_pending(keep=backup_id)
        stage("upload")
        stats = self.upload_pending(backup_id)
        stage("prune")
        pruned = self.prune()
        verified = None
        if self.settings.verify_after_upload and (
                self.settings.age_identity_file is not None or not marker.encrypted):
            stage("verify")
            for t in self.targets:
                self.verify(backup_id, target_name=t.name)
            verified = True
        return marker, stats, pruned, verified

    def _clean_partial_pending(self) -> None:
        if self.pending_dir.is_dir():
            for p in self.pending_dir.iterdir():
                if p.name.startswith("."):
                    shutil.rmtree(p, ignore_errors=True)

    def _enforce_max_pending(self, keep: str) -> None:
        ids = [i for i in self.pending_ids() if i != keep]
        while len(ids) + 1 > self.settings.max_pending:
            victim = ids.pop(0)
            logs.warning("backup.pending_dropped", id=victim, reason="BACKUP_MAX_PENDING reached")
            shutil.rmtree(self.pending_dir / victim, ignore_errors=True)

    def create(self, backup_id: str, created: datetime) -> Marker:
        """Snapshot, check and archive into ``pending/<id>/``; returns the marker."""
        staging = self.staging_dir / backup_id
        staging.mkdir(parents=True, mode=0o700)
        t0 = time.monotonic()
        db = snapshot_database(self.data_dir / DATABASE_NAME, staging / DATABASE_NAME)
        t_snap = time.monotonic()
        self.check_cancel()
        files = [database_entry(staging)] + stage_secrets(self.data_dir, staging)
        blobs = list_blobs(self.data_dir, self.backups_dir / "blob-index.json")
        self.check_cancel()
        manifest = Manifest(
            id=backup_id, created_at=format_time(created), schema_version=db.schema_version,
            pds_version=db.pds_version, journal_mode=db.journal_mode, sqlite_version=db.sqlite_version,
            integrity_check=db.integrity_check, blobs_on_volume=(self.data_dir / "blobs").is_dir(),
            files=files, blobs=blobs)
        self.pending_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.pending_dir / f".{backup_id}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        name = archive_name(backup_id, bool(self.recipients))
        info = write_archive(staging, manifest, partial / name, self.recipients, self.settings.zstd_level,
                             self.check_cancel)
        manifest_bytes = manifest.to_bytes()
        marker = Marker(
            id=backup_id, created_at=manifest.created_at, schema_version=db.schema_version,
            pds_version=db.pds_version,
            archive={"name": info.name, "size": info.size, "sha256": info.sha256, "encrypted": info.encrypted},
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), database_size=files[0].size,
            file_count=len(files), blob_count=len(blobs), blob_bytes=sum(b.size for b in blobs))
        write_atomic(partial / MANIFEST_NAME, manifest_bytes, 0o600)
        write_atomic(partial / "marker.json", marker.to_bytes(), 0o600)
        write_atomic(partial / "uploaded.json", b"[]", 0o600)
        os.rename(partial, self.pending_dir / backup_id)
        shutil.rmtree(staging, ignore_errors=True)
        logs.info("backup.archived", id=backup_id, database_bytes=files[0].size, archive_bytes=info.size,
                  encrypted=info.encrypted, schema_version=db.schema_version, pds_version=db.pds_version,
                  files=len(files), blobs=len(blobs), snapshot_seconds=round(t_snap - t0, 3),
                  archive_seconds=round(time.monotonic() - t_snap, 3))
        return marker

    def upload_pending(self, backup_id: str) -> dict:
        d = self.pending_dir / backup_id
        manifest = Manifest.from_bytes((d / MANIFEST_NAME).read_bytes())
        marker = Marker.from_bytes((d / "marker.json").read_bytes())
        done = set(json.loads((d / "uploaded.json").read_text()))
        stats = {"blobs_uploaded": 0, "blob_bytes_uploaded": 0}
        errors: list[TargetError] = []
        for t in self.targets:
            if t.name in done:
                continue
            self.check_cancel()
            try:
                self._upload_to(t, d, manifest, marker, stats)
            except TargetError as exc:
                errors.append(exc)
                logs.warning("backup.upload_failed", id=backup_id, target=t.name, error=str(exc))
                continue
            done.add(t.name)
            write_atomic(d / "uploaded.json", json.dumps(sorted(done)).encode(), 0o600)
        if errors:
            raise errors[0]
        shutil.rmtree(d, ignore_errors=True)
        return stats

    def _upload_to(self, t: Target, d: Path, manifest: Manifest, marker: Marker, stats: dict) -> None:
        existing = t.existing_blobs()
        missing = [b for b in manifest.blobs if existing.get(b.path) != b.size]
        for b in missing:
            if not (self.data_dir / b.path).is_file():
                raise PendingBroken(f"blob {b.path} listed by backup {marker.id} is gone from the volume")

        def put(entry) -> None:
            self.check_cancel()
            t.put_blob(self.data_dir / entry.path, entry, self.check_cancel)

        workers = self.settings.s3_max_concurrency if t.remote else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(put, b) for b in missing]:
                fut.result()
        stats["blobs_uploaded"] += len(missing)
        stats["blob_bytes_uploaded"] += sum(b.size for b in missing)
        self.check_cancel()
        t.put_archive(d / marker.archive_name, marker.archive_name, marker.archive["sha256"], self.check_cancel)
        t.put_marker(marker)  # last: only now is the backup listed as good
        logs.info("backup.uploaded", id=marker.id, target=t.name, archive_bytes=marker.archive["size"],
                  blobs_uploaded=len(missing))

    # -- retention -------------------------------------------------------------------------------
    def prune(self, dry_run: bool = False) -> dict:
        s = self.settings
        report = {}
        pending = set(self.pending_ids())
        now = self.clock()
        for t in self.targets:
            markers = t.list_markers()
            keep = select_keep([(m.id, m.created) for m in markers], s.keep_hourly, s.keep_daily, s.keep_weekly)
            doomed = [m for m in markers if m.id not in keep]
            good = {m.id for m in markers}
            orphans = [o for o in t.list_archives()
                       if o.name.split(".", 1)[0] not in good and o.name.split(".", 1)[0] not in pending
                       and now - o.modified > timedelta(hours=1)]
            if not dry_run:
                for m in doomed:
                    t.delete_backup(m)
                for o in orphans:
                    t.delete_object("backups/" + o.name)
                if isinstance(t, S3Target):
                    t.abort_stale_uploads(now - timedelta(days=1))
            report[t.name] = {"kept": sorted(keep), "deleted": [m.id for m in doomed],
                              "orphans_deleted": [o.name for o in orphans]}
            if doomed or orphans:
                logs.info("backup.pruned", target=t.name, deleted=[m.id for m in doomed],
                          orphans=[o.name for o in orphans], kept=len(keep), dry_run=dry_run)
        return report

    # -- verify and restore ----------------------------------------------------------------------
    def _identities(self, marker: Marker, identity: Path | None) -> list | None:
        if not marker.encrypted:
            return None
        path = identity or self.settings.age_identity_file
        if path is None:
            raise DecryptionFailed(f"backup {marker.id} is encrypted: give --identity FILE or set "
                                   "BACKUP_AGE_IDENTITY_FILE")
        return load_identities(path)

    def verify(self, backup_id: str, *, target_name: str | None = None, identity: Path | None = None,
               deep: bool = False, workdir: Path | None = None) -> dict:
        """Download, decrypt, decompress and check every byte of a backup; integrity_check the database."""
        t = self.target(target_name)
        marker = t.get_marker(backup_id)
        identities = self._identities(marker, identity)
        tmp = Path(tempfile.mkdtemp(prefix=".squall-verify-", dir=workdir or self._workdir()))
        progress = _progress("verify", marker)
        try:
            with t.open_archive(marker) as f:
                result = read_archive(_Counted(f, progress), marker, identities, tmp, self.check_cancel)
            progress.add(items=len(result.manifest.files))
            progress.finish()
            _integrity(tmp / DATABASE_NAME)
            blob_report = self._check_blobs(t, result.manifest, None if not deep else tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report = {"id": marker.id, "target": t.name, "ok": True, "archive_bytes": result.archive_size,
                  "schema_version": result.manifest.schema_version, "pds_version": result.manifest.pds_version,
                  "files": len(result.manifest.files), **blob_report}
        logs.info("backup.verified", **report)
        return report

    def drill(self, backup_id: str = "latest", *, identity: Path | None = None, target_name: str | None = None,
              progress=None, workdir: Path | None = None) -> dict:
        """Restore drill (see drill.py): boot a PDS on the backup and check it; the report goes to
        status.json (``last_drill``; a failed drill makes ``healthy`` false)."""
        from .drill import run_drill
        started = self.clock()
        self.status.update(drill_running={"id": backup_id, "started_at": format_time(started)})
        try:
            report = run_drill(self, backup_id, identity=identity, target_name=target_name, progress=progress,
                               workdir=workdir, hostname=os.environ.get("PDS_HOSTNAME") or None,
                               login_sample=self.settings.drill_login_sample)
        finally:
            self.status.update(drill_running=None)
        self.status.update(last_drill=report)
        return report

    def drill_skipped(self, reason: str) -> None:
        self.status.update(last_drill={"ok": None, "skipped": reason, "at": format_time(self.clock())})
        logs.warning("drill.skipped", reason=reason)

    def _workdir(self) -> Path | None:
        return self.backups_dir if self.backups_dir.is_dir() else None

    def _check_blobs(self, t: Target, manifest: Manifest, dest: Path | None) -> dict:
        if dest is None:
            existing = t.existing_blobs()
            bad = [b.path for b in manifest.blobs if existing.get(b.path) != b.size]
            if bad:
                raise ArchiveError(f"{len(bad)} blob(s) missing or of the wrong size on {t.name}, e.g. {bad[0]}")
            return {"blobs": len(manifest.blobs), "blobs_checked": "size"}
        for b in manifest.blobs:
            self.check_cancel()
            target = dest / b.path
            target.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            size = 0
            with t.open_blob(b) as fin, open(target, "wb") as out:
                while chunk := fin.read(1024 * 1024):
                    sha.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if size != b.size or sha.hexdigest() != b.sha256:
                raise ArchiveError(f"blob {b.path} on {t.name} does not match the manifest")
        return {"blobs": len(manifest.blobs), "blobs_checked": "sha256"}

    def restore(self, backup_id: str, target_dir: Path, *, force: bool = False, identity: Path | None = None,
                target_name: str | None = None) -> dict:
        """Restore a backup into ``target_dir``; nothing is written there unless every check passes."""
        target_dir = Path(target_dir).absolute()
        if target_dir.exists() and not target_dir.is_dir():
            raise RestoreError(f"{target_dir} exists and is not a directory")
        if target_dir.is_dir():
            present = [p.name for p in target_dir.iterdir() if p.name not in IGNORED_IN_EMPTY_TARGET]
            if present and not force:
                raise RestoreError(f"{target_dir} is not empty ({', '.join(sorted(present)[:5])}); "
                                   "restore into an empty directory or pass --force")
        t = self.target(target_name)
        marker = t.get_marker(backup_id)
        identities = self._identities(marker, identity)
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        # Stage beside the target so the final moves are renames; inside it (hidden) if it is a mount point.
        stage_parent = target_dir.parent
        if target_dir.is_dir() and os.stat(target_dir).st_dev != os.stat(target_dir.parent).st_dev:
            stage_parent = target_dir
        staging = Path(tempfile.mkdtemp(prefix=".squall-restore-", dir=stage_parent))
        progress = _progress("restore", marker)
        try:
            with t.open_archive(marker) as f:
                result = read_archive(_Counted(f, progress), marker, identities, staging, self.check_cancel)
            progress.add(items=len(result.manifest.files))
            progress.finish()
            manifest = result.manifest
            _integrity(staging / DATABASE_NAME)
            self._check_blobs(t, manifest, staging if manifest.blobs_on_volume else None)
            if manifest.journal_mode.lower() == "wal":
                con = sqlite3.connect(staging / DATABASE_NAME)
                con.execute("PRAGMA journal_mode=WAL")
                con.close()
            self._commit_restore(staging, target_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        report = {"id": marker.id, "target": str(target_dir), "from": t.name,
                  "schema_version": manifest.schema_version, "pds_version": manifest.pds_version,
                  "files": len(manifest.files), "blobs": len(manifest.blobs)}
        logs.info("backup.restored", **report)
        return report

    def _commit_restore(self, staging: Path, target_dir: Path) -> None:
        if not target_dir.exists():
            os.chmod(staging, 0o750)
            os.rename(staging, target_dir)
            return
        # A WAL or journal left from another database would corrupt the restored one.
        for suffix in ("-wal", "-shm", "-journal"):
            (target_dir / (DATABASE_NAME + suffix)).unlink(missing_ok=True)
        os.replace(staging / DATABASE_NAME, target_dir / DATABASE_NAME)
        if (staging / "secrets").is_dir():
            old = target_dir / "secrets"
            if old.exists():
                trash = Path(tempfile.mkdtemp(prefix=".squall-old-secrets-", dir=staging))
                os.rename(old, trash / "secrets")
            os.rename(staging / "secrets", target_dir / "secrets")
        blobs = staging / "blobs"
        if blobs.is_dir():
            for did_dir in blobs.iterdir():
                dest = target_dir / "blobs" / did_dir.name
                dest.mkdir(parents=True, exist_ok=True)
                for blob in did_dir.iterdir():
                    os.replace(blob, dest / blob.name)
        shutil.rmtree(staging, ignore_errors=True)


def _integrity(db_path: Path) -> None:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"the restored database does not open: {exc}") from None
    finally:
        con.close()
    if rows != ["ok"]:
        raise ArchiveError("integrity_check failed on the restored database: " + "; ".join(rows[:5]))


# -- progress of restore and verify (bytes of the archive read, elapsed) ------------------------------


def _progress(task: str, marker: Marker) -> "Progress":
    from .progress import Progress

    return Progress(f"{task} {marker.id}", lambda fields: logs.info(f"{task}.progress", **fields),
                    items="files", total_bytes=marker.archive.get("size"), stream=sys.stderr)


class _Counted:
    """The archive stream, counting what is read into ``progress``."""

    def __init__(self, raw, progress) -> None:
        self.raw, self.progress = raw, progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.progress.add(nbytes=len(data))
        return data
