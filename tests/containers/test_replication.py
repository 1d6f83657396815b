"""Continuous replication (Litestream) and the restore drill in the images.

Compose: the backup service replicates to a real S3 API server (moto, in its own container), the PDS
leaves checkpoints to Litestream, `squall-backup drill` passes inside the backup image (which carries
the PDS package for it), then the stack is killed with SIGKILL and its volume deleted, and a second
stack restored with `restore --at latest` serves the post written last.

Railway (all-in-one under supervisord): Litestream runs under the backup program, replicating to a
directory target, and a point-in-time restore and a drill work inside the same container.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.helpers.net import free_port

from .harness import Engine, Stack, start_https_stack, wait_until
from .test_lifecycle import BUCKET, s3  # noqa: F401 - the moto container fixture

pytestmark = pytest.mark.container

PREFIX = "rep/"


def _replicate_override(workdir: Path) -> Path:
    path = workdir / f"replicate-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(
        "services:\n"
        "  pds:\n    environment:\n      BACKUP_REPLICATE: \"true\"\n"
        "  backup:\n    environment:\n      BACKUP_REPLICATE: \"true\"\n      BACKUP_REPLICATE_UNENCRYPTED: \"true\"\n"
        f"      BACKUP_S3_PREFIX: {PREFIX}\n      BACKUP_RUN_ON_START: \"true\"\n")
    return path


def _stack(engine: Engine, overrides: list[Path], workdir: Path):
    https_port, http_port = free_port(), free_port()
    stack = Stack(engine, overrides=overrides, workdir=workdir, env={
        "SQUALL_HTTPS_PUBLISH": f"127.0.0.1:{https_port}", "SQUALL_HTTP_PUBLISH": f"127.0.0.1:{http_port}"})
    return stack, https_port, http_port


def _status(stack: Stack) -> dict:
    return json.loads(stack.read_file("backup", "/data/backups/status.json"))


def _post(http, did: str, jwt: str, text: str) -> str:
    r = http.post("/xrpc/com.atproto.repo.createRecord", headers={"Authorization": f"Bearer {jwt}"},
                  json={"repo": did, "collection": "app.bsky.feed.post",
                        "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-05-01T12:00:00Z"}})
    assert r.status_code == 200, r.text
    return r.json()["uri"].split("/", 3)[3]


def test_compose_replicates_drills_and_restores_after_the_volume_is_lost(engine: Engine, s3, container_workdir):
    client, s3_override = s3
    overrides = [s3_override, _replicate_override(container_workdir)]
    stack, https_port, http_port = _stack(engine, overrides, container_workdir)
    try:
        running = start_https_stack(stack, https_port=https_port, http_port=http_port)
        out = stack.exec("pds", "squall", "account", "create", "rep@example.com", "rep", timeout=60).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        did, password = fields["did"].strip(), fields["password"].split()[0]
        with running.client() as http:
            jwt = http.post("/xrpc/com.atproto.server.createSession",
                            json={"identifier": "rep.localhost", "password": password}).json()["accessJwt"]
            _post(http, did, jwt, "before the snapshot")
        # The PDS read BACKUP_REPLICATE from its environment and left checkpoints to Litestream.
        autockpt = stack.exec("pds", "/opt/venv/bin/python", "-c", "from squall.config import load_settings; "
                              "print(load_settings()[0].sqlite_wal_autocheckpoint)").stdout.strip()
        assert autockpt == "0"
        status = wait_until("replication running with a snapshot", lambda: (lambda s: s if (
            (s.get("replication") or {}).get("replica_txid") and s.get("last_success")) else None)(_status(stack)),
            timeout=120, interval=2)
        assert status["replication"]["state"] == "running" and status["replication"]["encrypted"] is False
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "litestream/")
                .get("Contents", [])]
        assert keys and all(k.startswith(PREFIX + "litestream/pds.sqlite/") for k in keys), keys
        # A snapshot with the account in it (the one taken at start predates it), then the restore drill
        # inside the backup image: it boots squall serve on the restored copy.
        now = stack.exec("backup", "squall-backup", "now", timeout=180, check=False)
        assert now.returncode == 0, now.stdout[-2000:] + now.stderr[-2000:]
        drill = stack.exec("backup", "squall-backup", "drill", "--quiet", timeout=300, check=False)
        assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-2000:]
        report = json.loads(drill.stdout.strip().splitlines()[-1])
        assert report["ok"] and report["accounts"] == 1
        assert _status(stack)["last_drill"]["ok"] is True and _status(stack)["healthy"] is True
        # A post after the snapshot: only the replica has it.
        with running.client() as http:
            last = _post(http, did, jwt, "only in the replica")
        before = _status(stack)["replication"]["replica_txid"]
        wait_until("the replica to catch up", lambda: (lambda r: r.get("replica_txid", 0) > before
                   and r.get("lag_seconds") == 0)(_status(stack)["replication"]), timeout=60, interval=1)
        for service in ("pds", "backup"):
            engine.run(["kill", "-s", "KILL", stack.container(service)], timeout=30, check=False)
    finally:
        stack.down()  # the volume is deleted with the stack

    second, https_port, http_port = _stack(engine, overrides, container_workdir)
    try:
        restored = second.compose("run", "--rm", "--no-deps", "backup", "squall-backup", "restore", "--at",
                                  "latest", "--target", "/data", timeout=240, check=False)
        assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-2000:]
        running = start_https_stack(second, https_port=https_port, http_port=http_port)
        assert "generated admin password" not in second.logs("pds")  # secrets came from the snapshot
        with running.client() as http:
            collection, rkey = last.split("/")
            got = http.get("/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": collection,
                                                                       "rkey": rkey})
            assert got.status_code == 200, got.text
            assert got.json()["value"]["text"] == "only in the replica"
            assert http.post("/xrpc/com.atproto.server.createSession",
                             json={"identifier": "rep.localhost", "password": password}).status_code == 200
    finally:
        second.down()


@pytest.fixture(scope="module")
def railway_replicating(engine: Engine, images, container_workdir: Path):
    image = images["pds"]
    data = container_workdir / f"railway-rep-{uuid.uuid4().hex[:8]}"
    replica = container_workdir / f"railway-replica-{uuid.uuid4().hex[:8]}"
    data.mkdir()
    replica.mkdir()
    engine.run(["run", "--rm", "--user", "0", "--entrypoint", "chown", "-v", f"{replica}:/vol", image, "1000:1000",
                "/vol"], timeout=60)
    name = f"squall-railway-rep-{uuid.uuid4().hex[:8]}"
    port = free_port()
    engine.run(["run", "-d", "--name", name, "-e", "PORT=8080", "-e", "RAILWAY_SERVICE_ID=test-service",
                "-e", "BACKUP_RUN_ON_START=true", "-e", "BACKUP_REPLICATE=true",
                "-e", "BACKUP_REPLICATE_UNENCRYPTED=true", "-e", "BACKUP_LOCAL_DIR=/replica",
                "-v", f"{data}:/data", "-v", f"{replica}:/replica", "-p", f"127.0.0.1:{port}:8080", image],
               timeout=60)
    try:
        yield engine, name, data, replica
    finally:
        engine.run(["rm", "-f", "-t", "5", name], timeout=60, check=False)
        for path in (data, replica):
            engine.run(["run", "--rm", "--user", "0", "--entrypoint", "sh", "-v", f"{path}:/vol", image, "-c",
                        "rm -rf /vol/* /vol/.[!.]*"], timeout=60, check=False)
            shutil.rmtree(path, ignore_errors=True)


def test_railway_mode_replicates_under_supervisord(railway_replicating):
    engine, name, data, replica = railway_replicating
    status_file = data / "backups" / "status.json"

    def replicating():
        if not status_file.exists():
            return None
        s = json.loads(status_file.read_text())
        return s if (s.get("replication") or {}).get("replica_txid") and s.get("last_success") else None

    status = wait_until("replication in the all-in-one container", replicating, timeout=180, interval=2)
    assert status["replication"]["replica"] == "/replica/litestream/pds.sqlite"
    ps = engine.run(["exec", name, "ps", "-eo", "user:12,args"], timeout=30, check=False).stdout
    if "litestream" not in ps:  # procps may be absent from the slim image: read /proc instead
        ps = engine.run(["exec", name, "sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"],
                        timeout=30).stdout
    assert "litestream replicate -config /data/backups/litestream.yml" in ps, ps
    assert any(replica.glob("litestream/pds.sqlite/**/*.ltx"))
    restored = engine.run(["exec", name, "squall-backup", "restore", "--at", "latest", "--target", "/tmp/restored"],
                          timeout=240, check=False)
    assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-2000:]
    drill = engine.run(["exec", name, "squall-backup", "drill", "--quiet", "--from", "local"], timeout=300,
                       check=False)
    assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-2000:]
