"""Recipients without an identity: every upload goes unverified, and the sidecar says so (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from squall_backup.crypto import generate_identity


def _now(data_dir, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "PDS_"))}
    environ.update({"PDS_DATA_DIRECTORY": str(data_dir), "BACKUP_LOCAL_DIR": str(tmp_path / "offsite"), **env})
    return subprocess.run([sys.executable, "-m", "squall_backup.cli", "now"], env=environ, capture_output=True,
                          text=True, timeout=120)


def test_recipients_without_identity_warn_in_log_and_status(data_dir, tmp_path):
    _, public = generate_identity()
    r = _now(data_dir, tmp_path, BACKUP_AGE_RECIPIENTS=public)
    assert r.returncode == 0, r.stderr
    warned = [json.loads(line) for line in (r.stdout + r.stderr).splitlines()
              if line.startswith("{") and "config_warning" in line]
    assert any("NOT verified" in entry.get("warning", "") for entry in warned), r.stdout + r.stderr
    status = json.loads((data_dir / "backups" / "status.json").read_text())
    assert any("NOT verified" in w and "BACKUP_AGE_IDENTITY_FILE" in w for w in status["warnings"])
    assert status["last_success"]["verified"] is False


def test_with_the_identity_there_is_no_such_warning(data_dir, tmp_path):
    secret, public = generate_identity()
    key = tmp_path / "backup-key.txt"
    key.write_text(secret + "\n")
    r = _now(data_dir, tmp_path, BACKUP_AGE_RECIPIENTS=public, BACKUP_AGE_IDENTITY_FILE=str(key))
    assert r.returncode == 0, r.stderr
    assert "NOT verified" not in r.stdout + r.stderr
    status = json.loads((data_dir / "backups" / "status.json").read_text())
    assert not any("NOT verified" in w for w in status["warnings"])
    assert status["last_success"]["verified"] is True
