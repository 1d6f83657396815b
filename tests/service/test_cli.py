"""The operator commands ``squall invite create`` and ``squall account create`` against a running PDS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.accounts import assert_error, signup
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess


@pytest.fixture(scope="module")
def pds_env():
    return {"PDS_INVITE_REQUIRED": "true"}


def squall(pds: PdsProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    run_env = pds.env() if env is None else env
    return subprocess.run([sys.executable, "-m", "squall.cli", *args], env=run_env, capture_output=True,
                          text=True, timeout=60)


def fields(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip().split("   ")[0]
    return out


def test_invite_create(pds):
    r = squall(pds, "invite", "create", "--uses", "2")
    assert r.returncode == 0, r.stderr
    code = r.stdout.strip()
    assert code.startswith("localhost-")
    with pds.client() as c:
        assert signup(c, "amy", invite=code).status_code == 200
        assert signup(c, "ben", invite=code).status_code == 200
        assert_error(signup(c, "cat", invite=code), 400, "InvalidInviteCode")


def test_account_create_generates_a_password(pds):
    r = squall(pds, "account", "create", "dora@example.com", "dora")
    assert r.returncode == 0, r.stderr
    out = fields(r.stdout)
    assert out["handle"] == "dora.localhost" and out["did"] == "did:web:dora.localhost"
    assert len(out["password"]) >= 16
    with pds.client() as c:
        login = c.post("/xrpc/com.atproto.server.createSession",
                       json={"identifier": "dora@example.com", "password": out["password"]})
        assert login.status_code == 200, login.text
        assert login.json()["did"] == out["did"]
    assert out["password"] not in pds.logs()


def test_account_create_with_password_and_errors(pds):
    r = squall(pds, "account", "create", "eve@example.com", "eve.localhost", "--password", "chosen-password-1")
    assert r.returncode == 0, r.stderr
    assert "password" not in fields(r.stdout)  # not echoed back when the operator chose it
    with pds.client() as c:
        assert c.post("/xrpc/com.atproto.server.createSession",
                      json={"identifier": "eve.localhost", "password": "chosen-password-1"}).status_code == 200
    # the server's refusal is printed with its error name, and the exit code says so
    r = squall(pds, "account", "create", "eve2@example.com", "eve", "--password", "chosen-password-2")
    assert r.returncode == 1 and "HandleNotAvailable" in r.stderr
    r = squall(pds, "account", "create", "not-an-email", "frida")
    assert r.returncode == 1 and "InvalidRequest" in r.stderr


def test_admin_password_from_environment_and_wrong_one(pds):
    env = pds.env()
    env["PDS_ADMIN_PASSWORD"] = pds.admin_password()
    assert squall(pds, "invite", "create", env=env).returncode == 0
    env["PDS_ADMIN_PASSWORD"] = "definitely-wrong"
    r = squall(pds, "invite", "create", env=env)
    assert r.returncode == 1 and "AuthenticationRequired" in r.stderr


def test_no_server_running(pds):
    env = pds.env()
    env["PDS_PORT"] = str(free_port())
    r = squall(pds, "invite", "create", env=env)
    assert r.returncode == 1 and "cannot reach the PDS" in r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env["PDS_DATA_DIRECTORY"] = str(pds.data_dir.parent / "empty")
    r = squall(pds, "invite", "create", env=env)
    assert r.returncode == 1 and "no admin password" in r.stderr
