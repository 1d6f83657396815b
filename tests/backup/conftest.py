"""Fixtures of the backup tests: a real S3 API server (moto, server mode) on a loopback port and a
fault-injecting proxy in front of it (both from tests/helpers/s3.py, shared with the PDS blob tests)."""

from __future__ import annotations

import signal
import threading

import pytest

from tests.helpers.s3 import FaultProxy, S3Server

from .helpers import make_data_dir

TEST_TIME_LIMIT = 120  # seconds; a hung test fails instead of blocking the suite


@pytest.fixture(autouse=True)
def _time_limit():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIME_LIMIT}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server(s3_server) -> str:
    return s3_server.endpoint


@pytest.fixture
def bucket(s3_server) -> str:
    return s3_server.new_bucket("squall-backups")


@pytest.fixture
def s3(s3_server):
    return s3_server.client()


@pytest.fixture
def proxy(s3_server):
    p = FaultProxy(s3_server.address)
    yield p
    p.close()


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path)
