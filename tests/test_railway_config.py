"""railway.json (Config as Code) and .railway/railway.ts (Infrastructure as Code) describe the same
Railway service, and both match the image they deploy."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAILWAY_JSON = json.loads((ROOT / "railway.json").read_text())
RAILWAY_TS = (ROOT / ".railway" / "railway.ts").read_text()
# The keys Railway's Config as Code schema accepts in each section.
KNOWN_BUILD = {"builder", "dockerfilePath", "buildCommand", "watchPatterns", "nixpacksPlan", "nixpacksConfigPath",
               "nixpacksVersion", "railpackVersion"}
KNOWN_DEPLOY = {"startCommand", "preDeployCommand", "numReplicas", "healthcheckPath", "healthcheckTimeout",
                "sleepApplication", "runtime", "restartPolicyType", "restartPolicyMaxRetries", "cronSchedule",
                "region", "multiRegionConfig", "limitOverride", "requiredMountPath", "overlapSeconds",
                "drainingSeconds", "ipv6EgressEnabled"}


def _ts(pattern: str) -> str:
    found = re.findall(pattern, RAILWAY_TS)
    assert len(found) == 1, f"{pattern!r} must appear exactly once in .railway/railway.ts, found {found}"
    return found[0]


def test_railway_json_uses_only_known_keys():
    assert set(RAILWAY_JSON) <= {"$schema", "build", "deploy"}
    assert set(RAILWAY_JSON["build"]) <= KNOWN_BUILD
    assert set(RAILWAY_JSON["deploy"]) <= KNOWN_DEPLOY


def test_build_settings_agree():
    build = RAILWAY_JSON["build"]
    assert build["builder"] == "DOCKERFILE" == _ts(r'builder:\s*"([A-Z]+)"')
    assert build["dockerfilePath"] == "images/pds/Dockerfile" == _ts(r'dockerfilePath:\s*"([^"]+)"')
    assert (ROOT / build["dockerfilePath"]).is_file()


def test_deploy_settings_agree():
    deploy = RAILWAY_JSON["deploy"]
    assert deploy["healthcheckPath"] == "/xrpc/_health" == _ts(r'healthcheck:\s*"([^"]+)"')
    assert deploy["healthcheckTimeout"] == int(_ts(r"healthcheckTimeout:\s*(\d+)"))
    assert deploy["restartPolicyType"] == "ON_FAILURE" == _ts(r'restartPolicyType:\s*"([A-Z_]+)"')
    assert deploy["restartPolicyMaxRetries"] == int(_ts(r"restartPolicyMaxRetries:\s*(\d+)"))
    assert deploy["numReplicas"] == 1 == int(_ts(r"replicas:\s*(\d+)"))


def test_volume_is_mounted_at_the_data_directory():
    mount = _ts(r'volumeMounts:\s*\{\s*"([^"]+)"\s*:')
    assert RAILWAY_JSON["deploy"]["requiredMountPath"] == mount == "/data"
    assert _ts(r'PDS_DATA_DIRECTORY:\s*"([^"]+)"') == mount
    dockerfile = (ROOT / "images/pds/Dockerfile").read_text()
    assert re.search(r"^\s*PDS_DATA_DIRECTORY=/data\b", dockerfile, re.M)
    # Railway refuses images that declare volumes.
    assert not re.search(r"^\s*VOLUME\b", dockerfile, re.M | re.I)


def test_all_in_one_mode_and_trusted_proxy_headers():
    assert _ts(r'SQUALL_MODE:\s*"([^"]+)"') == "all-in-one"
    assert _ts(r'PDS_TRUST_PROXY_HEADERS:\s*"([^"]+)"') == "true"
    # railway.json cannot set variables: the entrypoint recognises Railway by its RAILWAY_* variables.
    entrypoint = (ROOT / "images/pds/entrypoint.sh").read_text()
    assert "RAILWAY_SERVICE_ID" in entrypoint and 'PDS_TRUST_PROXY_HEADERS="${PDS_TRUST_PROXY_HEADERS:-true}"' in entrypoint


def test_healthcheck_path_is_the_one_the_image_checks():
    script = (ROOT / "images/pds/healthcheck.py").read_text()
    assert RAILWAY_JSON["deploy"]["healthcheckPath"] in script
    assert "HEALTHCHECK" in (ROOT / "images/pds/Dockerfile").read_text()


def test_supervisord_runs_both_programs_and_stops_on_fatal():
    conf = (ROOT / "config/supervisord.conf").read_text()
    assert "squall serve" in conf and "squall-backup run" in conf
    assert re.search(r"^events=PROCESS_STATE_FATAL$", conf, re.M)
    assert re.search(r"^nodaemon=true$", conf, re.M)


def test_no_secret_in_either_file():
    for text in (json.dumps(RAILWAY_JSON), RAILWAY_TS):
        for name in ("PDS_JWT_SECRET", "PDS_ADMIN_PASSWORD", "SECRET_ACCESS_KEY", "ROTATION_KEY"):
            assert not re.search(name + r"\w*\s*:\s*\"", text), f"{name} has a literal value"
