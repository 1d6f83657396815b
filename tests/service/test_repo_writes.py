"""com.atproto.repo writes against a real server: commits, swaps, validation, atomicity, the
#commit event, and bad input. Accounts are did:plc, published to the PLC double."""

from __future__ import annotations

import json

import httpx
import pytest

from squall.atproto import dagcbor
from squall.atproto.car import read_car
from squall.atproto.cid import CID
from squall.atproto.repo import verify_commit_event
from tests.helpers.accounts import User, assert_error, bearer, db_rows, make_user
from tests.helpers.pds import PdsProcess
from tests.helpers.verify import verify_repo_car

CREATE = "/xrpc/com.atproto.repo.createRecord"
PUT = "/xrpc/com.atproto.repo.putRecord"
DELETE = "/xrpc/com.atproto.repo.deleteRecord"
APPLY = "/xrpc/com.atproto.repo.applyWrites"
GET = "/xrpc/com.atproto.repo.getRecord"


# -- helpers shared with the other repo and sync tests ---------------------------------------------


def post(text: str = "hello", created_at: str = "2024-05-01T12:00:00.000Z") -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": created_at}


def repo_state(pds: PdsProcess, did: str) -> tuple:
    """Everything a write changes: root, blocks, records, events, blob refs."""
    root = db_rows(pds, "SELECT cid, rev FROM repo_root WHERE did = ?", (did,))[0]
    blocks = db_rows(pds, "SELECT COUNT(*) AS n FROM repo_block WHERE did = ?", (did,))[0]["n"]
    records = db_rows(pds, "SELECT COUNT(*) AS n FROM record WHERE did = ?", (did,))[0]["n"]
    seq = db_rows(pds, "SELECT MAX(seq) AS s FROM repo_seq")[0]["s"]
    return (root["cid"], root["rev"], blocks, records, seq)


def verified(c: httpx.Client, user: User):
    r = c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user.did})
    assert r.status_code == 200, r.text
    return verify_repo_car(r.content, user.did, user.key)


@pytest.fixture(scope="module")
def pds_env(plc):
    return plc.pds_env()


@pytest.fixture(scope="module")
def alice(c, plc):
    return make_user(c, "alice", plc.url)


# -- createRecord ------------------------------------------------------------------------------------


def test_create_record_answers_as_the_reference_and_emits_a_verifiable_commit_event(pds, c, alice):
    before = repo_state(pds, alice.did)
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.feed.post",
                                                     "record": post("first")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"uri", "cid", "commit", "validationStatus"}
    assert body["validationStatus"] == "valid"
    collection, rkey = body["uri"].removeprefix(f"at://{alice.did}/").split("/")
    assert collection == "app.bsky.feed.post" and len(rkey) == 13  # a TID
    assert body["commit"]["rev"] > before[1]
    assert CID.decode(body["cid"]) == dagcbor.cid_for(post("first"))[0]

    # the stored root is the answered commit, and the commit verifies with the DID document's key
    repo = verified(c, alice)
    assert str(repo.commit_cid) == body["commit"]["cid"] and repo.rev == body["commit"]["rev"]
    assert repo.records[f"app.bsky.feed.post/{rkey}"] == CID.decode(body["cid"])

    # one #commit event, in the same transaction, that a Sync 1.1 relay accepts
    (event,) = db_rows(pds, "SELECT did, event_type, event FROM repo_seq WHERE seq > ?", (before[4],))
    assert event["event_type"] == "commit" and event["did"] == alice.did
    ev = dagcbor.decode(event["event"])
    assert ev["repo"] == alice.did and str(ev["commit"]) == body["commit"]["cid"]
    assert ev["rev"] == body["commit"]["rev"] and ev["since"] == before[1]
    assert ev["tooBig"] is False and ev["rebase"] is False and ev["blobs"] == []
    assert ev["ops"] == [{"action": "create", "path": f"app.bsky.feed.post/{rkey}", "cid": CID.decode(body["cid"])}]
    roots, blocks = read_car(ev["blocks"])
    assert roots == [ev["commit"]]
    commit = verify_commit_event(blocks, ev["commit"], ev["ops"], ev["prevData"], alice.key,
                                 did=alice.did, rev=ev["rev"])
    assert commit["data"] == repo.data


