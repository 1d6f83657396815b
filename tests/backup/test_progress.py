"""Progress of restore and verify: JSON log lines when not on a terminal, a status line on one."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from .test_cli import _cli, _env, _json_lines


def test_verify_and_restore_log_progress_as_json(tmp_path, data_dir):
    env = _env(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"))
    assert _cli(["now"], env).returncode == 0
    verify = _cli(["verify", "latest"], env)
    assert verify.returncode == 0, verify.stderr
    lines = [line for line in _json_lines(verify.stdout) if line.get("event") == "verify.progress"]
    assert lines and lines[-1]["done"] is True
    last = lines[-1]
    assert last["bytes"] == last["total_bytes"] > 0 and last["files"] >= 1 and last["elapsed_seconds"] >= 0
    assert "\r" not in verify.stderr  # no terminal: no status line
    restore = _cli(["restore", "latest", "--target", str(tmp_path / "r")], env)
    assert restore.returncode == 0, restore.stderr
    done = [line for line in _json_lines(restore.stdout) if line.get("event") == "restore.progress"][-1]
    assert done["done"] is True and done["bytes"] == last["bytes"]


def test_verify_shows_a_status_line_on_a_terminal(tmp_path, data_dir):
    env = _env(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"))
    assert _cli(["now"], env).returncode == 0
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "squall_backup.cli", "verify", "latest"], env=env,
                              stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    text = out.decode()
    assert text.startswith("\rverify ") and "(100%)" in text and text.rstrip().endswith(" s")
    assert not [line for line in _json_lines(proc.stdout) if line.get("event") == "verify.progress"]
