"""The service skeleton against a real server: health, configuration errors, first boot, admin."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import pytest

from squall.config import ConfigError, load_settings
from tests.helpers.pds import PdsProcess


def test_health_and_unknown_method(pds):
    with pds.client() as c:
        r = c.get("/xrpc/_health")
        assert r.status_code == 200 and "version" in r.json()
        r = c.get("/xrpc/com.example.nothing.here")
        assert r.status_code == 501
        assert r.json() == {"error": "MethodNotImplemented", "message": "Method Not Implemented"}
        r = c.post("/xrpc/com.atproto.server.describeServer", json={})
        assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"


def test_cors_open_on_xrpc(pds):
    with pds.client() as c:
        r = c.options("/xrpc/com.atproto.server.describeServer",
                      headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] in ("*", "https://app.example")
        r = c.get("/xrpc/com.atproto.server.describeServer", headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "*"


def test_first_boot_secrets_are_private_and_reused(pds, tmp_path):
    secrets = pds.data_dir / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name in ("jwt_secret", "admin_password", "plc_rotation_key.k256.hex"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    password = pds.admin_password()
    assert password in pds.logs()  # printed once on first boot
    assert len(password) == 32 and password.isalnum()  # never starts with "-" on a command line
    # a second server on the same data directory reuses the secrets and does not print the password
    first_log = pds.logs()
    with PdsProcess(pds.data_dir) as other:  # same data directory, its own port and log
        assert other.admin_password() == password
        assert password not in other.logs()
    assert first_log


def test_admin_status_requires_admin(pds):
    with pds.client() as c:
        assert c.get("/xrpc/_admin/status").status_code == 401
        assert c.get("/xrpc/_admin/status", auth=("admin", "wrong-password")).status_code == 401
        r = c.get("/xrpc/_admin/status", auth=("admin", pds.admin_password()))
        assert r.status_code == 200
        body = r.json()
        assert body["database"]["schemaVersion"] >= 1
        assert body["accounts"]["total"] >= 0


def test_admin_status_reads_backup_status(pds):
    (pds.data_dir / "backups").mkdir(exist_ok=True)
    (pds.data_dir / "backups" / "status.json").write_text('{"lastSuccess": {"id": "x"}}')
    with pds.client() as c:
        r = c.get("/xrpc/_admin/status", auth=("admin", pds.admin_password()))
        assert r.json()["backup"] == {"lastSuccess": {"id": "x"}}


@pytest.mark.parametrize("env, var", [
    ({"PDS_PORT": "not-a-port"}, "PDS_PORT"),
    ({"PORT": "99999"}, "PORT"),
    ({"PDS_HOSTNAME": "https://example.com"}, "PDS_HOSTNAME"),
    ({"PDS_HOSTANME": "typo.example"}, "PDS_HOSTANME"),
    ({"PDS_BSKY_APP_VIEW_URL": "https://api.bsky.app"}, "PDS_BSKY_APP_VIEW_DID"),
    ({"PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX": "abc"}, "PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX"),
    ({"PDS_INVITE_REQUIRED": "maybe"}, "PDS_INVITE_REQUIRED"),
    ({"PDS_CRAWLERS": "bsky.network"}, "PDS_CRAWLERS"),
    ({"PDS_DID_METHOD": "key"}, "PDS_DID_METHOD"),
])
def test_bad_settings_name_the_variable(env, var):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value).startswith(var + ":")


def test_port_precedence_and_defaults():
    s, _ = load_settings({"PDS_PORT": "3000", "PORT": "8080"})
    assert s.port == 8080
    s, _ = load_settings({})
    assert s.hostname == "localhost" and s.did_method == "web" and s.port == 2583
    s, _ = load_settings({"PDS_HOSTNAME": "pds.example.com"})
    assert s.did_method == "plc" and s.service_handle_domains == [".pds.example.com"]
    s, warnings = load_settings({"PDS_RATE_LIMIT_BYPASS_KEY": "x"})
    assert any("PDS_RATE_LIMIT_BYPASS_KEY" in w for w in warnings)
    # The e-mail settings are real since issue 13 (squall.mail): read, not warned about.
    s, warnings = load_settings({"PDS_EMAIL_SMTP_URL": "smtps://user:pw@mail.example",
                                 "PDS_EMAIL_FROM_ADDRESS": "pds@mail.example"})
    assert s.email_smtp_url == "smtps://user:pw@mail.example" and not warnings
    assert not any("user:pw" in w for w in warnings)  # the value (a credential) is never echoed


def test_serve_refuses_bad_setting_with_exit_code(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env.update({"PDS_DATA_DIRECTORY": str(tmp_path), "PDS_PORT": "70000"})
    r = subprocess.run([sys.executable, "-m", "squall.cli", "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "PDS_PORT" in r.stderr


def test_newer_schema_is_refused(tmp_path):
    import sqlite3
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "pds.sqlite")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    proc = PdsProcess(data)
    with pytest.raises(RuntimeError) as info:
        proc.start(timeout=15)
    assert "newer" in str(info.value)


def test_admin_bearer_token_checked_against_hash(tmp_path):
    r = subprocess.run([sys.executable, "-m", "squall.cli", "admin", "hash-token"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    token = r.stdout.split("token (shown once, give it to your admin tools): ")[1].split()[0]
    digest = r.stdout.split("PDS_ADMIN_TOKEN_HASH=")[1].strip()
    assert digest.startswith("$argon2id$") and token not in digest
    with PdsProcess(tmp_path / "data", env_extra={"PDS_ADMIN_TOKEN_HASH": digest}) as pds:
        with pds.client() as c:
            assert c.get("/xrpc/_admin/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            assert c.get("/xrpc/_admin/status", headers={"Authorization": "Bearer not-the-token-at-all"}).status_code == 401
            # with only a hash configured there is no Basic password at all
            assert not (pds.data_dir / "secrets" / "admin_password").exists()
            assert c.get("/xrpc/_admin/status", auth=("admin", "anything")).status_code == 401
        assert token not in pds.logs()