def test_create_with_explicit_rkey_and_duplicate_is_refused(pds, c, alice):
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.handle, "collection": "app.bsky.feed.post",
                                                     "rkey": "3kabcdefghij2", "record": post()})
    assert r.status_code == 200, r.text
    assert r.json()["uri"] == f"at://{alice.did}/app.bsky.feed.post/3kabcdefghij2"
    before = repo_state(pds, alice.did)
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.feed.post",
                                                     "rkey": "3kabcdefghij2", "record": post("again")})
    assert_error(r, 400, "InvalidRequest")
    assert repo_state(pds, alice.did) == before


def test_self_key_chosen_for_literal_self_lexicons(c, alice):
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.actor.profile",
                                                     "record": {"displayName": "Alice"}})
    assert r.status_code == 200, r.text
    assert r.json()["uri"] == f"at://{alice.did}/app.bsky.actor.profile/self"
    # $type was added from the collection
    got = c.get(GET, params={"repo": alice.did, "collection": "app.bsky.actor.profile", "rkey": "self"}).json()
    assert got["value"] == {"$type": "app.bsky.actor.profile", "displayName": "Alice"}
    # a profile under any other key breaks the lexicon's literal:self
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.actor.profile",
                                                     "rkey": "other", "record": {"displayName": "A"}})
    assert_error(r, 400, "InvalidRequest")
    assert "record key" in r.json()["message"]


@pytest.mark.parametrize("record, fragment", [
    ({"$type": "app.bsky.feed.post", "text": "no date"}, "createdAt"),
    ({"$type": "app.bsky.feed.post", "text": "x" * 3001, "createdAt": "2024-05-01T12:00:00Z"}, "text"),
    ({"$type": "app.bsky.feed.post", "text": 5, "createdAt": "2024-05-01T12:00:00Z"}, "text"),
    ({"$type": "app.bsky.feed.post", "text": "a", "createdAt": "yesterday"}, "createdAt"),
    ({"$type": "app.bsky.feed.like", "subject": {"uri": "not-an-at-uri", "cid": "bafyreidwroesxuw5qzp4pdvvpbxv4bjuvhubqz4zfz3de6pi3a5c5rryum"},
      "createdAt": "2024-05-01T12:00:00Z"}, "uri"),
    ({"$type": "app.bsky.feed.post", "text": "a", "createdAt": "2024-05-01T12:00:00Z", "langs": "en"}, "langs"),
])
def test_invalid_records_of_known_lexicons_are_refused_and_nothing_is_written(pds, c, alice, record, fragment):
    collection = record["$type"]
    before = repo_state(pds, alice.did)
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": collection, "record": record})
    body = assert_error(r, 400, "InvalidRequest")
    assert collection in body["message"] and fragment in body["message"], body
    assert repo_state(pds, alice.did) == before


def test_validate_flag_semantics(c, alice):
    def create(collection, record, **extra):
        return c.post(CREATE, headers=alice.headers,
                      json={"repo": alice.did, "collection": collection, "record": record, **extra})

    # unknown collection: allowed, status "unknown"
    r = create("com.example.thing", {"anything": [1, 2, {"x": True}]})
    assert r.status_code == 200 and r.json()["validationStatus"] == "unknown", r.text
    # ... unless validation is demanded
    assert_error(create("com.example.thing", {"a": 1}, validate=True), 400, "InvalidRequest")
    # validate=false skips the lexicon and reports no status
    r = create("app.bsky.feed.post", {"text": "no createdAt"}, validate=False)
    assert r.status_code == 200, r.text
    assert "validationStatus" not in r.json()
    # validate=true on a known, valid record
    r = create("app.bsky.feed.post", post("checked"), validate=True)
    assert r.status_code == 200 and r.json()["validationStatus"] == "valid"
    # $type must match the collection, whatever validate says
    for flag in (True, False, None):
        extra = {} if flag is None else {"validate": flag}
        r = create("app.bsky.feed.post", {**post(), "$type": "app.bsky.feed.like"}, **extra)
        assert_error(r, 400, "InvalidRequest")
    # validate must be a boolean
    assert_error(create("app.bsky.feed.post", post(), validate="yes"), 400, "InvalidRequest")


