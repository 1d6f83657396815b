"""Blob XRPC methods against a real ``squall serve`` with the disk store: uploadBlob, records that
reference blobs, getBlob (headers, ranges), listBlobs, garbage collection, bad input."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import time
from contextlib import closing

import httpx
import pytest

from squall.atproto.cid import CID, RAW
from tests.helpers.accounts import assert_error, bearer, db_rows, signup
from tests.helpers.pds import PdsProcess

UPLOAD = "/xrpc/com.atproto.repo.uploadBlob"
GET_BLOB = "/xrpc/com.atproto.sync.getBlob"
LIST_BLOBS = "/xrpc/com.atproto.sync.listBlobs"
CREATE = "/xrpc/com.atproto.repo.createRecord"
DELETE = "/xrpc/com.atproto.repo.deleteRecord"
LIMIT = 300_000
GRACE = 2


def png(n: int = 5000) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(n)


def raw_cid(data: bytes) -> str:
    return str(CID.from_digest(hashlib.sha256(data).digest(), RAW))


@pytest.fixture(scope="module")
def pds_env():
    return {"PDS_BLOB_UPLOAD_LIMIT": str(LIMIT), "PDS_BLOB_GC_GRACE_SECONDS": str(GRACE)}


_names = iter(f"blobuser{i}" for i in range(1000))


@pytest.fixture
def user(c):
    r = signup(c, next(_names))
    assert r.status_code == 200, r.text
    body = r.json()
    return {"did": body["did"], "headers": bearer(body["accessJwt"])}


def upload(c: httpx.Client, user: dict, data: bytes, content_type: str = "application/octet-stream") -> dict:
    r = c.post(UPLOAD, content=data, headers={**user["headers"], "Content-Type": content_type})
    assert r.status_code == 200, r.text
    return r.json()["blob"]


def image_post(*blobs: dict) -> dict:
    return {"$type": "app.bsky.feed.post", "text": "look", "createdAt": "2024-05-01T12:00:00.000Z",
            "embed": {"$type": "app.bsky.embed.images", "images": [{"image": b, "alt": ""} for b in blobs]}}


def create(c: httpx.Client, user: dict, record: dict, collection: str = "app.bsky.feed.post") -> httpx.Response:
    return c.post(CREATE, json={"repo": user["did"], "collection": collection, "record": record},
                  headers=user["headers"])


def get_blob(c: httpx.Client, did: str, cid: str, **kw) -> httpx.Response:
    return c.get(GET_BLOB, params={"did": did, "cid": cid}, **kw)


def temp_files(pds: PdsProcess) -> list[str]:
    tmp = pds.data_dir / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def blob_rows(pds: PdsProcess, did: str) -> list[sqlite3.Row]:
    return db_rows(pds, "SELECT cid, mime_type, size, temp_key, unreferenced_since FROM blob WHERE did = ?", (did,))


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


# -- upload and read back ------------------------------------------------------------------------------


def test_upload_reference_and_get_round_trip(pds, c, user):
    data = png(200_000)
    blob = upload(c, user, data)
    cid = raw_cid(data)
    assert blob == {"$type": "blob", "ref": {"$link": cid}, "mimeType": "image/png", "size": len(data)}
    # staged, not yet served
    (row,) = blob_rows(pds, user["did"])
    assert row["temp_key"] in temp_files(pds)
    assert_error(get_blob(c, user["did"], cid), 400, "BlobNotFound")

    r = create(c, user, image_post(blob))
    assert r.status_code == 200, r.text
    (row,) = blob_rows(pds, user["did"])
    assert row["temp_key"] is None and row["temp_key"] not in temp_files(pds)
    assert (pds.data_dir / "blobs" / user["did"] / cid).read_bytes() == data

    r = get_blob(c, user["did"], cid)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"


def test_sniffed_type_wins_and_unknown_content_keeps_the_declared_type(pds, c, user):
    assert upload(c, user, png(), "text/html")["mimeType"] == "image/png"
    text = b"plain words, no magic number " + os.urandom(8).hex().encode()
    blob = upload(c, user, text, "text/plain; charset=utf-8")
    assert blob["mimeType"] == "text/plain"
    assert create(c, user, {"$type": "com.example.note", "file": blob}, "com.example.note").status_code == 200
    r = get_blob(c, user["did"], blob["ref"]["$link"])
    # served with the stored type, never sniffed by the browser, and sandboxed
    assert r.status_code == 200 and r.content == text
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["x-content-type-options"] == "nosniff"
    no_type = upload(c, user, os.urandom(3000), "")
    assert no_type["mimeType"] == "application/octet-stream"


def test_byte_ranges(pds, c, user):
    data = png(100_000)
    blob = upload(c, user, data)
    assert create(c, user, image_post(blob)).status_code == 200
    cid, size = blob["ref"]["$link"], len(data)

    def ranged(spec: str) -> httpx.Response:
        return get_blob(c, user["did"], cid, headers={"Range": spec})

    for spec, first, last in (("bytes=0-9", 0, 9), ("bytes=100-", 100, size - 1), ("bytes=-50", size - 50, size - 1),
                              ("bytes=5000-99999999", 5000, size - 1), ("bytes=7-7", 7, 7)):
        r = ranged(spec)
        assert r.status_code == 206, (spec, r.text)
        assert r.content == data[first:last + 1], spec
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert r.headers["content-length"] == str(last - first + 1)
        assert r.headers["x-content-type-options"] == "nosniff"
    for spec in (f"bytes={size}-", "bytes=10-5", "bytes=abc", "bytes=-0", "items=0-5", "bytes=-"):
        r = ranged(spec)
        assert r.status_code == 416, spec
        assert r.headers["content-range"] == f"bytes */{size}"
        assert r.json()["error"] == "InvalidRange"
    r = ranged("bytes=0-1,5-6")  # several ranges: the whole blob
    assert r.status_code == 200 and r.content == data


# -- records referencing blobs ---------------------------------------------------------------------------


def test_record_must_match_the_uploaded_blob(pds, c, user):
    blob = upload(c, user, png())
    bad_mime = {**blob, "mimeType": "image/jpeg"}
    bad_size = {**blob, "size": blob["size"] - 1}
    unknown = {**blob, "ref": {"$link": raw_cid(b"never uploaded")}}
    assert_error(create(c, user, image_post(bad_mime)), 400, "InvalidMimeType")
    assert_error(create(c, user, image_post(bad_size)), 400, "InvalidSize")
    assert_error(create(c, user, image_post(unknown)), 400, "BlobNotFound")
    assert_error(create(c, user, {"x": bad_size}, "com.example.thing"), 400, "InvalidSize")
    # someone else's upload is not ours to reference
    other = signup(c, next(_names)).json()
    assert_error(create(c, {"did": other["did"], "headers": bearer(other["accessJwt"])}, image_post(blob)),
                 400, "BlobNotFound")
    # nothing was written, and the upload is still only staged
    assert db_rows(pds, "SELECT COUNT(*) AS n FROM record WHERE did = ?", (user["did"],))[0]["n"] == 0
    assert db_rows(pds, "SELECT COUNT(*) AS n FROM record_blob WHERE did = ?", (user["did"],))[0]["n"] == 0
    assert blob_rows(pds, user["did"])[0]["temp_key"] is not None


# -- limits and cut-off uploads -------------------------------------------------------------------------------


def test_upload_over_the_limit(pds, c, user):
    before = temp_files(pds)
    r = c.post(UPLOAD, content=os.urandom(LIMIT + 1), headers=user["headers"])
    assert_error(r, 413, "PayloadTooLarge")

    def chunks():  # no content-length: the limit is enforced while streaming
        for _ in range(LIMIT // 10_000 + 1):
            yield os.urandom(10_000)

    r = c.post(UPLOAD, content=chunks(), headers=user["headers"])
    assert_error(r, 413, "PayloadTooLarge")
    assert blob_rows(pds, user["did"]) == []
    assert temp_files(pds) == before
    assert upload(c, user, os.urandom(LIMIT))["size"] == LIMIT  # exactly the limit is accepted


def test_truncated_upload_keeps_nothing(pds, c, user):
    def unnamed_temp_files() -> set[str]:
        named = {r["temp_key"] for r in db_rows(pds, "SELECT temp_key FROM blob")}
        return set(temp_files(pds)) - named

    with socket.create_connection(("127.0.0.1", pds.port)) as s:
        head = (f"POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {user['headers']['Authorization']}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 250000\r\n\r\n")
        s.sendall(head.encode() + os.urandom(120_000))
        wait_until(lambda: unnamed_temp_files(), timeout=5)  # the body is being streamed to a temp file
        partial = unnamed_temp_files()
    # The handler removes it as soon as the connection drops: well before the collector could
    # (it only removes temp files older than the grace period).
    wait_until(lambda: not (partial & set(temp_files(pds))), timeout=1.5)
    assert blob_rows(pds, user["did"]) == []
    assert c.get("/xrpc/_health").status_code == 200


def test_upload_needs_auth(c):
    assert_error(c.post(UPLOAD, content=b"x"), 401, "AuthenticationRequired")


# -- garbage collection -------------------------------------------------------------------------------------------


def test_blob_never_referenced_is_collected(pds, c, user):
    blob = upload(c, user, os.urandom(4000))
    (row,) = blob_rows(pds, user["did"])
    key = row["temp_key"]
    assert key in temp_files(pds)
    wait_until(lambda: blob_rows(pds, user["did"]) == [] and key not in temp_files(pds), timeout=GRACE + 10)
    # gone for good: a record can't reference it any more
    assert_error(create(c, user, {"f": blob}, "com.example.thing"), 400, "BlobNotFound")


def test_deleted_record_blob_is_collected(pds, c, user):
    data = png()
    blob = upload(c, user, data)
    r = create(c, user, image_post(blob))
    assert r.status_code == 200, r.text
    rkey = r.json()["uri"].rsplit("/", 1)[1]
    path = pds.data_dir / "blobs" / user["did"] / blob["ref"]["$link"]
    assert path.exists()
    time.sleep(GRACE + 1.5)  # a referenced blob outlives the grace period
    assert path.exists() and get_blob(c, user["did"], blob["ref"]["$link"]).status_code == 200

    r = c.post(DELETE, json={"repo": user["did"], "collection": "app.bsky.feed.post", "rkey": rkey},
               headers=user["headers"])
    assert r.status_code == 200, r.text
    assert blob_rows(pds, user["did"])[0]["unreferenced_since"] is not None
    wait_until(lambda: not path.exists() and blob_rows(pds, user["did"]) == [], timeout=GRACE + 10)
    assert_error(get_blob(c, user["did"], blob["ref"]["$link"]), 400, "BlobNotFound")


# -- listBlobs ----------------------------------------------------------------------------------------------------


def test_list_blobs_pages_and_since(pds, c, user):
    blobs = [upload(c, user, png(1000)) for _ in range(3)]
    r1 = create(c, user, image_post(blobs[0]))
    assert r1.status_code == 200, r1.text
    rev1 = r1.json()["commit"]["rev"]
    assert create(c, user, image_post(blobs[1], blobs[2])).status_code == 200
    cids = sorted(b["ref"]["$link"] for b in blobs)

    r = c.get(LIST_BLOBS, params={"did": user["did"]})
    assert r.status_code == 200 and r.json()["cids"] == cids
    seen, cursor = [], None
    while True:
        params = {"did": user["did"], "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = c.get(LIST_BLOBS, params=params).json()
        seen += page["cids"]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert seen == cids
    later = c.get(LIST_BLOBS, params={"did": user["did"], "since": rev1}).json()["cids"]
    assert later == sorted([blobs[1]["ref"]["$link"], blobs[2]["ref"]["$link"]])

    missing = c.get("/xrpc/com.atproto.repo.listMissingBlobs", headers=user["headers"])
    assert missing.status_code == 200 and missing.json() == {"blobs": []}
    assert_error(c.get(LIST_BLOBS, params={"did": user["did"], "since": "not-a-tid"}), 400, "InvalidRequest")
    assert_error(c.get(LIST_BLOBS, params={"did": user["did"], "limit": 0}), 400, "InvalidRequest")


# -- who may read ---------------------------------------------------------------------------------------------------


def test_hidden_repos_and_bad_parameters(pds, c, user):
    blob = upload(c, user, png())
    assert create(c, user, image_post(blob)).status_code == 200
    cid = blob["ref"]["$link"]
    assert_error(get_blob(c, "did:plc:nobodyhereatallxxxxxxxxx", cid), 400, "RepoNotFound")
    assert_error(c.get(GET_BLOB, params={"did": "not a did", "cid": cid}), 400, "InvalidRequest")
    assert_error(c.get(GET_BLOB, params={"did": user["did"], "cid": "bafynotacid"}), 400, "InvalidRequest")
    assert_error(c.get(GET_BLOB, params={"did": user["did"]}), 400, "InvalidRequest")

    r = c.post("/xrpc/com.atproto.server.deactivateAccount", json={}, headers=user["headers"])
    assert r.status_code == 200, r.text
    assert_error(get_blob(c, user["did"], cid), 400, "RepoDeactivated")
    assert_error(c.get(LIST_BLOBS, params={"did": user["did"]}), 400, "RepoDeactivated")
    assert get_blob(c, user["did"], cid, headers=user["headers"]).status_code == 200  # the owner still can
    admin = httpx.BasicAuth("admin", pds.admin_password())
    assert get_blob(c, user["did"], cid, auth=admin).status_code == 200  # and the admin

    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", timeout=10)) as conn:
        conn.execute("UPDATE account SET takedown_ref = 'test-takedown' WHERE did = ?", (user["did"],))
        conn.commit()
    assert_error(get_blob(c, user["did"], cid), 400, "RepoTakendown")
    assert get_blob(c, user["did"], cid, auth=admin).status_code == 200
