"""com.atproto.sync read API against a real server, checked on the independent verification path:
getRepo (whole and since a rev, streamed), getRecord proofs of presence and absence, getBlocks,
getLatestCommit, listRepos, getRepoStatus, and repos hidden while deactivated or taken down."""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing

import pytest

from squall.atproto.car import read_car
from squall.atproto.cid import CID
from tests.helpers.accounts import assert_error, db_rows, make_user
from tests.helpers.pds import PdsProcess
from tests.helpers.verify import VerificationFailed, verify_record_proof, verify_repo_car
from tests.service.test_repo_writes import APPLY, DELETE, GET, verified

SYNC = "/xrpc/com.atproto.sync."


@pytest.fixture(scope="module")
def pds_env(plc):
    return plc.pds_env()


@pytest.fixture(scope="module")
def erin(c, plc):
    user = make_user(c, "erin", plc.url)
    # 600 records in three commits, then some updates and deletes
    for batch in range(3):
        writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.rec",
                   "rkey": f"k{batch}{i:03d}", "value": {"batch": batch, "i": i}} for i in range(200)]
        r = c.post(APPLY, headers=user.headers, json={"repo": user.did, "writes": writes})
        assert r.status_code == 200, r.text
    writes = [{"$type": "com.atproto.repo.applyWrites#update", "collection": "com.example.rec",
               "rkey": f"k1{i:03d}", "value": {"updated": i}} for i in range(0, 200, 10)]
    writes += [{"$type": "com.atproto.repo.applyWrites#delete", "collection": "com.example.rec",
                "rkey": f"k2{i:03d}"} for i in range(0, 200, 7)]
    r = c.post(APPLY, headers=user.headers, json={"repo": user.did, "writes": writes})
    assert r.status_code == 200, r.text
    return user


def _expected_records(pds: PdsProcess, did: str) -> dict[str, CID]:
    rows = db_rows(pds, "SELECT collection, rkey, cid FROM record WHERE did = ?", (did,))
    return {f"{r['collection']}/{r['rkey']}": CID.decode(r["cid"]) for r in rows}


