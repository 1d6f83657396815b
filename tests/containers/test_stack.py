"""The compose appliance as an operator first meets it: `docker compose up -d` with no configuration.

Everything is reached the way a client would: through Caddy over HTTPS, trusting Caddy's internal
CA (its root certificate is read out of the proxy container's data directory).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from .harness import IMAGES, ROOT, Engine, RunningStack

pytestmark = pytest.mark.container

SECRET_ENV = ("PDS_JWT_SECRET", "PDS_ADMIN_PASSWORD", "PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX",
              "BACKUP_S3_SECRET_ACCESS_KEY")


def test_compose_file_validates(engine: Engine, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = engine.compose(["--env-file", str(empty), "-f", str(ROOT / "compose.yaml"), "config"], timeout=60).stdout
    for service in ("pds:", "proxy:", "backup:"):
        assert service in out
    assert "unless-stopped" in out and "service_healthy" in out


def test_health_and_describe_server_over_https(lan_stack: RunningStack):
    with lan_stack.client() as http:
        health = http.get("/xrpc/_health")
        assert health.status_code == 200 and "version" in health.json()
        described = http.get("/xrpc/com.atproto.server.describeServer")
    assert described.status_code == 200, described.text
    body = described.json()
    assert body["did"] == "did:web:localhost"
    assert ".localhost" in body["availableUserDomains"]


def test_tls_check_answers_for_the_hostname_only(lan_stack: RunningStack):
    with lan_stack.client() as http:
        assert http.get("/tls-check", params={"domain": "localhost"}).status_code == 200
        assert http.get("/tls-check", params={"domain": "stranger.example.com"}).status_code == 404
        assert http.get("/tls-check").status_code == 400


def test_plain_http_redirects_to_https(lan_stack: RunningStack):
    with httpx.Client(trust_env=False, timeout=10) as http:
        response = http.get(f"http://localhost:{lan_stack.http_port}/xrpc/_health")
    assert response.status_code in (301, 308)
    assert response.headers["location"].startswith("https://localhost")


def test_admin_password_is_generated_and_logged_once(lan_stack: RunningStack):
    stack = lan_stack.stack
    stored = stack.read_file("pds", "/data/secrets/admin_password").decode().strip()
    assert len(stored) >= 16
    logs = stack.logs("pds")
    assert logs.count("generated admin password") == 1
    assert stored in logs
    # The backup sidecar shares the volume but never prints it.
    assert stored not in stack.logs("backup")


def test_services_run_as_non_root(lan_stack: RunningStack):
    stack = lan_stack.stack
    engine = stack.engine
    for service in ("pds", "backup", "proxy"):
        container = stack.container(service)
        if engine.cli == "podman":
            rows = engine.run(["top", container, "user", "args"], timeout=30).stdout.splitlines()[1:]
        else:
            rows = engine.run(["top", container, "-eo", "user,args"], timeout=30).stdout.splitlines()[1:]
        assert rows, f"no process in {service}"
        for row in rows:
            user = row.split()[0]
            assert user not in ("root", "0"), f"{service} runs {row!r} as root"


def test_data_volume_is_owned_by_the_shared_uid(lan_stack: RunningStack):
    out = lan_stack.stack.exec("pds", "sh", "-c", "find /data -maxdepth 2 -printf '%u:%g %p\\n'").stdout
    rows = [line for line in out.splitlines() if line]
    assert any(row.endswith("/data/secrets") for row in rows)
    assert any(row.endswith("/data/caddy") for row in rows)  # Caddy's certificates share the volume
    owners = {row.split()[0] for row in rows}
    assert owners <= {"squall:squall", "1000:1000"}, rows


def test_healthcheck_passes_in_the_running_pds(lan_stack: RunningStack):
    healthcheck = lan_stack.stack.engine.image_healthcheck(IMAGES["pds"][1])
    probe = lan_stack.stack.exec("pds", *healthcheck["Test"][1:], check=False)
    assert probe.returncode == 0, probe.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_images_hold_no_secrets(engine: Engine, images, image: str):
    tag = images[image]
    env = json.loads(engine.inspect(tag, "{{json .Config.Env}}"))
    for name in SECRET_ENV:
        assert not any(entry.startswith(name + "=") for entry in env), f"{image} image sets {name}"
    found = engine.run(["run", "--rm", "--user", "0", "--entrypoint", "find", tag, "/data", "/home", "-mindepth", "1",
                        "-not", "-path", "/data/caddy", "-not", "-path", "/home/squall", "-not", "-path", "/home/squall/.*"],
                       timeout=60, check=False)
    assert found.stdout.strip() == "", f"{image} image ships files under /data or /home: {found.stdout}"
    named = engine.run(["run", "--rm", "--user", "0", "--entrypoint", "sh", tag, "-c",
                        "find / -xdev \\( -name jwt_secret -o -name admin_password -o -name '*.k256.hex' "
                        "-o -name .env -o -name pds.env \\) -print 2>/dev/null; true"], timeout=60).stdout
    assert named.strip() == "", f"{image} image contains secret-looking files: {named}"


def test_pds_image_has_healthcheck_and_no_volume(engine: Engine, images):
    config = json.loads(engine.inspect(images["pds"], "{{json .Config}}"))
    test = engine.image_healthcheck(images["pds"])["Test"]
    assert test[0] == "CMD" and any("healthcheck.py" in part for part in test)
    assert not config.get("Volumes"), "a VOLUME instruction breaks Railway"
    script = (ROOT / "images/pds/healthcheck.py").read_text()
    assert "/xrpc/_health" in script and re.search(r'"PORT"', script)


def test_smoke_suite_passes_through_caddy(lan_stack: RunningStack):
    """The black-box smoke checks (read and write: account, image post, firehose over wss, signed
    repo) against the stack, as an operator would run them after `docker compose up -d`."""
    import subprocess
    import sys

    stack = lan_stack.stack
    password = stack.read_file("pds", "/data/secrets/admin_password").decode().strip()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "smoke", "--base-url", lan_stack.base_url, "--ca-cert", str(lan_stack.ca_file),
             "--hostname", "localhost", "--public-url", "https://localhost", f"--admin-password={password}", "--write", "--json", "--timeout", "20"],
            capture_output=True, text=True, timeout=240, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"smoke did not finish: {exc.stdout}") from None
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if c["status"].lower() == "fail"]
    assert proc.returncode == 0 and not failed, failed or proc.stderr
    passed = {c["name"] for c in report["checks"] if c["status"].lower() == "pass"}
    assert {"health", "tls-check", "write.image-post", "write.firehose-commit", "write.repo-car"} <= passed, passed
