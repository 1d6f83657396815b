"""``<data>/backups/status.json``: what the PDS's admin status endpoint shows about backups.

Written atomically (temporary file + rename) at every change of state, so a reader never sees a torn
file. Times are UTC ISO 8601 (``2026-01-01T12:00:00Z``); absent information is ``null``. Fields:

| field | meaning |
|---|---|
| `format` | `"squall-backup-status/1"` |
| `updated_at` | when this file was written |
| `state` | `idle` (waiting for the next run), `running`, or `stopped` (the daemon exited) |
| `pid` | process id of the writer |
| `schedule` | the `BACKUP_SCHEDULE` in force |
| `next_run_at` | when the daemon runs next (`null` outside the daemon) |
| `encrypted` | whether archives are age-encrypted |
| `targets` | list of `{name, kind ("s3"/"local"), location, remote}`; never credentials |
| `warnings` | standing problems, e.g. unencrypted archives on a remote target, backups on the same volume |
| `current_run` | while running: `{id, started_at, stage}` (`stage`: `snapshot`, `archive`, `upload`, `prune`, `verify`) |
| `last_run` | `{id, started_at, finished_at, duration_seconds, ok, aborted}` |
| `last_success` | `{id, finished_at, duration_seconds, archive_bytes, database_bytes, schema_version, pds_version, blob_count, blobs_uploaded, blob_bytes_uploaded, verified}` |
| `last_failure` | `{id, at, stage, error}` — the error is a one-line message, never a secret |
| `consecutive_failures` | failed runs since the last success |
| `backup_count` | good backups on each target: `{"s3": 24, "local": 3}` |
| `pending_uploads` | ids of snapshots kept locally because an upload has not succeeded yet |
| `healthy` | `false` when the last backup run failed, the last restore drill failed, or replication is failing |
| `unhealthy_reasons` | one line per reason (empty when healthy) |
| `drill_schedule` / `next_drill_at` | `BACKUP_DRILL_SCHEDULE` and when the daemon drills next (`null`: off or outside the daemon) |
| `last_drill` | the last restore drill's report: `{id, ok, started_at, finished_at, duration_seconds, accounts, records, blobs, summary, checks: [{name, ok, seconds, count, fault_count, faults: [{account, fault}], detail?, skipped?}]}`, or `{ok: null, skipped: reason, at}` when it could not run (no identity on the server) |
| `replication` | `null` when off; else `{enabled, state, encrypted (false: Litestream cannot encrypt), replica, sync_interval_ms, pid, started_at, restarts, last_exit, last_error, lag_seconds, replica_txid, replica_updated_at, checked_at}` (`state`: `starting`, `running`, `restarting`, `failing`, `stopped`) |
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path

from .manifest import format_time
from .snapshot import write_atomic

STATUS_FORMAT = "squall-backup-status/1"


class StatusFile:
    def __init__(self, path: Path, clock) -> None:
        self.path = path
        self.clock = clock
        # The daemon's loop and the replicator's thread both update the file.
        self._lock = threading.Lock()

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def update(self, **changes: object) -> dict:
        with self._lock:
            return self._update(changes)

    def _update(self, changes: dict) -> dict:
        data = self.read()
        data.setdefault("last_success", None)
        data.setdefault("last_failure", None)
        data.setdefault("consecutive_failures", 0)
        data.update(changes)
        reasons = health_reasons(data)
        data["healthy"] = not reasons
        data["unhealthy_reasons"] = reasons
        data["format"] = STATUS_FORMAT
        data["updated_at"] = format_time(self.clock())
        data["pid"] = os.getpid()
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True, default=_default).encode())
        return data


def _default(v: object) -> object:
    if isinstance(v, datetime):
        return format_time(v)
    return str(v)


def health_reasons(data: dict) -> list[str]:
    """Why backups are not healthy (empty: healthy). A dashboard shows these lines as they are."""
    reasons = []
    failures = data.get("consecutive_failures") or 0
    if failures:
        error = (data.get("last_failure") or {}).get("error", "")
        reasons.append(f"the last {failures} backup run(s) failed: {error}")
    drill = data.get("last_drill")
    if isinstance(drill, dict) and drill.get("ok") is False:
        reasons.append(f"the last restore drill ({drill.get('id')}) failed: {drill.get('summary')}")
    rep = data.get("replication")
    if isinstance(rep, dict) and rep.get("enabled") and rep.get("state") == "failing":
        reasons.append(f"replication is failing: {rep.get('last_error')}")
    return reasons
