"""com.atproto.repo reads against a real server: getRecord, listRecords paging both ways,
describeRepo (DID document from the PLC double), and a restart that continues the revs."""

from __future__ import annotations

import pytest

from squall.atproto.cid import CID
from tests.helpers.accounts import assert_error, make_user
from tests.service.test_repo_writes import APPLY, CREATE, GET, post, verified

LIST = "/xrpc/com.atproto.repo.listRecords"


@pytest.fixture(scope="module")
def pds_env(plc):
    return plc.pds_env()


@pytest.fixture(scope="module")
def dana(c, plc):
    return make_user(c, "dana", plc.url)


@pytest.fixture(scope="module")
def items(c, dana):
    """23 records with TID keys in com.example.note, created one per commit, oldest first."""
    out = []
    for i in range(23):
        r = c.post(CREATE, headers=dana.headers, json={"repo": dana.did, "collection": "com.example.note",
                                                        "record": {"i": i}})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_get_record_by_did_or_handle_and_cid(c, dana, items):
    rec = items[5]
    rkey = rec["uri"].rsplit("/", 1)[1]
    for repo in (dana.did, dana.handle, dana.handle.upper()):
        r = c.get(GET, params={"repo": repo, "collection": "com.example.note", "rkey": rkey})
        assert r.status_code == 200, r.text
        assert r.json() == {"uri": rec["uri"], "cid": rec["cid"], "value": {"$type": "com.example.note", "i": 5}}
    r = c.get(GET, params={"repo": dana.did, "collection": "com.example.note", "rkey": rkey, "cid": rec["cid"]})
    assert r.status_code == 200
    other = items[6]["cid"]
    assert_error(c.get(GET, params={"repo": dana.did, "collection": "com.example.note", "rkey": rkey, "cid": other}),
                 400, "RecordNotFound")
    assert_error(c.get(GET, params={"repo": dana.did, "collection": "com.example.note", "rkey": "nope"}),
                 400, "RecordNotFound")
    assert_error(c.get(GET, params={"repo": "nobody.localhost", "collection": "com.example.note", "rkey": rkey}),
                 400, "RecordNotFound")


def test_get_record_renders_links_and_bytes_as_json(c, dana):
    link = "bafyreidwroesxuw5qzp4pdvvpbxv4bjuvhubqz4zfz3de6pi3a5c5rryum"
    record = {"ref": {"$link": link}, "raw": {"$bytes": "aGVsbG8"}, "nested": [{"n": -3}, None, True]}
    r = c.post(CREATE, headers=dana.headers, json={"repo": dana.did, "collection": "com.example.shape",
                                                    "rkey": "one", "record": record})
    assert r.status_code == 200, r.text
    got = c.get(GET, params={"repo": dana.did, "collection": "com.example.shape", "rkey": "one"}).json()
    assert got["value"] == {"$type": "com.example.shape", **record}


def test_list_records_pages_both_ways(c, dana, items):
    rkeys = [it["uri"].rsplit("/", 1)[1] for it in items]
    assert rkeys == sorted(rkeys)  # TIDs from one clock sort by creation

    def pages(reverse: bool) -> list[list[str]]:
        out, cursor = [], None
        for _ in range(10):
            params = {"repo": dana.did, "collection": "com.example.note", "limit": 5}
            if reverse:
                params["reverse"] = "true"
            if cursor is not None:
                params["cursor"] = cursor
            r = c.get(LIST, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            if not body["records"]:
                assert "cursor" not in body
                return out
            out.append([rec["uri"].rsplit("/", 1)[1] for rec in body["records"]])
            assert body["cursor"] == out[-1][-1]
            cursor = body["cursor"]
        raise AssertionError("paging did not end")

    forward = pages(False)
    assert [len(p) for p in forward] == [5, 5, 5, 5, 3]
    assert sum(forward, []) == rkeys[::-1]  # newest first
    backward = pages(True)
    assert sum(backward, []) == rkeys  # oldest first
    # values come with the page
    body = c.get(LIST, params={"repo": dana.did, "collection": "com.example.note", "limit": 1}).json()
    assert body["records"][0]["value"] == {"$type": "com.example.note", "i": 22}
    assert body["records"][0]["cid"] == items[22]["cid"]
    # an empty collection and an unknown repo
    assert c.get(LIST, params={"repo": dana.did, "collection": "com.example.none"}).json() == {"records": []}
    assert_error(c.get(LIST, params={"repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "collection": "a.b.c"}),
                 400, "InvalidRequest")


def test_describe_repo(c, dana, items, plc):
    r = c.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": dana.handle})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["did"] == dana.did and body["handle"] == dana.handle and body["handleIsCorrect"] is True
    assert "com.example.note" in body["collections"] and body["collections"] == sorted(body["collections"])
    # the DID document is the directory's
    assert body["didDoc"]["id"] == dana.did
    assert body["didDoc"]["alsoKnownAs"] == [f"at://{dana.handle}"]
    assert_error(c.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}),
                 400, "RepoNotFound")


def test_restart_continues_from_the_stored_rev(pds, c, dana, items):
    head = c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": dana.did}).json()
    pds.stop()
    pds.start()
    r = c.post(APPLY, headers=dana.headers, json={"repo": dana.did, "writes": [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("after")}]})
    assert r.status_code == 200, r.text
    assert r.json()["commit"]["rev"] > head["rev"]
    new_rkey = r.json()["results"][0]["uri"].rsplit("/", 1)[1]
    assert new_rkey > items[-1]["uri"].rsplit("/", 1)[1]
    repo = verified(c, dana)
    assert repo.rev == r.json()["commit"]["rev"]
    assert repo.records[f"app.bsky.feed.post/{new_rkey}"] == CID.decode(r.json()["results"][0]["cid"])