# -- putRecord / deleteRecord ------------------------------------------------------------------------------


def test_put_record_creates_updates_and_skips_a_no_op(pds, c, alice):
    args = {"repo": alice.did, "collection": "com.example.setting", "rkey": "theme"}
    r = c.post(PUT, headers=alice.headers, json={**args, "record": {"mode": "dark"}})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["validationStatus"] == "unknown" and "commit" in first
    events = db_rows(pds, "SELECT event FROM repo_seq ORDER BY seq DESC LIMIT 1")
    assert dagcbor.decode(events[0]["event"])["ops"][0]["action"] == "create"

    r = c.post(PUT, headers=alice.headers, json={**args, "record": {"mode": "light"}})
    assert r.status_code == 200, r.text
    second = r.json()
    ev = dagcbor.decode(db_rows(pds, "SELECT event FROM repo_seq ORDER BY seq DESC LIMIT 1")[0]["event"])
    assert ev["ops"] == [{"action": "update", "path": "com.example.setting/theme",
                          "cid": CID.decode(second["cid"]), "prev": CID.decode(first["cid"])}]
    # the replaced record's block is gone from the repo; the new one is there
    blocks = {bytes(r["cid"]) for r in db_rows(pds, "SELECT cid FROM repo_block WHERE did = ?", (alice.did,))}
    assert CID.decode(first["cid"]).bytes not in blocks and CID.decode(second["cid"]).bytes in blocks

    before = repo_state(pds, alice.did)
    r = c.post(PUT, headers=alice.headers, json={**args, "record": {"mode": "light"}})
    assert r.status_code == 200, r.text
    assert "commit" not in r.json() and r.json()["cid"] == second["cid"]
    assert repo_state(pds, alice.did) == before


def test_delete_twice_is_a_no_op_the_second_time(pds, c, alice):
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.feed.post",
                                                     "record": post("to delete")})
    rkey = r.json()["uri"].rsplit("/", 1)[1]
    args = {"repo": alice.did, "collection": "app.bsky.feed.post", "rkey": rkey}
    r = c.post(DELETE, headers=alice.headers, json=args)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"commit"}
    ev = dagcbor.decode(db_rows(pds, "SELECT event FROM repo_seq ORDER BY seq DESC LIMIT 1")[0]["event"])
    assert ev["ops"][0]["action"] == "delete" and ev["ops"][0]["cid"] is None and ev["ops"][0]["prev"] is not None
    assert_error(c.get(GET, params=args), 400, "RecordNotFound")
    before = repo_state(pds, alice.did)
    r = c.post(DELETE, headers=alice.headers, json=args)
    assert r.status_code == 200 and r.json() == {}, r.text
    assert repo_state(pds, alice.did) == before


def test_update_of_a_missing_record_is_refused(pds, c, alice):
    before = repo_state(pds, alice.did)
    r = c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": [
        {"$type": "com.atproto.repo.applyWrites#update", "collection": "app.bsky.feed.post",
         "rkey": "3kzzzzzzzzzz2", "value": post()}]})
    body = assert_error(r, 400, "InvalidRequest")
    assert "app.bsky.feed.post/3kzzzzzzzzzz2" in body["message"]
    assert repo_state(pds, alice.did) == before


# -- swaps ------------------------------------------------------------------------------------------------


