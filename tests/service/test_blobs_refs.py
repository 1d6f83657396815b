"""Record blob references (squall.blobs.refs) and the BlobService lifecycle, in-process against a
real database (squall.store.db.Database) and the disk store: upload → reference → permanent →
unreference → garbage-collected after the grace period."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

import pytest

from squall.atproto.cid import CID, RAW
from squall.blobs import refs
from squall.blobs.disk import DiskBlobStore
from squall.blobs.service import BlobService, choose_mime, declared_mime, sniff_mime
from squall.store.db import Database
from squall.xrpc.errors import InvalidRequest, PayloadTooLarge

ALICE = "did:plc:aliceaaaaaaaaaaaaaaaaaaa"
BOB = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(3000)


@pytest.fixture
async def db(tmp_path):
    database = Database(tmp_path / "pds.sqlite", readers=1)
    await database.open()
    yield database
    await database.close()


def make_service(db: Database, tmp_path, *, grace: float = 3600, limit: int = 1_000_000) -> BlobService:
    store = DiskBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    return BlobService(db, store, upload_limit=limit, grace_seconds=grace, gc_interval_seconds=3600,
                       log=logging.getLogger("test-blobs"))


@pytest.fixture
def service(db, tmp_path):
    return make_service(db, tmp_path)


async def body(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def blob_ref(uploaded: dict, **override) -> dict:
    ref = {"$type": "blob", "ref": CID.decode(uploaded["ref"]["$link"]), "mimeType": uploaded["mimeType"],
           "size": uploaded["size"]}
    ref.update(override)
    return ref


def post(*blobs: dict) -> dict:
    return {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2024-01-01T00:00:00.000Z",
            "embed": {"$type": "app.bsky.embed.images",
                      "images": [{"alt": "", "image": b} for b in blobs]}}


async def rows(db: Database, sql: str, params=()) -> list[tuple]:
    return [tuple(r) for r in await db.fetchall(sql, params)]


# -- mime types -------------------------------------------------------------------------------------------------


def test_mime_choice():
    assert sniff_mime(PNG) == "image/png"
    assert sniff_mime(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00") == "image/jpeg"
    assert sniff_mime(b"just some text") is None
    assert sniff_mime(b"") is None
    assert declared_mime("Image/SVG+XML; charset=utf-8") == "image/svg+xml"
    assert declared_mime("*/*") is None and declared_mime("nonsense") is None and declared_mime(None) is None
    assert choose_mime("image/png", "application/octet-stream") == "image/png"
    assert choose_mime("image/png", "text/html") == "image/png"  # the content's signature wins
    assert choose_mime(None, "text/plain") == "text/plain"
    assert choose_mime(None, None) == "application/octet-stream"


# -- uploads ------------------------------------------------------------------------------------------------------


async def test_upload_hashes_sniffs_and_records_a_temp_blob(service, db, tmp_path):
    out = await service.upload(ALICE, "application/octet-stream", body(PNG))
    cid = CID.from_digest(hashlib.sha256(PNG).digest(), RAW)
    assert out == {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": "image/png", "size": len(PNG)}
    ((mime, size, temp_key, unref),) = await rows(
        db, "SELECT mime_type, size, temp_key, unreferenced_since FROM blob WHERE did = ? AND cid = ?",
        (ALICE, str(cid)))
    assert (mime, size, unref) == ("image/png", len(PNG), None)
    assert (tmp_path / "tmp" / temp_key).read_bytes() == PNG
    assert not (tmp_path / "blobs" / ALICE / str(cid)).exists()

    # the same bytes again: one row, one temp file (the older upload is removed)
    await service.upload(ALICE, None, body(PNG))
    assert len(await rows(db, "SELECT 1 FROM blob")) == 1
    assert len(list((tmp_path / "tmp").iterdir())) == 1


async def test_upload_over_the_limit_keeps_nothing(db, tmp_path):
    service = make_service(db, tmp_path, limit=5000)
    with pytest.raises(PayloadTooLarge):
        await service.upload(ALICE, None, body(os.urandom(5001)))
    assert await rows(db, "SELECT * FROM blob") == []
    assert list((tmp_path / "tmp").iterdir()) == []
    out = await service.upload(ALICE, None, body(os.urandom(5000)))  # exactly the limit is fine
    assert out["size"] == 5000 and out["mimeType"] == "application/octet-stream"


async def test_cut_off_upload_keeps_nothing(service, db, tmp_path):
    async def cut():
        yield PNG[:1000]
        raise InvalidRequest("Upload was cut off")

    with pytest.raises(InvalidRequest):
        await service.upload(ALICE, None, cut())
    assert await rows(db, "SELECT * FROM blob") == []
    assert list((tmp_path / "tmp").iterdir()) == []


# -- link / unlink -----------------------------------------------------------------------------------------------


async def test_link_checks_owner_mime_and_size(service, db):
    up = await service.upload(ALICE, None, body(PNG))
    uri = f"at://{ALICE}/app.bsky.feed.post/3kaaaaaaaaaa2"

    def link(did: str, record: dict):
        return db.write(refs.link_record_blobs, did, uri, record)

    with pytest.raises(InvalidRequest) as err:
        await link(ALICE, post(blob_ref(up, mimeType="image/jpeg")))
    assert err.value.name == "InvalidMimeType" and "Expected: image/png" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        await link(ALICE, post(blob_ref(up, size=up["size"] + 1)))
    assert err.value.name == "InvalidSize" and f"Expected: {up['size']}" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        await link(BOB, post(blob_ref(up)))  # Bob never uploaded it
    assert err.value.name == "BlobNotFound"
    other = CID.from_digest(hashlib.sha256(b"never uploaded").digest(), RAW)
    with pytest.raises(InvalidRequest) as err:
        await link(ALICE, post(blob_ref(up), blob_ref(up, ref=other)))
    assert err.value.name == "BlobNotFound" and str(other) in err.value.message
    # every failure rolled its transaction back: no reference was stored
    assert await rows(db, "SELECT * FROM record_blob") == []

    pending = await link(ALICE, post(blob_ref(up), blob_ref(up)))
    assert pending == [CID.decode(up["ref"]["$link"])]  # once, though referenced twice
    assert await rows(db, "SELECT did, blob_cid, record_uri FROM record_blob") == [(ALICE, up["ref"]["$link"], uri)]


async def test_link_finds_legacy_and_nested_refs(service, db):
    a = await service.upload(ALICE, None, body(PNG))
    b = await service.upload(ALICE, "text/plain", body(b"plain text blob"))
    record = {"$type": "x.y.z", "deep": [[{"k": {"legacy": {"cid": b["ref"]["$link"], "mimeType": "text/plain"}}}]],
              "avatar": blob_ref(a)}
    found = refs.find_blob_refs(record)
    assert {str(r.cid) for r in found} == {a["ref"]["$link"], b["ref"]["$link"]}
    assert next(r for r in found if str(r.cid) == b["ref"]["$link"]).size is None
    pending = await db.write(refs.link_record_blobs, ALICE, f"at://{ALICE}/x.y.z/self", record)
    assert sorted(map(str, pending)) == sorted([a["ref"]["$link"], b["ref"]["$link"]])
    with pytest.raises(InvalidRequest) as err:
        refs.find_blob_refs({"$type": "blob", "ref": "not a cid", "mimeType": "a/b", "size": 1})
    assert err.value.name == "InvalidBlob"


async def test_make_permanent_is_idempotent_and_unlink_stamps_unreferenced(service, db, tmp_path):
    up = await service.upload(ALICE, None, body(PNG))
    cid = CID.decode(up["ref"]["$link"])
    uri1, uri2 = f"at://{ALICE}/app.bsky.feed.post/1", f"at://{ALICE}/app.bsky.feed.post/2"
    pending = await db.write(refs.link_record_blobs, ALICE, uri1, post(blob_ref(up)))
    assert await service.make_permanent(ALICE, pending) == []
    assert await service.make_permanent(ALICE, pending) == []
    assert (tmp_path / "blobs" / ALICE / str(cid)).read_bytes() == PNG
    assert list((tmp_path / "tmp").iterdir()) == []
    assert await rows(db, "SELECT temp_key FROM blob") == [(None,)]
    info = await service.info(ALICE, cid)
    assert info is not None and info.mime_type == "image/png" and info.size == len(PNG)
    assert b"".join([c async for c in await service.open(info, 8, 11)]) == PNG[8:12]

    # a second record references the permanent blob: nothing left to make permanent
    assert await db.write(refs.link_record_blobs, ALICE, uri2, post(blob_ref(up))) == []
    await db.write(refs.unlink_record_blobs, ALICE, uri1)
    assert await rows(db, "SELECT unreferenced_since FROM blob") == [(None,)]  # uri2 still holds it
    await db.write(refs.unlink_record_blobs, ALICE, uri2)
    ((stamp,),) = await rows(db, "SELECT unreferenced_since FROM blob")
    assert stamp is not None and stamp.endswith("Z")
    # referencing it again clears the stamp
    await db.write(refs.link_record_blobs, ALICE, uri1, post(blob_ref(up)))
    assert await rows(db, "SELECT unreferenced_since FROM blob") == [(None,)]


# -- garbage collection ------------------------------------------------------------------------------------------


async def test_gc_collects_after_the_grace_period_only(db, tmp_path):
    service = make_service(db, tmp_path, grace=1.0)
    never = await service.upload(ALICE, None, body(b"never referenced"))
    kept = await service.upload(ALICE, None, body(PNG))
    dropped = await service.upload(ALICE, None, body(b"referenced then deleted"))
    keep_uri, drop_uri = f"at://{ALICE}/x.y.z/keep", f"at://{ALICE}/x.y.z/drop"
    await service.make_permanent(ALICE, await db.write(refs.link_record_blobs, ALICE, keep_uri, post(blob_ref(kept))))
    await service.make_permanent(ALICE, await db.write(refs.link_record_blobs, ALICE, drop_uri,
                                                       {"b": blob_ref(dropped)}))
    await db.write(refs.unlink_record_blobs, ALICE, drop_uri)
    # an orphaned temp file (an upload cut off by a crash) and one still being written
    (tmp_path / "tmp" / ("a" * 32)).write_bytes(b"orphan")
    (tmp_path / "tmp" / ("b" * 32)).write_bytes(b"in progress")
    service._uploading.add("b" * 32)

    report = await service.collect_garbage()  # within the grace period: nothing goes
    assert report.blobs_deleted == 0 and report.temp_files_deleted == 0
    assert len(await rows(db, "SELECT * FROM blob")) == 3

    await asyncio.sleep(1.3)
    report = await service.collect_garbage()
    assert report.blobs_deleted == 2 and report.temp_files_deleted == 1 and report.errors == []
    assert await rows(db, "SELECT cid FROM blob") == [(kept["ref"]["$link"],)]
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == ["b" * 32]
    assert sorted(p.name for p in (tmp_path / "blobs" / ALICE).iterdir()) == [kept["ref"]["$link"]]
    # a blob collected is really gone: a record can no longer reference it
    with pytest.raises(InvalidRequest) as err:
        await db.write(refs.link_record_blobs, ALICE, drop_uri, {"b": blob_ref(dropped)})
    assert err.value.name == "BlobNotFound"


async def test_gc_retries_blobs_left_temporary_after_a_commit(db, tmp_path):
    service = make_service(db, tmp_path, grace=3600)
    up = await service.upload(ALICE, None, body(PNG))
    # referenced by a committed record, but make_permanent never ran (e.g. the store was down)
    await db.write(refs.link_record_blobs, ALICE, f"at://{ALICE}/x.y.z/1", post(blob_ref(up)))
    report = await service.collect_garbage()
    assert report.made_permanent == 1
    assert (tmp_path / "blobs" / ALICE / up["ref"]["$link"]).read_bytes() == PNG
    assert await rows(db, "SELECT temp_key FROM blob") == [(None,)]


async def test_background_sweeps_run_and_stop(db, tmp_path):
    store = DiskBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    service = BlobService(db, store, upload_limit=10_000, grace_seconds=0.2, gc_interval_seconds=0.2,
                          log=logging.getLogger("test-blobs"))
    await service.start()
    try:
        await service.upload(ALICE, None, body(b"short-lived"))
        deadline = time.monotonic() + 5
        while await rows(db, "SELECT * FROM blob") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await rows(db, "SELECT * FROM blob") == []
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        await service.stop()
    assert service.gc._task is None
