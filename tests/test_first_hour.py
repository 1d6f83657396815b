"""An operator's first hour (issue 18): help without a subcommand, the README's notes for podman
and Docker, the smoke suite's own requirements, the admin-password sentence, SPDX licences."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("argv, expected", [
    (["-m", "squall.cli"], ["serve", "account", "invite", "admin"]),
    (["-m", "squall.cli", "account"], ["create", "delete", "delete-token", "plc-token", "takedown"]),
    (["-m", "squall.cli", "invite"], ["create"]),
    (["-m", "squall.cli", "admin"], ["hash-token"]),
    (["-m", "squall_backup.cli"], ["run", "now", "list", "verify", "restore", "prune", "keygen", "settings"]),
])
def test_a_command_group_without_subcommand_prints_its_help(argv, expected):
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "positional arguments" in r.stdout and "the following arguments are required" not in r.stderr
    for name in expected:
        assert re.search(rf"^\s+{re.escape(name)}\s", r.stdout, re.M), name


@pytest.mark.parametrize("project", ["images/pds", "images/backup"])
def test_licence_is_an_spdx_expression(project):
    data = tomllib.loads((ROOT / project / "pyproject.toml").read_text())
    assert data["project"]["license"] == "MIT"
    # the string form needs setuptools 77 (older ones reject it, newer ones warn on the table form)
    assert "setuptools>=77" in data["build-system"]["requires"]


def _section(title: str) -> str:
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^#{{1,3}} )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(2)


def test_readme_has_podman_and_docker_notes():
    notes = _section("Podman and Docker")
    for needle in ("--format docker", "HEALTHCHECK", "ca-certificates.crt", "podman cp", "systemd",
                   "name: squall", "-p "):
        assert needle in notes, needle


def test_readme_says_the_admin_password_is_printed_once():
    health = _section("Health and status")
    assert "passwords, tokens and secrets never reach them" in health
    assert "except the generated admin password, printed once" in health


def test_readme_documents_backup_keys_end_to_end():
    backups = _section("Backups")
    for needle in ("squall-backup keygen", "BACKUP_AGE_IDENTITY_FILE", "podman cp", "--identity",
                   "NOT verified"):
        assert needle in backups, needle


def test_smoke_requirements_cover_its_imports():
    requirements = (ROOT / "smoke/requirements.txt").read_text()
    listed = {line.split("=")[0].strip().lower() for line in requirements.splitlines()
              if line.strip() and not line.startswith(("#", "-"))}
    assert "-c ../images/constraints.txt" in requirements and "./images/pds" in requirements
    imported = set()
    for path in (ROOT / "smoke").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert third_party - {"squall"} == listed  # squall: ./images/pds, named in the install line
    assert "smoke/requirements.txt" in README and "smoke/requirements.txt" in (ROOT / "smoke/README.md").read_text()
