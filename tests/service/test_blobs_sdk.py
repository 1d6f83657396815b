"""The Python ``atproto`` SDK (a client written by others) posts with an image, reads the post
back, fetches the image with sync.getBlob, lists it with sync.listBlobs and parses the repo CAR."""

from __future__ import annotations

import hashlib
import os

import pytest
from atproto import CAR, Client, models

from squall.atproto.cid import CID, RAW

PASSWORD = "sdk-password-1234"


@pytest.fixture(scope="module")
def pds_env():
    # The SDK follows the PDS endpoint of the DID document; serving on 127.0.0.1 keeps it on loopback.
    return {"PDS_HOSTNAME": "127.0.0.1", "PDS_SERVICE_HANDLE_DOMAINS": ".test"}


def test_sdk_posts_an_image_and_reads_it_back(pds):
    client = Client(base_url=pds.url)
    client.com.atproto.server.create_account(
        models.ComAtprotoServerCreateAccount.Data(handle="imager.test", email="img@example.com", password=PASSWORD))
    client.login("imager.test", PASSWORD, fetch_bsky_profile=False)
    did = client.com.atproto.server.get_session().did
    image = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + os.urandom(40_000)

    uploaded = client.upload_blob(image).blob
    expected_cid = str(CID.from_digest(hashlib.sha256(image).digest(), RAW))
    assert uploaded.ref.link == expected_cid
    assert uploaded.mime_type == "image/jpeg" and uploaded.size == len(image)

    embed = models.AppBskyEmbedImages.Main(images=[models.AppBskyEmbedImages.Image(alt="noise", image=uploaded)])
    post = client.send_post(text="with an image", embed=embed, profile_identify=did)

    record = client.app.bsky.feed.post.get(did, post.uri.rsplit("/", 1)[1])
    got_ref = record.value.embed.images[0].image
    assert str(got_ref.ref.link) == expected_cid and got_ref.mime_type == "image/jpeg"

    fetched = client.com.atproto.sync.get_blob(models.ComAtprotoSyncGetBlob.Params(did=did, cid=expected_cid))
    assert fetched == image
    listed = client.com.atproto.sync.list_blobs(models.ComAtprotoSyncListBlobs.Params(did=did))
    assert listed.cids == [expected_cid]

    car = CAR.from_bytes(client.com.atproto.sync.get_repo(models.ComAtprotoSyncGetRepo.Params(did=did)))
    posts = [b for b in car.blocks.values() if isinstance(b, dict) and b.get("$type") == "app.bsky.feed.post"]
    assert len(posts) == 1
    ref = posts[0]["embed"]["images"][0]["image"]
    link = ref["ref"]  # the SDK's CAR decoder hands links over as binary CIDs
    assert str(CID.from_bytes(link) if isinstance(link, bytes) else link) == expected_cid
    assert ref["size"] == len(image) and ref["mimeType"] == "image/jpeg"
