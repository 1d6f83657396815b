"""Fixtures shared by the service tests: one ``squall serve`` per test module, a client of it, the
operator's admin credentials and a PLC directory double.

A module configures its server by overriding ``pds_env`` (module scope), e.g. with
``plc.pds_env()`` for did:plc accounts; a module that needs more than settings overrides ``pds``.
"""

from __future__ import annotations

import pytest

from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble


@pytest.fixture(scope="module")
def plc():
    with PlcDirectoryDouble() as directory:
        yield directory


@pytest.fixture(scope="module")
def pds_env() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def pds(request, tmp_path_factory, pds_env):
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with PdsProcess(tmp_path_factory.mktemp(name) / "data", env_extra=pds_env) as proc:
        yield proc


@pytest.fixture(scope="module")
def c(pds):
    with pds.client() as client:
        yield client


@pytest.fixture(scope="module")
def admin(pds) -> tuple[str, str]:
    return ("admin", pds.admin_password())
