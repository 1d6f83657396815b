"""Restore drill: a real PDS (did:plc accounts on the PLC double, posts, blobs, one deactivated account)
is backed up, encrypted, to moto's S3 server; the drill restores it, boots `squall serve` on the copy and
checks it. Then the source is tampered with (a record block altered, a blob deleted, a commit re-signed
with a broken signature), backed up again, and the drill must fail naming each account and its fault."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import timedelta

import pytest

from squall.atproto import dagcbor
from squall.atproto.cid import CID
from squall_backup.crypto import generate_identity
from squall_backup.engine import Engine
from squall_backup.manifest import format_time

from tests.helpers.accounts import bearer, signup
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

from .helpers import s3_env, settings_for

POST = "app.bsky.feed.post"


def png(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(n)


def _post(c, user, text, **extra) -> dict:
    record = {"$type": POST, "text": text, "createdAt": "2026-05-01T12:00:00.000Z", **extra}
    r = c.post("/xrpc/com.atproto.repo.createRecord", json={"repo": user["did"], "collection": POST,
                                                              "record": record}, headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()


def populate(c, names=("ann", "bob", "cat", "dan")) -> dict[str, dict]:
    users = {}
    for name in names:
        r = signup(c, name)
        assert r.status_code == 200, r.text
        body = r.json()
        user = {"did": body["did"], "handle": body["handle"], "headers": bearer(body["accessJwt"]), "blobs": []}
        for i in range(3):
            _post(c, user, f"{name} post {i}")
        for i in range(2):
            r = c.post("/xrpc/com.atproto.repo.uploadBlob", content=png(2000 + 100 * i),
                       headers={**user["headers"], "Content-Type": "image/png"})
            assert r.status_code == 200, r.text
            blob = r.json()["blob"]
            user["blobs"].append(blob["ref"]["$link"])
            _post(c, user, f"{name} pic {i}",
                  embed={"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": ""}]})
        users[name] = user
    # A deactivated account is hidden from the public: the drill reads it with the admin credential.
    r = c.post("/xrpc/com.atproto.server.deactivateAccount", json={}, headers=users["dan"]["headers"])
    assert r.status_code == 200, r.text
    return users


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("drill")
    with PlcDirectoryDouble() as plc:
        pds = PdsProcess(root / "data", env_extra=plc.pds_env())
        with pds:
            with pds.client() as c:
                users = populate(c)
        yield root, pds.data_dir, users


@pytest.fixture
def keys(tmp_path):
    secret, public = generate_identity()
    ident = tmp_path / "key.txt"
    ident.write_text(secret + "\n")
    return public, ident


def _engine(data_dir, moto_server, bucket, public):
    return Engine(settings_for(data_dir, **s3_env(moto_server, bucket), BACKUP_AGE_RECIPIENTS=public))


def test_drill_passes_on_a_real_backup(world, moto_server, bucket, keys, capsys):
    root, data_dir, users = world
    public, ident = keys
    engine = _engine(data_dir, moto_server, bucket, public)
    engine.run_once()
    report = engine.drill("latest", identity=ident)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"], json.dumps(report, indent=1)
    assert list(checks) == ["restore", "integrity", "boot", "health", "describe_server", "repos", "blobs",
                            "logins", "firehose"]
    assert report["accounts"] == 4 and checks["repos"]["count"] == 4
    assert report["records"] == 4 * 5
    assert report["blobs"] == 8  # every referenced blob fetched and hashed
    assert checks["logins"]["count"] == 3 and not checks["logins"].get("skipped")
    fire = checks["firehose"]
    assert fire["count"] > 4 * 5 and fire["detail"]["replayed"] == fire["count"]
    for c in report["checks"]:
        assert c["seconds"] >= 0 and c["fault_count"] == 0
    status = json.loads((data_dir / "backups" / "status.json").read_text())
    assert status["last_drill"]["ok"] is True and status["healthy"] is True
    # The PDS's admin status embeds it, for the dashboard.
    with PdsProcess(data_dir) as pds, pds.client() as c:
        backup = c.get("/xrpc/_admin/status", auth=("admin", pds.admin_password())).json()["backup"]
    assert backup["last_drill"]["ok"] is True and backup["healthy"] is True
    assert [c["name"] for c in backup["last_drill"]["checks"]] == list(checks)
    print("\ndrill timings: " + ", ".join(f"{c['name']} {c['seconds']:.2f}s" for c in report["checks"])
          + f"; total {report['duration_seconds']:.2f}s")


def _tamper(data_dir, users) -> dict[str, str]:
    """Three faults on three accounts; returns {did: expected words in the fault}."""
    db = sqlite3.connect(data_dir / "pds.sqlite")
    with closing(db):
        # ann: one record block altered (its bytes no longer hash to its CID).
        ann = users["ann"]["did"]
        cid = db.execute("SELECT cid FROM record WHERE did = ? ORDER BY rkey LIMIT 1", (ann,)).fetchone()[0]
        raw = CID.decode(cid).bytes
        content = db.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?", (ann, raw)).fetchone()[0]
        altered = content.replace(b"ann post", b"ANN POST")
        assert altered != content
        db.execute("UPDATE repo_block SET content = ? WHERE did = ? AND cid = ?", (altered, ann, raw))
        # bob: a blob gone from the volume.
        bob = users["bob"]["did"]
        (data_dir / "blobs" / bob / users["bob"]["blobs"][0]).unlink()
        # cat: the head commit replaced by one whose signature is broken (its CID is consistent).
        cat = users["cat"]["did"]
        head, rev = db.execute("SELECT cid, rev FROM repo_root WHERE did = ?", (cat,)).fetchone()
        block = db.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?",
                           (cat, CID.decode(head).bytes)).fetchone()[0]
        commit = dagcbor.decode(block)
        commit["sig"] = bytes([commit["sig"][0] ^ 0xFF]) + commit["sig"][1:]
        forged = dagcbor.encode(commit)
        new = CID.from_block(forged)
        db.execute("INSERT INTO repo_block (did, cid, repo_rev, size, content) VALUES (?, ?, ?, ?, ?)",
                   (cat, new.bytes, rev, len(forged), forged))
        db.execute("UPDATE repo_root SET cid = ? WHERE did = ?", (str(new), cat))
        db.commit()
    return {ann: "CAR does not parse", bob: "blob", cat: "signature does not verify"}


def test_drill_fails_naming_account_and_fault(world, moto_server, bucket, keys, tmp_path):
    root, data_dir, users = world
    public, ident = keys
    expected = _tamper(data_dir, users)
    engine = _engine(data_dir, moto_server, bucket, public)
    engine.run_once()
    # Through the command line, as an operator would run it.
    env = {**os.environ, **{k: v for k, v in s3_env(moto_server, bucket).items()},
           "PDS_DATA_DIRECTORY": str(data_dir), "BACKUP_AGE_RECIPIENTS": public,
           "BACKUP_VERIFY_AFTER_UPLOAD": "false"}
    p = subprocess.run([sys.executable, "-m", "squall_backup.cli", "drill", "--identity", str(ident)],
                       env=env, capture_output=True, text=True, timeout=110)
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])  # the log lines come first
    assert report["ok"] is False
    faults = [(c["name"], f["account"], f["fault"]) for c in report["checks"] for f in c["faults"]]
    for did, words in expected.items():
        assert any(acc == did and words in fault for _, acc, fault in faults), (did, words, faults)
    assert ("blobs", users["bob"]["did"]) in {(n, a) for n, a, _ in faults}
    # The untouched account is not blamed.
    assert not any(acc == users["dan"]["did"] for _, acc, _ in faults), faults
    # Progress on stderr, one line per step, and the failure named there too.
    print("\n" + p.stderr)
    assert "drill [" in p.stderr and users["cat"]["did"] in p.stderr and "FAILED" in p.stderr
    status = json.loads((data_dir / "backups" / "status.json").read_text())
    assert status["healthy"] is False
    assert any("restore drill" in r for r in status["unhealthy_reasons"])


# -- the daemon's drill schedule -------------------------------------------------------------------

def test_daemon_drills_after_the_first_backup_and_a_failed_drill_marks_backups_unhealthy(tmp_path):
    from squall_backup.daemon import run_daemon

    from .helpers import make_data_dir
    # A volume that is not a PDS's database: the backup works, the drill's PDS cannot boot on it.
    data = make_data_dir(tmp_path)
    settings = settings_for(data, BACKUP_LOCAL_DIR=str(tmp_path / "offsite"), BACKUP_RUN_ON_START="true",
                            BACKUP_DRILL_SCHEDULE="1d")
    assert run_daemon(settings, install_signals=False, max_runs=1) == 0
    status = json.loads((data / "backups" / "status.json").read_text())
    assert status["last_success"] and status["consecutive_failures"] == 0
    drill = status["last_drill"]
    assert drill["ok"] is False and drill["summary"].startswith(("boot:", "integrity:", "repos:")), drill
    assert status["healthy"] is False
    assert any("restore drill" in r for r in status["unhealthy_reasons"]), status["unhealthy_reasons"]
    assert status["drill_schedule"] == "1d"


def test_scheduled_drill_is_skipped_without_the_identity_and_off_means_never(tmp_path, keys):
    from squall_backup.daemon import DrillClock, run_daemon

    from .helpers import make_data_dir
    public, _ = keys
    data = make_data_dir(tmp_path)
    settings = settings_for(data, BACKUP_LOCAL_DIR=str(tmp_path / "offsite"), BACKUP_RUN_ON_START="true",
                            BACKUP_AGE_RECIPIENTS=public)
    run_daemon(settings, install_signals=False, max_runs=1)
    status = json.loads((data / "backups" / "status.json").read_text())
    assert status["last_drill"]["ok"] is None and "BACKUP_AGE_IDENTITY_FILE" in status["last_drill"]["skipped"]
    assert status["healthy"] is True  # a skipped drill is not a failed one
    # Weekly by default, counted from the last drill (a restart does not postpone it).
    engine = Engine(settings)
    clock = DrillClock(engine, settings)
    from squall_backup.manifest import parse_time
    at = parse_time(status["last_drill"]["at"])
    assert clock.next_at(at) == format_time(at + timedelta(weeks=1))
    assert not clock.due(at + timedelta(days=6)) and clock.due(at + timedelta(days=7, seconds=1))
    off = settings_for(data, BACKUP_LOCAL_DIR=str(tmp_path / "offsite"), BACKUP_DRILL_SCHEDULE="off")
    assert DrillClock(Engine(off), off).next_at(at) is None
