"""An operator's life with the appliance, end to end, through Caddy over HTTPS:

first account with `compose exec pds squall account create`, a post with an image, that commit on
the firehose over wss://, a backup into a real S3 API server (moto, in its own container), a
restore of it into a FRESH volume, and a second stack booted on that volume serving the post, the
blob and a repository whose commit signature verifies.

The steps share one module-scoped state and run in file order; a step whose prerequisite failed
fails on its missing state rather than on something unrelated.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import pytest
import websockets.sync.client as ws_client
from botocore.config import Config

from smoke.write_checks import tiny_png
from squall.firehose.frames import decode_frame
from tests.helpers.net import free_port
from tests.helpers.verify import fetch_did_doc, signing_key, verify_repo_car

from .harness import ROOT, Engine, RunningStack, Stack, ssl_context, start_https_stack, wait_until

pytestmark = pytest.mark.container

BUCKET = "squall-backups"
S3_KEYS = {"BACKUP_S3_ACCESS_KEY_ID": "test", "BACKUP_S3_SECRET_ACCESS_KEY": "test-secret"}


@pytest.fixture(scope="module")
def s3(engine: Engine, images, container_workdir: Path):
    """moto's S3 server in its own container and network; both stacks' backup services join it."""
    tag = "squall-test-s3:test"
    engine.build(str(ROOT / "tests/containers/moto/Dockerfile"), tag, context=ROOT / "tests/containers/moto")
    suffix = uuid.uuid4().hex[:8]
    network, name, port = f"squall-t-s3net-{suffix}", f"squall-t-s3-{suffix}", free_port()
    engine.run(["network", "create", network], timeout=60)
    try:
        engine.run(["run", "-d", "--name", name, "--network", network, "-p", f"127.0.0.1:{port}:5000", tag],
                   timeout=60)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test-secret",
                              config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10))
        wait_until("moto S3 server", lambda: client.list_buckets() is not None, timeout=60)
        client.create_bucket(Bucket=BUCKET)
        override = container_workdir / f"s3-{suffix}.yaml"
        env_lines = "".join(f"      {k}: {v}\n" for k, v in {
            "BACKUP_S3_ENDPOINT": f"http://{name}:5000", "BACKUP_S3_BUCKET": BUCKET,
            "BACKUP_S3_REGION": "us-east-1", **S3_KEYS}.items())
        override.write_text(
            "services:\n  backup:\n    environment:\n" + env_lines +
            "    networks:\n      - default\n      - s3net\n"
            f"networks:\n  default: {{}}\n  s3net:\n    external: true\n    name: {network}\n")
        yield client, override
    finally:
        engine.run(["rm", "-f", "-t", "0", name], timeout=60, check=False)
        engine.run(["network", "rm", "-f", network], timeout=60, check=False)


def _stack(engine: Engine, override: Path, workdir: Path) -> tuple[Stack, int, int]:
    https_port, http_port = free_port(), free_port()
    stack = Stack(engine, overrides=[override], workdir=workdir, env={
        "SQUALL_HTTPS_PUBLISH": f"127.0.0.1:{https_port}", "SQUALL_HTTP_PUBLISH": f"127.0.0.1:{http_port}"})
    return stack, https_port, http_port


@pytest.fixture(scope="module")
def primary(engine: Engine, s3, container_workdir: Path):
    stack, https_port, http_port = _stack(engine, s3[1], container_workdir)
    try:
        yield start_https_stack(stack, https_port=https_port, http_port=http_port)
    finally:
        stack.down()


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def test_operator_creates_the_first_account_with_compose_exec(primary: RunningStack, state: dict):
    out = primary.stack.exec("pds", "squall", "account", "create", "alice@example.com", "alice", timeout=60).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    did, handle = fields["did"].strip(), fields["handle"].strip()
    password = fields["password"].split()[0]
    # No configuration, nothing published to the PLC directory: a did:web under localhost.
    assert handle == "alice.localhost" and did == "did:web:alice.localhost"
    with primary.client() as http:
        session = http.post("/xrpc/com.atproto.server.createSession",
                            json={"identifier": handle, "password": password})
        assert session.status_code == 200, session.text
        # The handle's own name is approved for a certificate (the public profile's on-demand TLS).
        assert http.get("/tls-check", params={"domain": handle}).status_code == 200
    state.update(did=did, handle=handle, password=password, jwt=session.json()["accessJwt"])
    invite = primary.stack.exec("pds", "squall", "invite", "create", timeout=60).stdout.strip()
    assert invite and " " not in invite


def test_post_with_an_image_reaches_the_firehose_over_wss(primary: RunningStack, state: dict):
    auth = {"Authorization": f"Bearer {state['jwt']}"}
    image = tiny_png()
    url = f"wss://localhost:{primary.https_port}/xrpc/com.atproto.sync.subscribeRepos"
    with primary.client() as http, ws_client.connect(url, ssl=ssl_context(primary.ca_file), open_timeout=15,
                                                      max_size=None) as firehose:
        uploaded = http.post("/xrpc/com.atproto.repo.uploadBlob", content=image,
                             headers={**auth, "Content-Type": "image/png"})
        assert uploaded.status_code == 200, uploaded.text
        blob = uploaded.json()["blob"]
        record = {"$type": "app.bsky.feed.post", "text": "hello from the appliance",
                  "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                  "embed": {"$type": "app.bsky.embed.images",
                            "images": [{"alt": "one pixel", "image": blob}]}}
        created = http.post("/xrpc/com.atproto.repo.createRecord", headers=auth, json={
            "repo": state["did"], "collection": "app.bsky.feed.post", "record": record})
        assert created.status_code == 200, created.text
        uri = created.json()["uri"]
        path = uri.split("/", 3)[3]
        deadline = time.monotonic() + 20
        commit = None
        while commit is None and time.monotonic() < deadline:
            header, body = decode_frame(firehose.recv(timeout=max(0.1, deadline - time.monotonic())))
            if header.get("t") == "#commit" and body.get("repo") == state["did"] and \
                    any(op.get("path") == path for op in body.get("ops", [])):
                commit = body
    assert commit is not None, "the post's commit did not arrive on the firehose"
    assert commit["rev"] == created.json()["commit"]["rev"]
    state.update(uri=uri, path=path, image=image, blob_cid=blob["ref"]["$link"], rev=commit["rev"])


def test_backup_lands_in_the_s3_server(primary: RunningStack, s3, state: dict):
    assert "path" in state, "needs the post"
    client, _ = s3
    result = primary.stack.exec("backup", "squall-backup", "now", timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(state["blob_cid"] in key for key in keys), keys  # blobs uploaded by content address
    listed = primary.stack.exec("backup", "squall-backup", "list", "--json", timeout=60).stdout
    assert '"id"' in listed
    state["backed_up"] = True


def test_restore_into_a_fresh_volume_and_a_second_stack_serves_the_post(engine: Engine, s3, container_workdir: Path,
                                                                       state: dict):
    assert state.get("backed_up"), "needs the backup"
    stack, https_port, http_port = _stack(engine, s3[1], container_workdir)
    try:
        # A new project has a new, empty volume; restore into it before the PDS ever starts.
        restored = stack.compose("run", "--rm", "--no-deps", "backup", "squall-backup", "restore", "latest",
                                 "--target", "/data", timeout=240, check=False)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        second = start_https_stack(stack, https_port=https_port, http_port=http_port)
        # The secrets came back with the data: no new admin password was generated.
        assert "generated admin password" not in stack.logs("pds")
        with second.client() as http:
            collection, rkey = state["path"].split("/")
            got = http.get("/xrpc/com.atproto.repo.getRecord",
                           params={"repo": state["did"], "collection": collection, "rkey": rkey})
            assert got.status_code == 200, got.text
            assert got.json()["value"]["text"] == "hello from the appliance"
            blob = http.get("/xrpc/com.atproto.sync.getBlob", params={"did": state["did"], "cid": state["blob_cid"]})
            assert blob.status_code == 200 and blob.content == state["image"]
            car = http.get("/xrpc/com.atproto.sync.getRepo", params={"did": state["did"]})
            assert car.status_code == 200
            key = signing_key(fetch_did_doc(state["did"], pds=http))
            repo = verify_repo_car(car.content, state["did"], key)
            assert repo.rev == state["rev"] and state["path"] in repo.records
            # The restored account still logs in with its password.
            session = http.post("/xrpc/com.atproto.server.createSession",
                                json={"identifier": state["handle"], "password": state["password"]})
            assert session.status_code == 200, session.text
    finally:
        stack.down()