def test_swap_commit_and_swap_record_mismatches(pds, c, alice):
    head = c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": alice.did}).json()
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.feed.post",
                                                     "record": post("swapped"), "swapCommit": head["cid"]})
    assert r.status_code == 200, r.text
    created = r.json()
    rkey = created["uri"].rsplit("/", 1)[1]
    stale = head["cid"]
    before = repo_state(pds, alice.did)

    # the commit moved on: the old head no longer swaps
    r = c.post(CREATE, headers=alice.headers, json={"repo": alice.did, "collection": "app.bsky.feed.post",
                                                     "record": post(), "swapCommit": stale})
    assert_error(r, 400, "InvalidSwap")
    assert created["commit"]["cid"] in r.json()["message"]
    args = {"repo": alice.did, "collection": "app.bsky.feed.post", "rkey": rkey}
    wrong = str(dagcbor.cid_for({"other": 1})[0])
    # putRecord: wrong record CID; null means "must not exist" but it does
    assert_error(c.post(PUT, headers=alice.headers, json={**args, "record": post("x"), "swapRecord": wrong}),
                 400, "InvalidSwap")
    assert_error(c.post(PUT, headers=alice.headers, json={**args, "record": post("x"), "swapRecord": None}),
                 400, "InvalidSwap")
    assert_error(c.post(PUT, headers=alice.headers, json={**args, "record": post("x"), "swapCommit": stale}),
                 400, "InvalidSwap")
    # deleteRecord: wrong record CID
    assert_error(c.post(DELETE, headers=alice.headers, json={**args, "swapRecord": wrong}), 400, "InvalidSwap")
    assert_error(c.post(DELETE, headers=alice.headers, json={**args, "swapCommit": stale}), 400, "InvalidSwap")
    # applyWrites with a stale commit
    r = c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "swapCommit": stale, "writes": [
        {"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": rkey}]})
    assert_error(r, 400, "InvalidSwap")
    assert repo_state(pds, alice.did) == before

    # matching swaps succeed
    r = c.post(PUT, headers=alice.headers, json={**args, "record": post("y"), "swapRecord": created["cid"],
                                                 "swapCommit": created["commit"]["cid"]})
    assert r.status_code == 200, r.text
    r2 = c.post(DELETE, headers=alice.headers, json={**args, "swapRecord": r.json()["cid"]})
    assert r2.status_code == 200 and "commit" in r2.json(), r2.text
    # putRecord with swapRecord null creates a record that does not exist yet
    r = c.post(PUT, headers=alice.headers, json={**args, "record": post("z"), "swapRecord": None})
    assert r.status_code == 200 and "commit" in r.json(), r.text


# -- applyWrites --------------------------------------------------------------------------------------------


def _creates(n: int, prefix: str) -> list[dict]:
    return [{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.item",
             "rkey": f"{prefix}{i:04d}", "value": {"n": i}} for i in range(n)]


def test_apply_writes_limits_and_results(pds, c, alice):
    before = repo_state(pds, alice.did)
    r = c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": _creates(201, "over")})
    assert_error(r, 400, "InvalidRequest")
    assert "200" in r.json()["message"]
    assert repo_state(pds, alice.did) == before

    r = c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": _creates(200, "full")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 200
    assert body["results"][0] == {"$type": "com.atproto.repo.applyWrites#createResult",
                                  "uri": f"at://{alice.did}/com.example.item/full0000",
                                  "cid": str(dagcbor.cid_for({"$type": "com.example.item", "n": 0})[0]),
                                  "validationStatus": "unknown"}
    (event,) = db_rows(pds, "SELECT event FROM repo_seq WHERE seq > ?", (before[4],))
    ev = dagcbor.decode(event["event"])
    assert len(ev["ops"]) == 200
    verify_commit_event(read_car(ev["blocks"])[1], ev["commit"], ev["ops"], ev["prevData"], alice.key)

    # a mixed batch: create, update, delete in one commit
    r = c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.item", "value": {"n": "new"}},
        {"$type": "com.atproto.repo.applyWrites#update", "collection": "com.example.item", "rkey": "full0001",
         "value": {"n": "changed"}},
        {"$type": "com.atproto.repo.applyWrites#delete", "collection": "com.example.item", "rkey": "full0002"},
    ]})
    assert r.status_code == 200, r.text
    kinds = [res["$type"].rsplit("#", 1)[1] for res in r.json()["results"]]
    assert kinds == ["createResult", "updateResult", "deleteResult"]
    assert r.json()["results"][2] == {"$type": "com.atproto.repo.applyWrites#deleteResult"}
    repo = verified(c, alice)
    assert "com.example.item/full0002" not in repo.records
    assert repo.record("com.example.item/full0001") == {"$type": "com.example.item", "n": "changed"}

    # one bad write fails the whole batch
    before = repo_state(pds, alice.did)
    writes = _creates(3, "bad") + [{"$type": "com.atproto.repo.applyWrites#frobnicate", "collection": "a.b.c",
                                     "rkey": "x"}]
    assert_error(c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": writes}), 400,
                 "InvalidRequest")
    writes = _creates(3, "dup") + _creates(1, "dup")
    assert_error(c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": writes}), 400,
                 "InvalidRequest")
    assert repo_state(pds, alice.did) == before


