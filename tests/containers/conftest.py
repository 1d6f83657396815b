"""Fixtures of the container end-to-end suite (marker `container`).

One session builds the three images once; the LAN stack (compose.yaml with no configuration, as an
operator's first `docker compose up -d`) is shared by the tests that only read from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.net import free_port

from .harness import IMAGES, Engine, EngineUnavailable, RunningStack, Stack, detect_engine, fix_podman_exec, \
    new_workdir, start_https_stack

_TIMINGS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def container_workdir():
    path = new_workdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def engine(request, container_workdir: Path) -> Engine:
    try:
        found = detect_engine()
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    request.config.stash.setdefault(_TIMINGS, {})["engine"] = " ".join(found.compose_cmd)
    return found


@pytest.fixture(scope="session")
def images(request, engine: Engine, container_workdir: Path) -> dict[str, str]:
    timings = request.config.stash.setdefault(_TIMINGS, {})
    for name, (dockerfile, tag) in IMAGES.items():
        timings[f"build {name}"] = engine.build(dockerfile, tag)
    note = fix_podman_exec(engine, IMAGES["pds"][1], container_workdir)
    if note:
        timings["note"] = note
    return {name: tag for name, (_, tag) in IMAGES.items()}


@pytest.fixture(scope="session")
def lan_stack(engine: Engine, images, container_workdir: Path) -> RunningStack:
    """compose.yaml exactly as shipped (no .env): LAN profile on https://localhost."""
    https_port, http_port = free_port(), free_port()
    stack = Stack(engine, overrides=[], workdir=container_workdir, env={
        "SQUALL_HTTPS_PUBLISH": f"127.0.0.1:{https_port}",
        "SQUALL_HTTP_PUBLISH": f"127.0.0.1:{http_port}",
    })
    try:
        yield start_https_stack(stack, https_port=https_port, http_port=http_port)
    finally:
        stack.down()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(_TIMINGS, None)
    if not timings:
        return
    terminalreporter.write_sep("-", "container suite")
    for key, value in timings.items():
        text = f"{value:.1f}s" if isinstance(value, float) else str(value)
        terminalreporter.write_line(f"{key}: {text}")
