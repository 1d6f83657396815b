"""config/pds.env.example documents every variable the images read, and works as a .env as is."""

from __future__ import annotations

import re

from squall.config import Settings, load_settings
from squall_backup.settings import KNOWN_VARIABLES, load_settings as load_backup_settings

from .harness import ROOT

EXAMPLE = (ROOT / "config/pds.env.example").read_text()
# NAME= lines, set or commented out ("#NAME=").
DOCUMENTED = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", EXAMPLE, re.M))
DEPLOYMENT = {"ACME_EMAIL", "SQUALL_PROXY_PROFILE", "SQUALL_HTTP_PUBLISH", "SQUALL_HTTPS_PUBLISH", "SQUALL_TAG",
              "SQUALL_MODE"}


def _active_values() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", EXAMPLE, re.M))


def test_every_pds_setting_is_documented():
    fields = {f"PDS_{name.upper()}" for name in Settings.model_fields}
    assert fields - DOCUMENTED == set()


def test_every_backup_setting_is_documented():
    assert set(KNOWN_VARIABLES) - DOCUMENTED == set()


def test_every_documented_name_is_read_by_something():
    fields = {f"PDS_{name.upper()}" for name in Settings.model_fields}
    unknown = DOCUMENTED - fields - set(KNOWN_VARIABLES) - DEPLOYMENT
    assert unknown == set()


def test_every_compose_variable_is_documented():
    compose = (ROOT / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose))
    assert used and used - DOCUMENTED == set()
    assert {"PDS_HOSTNAME", "ACME_EMAIL"} <= used


def test_the_example_is_a_valid_env_file_as_shipped():
    env = _active_values()
    settings, _ = load_settings(env)
    assert settings.hostname == "localhost" and settings.did_method == "web"
    backup = load_backup_settings({**env, "PDS_DATA_DIRECTORY": "/data"})
    assert backup.schedule == "1h"


def test_the_example_sets_no_secret():
    env = _active_values()
    for name, value in env.items():
        if any(word in name for word in ("SECRET", "PASSWORD", "PRIVATE_KEY", "TOKEN")):
            assert value == "", f"{name} has a value in the example"