# -- bad input and auth ----------------------------------------------------------------------------------


def test_bad_input_gets_a_4xx_envelope_and_writes_nothing(pds, c, alice):
    before = repo_state(pds, alice.did)
    h = alice.headers
    good = {"repo": alice.did, "collection": "app.bsky.feed.post", "record": post()}
    cases = [
        c.post(CREATE, headers={**h, "content-type": "application/json"}, content=b'{"repo": '),
        c.post(CREATE, headers={**h, "content-type": "text/plain"}, content=json.dumps(good).encode()),
        c.post(CREATE, headers={**h, "content-type": "application/json"}, content=b"[1, 2]"),
        c.post(CREATE, headers=h, json={**good, "collection": "not an nsid"}),
        c.post(CREATE, headers=h, json={**good, "collection": "app.bsky"}),
        c.post(CREATE, headers=h, json={**good, "rkey": "has/slash"}),
        c.post(CREATE, headers=h, json={**good, "rkey": ".."}),
        c.post(CREATE, headers=h, json={**good, "rkey": "x" * 600}),
        c.post(CREATE, headers=h, json={**good, "record": "a string"}),
        c.post(CREATE, headers=h, json={**good, "record": {"$type": "app.bsky.feed.post", "n": 1.5}}),
        c.post(CREATE, headers=h, json={**good, "repo": "not a handle!"}),
        c.post(CREATE, headers=h, json={**good, "repo": 42}),
        c.post(CREATE, headers=h, json={**good, "swapCommit": "not-a-cid"}),
        c.post(CREATE, headers=h, json={k: v for k, v in good.items() if k != "record"}),
        c.post(PUT, headers=h, json=good),  # no rkey
        c.post(APPLY, headers=h, json={"repo": alice.did, "writes": "nope"}),
        c.post(APPLY, headers=h, json={"repo": alice.did, "writes": [5]}),
        c.post(APPLY, headers=h, json={"repo": alice.did, "writes": []}),
        c.get(GET, params={"repo": alice.did, "collection": "app.bsky.feed.post"}),
        c.get(GET, params={"repo": alice.did, "collection": "bad nsid", "rkey": "x"}),
        c.get(GET, params={"repo": alice.did, "collection": "app.bsky.feed.post", "rkey": "x", "cid": "zzz"}),
        c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": alice.did, "collection": "a.b.c", "limit": 101}),
        c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": alice.did, "collection": "a.b.c", "limit": 0}),
    ]
    for r in cases:
        assert r.status_code == 400, (r.request.url, r.text)
        assert r.json()["error"] == "InvalidRequest" and r.json()["message"]
    # a body over the 1 MB write limit
    big = {**good, "record": {"$type": "com.example.blob", "data": "x" * 1_100_000}}
    assert_error(c.post(CREATE, headers=h, json=big), 413, "PayloadTooLarge")
    assert repo_state(pds, alice.did) == before


