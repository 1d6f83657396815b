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
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from .manifest import format_time
from .snapshot import write_atomic

STATUS_FORMAT = "squall-backup-status/1"


class StatusFile:
    def __init__(self, path: Path, clock) -> None:
        self.path = path
        self.clock = clock

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def update(self, **changes: object) -> dict:
        data = self.read()
        data.setdefault("last_success", None)
        data.setdefault("last_failure", None)
        data.setdefault("consecutive_failures", 0)
        data.update(changes)
        data["format"] = STATUS_FORMAT
        data["updated_at"] = format_time(self.clock())
        data["pid"] = os.getpid()
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True, default=_default).encode())
        return data


def _default(v: object) -> object:
    if isinstance(v, datetime):
        return format_time(v)
    return str(v)
