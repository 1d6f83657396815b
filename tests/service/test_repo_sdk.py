"""The Python ``atproto`` SDK (a client written by others) posts with an image, reads the post
back, and parses the repo export with its own CAR and DAG-CBOR helpers."""

from __future__ import annotations

import struct
import zlib

import pytest
from atproto import CAR, Client, models
from atproto import CID as SdkCID
from atproto_client.exceptions import BadRequestError


PASSWORD = "sdk-password-1234"


def _png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def pds_env():
    # The SDK follows the PDS endpoint of the DID document; serving on 127.0.0.1 keeps it on loopback.
    return {"PDS_HOSTNAME": "127.0.0.1", "PDS_SERVICE_HANDLE_DOMAINS": ".test"}


@pytest.fixture(scope="module")
def client(pds):
    client = Client(base_url=pds.url)
    created = client.com.atproto.server.create_account(
        models.ComAtprotoServerCreateAccount.Data(handle="poster.test", email="poster@example.com", password=PASSWORD)
    )
    client.login("poster.test", PASSWORD, fetch_bsky_profile=False)
    return client, created.did


def test_sdk_posts_with_an_image_reads_it_back_and_parses_the_repo(pds, client):
    client, did = client
    image = _png()
    sent = client.send_image(text="a red picture", image=image, image_alt="red pixels", profile_identify=did)
    assert sent.uri.startswith(f"at://{did}/app.bsky.feed.post/")
    rkey = sent.uri.rsplit("/", 1)[1]

    got = client.get_post(rkey, did)
    assert got.cid == sent.cid and got.value.text == "a red picture"
    embedded = got.value.embed.images[0]
    assert embedded.alt == "red pixels"
    assert embedded.image.mime_type == "image/png" and embedded.image.size == len(image)
    blob_cid = embedded.image.ref.link

    # the blob is served back byte for byte
    data = client.com.atproto.sync.get_blob(models.ComAtprotoSyncGetBlob.Params(did=did, cid=blob_cid))
    assert data == image

    # the SDK parses the repo export with its own CAR reader and finds the post, image ref and all
    car_bytes = client.com.atproto.sync.get_repo(models.ComAtprotoSyncGetRepo.Params(did=did))
    car = CAR.from_bytes(car_bytes)
    head = client.com.atproto.sync.get_latest_commit(models.ComAtprotoSyncGetLatestCommit.Params(did=did))
    assert str(car.root) == head.cid
    commit = car.blocks[car.root]
    assert commit["did"] == did and commit["version"] == 3 and commit["rev"] == head.rev
    records = [b for b in car.blocks.values() if isinstance(b, dict) and b.get("$type") == "app.bsky.feed.post"]
    assert len(records) == 1 and records[0]["text"] == "a red picture"
    ref = records[0]["embed"]["images"][0]["image"]
    # the SDK's DAG-CBOR leaves links as binary CIDs; its CID type reads them
    assert ref["$type"] == "blob" and ref["size"] == len(image) and ref["mimeType"] == "image/png"
    assert str(SdkCID.decode(ref["ref"])) == blob_cid


def test_sdk_sees_reference_errors(client):
    client, did = client
    with pytest.raises(BadRequestError) as err:
        client.com.atproto.repo.get_record(models.ComAtprotoRepoGetRecord.Params(
            repo=did, collection="app.bsky.feed.post", rkey="3kzzzzzzzzzz2"))
    assert err.value.response.content.error == "RecordNotFound"
    with pytest.raises(BadRequestError) as err:
        client.com.atproto.repo.create_record(models.ComAtprotoRepoCreateRecord.Data(
            repo=did, collection="app.bsky.feed.post", record={"$type": "app.bsky.feed.post", "text": "no date"}))
    assert err.value.response.content.error == "InvalidRequest"
