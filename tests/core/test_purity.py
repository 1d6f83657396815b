"""The protocol core stays pure: importing any squall.atproto module pulls in no web framework,
database, cloud or HTTP client, and no other part of squall (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN_ROOTS = ("fastapi", "starlette", "sqlite3", "_sqlite3", "aiosqlite", "boto3", "botocore", "httpx", "uvicorn")

# Runs in a fresh interpreter so nothing the test process already imported can hide a leak.
PROBE = r"""
import importlib, json, pkgutil, sys
import squall.atproto as core
names = ["squall.atproto"]
errors = {}
def onerror(name):
    errors[name] = repr(sys.exc_info()[1])
for info in pkgutil.walk_packages(core.__path__, "squall.atproto.", onerror=onerror):
    names.append(info.name)
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        errors[info.name] = repr(exc)
print(json.dumps({"modules": names, "errors": errors, "loaded": sorted(sys.modules)}))
"""


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_core_imports_nothing_outside_the_core():
    result = probe()
    assert result["errors"] == {}, f"core modules failed to import: {result['errors']}"
    # The walk really found the core's modules (it is dynamic: modules added later are covered).
    assert {"squall.atproto.dagcbor", "squall.atproto.cid", "squall.atproto.car"} <= set(result["modules"])
    loaded = result["loaded"]
    forbidden = [m for m in loaded if m.split(".")[0] in FORBIDDEN_ROOTS]
    assert forbidden == [], f"the protocol core imported {forbidden}"
    other_squall = [m for m in loaded if m.startswith("squall.") and not m.startswith("squall.atproto")]
    assert other_squall == [], f"the protocol core imported non-core modules {other_squall}"


def test_the_probe_would_notice_a_forbidden_import():
    # Guard against a probe that can never fail: the same check sees sqlite3 when it is imported.
    out = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert any(m.split(".")[0] in FORBIDDEN_ROOTS for m in json.loads(out.stdout))