def test_get_repo_streams_a_verifiable_car_with_every_record(pds, c, erin):
    with c.stream("GET", SYNC + "getRepo", params={"did": erin.did}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.ipld.car"
        assert "content-length" not in r.headers  # streamed, not buffered
        car = b"".join(r.iter_bytes())
    repo = verify_repo_car(car, erin.did, erin.key)
    assert len(repo.records) == 600 - len(range(0, 200, 7))
    assert repo.records == _expected_records(pds, erin.did)
    assert repo.record("com.example.rec/k1010") == {"$type": "com.example.rec", "updated": 10}
    # exactly the current repo: no stale commits, nodes or records are exported
    roots, blocks = read_car(car)
    assert len(blocks) == db_rows(pds, "SELECT COUNT(*) AS n FROM repo_block WHERE did = ?", (erin.did,))[0]["n"]
    head = c.get(SYNC + "getLatestCommit", params={"did": erin.did}).json()
    assert head == {"cid": str(roots[0]), "rev": repo.rev}


def test_get_repo_since_a_rev_sends_only_later_blocks(pds, c, erin):
    revs = [r["repo_rev"] for r in db_rows(pds, "SELECT DISTINCT repo_rev FROM repo_block WHERE did = ? "
                                                "ORDER BY repo_rev", (erin.did,))]
    assert len(revs) >= 3
    since = revs[-2]
    r = c.get(SYNC + "getRepo", params={"did": erin.did, "since": since})
    assert r.status_code == 200
    roots, blocks = read_car(r.content)
    later = {bytes(row["cid"]) for row in db_rows(pds, "SELECT cid FROM repo_block WHERE did = ? AND repo_rev > ?",
                                                  (erin.did, since))}
    assert {cid.bytes for cid in blocks} == later
    assert roots[0] in blocks and len(blocks) < 200
    assert_error(c.get(SYNC + "getRepo", params={"did": erin.did, "since": "yesterday"}), 400, "InvalidRequest")


def test_every_record_has_a_proof_and_absent_keys_have_proofs_of_absence(pds, c, erin):
    records = _expected_records(pds, erin.did)
    for path in sorted(records)[::7] + ["com.example.rec/k0000", "com.example.rec/k2199"]:
        if path not in records:
            continue
        collection, rkey = path.split("/")
        r = c.get(SYNC + "getRecord", params={"did": erin.did, "collection": collection, "rkey": rkey})
        assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.car"
        assert verify_record_proof(r.content, erin.did, erin.key, path) == records[path]
    absent = ["com.example.rec/k2000", "com.example.rec/k2007", "com.example.rec/a", "com.example.rec/zzz",
              "com.example.other/k0001", "aaa.example.rec/x", "zzz.example.rec/x"]
    for path in absent:
        collection, rkey = path.split("/")
        r = c.get(SYNC + "getRecord", params={"did": erin.did, "collection": collection, "rkey": rkey})
        assert r.status_code == 200, r.text
        assert verify_record_proof(r.content, erin.did, erin.key, path) is None
    # a proof is a proof of one path: it does not stand in for a far-away key
    r = c.get(SYNC + "getRecord", params={"did": erin.did, "collection": "com.example.rec", "rkey": "k0000"})
    with pytest.raises(VerificationFailed):
        verify_record_proof(r.content, erin.did, erin.key, "com.example.rec/k2150")


def test_get_blocks(c, erin, pds):
    rows = db_rows(pds, "SELECT cid, content FROM repo_block WHERE did = ? LIMIT 3", (erin.did,))
    cids = [str(CID.from_bytes(bytes(r["cid"]))) for r in rows]
    r = c.get(SYNC + "getBlocks", params=[("did", erin.did)] + [("cids", x) for x in cids])
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.car"
    roots, blocks = read_car(r.content)
    assert roots == [] and {str(k) for k in blocks} == set(cids)
    assert all(blocks[CID.from_bytes(bytes(row["cid"]))] == bytes(row["content"]) for row in rows)
    missing = "bafyreidwroesxuw5qzp4pdvvpbxv4bjuvhubqz4zfz3de6pi3a5c5rryum"
    r = c.get(SYNC + "getBlocks", params=[("did", erin.did), ("cids", cids[0]), ("cids", missing)])
    assert_error(r, 400, "BlockNotFound")
    assert missing in r.json()["message"]
    assert_error(c.get(SYNC + "getBlocks", params={"did": erin.did, "cids": "nope"}), 400, "InvalidRequest")


def test_bad_sync_parameters(c, erin):
    for path, params in [("getRepo", {}), ("getRepo", {"did": "alice"}), ("getLatestCommit", {"did": "did:"}),
                         ("getRecord", {"did": erin.did, "collection": "bad", "rkey": "x"}),
                         ("getRecord", {"did": erin.did, "collection": "a.b.c", "rkey": "a/b"}),
                         ("listRepos", {"limit": "0"}), ("listRepos", {"limit": "1001"}),
                         ("listRepos", {"cursor": "garbage"}), ("getRepoStatus", {"did": "x"})]:
        assert_error(c.get(SYNC + path, params=params), 400, "InvalidRequest")
    unknown = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    for path in ("getRepo", "getLatestCommit", "getRepoStatus"):
        assert_error(c.get(SYNC + path, params={"did": unknown}), 400, "RepoNotFound")


def test_list_repos_pages_and_reports_status(c, pds, plc, erin):
    frank = make_user(c, "frank", plc.url)
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
        body = c.get(SYNC + "listRepos", params=params).json()
        if not body["repos"]:
            break
        seen += body["repos"]
        cursor = body["cursor"]
    dids = [r["did"] for r in seen]
    assert dids.index(erin.did) < dids.index(frank.did) and len(dids) == len(set(dids))
    entry = next(r for r in seen if r["did"] == erin.did)
    head = c.get(SYNC + "getLatestCommit", params={"did": erin.did}).json()
    assert entry == {"did": erin.did, "head": head["cid"], "rev": head["rev"], "active": True}


def _set_takedown(pds: PdsProcess, did: str, ref: str | None) -> None:
    # What the admin takedown will do; written straight to the database (WAL lets us in).
    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", timeout=10)) as conn:
        conn.execute("UPDATE account SET takedown_ref = ? WHERE did = ?", (ref, did))
        conn.commit()


def test_deactivated_and_taken_down_repos_are_hidden_except_from_owner_and_admin(c, pds, plc):
    gina = make_user(c, "gina", plc.url)
    r = c.post("/xrpc/com.atproto.repo.createRecord", headers=gina.headers,
               json={"repo": gina.did, "collection": "com.example.x", "rkey": "one", "record": {"a": 1}})
    assert r.status_code == 200
    cid = r.json()["cid"]
    admin = {"Authorization": "Basic " + base64.b64encode(f"admin:{pds.admin_password()}".encode()).decode()}
    assert c.get(SYNC + "getRepoStatus", params={"did": gina.did}).json()["active"] is True

    assert c.post("/xrpc/com.atproto.server.deactivateAccount", headers=gina.headers, json={}).status_code == 200
    status = c.get(SYNC + "getRepoStatus", params={"did": gina.did}).json()
    assert status == {"did": gina.did, "active": False, "status": "deactivated"}
    hidden = [("getRepo", {"did": gina.did}), ("getLatestCommit", {"did": gina.did}),
              ("getRecord", {"did": gina.did, "collection": "com.example.x", "rkey": "one"}),
              ("getBlocks", {"did": gina.did, "cids": cid})]
    for path, params in hidden:
        assert_error(c.get(SYNC + path, params=params), 400, "RepoDeactivated")
    assert_error(c.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": gina.did}), 400, "RepoDeactivated")
    assert_error(c.get(GET, params={"repo": gina.did, "collection": "com.example.x", "rkey": "one"}),
                 400, "RecordNotFound")
    assert_error(c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": gina.did, "collection": "com.example.x"}),
                 400, "InvalidRequest")
    listed = c.get(SYNC + "listRepos", params={"limit": 1000}).json()["repos"]
    assert next(r for r in listed if r["did"] == gina.did)["status"] == "deactivated"
    # the owner and the admin still see it
    for headers in (gina.headers, admin):
        r = c.get(SYNC + "getRepo", params={"did": gina.did}, headers=headers)
        assert r.status_code == 200, r.text
        assert verify_repo_car(r.content, gina.did, gina.key).records == {"com.example.x/one": CID.decode(cid)}
    # another user's token does not help, and a bad credential is an error, not anonymous
    other = make_user(c, "henry", plc.url)
    assert_error(c.get(SYNC + "getRepo", params={"did": gina.did}, headers=other.headers), 400, "RepoDeactivated")
    assert_error(c.get(SYNC + "getRepo", params={"did": gina.did}, headers={"Authorization": "Bearer a.b.c"}),
                 400, "InvalidToken")
    assert_error(c.get(SYNC + "getRepo", params={"did": gina.did},
                       headers={"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}),
                 401, "AuthenticationRequired")

    assert c.post("/xrpc/com.atproto.server.activateAccount", headers=gina.headers).status_code == 200
    _set_takedown(pds, gina.did, "mod-1")
    try:
        for path, params in hidden:
            assert_error(c.get(SYNC + path, params=params), 400, "RepoTakendown")
        assert c.get(SYNC + "getRepoStatus", params={"did": gina.did}).json() == {
            "did": gina.did, "active": False, "status": "takendown"}
        assert c.get(SYNC + "getRepo", params={"did": gina.did}, headers=admin).status_code == 200
        r = c.post(DELETE, headers=gina.headers, json={"repo": gina.did, "collection": "com.example.x", "rkey": "one"})
        assert_error(r, 401, "AccountTakedown")
    finally:
        _set_takedown(pds, gina.did, None)
    assert c.get(SYNC + "getRepo", params={"did": gina.did}).status_code == 200
    assert verified(c, gina).records == {"com.example.x/one": CID.decode(cid)}


def test_a_repo_emptied_again_still_exports_its_empty_tree(c, plc):
    ivy = make_user(c, "ivy", plc.url)
    assert verified(c, ivy).records == {}  # the signup repo
    writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.x", "rkey": k,
               "value": {"k": k}} for k in ("a", "b", "c")]
    assert c.post(APPLY, headers=ivy.headers, json={"repo": ivy.did, "writes": writes}).status_code == 200
    for k in ("a", "b", "c"):
        r = c.post(DELETE, headers=ivy.headers, json={"repo": ivy.did, "collection": "com.example.x", "rkey": k})
        assert r.status_code == 200 and "commit" in r.json()
    repo = verified(c, ivy)
    assert repo.records == {} and len(repo.blocks) == 2  # the commit and the empty root node
    r = c.get(SYNC + "getRecord", params={"did": ivy.did, "collection": "com.example.x", "rkey": "a"})
    assert verify_record_proof(r.content, ivy.did, ivy.key, "com.example.x/a") is None


def test_a_repo_larger_than_one_read_streams_in_chunks_from_one_snapshot(c, plc):
    """Above WHOLE_BYTES (1 MiB) getRepo streams chunk by chunk; the CAR is still whole and valid."""
    user = make_user(c, "bigrepo", plc.url)
    filler = "x" * 90_000
    for batch in range(3):
        writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.big",
                   "rkey": f"b{batch}{i:02d}", "value": {"fill": filler, "i": batch * 5 + i}} for i in range(5)]
        r = c.post(APPLY, headers=user.headers, json={"repo": user.did, "writes": writes})
        assert r.status_code == 200, r.text
    with c.stream("GET", SYNC + "getRepo", params={"did": user.did}) as r:
        assert r.status_code == 200
        pieces = [piece for piece in r.iter_raw()]
        car = b"".join(pieces)
    assert len(car) > 1024 * 1024 and len(pieces) > 1
    repo = verify_repo_car(car, user.did, user.key)
    assert len(repo.records) == 15
    assert repo.record("com.example.big/b204") == {"$type": "com.example.big", "fill": filler, "i": 14}
