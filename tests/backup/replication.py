"""One replication round, shared by tests/backup/test_replication.py and bench/replication.py.

A real ``squall serve`` with ``BACKUP_REPLICATE=true`` and a real ``squall-backup run`` daemon (which runs
Litestream) replicate to moto's S3 server on loopback. A client writes posts for a while, noting when
each was acknowledged; then the PDS, the daemon and Litestream are killed with SIGKILL at one instant
and the data directory is deleted — the disk is gone. ``squall-backup restore --at latest`` brings the
database back from the replica (secrets from the snapshot, blobs from the blob backup) and the result
is compared with the acknowledged writes.

The measured RPO of a round: the time between the kill and the oldest acknowledged write missing
from the restored database (0 when none is missing).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from squall_backup.crypto import generate_identity

from tests.helpers.accounts import bearer, signup
from tests.helpers.pds import PdsProcess
from tests.helpers.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

POST = "app.bsky.feed.post"


def backup_env(data: Path, endpoint: str, bucket: str, public: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "BACKUP_"))}
    env.update({
        "PDS_DATA_DIRECTORY": str(data), "BACKUP_S3_ENDPOINT": endpoint, "BACKUP_S3_BUCKET": bucket,
        "BACKUP_S3_REGION": REGION, "BACKUP_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "BACKUP_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "BACKUP_S3_PREFIX": "pds1/",
        "BACKUP_AGE_RECIPIENTS": public, "BACKUP_VERIFY_AFTER_UPLOAD": "false", "BACKUP_RUN_ON_START": "true",
        "BACKUP_DRILL_SCHEDULE": "off", "BACKUP_REPLICATE": "true", "BACKUP_REPLICATE_UNENCRYPTED": "true",
        "BACKUP_S3_MAX_ATTEMPTS": "3", "BACKUP_S3_CONNECT_TIMEOUT": "2", "BACKUP_S3_READ_TIMEOUT": "10",
    })
    env.update(extra)
    return env


def read_status(data: Path) -> dict:
    try:
        return json.loads((data / "backups" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def post(c, user: dict, text: str) -> tuple[str, float]:
    record = {"$type": POST, "text": text, "createdAt": "2026-05-01T12:00:00.000Z"}
    r = c.post("/xrpc/com.atproto.repo.createRecord", json={"repo": user["did"], "collection": POST,
                                                              "record": record}, headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()["uri"], time.time()


class ReplicatedServer:
    """A PDS + backup daemon (with Litestream) on one data directory."""

    def __init__(self, root: Path, endpoint: str, bucket: str, **extra_env: str) -> None:
        self.root = root
        self.data = root / "data"
        secret, self.public = generate_identity()
        self.identity = root / "key.txt"
        self.identity.write_text(secret + "\n")
        self.env = backup_env(self.data, endpoint, bucket, self.public, **extra_env)
        self.pds = PdsProcess(self.data, env_extra={"BACKUP_REPLICATE": "true"})
        self.daemon: subprocess.Popen | None = None
        self.users: list[dict] = []

    def start(self, accounts: int = 2) -> "ReplicatedServer":
        self.pds.start()
        with self.pds.client() as c:
            for i in range(accounts):
                r = signup(c, f"rep{i}x{int(time.time() * 1000) % 100000}")
                assert r.status_code == 200, r.text
                body = r.json()
                user = {"did": body["did"], "handle": body["handle"], "headers": bearer(body["accessJwt"])}
                blob = c.post("/xrpc/com.atproto.repo.uploadBlob", content=b"\x89PNG\r\n\x1a\n" + os.urandom(1500),
                              headers={**user["headers"], "Content-Type": "image/png"}).json()["blob"]
                rec = {"$type": POST, "text": "pic", "createdAt": "2026-05-01T12:00:00.000Z",
                       "embed": {"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": ""}]}}
                r = c.post("/xrpc/com.atproto.repo.createRecord", json={"repo": user["did"], "collection": POST,
                                                                          "record": rec}, headers=user["headers"])
                assert r.status_code == 200, r.text
                self.users.append(user)
        log = open(self.root / "daemon.log", "ab")
        self.daemon = subprocess.Popen([sys.executable, "-m", "squall_backup.cli", "run"], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        # A snapshot (for the secrets) and Litestream running with a first position on the replica.
        wait(lambda: read_status(self.data).get("last_success"), 60, "the first snapshot")
        wait(lambda: (read_status(self.data).get("replication") or {}).get("replica_txid"), 60,
             "Litestream's first sync")
        return self

    def load(self, seconds: float, max_writes: int = 5000) -> list[tuple[str, float]]:
        acked: list[tuple[str, float]] = []
        deadline = time.monotonic() + seconds
        with self.pds.client() as c:
            while time.monotonic() < deadline and len(acked) < max_writes:
                user = self.users[len(acked) % len(self.users)]
                acked.append(post(c, user, f"load {len(acked)}"))
        return acked

    def litestream_pid(self) -> int | None:
        return (read_status(self.data).get("replication") or {}).get("pid")

    def crash(self) -> float:
        """kill -9 of the PDS, the daemon and Litestream at one instant, then the volume is deleted."""
        ls_pid = self.litestream_pid()
        t = time.time()
        for pid in filter(None, [self.pds.proc.pid if self.pds.proc else None, ls_pid,
                                 self.daemon.pid if self.daemon else None]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in (self.pds.proc, self.daemon):
            if proc is not None:
                proc.wait(timeout=10)
        self.pds.proc = None
        shutil.rmtree(self.data)
        return t

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(timeout=5)
        self.pds.stop()

    def restore(self, target: Path, at: str = "latest") -> dict:
        p = subprocess.run([sys.executable, "-m", "squall_backup.cli", "restore", "--at", at, "--target", str(target),
                            "--identity", str(self.identity)], env=self.env, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])


def present_uris(data: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{data / 'pds.sqlite'}?mode=ro", uri=True)) as con:
        return {f"at://{did}/{col}/{rkey}" for did, col, rkey in con.execute("SELECT did, collection, rkey FROM record")}


def measure(acked: list[tuple[str, float]], present: set[str], kill_time: float) -> dict:
    lost = [(uri, t) for uri, t in acked if uri not in present]
    old_lost = [(uri, t) for uri, t in lost if kill_time - t > 1.0]
    return {"writes": len(acked), "lost": len(lost), "lost_older_than_1s": len(old_lost),
            "rpo_seconds": round(kill_time - min(t for _, t in lost), 3) if lost else 0.0,
            "last_ack_before_kill_seconds": round(kill_time - acked[-1][1], 3) if acked else None}


def run_round(root: Path, endpoint: str, bucket: str, load_seconds: float = 4.0) -> dict:
    """One crash-and-restore round; returns the measurement and the restored directory."""
    server = ReplicatedServer(root, endpoint, bucket).start()
    try:
        acked = server.load(load_seconds)
        kill_time = server.crash()
    except BaseException:
        server.stop()
        raise
    restored = root / "restored"
    report = server.restore(restored)
    result = measure(acked, present_uris(restored), kill_time)
    result.update({"restored": restored, "restore": report, "users": server.users})
    return result
