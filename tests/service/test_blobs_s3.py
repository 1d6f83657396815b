"""A real ``squall serve`` storing blobs in S3: moto's S3 server on loopback, reached through a
fault-injecting proxy. Round trip, ranges, collection of a deleted record's blob, and an S3 that
fails (retries succeed) or keeps failing (clear error, nothing half-stored)."""

from __future__ import annotations

import os
import time

import pytest

from tests.helpers.accounts import assert_error, bearer, db_rows, signup
from tests.helpers.pds import PdsProcess
from tests.helpers.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FaultProxy, S3Server, is_put_of
from tests.service.test_blobs_http import (DELETE, GET_BLOB, UPLOAD, create, image_post, png, raw_cid,
                                           temp_files, wait_until)

GRACE = 2


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(s3):
    p = FaultProxy(s3.address, hang_seconds=10)
    yield p
    p.close()


@pytest.fixture(scope="module")
def bucket(s3):
    return s3.new_bucket("pds-blobs")


@pytest.fixture(scope="module")
def pds(tmp_path_factory, proxy, bucket):
    env = {
        "PDS_BLOBSTORE_S3_BUCKET": bucket,
        "PDS_BLOBSTORE_S3_ENDPOINT": proxy.endpoint,
        "PDS_BLOBSTORE_S3_REGION": REGION,
        "PDS_BLOBSTORE_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "PDS_BLOBSTORE_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "PDS_BLOBSTORE_S3_FORCE_PATH_STYLE": "true",
        "PDS_BLOBSTORE_S3_UPLOAD_TIMEOUT_MS": "3000",
        "PDS_BLOB_GC_GRACE_SECONDS": str(GRACE),
        "SQUALL_BLOBS_S3_MAX_ATTEMPTS": "3",
    }
    with PdsProcess(tmp_path_factory.mktemp("blobs-s3") / "data", env_extra=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def c(pds):
    with pds.client(timeout=30.0) as client:
        yield client


@pytest.fixture
def user(c, proxy):
    proxy.clear()
    r = signup(c, f"s3user{time.monotonic_ns() % 10**9}")
    assert r.status_code == 200, r.text
    body = r.json()
    yield {"did": body["did"], "headers": bearer(body["accessJwt"])}
    proxy.clear()


def upload(c, user, data: bytes):
    return c.post(UPLOAD, content=data, headers={**user["headers"], "Content-Type": "application/octet-stream"})


def test_round_trip_through_s3(pds, c, s3, bucket, user):
    data = png(300_000)
    r = upload(c, user, data)
    assert r.status_code == 200, r.text
    blob = r.json()["blob"]
    cid = raw_cid(data)
    assert blob["ref"]["$link"] == cid and blob["mimeType"] == "image/png"
    assert any(k.startswith("tmp/") for k in s3.keys(bucket))
    assert not (pds.data_dir / "blobs").exists() or not any((pds.data_dir / "blobs").iterdir())

    r = create(c, user, image_post(blob))
    assert r.status_code == 200, r.text
    assert f"{user['did']}/{cid}" in s3.keys(bucket)
    assert not any(k.startswith("tmp/") for k in s3.keys(bucket))
    assert s3.client().get_object(Bucket=bucket, Key=f"{user['did']}/{cid}")["Body"].read() == data

    r = c.get(GET_BLOB, params={"did": user["did"], "cid": cid})
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "image/png" and r.headers["content-length"] == str(len(data))
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
    r = c.get(GET_BLOB, params={"did": user["did"], "cid": cid}, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert temp_files(pds) == []  # the local spool is gone too


def test_uploads_survive_transient_s3_failures(pds, c, s3, bucket, proxy, user):
    data = png(50_000)
    proxy.fail(2, "error", match=is_put_of("tmp/"))
    r = upload(c, user, data)
    assert r.status_code == 200, r.text
    assert len(proxy.actions("error")) == 2
    proxy.fail(1, "drop")
    assert create(c, user, image_post(r.json()["blob"])).status_code == 200
    proxy.fail(1, "error", match=lambda m, p: m == "GET")
    got = c.get(GET_BLOB, params={"did": user["did"], "cid": raw_cid(data)})
    assert got.status_code == 200 and got.content == data


def test_s3_that_keeps_failing_is_a_clear_error_and_stores_nothing(pds, c, s3, bucket, proxy, user):
    before = set(s3.keys(bucket))
    proxy.always("error")
    started = time.monotonic()
    r = upload(c, user, png(20_000))
    assert_error(r, 502, "UpstreamFailure")
    assert "Blob storage is unavailable" in r.json()["message"]
    assert time.monotonic() - started < 20  # bounded retries
    # Count the upload's own attempts: the background GC sweep may also hit the failing proxy.
    assert 2 <= len([a for a in proxy.actions("error") if a[0] == "PUT"]) <= 6
    proxy.clear()
    assert set(s3.keys(bucket)) == before
    assert db_rows(pds, "SELECT * FROM blob WHERE did = ?", (user["did"],)) == []
    assert temp_files(pds) == []
    # and a hanging S3 times out instead of holding the request forever
    proxy.always("hang", match=is_put_of("tmp/"))
    started = time.monotonic()
    assert_error(upload(c, user, png(20_000)), 502, "UpstreamFailure")
    assert time.monotonic() - started < 20
    proxy.clear()
    assert upload(c, user, png(1000)).status_code == 200  # and it recovers


def test_deleted_record_blob_is_collected_from_s3(pds, c, s3, bucket, user):
    blob = upload(c, user, png(2000)).json()["blob"]
    r = create(c, user, image_post(blob))
    assert r.status_code == 200, r.text
    key = f"{user['did']}/{blob['ref']['$link']}"
    assert key in s3.keys(bucket)
    r = c.post(DELETE, json={"repo": user["did"], "collection": "app.bsky.feed.post",
                             "rkey": r.json()["uri"].rsplit("/", 1)[1]}, headers=user["headers"])
    assert r.status_code == 200, r.text
    wait_until(lambda: key not in s3.keys(bucket), timeout=GRACE + 12)
    assert db_rows(pds, "SELECT * FROM blob WHERE did = ?", (user["did"],)) == []
    # an upload never referenced goes too, temp object included
    upload(c, user, os.urandom(3000))
    wait_until(lambda: not any(k.startswith("tmp/") for k in s3.keys(bucket)), timeout=GRACE + 12)
