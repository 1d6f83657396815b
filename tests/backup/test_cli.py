"""The ``squall-backup`` command, run as a subprocess like the container runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from squall_backup.cli import main
from squall_backup.crypto import generate_identity

from tests.helpers.s3 import SECRET_ACCESS_KEY

from .helpers import make_data_dir, s3_env, table_rows, wait_for

SECRET = SECRET_ACCESS_KEY  # must never appear in the output


def _env(data, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "PDS_", "AWS_"))}
    env.update({"PDS_DATA_DIRECTORY": str(data), **extra})
    return env


def _cli(args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "squall_backup.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_now_list_verify_restore_prune(tmp_path, data_dir, moto_server, bucket):
    key = tmp_path / "id.key"
    secret, public = generate_identity()
    key.write_text(secret + "\n")
    env = _env(data_dir, **s3_env(moto_server, bucket), BACKUP_AGE_RECIPIENTS=public,
               BACKUP_AGE_IDENTITY_FILE=str(key))
    now = _cli(["now"], env)
    assert now.returncode == 0, now.stderr
    events = _json_lines(now.stdout)
    done = [e for e in events if e["event"] == "backup.done"][0]
    assert done["verified"] is True and done["blob_count"] == 3
    assert all({"ts", "level", "event"} <= set(e) for e in events)
    assert SECRET not in now.stdout + now.stderr and secret not in now.stdout + now.stderr

    listed = _cli(["list", "--json"], env)
    assert listed.returncode == 0
    ids = [m["id"] for m in json.loads(listed.stdout)]
    assert ids == [done["id"]]
    table = _cli(["list"], env)
    assert done["id"] in table.stdout and "yes" in table.stdout

    verify = _cli(["verify", "latest", "--deep"], env)
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout.splitlines()[-1])["blobs_checked"] == "sha256"

    target = tmp_path / "restored"
    restore = _cli(["restore", done["id"], "--target", str(target)], env)
    assert restore.returncode == 0, restore.stderr
    assert table_rows(target / "pds.sqlite") == table_rows(data_dir / "pds.sqlite")

    again = _cli(["restore", "latest", "--target", str(target)], env)
    assert again.returncode == 1 and "not empty" in again.stderr

    prune = _cli(["prune", "--dry-run"], env)
    assert prune.returncode == 0 and json.loads(prune.stdout.splitlines()[-1])["s3"]["kept"] == ids


def test_wrong_identity_via_cli(tmp_path, data_dir):
    _, public = generate_identity()
    wrong = tmp_path / "wrong.key"
    wrong.write_text(generate_identity()[0])
    env = _env(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"), BACKUP_AGE_RECIPIENTS=public)
    assert _cli(["now"], env).returncode == 0
    out = tmp_path / "r"
    r = _cli(["restore", "latest", "--target", str(out), "--identity", str(wrong)], env)
    assert r.returncode == 1 and "wrong key" in r.stderr and not out.exists()


def test_bad_setting_exits_2_naming_the_variable(tmp_path, data_dir):
    r = _cli(["now"], _env(data_dir, BACKUP_KEEP_DAILY="lots"))
    assert r.returncode == 2 and "BACKUP_KEEP_DAILY" in r.stderr
    r = _cli(["list"], _env(data_dir, BACKUP_S3_BUCKET="b", BACKUP_S3_ACCESS_KEY_ID="x"))
    assert r.returncode == 2 and "BACKUP_S3_SECRET_ACCESS_KEY" in r.stderr


def test_unencrypted_remote_target_warns_loudly(tmp_path, data_dir, moto_server, bucket):
    r = _cli(["now"], _env(data_dir, **s3_env(moto_server, bucket)))
    assert r.returncode == 0
    warnings = [e for e in _json_lines(r.stdout) if e["event"] == "backup.config_warning"]
    assert warnings and warnings[0]["level"] == "error" and "NOT encrypted" in warnings[0]["warning"]
    status = json.loads((data_dir / "backups" / "status.json").read_text())
    assert any("NOT encrypted" in w for w in status["warnings"])
    assert SECRET not in r.stdout + r.stderr


def test_same_volume_target_warns(tmp_path, data_dir):
    r = _cli(["now"], _env(data_dir))
    assert r.returncode == 0
    assert any("not off-site" in e.get("warning", "") for e in _json_lines(r.stdout))
    assert (data_dir / "backups" / "archive" / "backups").is_dir()


def test_runs_never_overlap(tmp_path, data_dir):
    import fcntl
    (data_dir / "backups").mkdir()
    fd = os.open(data_dir / "backups" / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        r = _cli(["now"], _env(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t")))
        assert r.returncode == 3 and "in progress" in r.stdout
    finally:
        os.close(fd)
    assert _cli(["now"], _env(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"))).returncode == 0


def test_keygen_and_main_in_process(capsys):
    assert main(["keygen"]) == 0
    out = capsys.readouterr().out
    assert "AGE-SECRET-KEY-1" in out and "age1" in out
    with pytest.raises(SystemExit) as info:
        main(["restore", "latest"])  # --target is required
    assert info.value.code == 2


def _status(data):
    try:
        return json.loads((data / "backups" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_daemon_runs_on_schedule_and_stops_on_sigterm(tmp_path, data_dir):
    env = _env(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"), BACKUP_RUN_ON_START="true", BACKUP_SCHEDULE="1h")
    proc = subprocess.Popen([sys.executable, "-m", "squall_backup.cli", "run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (_status(data_dir).get("last_success") or {}).get("id"), timeout=30)
        status = wait_for(lambda: _status(data_dir) if _status(data_dir).get("state") == "idle" else None)
        assert status["next_run_at"] is not None and status["schedule"] == "1h"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert _status(data_dir)["state"] == "stopped"
    assert [e["event"] for e in _json_lines(out)][-1] == "daemon.stopped"


def test_sigterm_during_an_upload_aborts_cleanly(tmp_path, proxy, bucket, s3):
    data = make_data_dir(tmp_path, rows=3000, payload=3000, blobs=1)
    proxy.always("hang", match=lambda m, p: m == "PUT" and ".tar.zst" in p)
    env = _env(data, **s3_env(proxy.endpoint, bucket, BACKUP_S3_READ_TIMEOUT="3"), BACKUP_RUN_ON_START="true")
    proc = subprocess.Popen([sys.executable, "-m", "squall_backup.cli", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proxy.actions("hang"), timeout=30)
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < 15
    status = _status(data)
    assert status["state"] == "stopped" and status["last_run"]["aborted"] is True
    pending = status["pending_uploads"]
    assert len(pending) == 1 and (data / "backups" / "pending" / pending[0]).is_dir()
    assert not (data / "backups" / "staging").exists() or not list((data / "backups" / "staging").iterdir())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if "/backups/" in k]
    # the next start uploads the kept snapshot
    proxy.clear()
    r = _cli(["now"], {**env, "BACKUP_RUN_ON_START": "false"})
    assert r.returncode == 0, r.stderr
    uploaded = [e["id"] for e in _json_lines(r.stdout) if e["event"] == "backup.uploaded"]
    assert uploaded[0] == pending[0] and len(uploaded) == 2
    assert _status(data)["pending_uploads"] == []


def test_daemon_waits_for_the_database_of_a_first_boot(tmp_path, monkeypatch):
    # A fresh volume: the sidecar starts before the PDS has created pds.sqlite. With run-on-start it
    # must back up soon after the database appears, not a whole schedule period later.
    import threading

    from squall_backup import daemon
    from squall_backup.settings import load_settings

    monkeypatch.setattr(daemon, "DATABASE_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(daemon, "POLL_SECONDS", 0.1)
    staging = tmp_path / "later"
    data = make_data_dir(staging)
    empty = tmp_path / "data"
    empty.mkdir()
    settings = load_settings({"PDS_DATA_DIRECTORY": str(empty), "BACKUP_LOCAL_DIR": str(tmp_path / "t"),
                              "BACKUP_RUN_ON_START": "true", "BACKUP_SCHEDULE": "1h"})
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "rc", daemon.run_daemon(settings, stop=stop, install_signals=False, max_runs=1)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: _status(empty).get("state") == "waiting", timeout=10)
        assert not _status(empty).get("last_success")
        for item in data.iterdir():  # the PDS's first boot creates the volume's contents
            item.rename(empty / item.name)
        thread.join(timeout=30)
        assert not thread.is_alive() and result["rc"] == 0
        assert (_status(empty).get("last_success") or {}).get("id")
    finally:
        stop.set()
        thread.join(timeout=10)


def test_daemon_runs_when_the_dashboard_asks(tmp_path, monkeypatch):
    """<data>/backups/run-now (the admin dashboard's "run one now") starts a run well before the schedule."""
    import threading

    from squall_backup import daemon
    from squall_backup.settings import load_settings

    monkeypatch.setattr(daemon, "TRIGGER_POLL_SECONDS", 0.1)
    data = make_data_dir(tmp_path / "data")
    settings = load_settings({"PDS_DATA_DIRECTORY": str(data), "BACKUP_LOCAL_DIR": str(tmp_path / "t"),
                              "BACKUP_SCHEDULE": "1d"})
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "rc", daemon.run_daemon(settings, stop=stop, install_signals=False, max_runs=1)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: _status(data).get("state") == "idle", timeout=10)
        assert not _status(data).get("last_success")
        (data / "backups" / "run-now").write_text("now\n")
        thread.join(timeout=30)
        assert not thread.is_alive() and result["rc"] == 0
        assert (_status(data).get("last_success") or {}).get("id")
        assert not (data / "backups" / "run-now").exists()
    finally:
        stop.set()
        thread.join(timeout=10)
