"""Backup sidecar benchmark: a ~1 GB database → snapshot + integrity check + compress + encrypt + upload
(to moto's S3 server on loopback), then verify and restore; each step timed with the sidecar's peak RSS.

    .venv/bin/python bench/backup.py [--size-mb 1024] [--dir /tmp] [--keep]

Every sidecar step runs in its own child process (the way the container runs it), which reports its wall
time and peak resident memory (``VmHWM``). Targets from the issue: each step <= 60 s, peak RSS <= 100 MB.
The database holds rows of random bytes (incompressible: the worst case for the archive size, and so for
encryption and upload), in WAL mode like the PDS's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 100.0

CHILD = r"""
import json, sys, time
from pathlib import Path
from squall_backup.settings import load_settings
from squall_backup.engine import Engine

step, env, arg = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
engine = Engine(load_settings(env))
t = time.perf_counter()
phases = {}
if step == "backup":
    import squall_backup.logs as logs
    events = []
    orig = logs.info
    def capture(event, **fields):
        events.append((event, fields, time.perf_counter()))
    logs.info = capture
    result = engine.run_once()
    archived = next(f for e, f, _ in events if e == "backup.archived")
    uploaded_at = next(ts for e, _, ts in events if e == "backup.uploaded")
    archived_at = next(ts for e, _, ts in events if e == "backup.archived")
    phases = {"snapshot + integrity_check": archived["snapshot_seconds"],
              "manifest + compress + encrypt": archived["archive_seconds"],
              "upload (archive + marker)": uploaded_at - archived_at,
              "archive_bytes": result["archive_bytes"], "id": result["id"]}
elif step == "verify":
    engine.verify("latest", identity=Path(arg))
elif step == "restore":
    engine.restore("latest", Path(arg), identity=Path(env["BACKUP_AGE_IDENTITY_FILE"]))
seconds = time.perf_counter() - t
# VmHWM is this process's own peak (ru_maxrss would carry over the forking parent's peak across exec).
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
rss_mb = int(hwm.split()[1]) / 1024
print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "phases": phases}))
"""


def build_database(path: Path, size_mb: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE blocks (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    con.execute("CREATE TABLE squall_meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO squall_meta VALUES ('pds_version', 'bench')")
    row = 64 * 1024
    rows = max(1, size_mb * 1024 * 1024 // row)
    batch = 1024
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        con.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                    "INSERT INTO blocks (data) SELECT randomblob(?) FROM c", (n, row))
        con.commit()
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def run_child(step: str, env: dict, arg: str = "") -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, step, json.dumps(env), arg], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"{step} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="database size (default 1024)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (needs ~6x the size free)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer
    import boto3
    from squall_backup.crypto import generate_identity

    root = Path(tempfile.mkdtemp(prefix="squall-backup-bench-", dir=args.dir))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench-secret").create_bucket(Bucket="bench-backups")
        data = root / "data"
        (data / "secrets").mkdir(parents=True)
        (data / "secrets" / "jwt_secret").write_text("bench")
        t = time.perf_counter()
        build_database(data / "pds.sqlite", args.size_mb)
        db_size = (data / "pds.sqlite").stat().st_size
        print(f"built {db_size / 2**20:.0f} MB database in {time.perf_counter() - t:.1f} s at {root}", flush=True)

        secret, public = generate_identity()
        key = root / "bench.key"
        key.write_text(secret + "\n")
        env = {"PDS_DATA_DIRECTORY": str(data), "BACKUP_S3_ENDPOINT": endpoint, "BACKUP_S3_BUCKET": "bench-backups",
               "BACKUP_S3_REGION": "us-east-1", "BACKUP_S3_ACCESS_KEY_ID": "bench",
               "BACKUP_S3_SECRET_ACCESS_KEY": "bench-secret", "BACKUP_AGE_RECIPIENTS": public,
               "BACKUP_AGE_IDENTITY_FILE": str(key), "BACKUP_VERIFY_AFTER_UPLOAD": "false",
               "BACKUP_LOG_LEVEL": "WARNING"}
        rows = []
        backup = run_child("backup", env)
        for name in ("snapshot + integrity_check", "manifest + compress + encrypt", "upload (archive + marker)"):
            rows.append((f"  {name}", backup["phases"][name], None))
        rows.append(("backup total (now)", backup["seconds"], backup["rss_mb"]))
        verify = run_child("verify", env, str(key))
        rows.append(("verify (download, decrypt, check, integrity_check)", verify["seconds"], verify["rss_mb"]))
        target = root / "restored"
        restore = run_child("restore", env, str(target))
        rows.append(("restore (download, decrypt, check, write)", restore["seconds"], restore["rss_mb"]))
        restored_size = (target / "pds.sqlite").stat().st_size

        print()
        print(f"database {db_size / 2**20:.0f} MB, archive {backup['phases']['archive_bytes'] / 2**20:.0f} MB "
              f"(zstd + age), restored {restored_size / 2**20:.0f} MB; {os.cpu_count()} CPUs")
        print(f"| {'step':<52} | {'seconds':>8} | {'peak RSS MB':>11} | target |")
        print(f"|{'-' * 54}|{'-' * 10}|{'-' * 13}|--------|")
        ok = True
        for name, seconds, rss in rows:
            top = not name.startswith("  ")
            good = (seconds <= TARGET_SECONDS and (rss is None or rss <= TARGET_RSS_MB)) if top else True
            ok &= good
            rss_s = f"{rss:>11.1f}" if rss is not None else f"{'':>11}"
            print(f"| {name:<52} | {seconds:>8.2f} | {rss_s} | {('ok' if good else 'MISSED') if top else '':<6} |")
        print(f"\ntargets: each step <= {TARGET_SECONDS:.0f} s, peak RSS <= {TARGET_RSS_MB:.0f} MB: "
              f"{'met' if ok else 'NOT met'}")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
