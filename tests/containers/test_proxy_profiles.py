"""The proxy image picks its Caddyfile from the environment, and each profile adapts to the Caddy
configuration the appliance relies on (checked on the image's own Caddy with `print-config`)."""

from __future__ import annotations

import json

import pytest

from .harness import Engine

pytestmark = pytest.mark.container


def _proxy(engine: Engine, images, *args: str, env: dict[str, str], check: bool = True):
    flags = [part for name, value in env.items() for part in ("-e", f"{name}={value}")]
    return engine.run(["run", "--rm", *flags, images["proxy"], *args], timeout=60, check=check)


def _config(engine: Engine, images, **env: str) -> dict:
    return json.loads(_proxy(engine, images, "print-config", env=env).stdout)


def _hosts(config: dict) -> set[str]:
    return {host for server in config["apps"]["http"]["servers"].values() for route in server["routes"]
            for match in route.get("match", []) for host in match.get("host", [])}


def _upstreams(config: dict) -> set[str]:
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                found.update(u["dial"] for u in node["upstreams"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def test_public_profile_asks_the_pds_before_every_certificate(engine: Engine, images):
    config = _config(engine, images, PDS_HOSTNAME="PDS.Example.com", ACME_EMAIL="ops@example.com")
    assert _hosts(config) == {"pds.example.com", "*.pds.example.com"}
    assert _upstreams(config) == {"pds:2583"}
    automation = config["apps"]["tls"]["automation"]
    on_demand = automation["on_demand"]
    # Caddy 2.6 writes `ask`; newer versions express the same as a permission module.
    endpoint = on_demand.get("ask") or on_demand.get("permission", {}).get("endpoint")
    assert endpoint == "http://pds:2583/tls-check"
    policy, = automation["policies"]
    assert policy["on_demand"] is True
    assert {issuer.get("email") for issuer in policy["issuers"]} == {"ops@example.com"}


def test_public_profile_needs_an_acme_email(engine: Engine, images):
    result = _proxy(engine, images, "print-config", env={"PDS_HOSTNAME": "pds.example.com"}, check=False)
    assert result.returncode == 2 and "ACME_EMAIL" in result.stderr
    result = _proxy(engine, images, "print-config", check=False,
                    env={"PDS_HOSTNAME": "pds.example.com", "ACME_EMAIL": "not an address"})
    assert result.returncode == 2 and "not an e-mail address" in result.stderr


def test_public_profile_refuses_a_local_name(engine: Engine, images):
    result = _proxy(engine, images, "print-config", check=False,
                    env={"PDS_HOSTNAME": "localhost", "SQUALL_PROXY_PROFILE": "public", "ACME_EMAIL": "a@example.com"})
    assert result.returncode == 2 and "local" in result.stderr


@pytest.mark.parametrize("hostname, hosts", [
    ("localhost", {"localhost", "*.localhost"}),
    ("pds.lan", {"pds.lan", "*.pds.lan"}),
    ("nas", {"nas", "*.nas"}),
    ("192.168.1.10", {"192.168.1.10"}),
])
def test_lan_profile_uses_the_internal_ca(engine: Engine, images, hostname: str, hosts: set[str]):
    config = _config(engine, images, PDS_HOSTNAME=hostname)
    assert _hosts(config) == hosts
    assert _upstreams(config) == {"pds:2583"}
    issuers = [issuer["module"] for policy in config["apps"]["tls"]["automation"]["policies"]
               for issuer in policy.get("issuers", [])]
    assert issuers and set(issuers) == {"internal"}
    assert "on_demand" not in config["apps"]["tls"]["automation"]


@pytest.mark.parametrize("hostname", ["https://pds.example.com", "pds.example.com/x", "a b", "x{ }", ".example.com"])
def test_a_hostname_that_is_not_one_is_refused(engine: Engine, images, hostname: str):
    result = _proxy(engine, images, "print-config", env={"PDS_HOSTNAME": hostname, "ACME_EMAIL": "a@example.com"},
                    check=False)
    assert result.returncode == 2 and "PDS_HOSTNAME" in result.stderr