def test_writes_need_the_owner(pds, c, alice, plc):
    bob = make_user(c, "bobby", plc.url)
    before = repo_state(pds, alice.did)
    body = {"repo": alice.did, "collection": "app.bsky.feed.post", "record": post()}
    assert_error(c.post(CREATE, json=body), 401, "AuthenticationRequired")
    assert_error(c.post(CREATE, headers=bob.headers, json=body), 401, "AuthenticationRequired")
    assert_error(c.post(CREATE, headers=bearer("x.y.z"), json=body), 400, "InvalidToken")
    assert_error(c.post(CREATE, headers=alice.headers, json={**body, "repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}),
                 403, "AccountNotFound")
    assert repo_state(pds, alice.did) == before


def test_deactivated_account_cannot_write(pds, c, plc):
    carol = make_user(c, "carol", plc.url)
    r = c.post(CREATE, headers=carol.headers, json={"repo": carol.did, "collection": "app.bsky.feed.post",
                                                     "record": post()})
    assert r.status_code == 200
    assert c.post("/xrpc/com.atproto.server.deactivateAccount", headers=carol.headers, json={}).status_code == 200
    before = repo_state(pds, carol.did)
    r = c.post(CREATE, headers=carol.headers, json={"repo": carol.did, "collection": "app.bsky.feed.post",
                                                     "record": post("while away")})
    assert_error(r, 401, "AccountDeactivated")
    assert_error(c.post(DELETE, headers=carol.headers, json={"repo": carol.did, "collection": "app.bsky.feed.post",
                                                             "rkey": "3kabcdefghij2"}), 401, "AccountDeactivated")
    assert repo_state(pds, carol.did) == before
    assert c.post("/xrpc/com.atproto.server.activateAccount", headers=carol.headers).status_code == 200
    r = c.post(CREATE, headers=carol.headers, json={"repo": carol.did, "collection": "app.bsky.feed.post",
                                                     "record": post("back")})
    assert r.status_code == 200, r.text


def test_the_repo_verifies_after_every_kind_of_write(c, alice):
    # the independent path sees exactly the records the API reports, with their exact CIDs
    repo = verified(c, alice)
    expected = {}
    for collection in ("app.bsky.feed.post", "app.bsky.actor.profile", "com.example.item", "com.example.setting",
                       "com.example.thing"):
        cursor = None
        while True:
            params = {"repo": alice.did, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/xrpc/com.atproto.repo.listRecords", params=params).json()
            for rec in page["records"]:
                expected[rec["uri"].removeprefix(f"at://{alice.did}/")] = CID.decode(rec["cid"])
            if len(page["records"]) < 100:
                break
            cursor = page["cursor"]
    assert repo.records == expected
    assert len(expected) > 200


def test_a_record_referencing_a_blob_never_uploaded_rolls_the_whole_write_back(pds, c, alice):
    before = repo_state(pds, alice.did)
    ghost = str(CID.from_block(b"never uploaded", 0x55))
    record = {**post("with a ghost image"), "embed": {"$type": "app.bsky.embed.images", "images": [
        {"alt": "", "image": {"$type": "blob", "ref": {"$link": ghost}, "mimeType": "image/png", "size": 14}}]}}
    r = c.post(APPLY, headers=alice.headers, json={"repo": alice.did, "writes": [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.item", "rkey": "before-ghost",
         "value": {"n": 1}},
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": record}]})
    assert r.status_code == 400, r.text
    assert ghost in r.json()["message"] or "blob" in r.json()["message"].lower()
    assert repo_state(pds, alice.did) == before
    assert db_rows(pds, "SELECT COUNT(*) AS n FROM record_blob WHERE did = ?", (alice.did,))[0]["n"] == 0


def test_concurrent_writes_to_one_repo_all_land_in_one_chain(pds, alice):
    from concurrent.futures import ThreadPoolExecutor

    def write(i: int) -> dict:
        with pds.client() as client:
            r = client.post(CREATE, headers=alice.headers, json={
                "repo": alice.did, "collection": "com.example.parallel", "rkey": f"p{i:02d}", "record": {"i": i}})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(24)))
    revs = sorted(r["commit"]["rev"] for r in results)
    assert len(set(revs)) == 24
    with pds.client() as client:
        repo = verified(client, alice)
    for i, res in enumerate(results):
        assert repo.records[f"com.example.parallel/p{i:02d}"] == CID.decode(res["cid"])
    # every commit's event names the previous one's rev as `since`: one unbroken chain
    events = [dagcbor.decode(r["event"]) for r in db_rows(
        pds, "SELECT event FROM repo_seq WHERE did = ? AND event_type = 'commit' ORDER BY seq", (alice.did,))]
    for prev, nxt in zip(events, events[1:]):
        assert nxt["since"] == prev["rev"] and nxt["prevData"] == dagcbor.decode(
            read_car(prev["blocks"])[1][prev["commit"]])["data"]
