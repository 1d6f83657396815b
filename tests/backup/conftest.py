"""Fixtures of the backup tests: a real S3 API server (moto, server mode) on a loopback port."""

from __future__ import annotations

import itertools
import signal
import threading

import boto3
import pytest
from moto.server import ThreadedMotoServer

from .helpers import FaultProxy, make_data_dir

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
def moto_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


_counter = itertools.count()


@pytest.fixture
def bucket(moto_server) -> str:
    name = f"squall-backups-{next(_counter)}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                      aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-value-123")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(moto_server):
    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                        aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-value-123")


@pytest.fixture
def proxy(moto_server):
    host, port = moto_server.removeprefix("http://").split(":")
    p = FaultProxy((host, int(port)))
    yield p
    p.close()


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path)
