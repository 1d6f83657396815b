"""The two blob stores behind one interface: disk, and S3 against moto's real S3 server (through a
fault-injecting proxy that can fail, drop or hang requests)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from squall.atproto.cid import CID, RAW
from squall.blobs.disk import DiskBlobStore
from squall.blobs.s3 import S3BlobStore, S3Options
from squall.blobs.store import BlobNotFoundError, BlobStoreError
from tests.helpers.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FaultProxy, S3Server, is_put_of

DID = "did:plc:abcdefghijklmnopqrstuvwx"


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def proxy(s3_server):
    p = FaultProxy(s3_server.address, hang_seconds=10)
    yield p
    p.close()


def make_s3(proxy: FaultProxy, bucket: str, spool, *, attempts: int = 3, timeout: float = 5.0,
            threshold: int = 16 * 1024 * 1024) -> S3BlobStore:
    return S3BlobStore(S3Options(bucket=bucket, region=REGION, endpoint=proxy.endpoint, force_path_style=True,
                                 access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY,
                                 timeout_seconds=timeout, max_attempts=attempts, multipart_threshold=threshold,
                                 multipart_chunksize=max(5 * 1024 * 1024, threshold)), spool)


@pytest.fixture(params=["disk", "s3"])
def store(request, tmp_path, s3_server, proxy):
    if request.param == "disk":
        s = DiskBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    else:
        s = make_s3(proxy, s3_server.new_bucket(), tmp_path / "tmp")
    yield s


async def chunks_of(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]
        await asyncio.sleep(0)


async def read_all(stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


def raw_cid(data: bytes) -> CID:
    return CID.from_digest(hashlib.sha256(data).digest(), RAW)


def key(n: int) -> str:
    return f"{n:032x}"


async def test_put_make_permanent_get_delete(store):
    data = os.urandom(700_000)
    cid = raw_cid(data)
    await store.put_temp(key(1), chunks_of(data))
    assert await store.has_temp(key(1))
    assert [e.key for e in await store.list_temp()] == [key(1)]
    assert not await store.has(DID, cid)

    await store.make_permanent(key(1), DID, cid)
    assert not await store.has_temp(key(1))
    assert await store.list_temp() == []
    assert await store.has(DID, cid)
    assert await store.size(DID, cid) == len(data)
    assert await read_all(await store.get(DID, cid)) == data
    # idempotent: a second call finds the blob already permanent
    await store.make_permanent(key(1), DID, cid)

    # byte ranges are inclusive; an end past the blob is clipped by the caller, a suffix works
    assert await read_all(await store.get(DID, cid, 10, 19)) == data[10:20]
    assert await read_all(await store.get(DID, cid, 699_990)) == data[699_990:]
    assert await read_all(await store.get(DID, cid, 300_000, 600_000)) == data[300_000:600_001]

    await store.delete(DID, cid)
    assert not await store.has(DID, cid)
    with pytest.raises(BlobNotFoundError):
        await store.get(DID, cid)
    with pytest.raises(BlobNotFoundError):
        await store.size(DID, cid)
    await store.delete(DID, cid)  # absent is fine
    await store.close()


async def test_failed_stream_leaves_nothing(store, tmp_path):
    class Cut(Exception):
        pass

    async def broken():
        yield b"a" * 100_000
        raise Cut()

    with pytest.raises(Cut):
        await store.put_temp(key(2), broken())
    assert await store.list_temp() == []
    assert not await store.has_temp(key(2))
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(BlobNotFoundError):
        await store.make_permanent(key(2), DID, raw_cid(b"x"))
    await store.close()


async def test_temp_keys_and_dids_cannot_escape(store):
    for bad in ("../../etc/passwd", "ABC", "", "0" * 31):
        with pytest.raises(ValueError):
            await store.put_temp(bad, chunks_of(b"x"))
    with pytest.raises(ValueError):
        await store.get("did:web:x/../../y", raw_cid(b"x"))
    with pytest.raises(ValueError):
        await store.get("not-a-did", raw_cid(b"x"))
    await store.close()


async def test_disk_temp_ages_are_reported(tmp_path):
    store = DiskBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    await store.put_temp(key(3), chunks_of(b"old"))
    old = time.time() - 3600
    os.utime(tmp_path / "tmp" / key(3), (old, old))
    await store.put_temp(key(4), chunks_of(b"new"))
    (tmp_path / "tmp" / "not-a-temp-key").write_bytes(b"?")
    ages = {e.key: e.age_seconds for e in await store.list_temp()}
    assert set(ages) == {key(3), key(4)}
    assert ages[key(3)] > 3500 and ages[key(4)] < 60


# -- S3 faults -------------------------------------------------------------------------------------------------


async def test_s3_retries_through_failures(s3_server, proxy, tmp_path):
    bucket = s3_server.new_bucket()
    store = make_s3(proxy, bucket, tmp_path / "tmp", attempts=3)
    data = os.urandom(200_000)
    cid = raw_cid(data)

    proxy.fail(2, "error", match=is_put_of("tmp/"))
    await store.put_temp(key(5), chunks_of(data))
    assert [a for _, _, a in proxy.actions() if a != "pass"] == ["error", "error"]

    proxy.fail(1, "drop")
    await store.make_permanent(key(5), DID, cid)
    assert proxy.actions("drop")

    proxy.fail(2, "error")
    assert await read_all(await store.get(DID, cid)) == data
    assert s3_server.keys(bucket) == [f"{DID}/{cid}"]
    await store.close()


async def test_s3_persistent_failure_is_a_clear_error_and_stores_nothing(s3_server, proxy, tmp_path):
    bucket = s3_server.new_bucket()
    store = make_s3(proxy, bucket, tmp_path / "tmp", attempts=3)
    proxy.always("error", match=is_put_of("tmp/"))
    with pytest.raises(BlobStoreError) as info:
        await store.put_temp(key(6), chunks_of(os.urandom(100_000)))
    assert "upload failed" in str(info.value) and "InternalError" in str(info.value)
    assert len(proxy.actions("error")) == 3  # bounded: exactly max_attempts tries
    assert s3_server.keys(bucket) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the local spool is gone too
    await store.close()


async def test_s3_hanging_server_times_out(s3_server, proxy, tmp_path):
    bucket = s3_server.new_bucket()
    store = make_s3(proxy, bucket, tmp_path / "tmp", attempts=2, timeout=1.0)
    proxy.always("hang", match=is_put_of("tmp/"))
    started = time.monotonic()
    with pytest.raises(BlobStoreError):
        await store.put_temp(key(7), chunks_of(b"z" * 50_000))
    assert time.monotonic() - started < 8
    proxy.clear()
    assert s3_server.keys(bucket) == []
    await store.close()


async def test_s3_failed_make_permanent_keeps_the_temp_for_a_retry(s3_server, proxy, tmp_path):
    bucket = s3_server.new_bucket()
    store = make_s3(proxy, bucket, tmp_path / "tmp", attempts=2)
    data = os.urandom(10_000)
    cid = raw_cid(data)
    await store.put_temp(key(8), chunks_of(data))
    proxy.always("error")
    with pytest.raises(BlobStoreError):
        await store.make_permanent(key(8), DID, cid)
    proxy.clear()
    assert s3_server.keys(bucket) == [f"tmp/{key(8)}"]
    await store.make_permanent(key(8), DID, cid)
    assert s3_server.keys(bucket) == [f"{DID}/{cid}"]
    await store.close()


async def test_s3_multipart_upload_with_a_failed_part(s3_server, proxy, tmp_path):
    bucket = s3_server.new_bucket()
    store = make_s3(proxy, bucket, tmp_path / "tmp", threshold=5 * 1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)
    cid = raw_cid(data)
    proxy.fail(1, "error", match=lambda m, p: m == "PUT" and "partNumber=2" in p)
    await store.put_temp(key(9), chunks_of(data, 1024 * 1024))
    assert any("uploadId=" in p for _, p, _ in proxy.actions())  # it really went multipart
    assert proxy.actions("error")
    await store.make_permanent(key(9), DID, cid)
    assert hashlib.sha256(await read_all(await store.get(DID, cid))).digest() == cid.digest
    await store.close()


async def test_s3_multipart_that_keeps_failing_is_aborted(s3_server, proxy, tmp_path):
    bucket = s3_server.new_bucket()
    store = make_s3(proxy, bucket, tmp_path / "tmp", attempts=2, threshold=5 * 1024 * 1024)
    proxy.always("error", match=lambda m, p: m == "PUT" and "partNumber=2" in p)
    with pytest.raises(BlobStoreError):
        await store.put_temp(key(10), chunks_of(os.urandom(11 * 1024 * 1024), 1024 * 1024))
    proxy.clear()
    assert s3_server.keys(bucket) == []
    assert s3_server.multipart_uploads(bucket) == []
    await store.close()
