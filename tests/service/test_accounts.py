"""Account creation, invites and account status against a real ``squall serve``."""

from __future__ import annotations

import time

import pytest

from squall.atproto import dagcbor, mst
from squall.atproto.car import read_car
from squall.atproto.cid import CID
from squall.atproto.commit import decode_commit, verify_commit
from squall.atproto.crypto import PublicKey, Secp256k1Keypair
from tests.helpers.accounts import PASSWORD, assert_error, bearer, db_rows, signup
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble


def account_count(pds: PdsProcess) -> int:
    return db_rows(pds, "SELECT COUNT(*) AS n FROM account")[0]["n"]


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def invite_pds(tmp_path_factory):
    # invites required; every account earns one invite code per second of age
    env = {"PDS_INVITE_REQUIRED": "true", "PDS_INVITE_INTERVAL": "1000"}
    with PdsProcess(tmp_path_factory.mktemp("invites") / "data", env_extra=env) as proc:
        yield proc


@pytest.fixture
def c(pds):
    with pds.client() as client:
        yield client


# -- createAccount ------------------------------------------------------------------------------------


def test_create_account_returns_session_and_did_document(pds, c):
    r = signup(c, "alice")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["handle"] == "alice.localhost"
    assert body["did"] == "did:web:alice.localhost"
    doc = body["didDoc"]
    assert doc["id"] == body["did"]
    assert doc["alsoKnownAs"] == ["at://alice.localhost"]
    assert doc["service"][0]["serviceEndpoint"] == f"http://localhost:{pds.port}"
    # the tokens are a working session
    r = c.get("/xrpc/com.atproto.server.getSession", headers=bearer(body["accessJwt"]))
    assert r.status_code == 200 and r.json()["did"] == body["did"]
    r = c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(body["refreshJwt"]))
    assert r.status_code == 200, r.text
    # the password is stored as an argon2id hash, never as given
    (row,) = db_rows(pds, "SELECT password_hash, signing_key_alg FROM account WHERE did = ?", (body["did"],))
    assert row["password_hash"].startswith("$argon2id$") and PASSWORD not in row["password_hash"]
    assert row["signing_key_alg"] == "ES256K"


def test_signup_stores_initial_repo_and_three_events_in_order(pds, c):
    r = signup(c, "bobby")
    assert r.status_code == 200, r.text
    did = r.json()["did"]
    key = PublicKey.from_multibase(r.json()["didDoc"]["verificationMethod"][0]["publicKeyMultibase"], "ES256K")

    (root,) = db_rows(pds, "SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    blocks = {CID.from_bytes(row["cid"]): bytes(row["content"])
              for row in db_rows(pds, "SELECT cid, content, repo_rev FROM repo_block WHERE did = ?", (did,))}
    commit_cid = CID.decode(root["cid"])
    assert set(blocks) == {commit_cid, mst.empty_root()}
    assert blocks[mst.empty_root()] == mst.EMPTY_NODE.serialised
    commit = decode_commit(blocks[commit_cid])
    assert commit["did"] == did and commit["version"] == 3 and commit["prev"] is None
    assert commit["data"] == mst.empty_root() and commit["rev"] == root["rev"]
    assert verify_commit(commit, key)

    events = db_rows(pds, "SELECT seq, event_type, event, sequenced_at FROM repo_seq WHERE did = ? ORDER BY seq", (did,))
    assert [e["event_type"] for e in events] == ["identity", "account", "sync"]
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 3))
    identity, account, sync = (dagcbor.decode(e["event"]) for e in events)
    times = {identity["time"], account["time"], sync["time"]}
    assert len(times) == 1 and times == {events[0]["sequenced_at"]}
    assert identity == {"did": did, "handle": "bobby.localhost", "time": identity["time"]}
    assert account == {"did": did, "active": True, "time": account["time"]}
    assert set(sync) == {"did", "blocks", "rev", "time"} and sync["did"] == did and sync["rev"] == root["rev"]
    roots, car_blocks = read_car(sync["blocks"])
    assert roots == [commit_cid] and car_blocks == {commit_cid: blocks[commit_cid]}


@pytest.mark.parametrize("handle, error", [
    ("al.localhost", "InvalidHandle"),                         # name shorter than 3
    ("a" * 19 + ".localhost", "InvalidHandle"),                # name longer than 18
    ("sub.carol.localhost", "InvalidHandle"),                  # dots in the name
    ("bad_name.localhost", "InvalidHandle"),                   # not handle syntax
    ("-carol.localhost", "InvalidHandle"),
    ("carol", "InvalidHandle"),                                # one label
    ("carol.example.com", "UnsupportedDomain"),                # not a service domain
    ("carol.onion", "InvalidHandle"),                          # disallowed TLD
    ("admin.localhost", "HandleNotAvailable"),                 # reserved
    ("Support.localhost", "HandleNotAvailable"),               # reserved, any case
])
def test_invalid_handles_are_refused_and_nothing_is_stored(pds, c, handle, error):
    before = account_count(pds)
    r = c.post("/xrpc/com.atproto.server.createAccount",
               json={"handle": handle, "email": "carol@example.com", "password": PASSWORD})
    assert_error(r, 400, error)
    assert account_count(pds) == before


def test_taken_handle_and_email(c):
    assert signup(c, "dave").status_code == 200
    assert_error(signup(c, "DAVE", email="other@example.com"), 400, "HandleNotAvailable")
    body = assert_error(signup(c, "dave2", email="Dave@Example.com"), 400, "InvalidRequest")
    assert "Email already taken" in body["message"]


@pytest.mark.parametrize("body, error, text", [
    ({"handle": "erin.localhost", "password": PASSWORD}, "InvalidRequest", "Email is required"),
    ({"handle": "erin.localhost", "email": "not-an-email", "password": PASSWORD}, "InvalidRequest", "email"),
    ({"handle": "erin.localhost", "email": "erin@localhost", "password": PASSWORD}, "InvalidRequest", "email"),
    ({"handle": "erin.localhost", "email": "erin@example.com"}, "InvalidPassword", "Password is required"),
    ({"handle": "erin.localhost", "email": "erin@example.com", "password": "short"}, "InvalidPassword", "too short"),
    ({"handle": "erin.localhost", "email": "erin@example.com", "password": "x" * 257}, "InvalidPassword", "too long"),
    ({"email": "erin@example.com", "password": PASSWORD}, "InvalidRequest", "handle"),
    ({"handle": 5, "email": "erin@example.com", "password": PASSWORD}, "InvalidRequest", "handle"),
    ({"handle": "erin.localhost", "email": ["erin@example.com"], "password": PASSWORD}, "InvalidRequest", "email"),
    ({"handle": "erin.localhost", "email": "erin@example.com", "password": True}, "InvalidRequest", "password"),
    ({"handle": "erin.localhost", "email": "erin@example.com", "password": PASSWORD, "plcOp": {}},
     "InvalidRequest", "plcOp"),
    ({"handle": "erin.localhost", "email": "erin@example.com", "password": PASSWORD,
      "did": "did:plc:abcdefghijklmnopqrstuvwx"}, "InvalidRequest", "did"),
])
def test_bad_signup_input(pds, c, body, error, text):
    before = account_count(pds)
    r = c.post("/xrpc/com.atproto.server.createAccount", json=body)
    assert text.lower() in assert_error(r, 400, error)["message"].lower()
    assert account_count(pds) == before


@pytest.mark.parametrize("content, ctype", [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"\xff\xfe", "application/json"),
    (b'{"handle": "x.localhost"}', "text/plain"),
])
def test_malformed_bodies_get_the_envelope(c, content, ctype):
    for nsid in ("createAccount", "createSession", "createAppPassword", "createInviteCode"):
        r = c.post(f"/xrpc/com.atproto.server.{nsid}", content=content, headers={"Content-Type": ctype})
        assert r.status_code in (400, 401), (nsid, r.text)
        assert set(r.json()) == {"error", "message"}


def test_wrong_http_method(c):
    assert_error(c.get("/xrpc/com.atproto.server.createAccount"), 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.server.getSession", json={}), 400, "InvalidRequest")


def test_describe_server(pds, c):
    r = c.get("/xrpc/com.atproto.server.describeServer")
    body = r.json()
    assert body["availableUserDomains"] == [".localhost"]
    assert body["inviteCodeRequired"] is False and body["did"] == "did:web:localhost"


# -- did:plc through the directory double ------------------------------------------------------------------


@pytest.fixture(scope="module")
def plc_pds(tmp_path_factory):
    with PlcDirectoryDouble() as directory:
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": directory.url}
        with PdsProcess(tmp_path_factory.mktemp("plc") / "data", env_extra=env) as proc:
            yield proc, directory


def test_plc_signup_publishes_a_genesis_op(plc_pds):
    pds, directory = plc_pds
    with pds.client() as c:
        r = signup(c, "paula")
        assert r.status_code == 200, r.text
        body = r.json()
        did = body["did"]
        assert did.startswith("did:plc:") and len(did) == len("did:plc:") + 24
        (genesis,) = directory.log(did)  # the double checked hash, signature and shape
        assert genesis["prev"] is None and genesis["alsoKnownAs"] == ["at://paula.localhost"]
        rotation = (pds.data_dir / "secrets" / "plc_rotation_key.k256.hex").read_text().strip()
        assert genesis["rotationKeys"][0] == Secp256k1Keypair.from_private_hex(rotation).did_key()
        key = body["didDoc"]["verificationMethod"][0]["publicKeyMultibase"]
        assert genesis["verificationMethods"]["atproto"] == "did:key:" + key
        assert genesis["services"]["atproto_pds"]["endpoint"] == f"http://localhost:{pds.port}"
        status = c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=bearer(body["accessJwt"])).json()
        assert status["validDid"] is True and status["activated"] is True
        (row,) = db_rows(pds, "SELECT plc_pending_op FROM account WHERE did = ?", (did,))
        assert row["plc_pending_op"] is None


def test_plc_refusal_stores_nothing(plc_pds):
    pds, directory = plc_pds
    before_accounts = account_count(pds)
    (before_seq,) = db_rows(pds, "SELECT COUNT(*) AS n FROM repo_seq")
    with pds.client() as c:
        directory.fail_next(1, 400)
        assert_error(signup(c, "quinn"), 502, "UpstreamFailure")
    directory.clear_failures()
    assert account_count(pds) == before_accounts
    assert db_rows(pds, "SELECT COUNT(*) AS n FROM repo_seq")[0]["n"] == before_seq["n"]
    assert db_rows(pds, "SELECT COUNT(*) AS n FROM repo_root")[0]["n"] == before_accounts
    with pds.client() as c:  # the handle is still free
        assert signup(c, "quinn").status_code == 200


def test_plc_unreachable_keeps_the_op_for_later(plc_pds):
    pds, directory = plc_pds
    with pds.client() as c:
        directory.fail_next(2, 503)  # the first try and its one retry
        r = signup(c, "rosa")
        directory.clear_failures()
        assert r.status_code == 200, r.text
        did = r.json()["did"]
        assert directory.log(did) == []
        (row,) = db_rows(pds, "SELECT plc_pending_op FROM account WHERE did = ?", (did,))
        op = dagcbor.decode(row["plc_pending_op"])
        assert op["type"] == "plc_operation" and op["prev"] is None and op["alsoKnownAs"] == ["at://rosa.localhost"]
        status = c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=bearer(r.json()["accessJwt"])).json()
        assert status["validDid"] is False
        # the account itself is complete: its session works and its signup events are there
        assert c.get("/xrpc/com.atproto.server.getSession", headers=bearer(r.json()["accessJwt"])).status_code == 200
        events = db_rows(pds, "SELECT event_type FROM repo_seq WHERE did = ? ORDER BY seq", (did,))
        assert [e["event_type"] for e in events] == ["identity", "account", "sync"]


# -- invites ------------------------------------------------------------------------------------------


def test_invite_required(invite_pds):
    admin = ("admin", invite_pds.admin_password())
    with invite_pds.client() as c:
        assert c.get("/xrpc/com.atproto.server.describeServer").json()["inviteCodeRequired"] is True
        assert_error(signup(c, "frank"), 400, "InvalidInviteCode")
        assert_error(signup(c, "frank", invite="localhost-aaaaa-bbbbb"), 400, "InvalidInviteCode")
        assert account_count(invite_pds) == 0

        r = c.post("/xrpc/com.atproto.server.createInviteCode", json={"useCount": 1}, auth=admin)
        assert r.status_code == 200, r.text
        code = r.json()["code"]
        assert code.startswith("localhost-") and len(code) == len("localhost-xxxxx-xxxxx")
        r = signup(c, "frank", invite=code)
        assert r.status_code == 200, r.text
        frank = r.json()
        # used up: a second account may not use it
        assert_error(signup(c, "grace", invite=code), 400, "InvalidInviteCode")
        (use,) = db_rows(invite_pds, "SELECT used_by FROM invite_code_use WHERE code = ?", (code,))
        assert use["used_by"] == frank["did"]

        # a multi-use code created for an account shows up in that account's codes
        r = c.post("/xrpc/com.atproto.server.createInviteCodes",
                   json={"codeCount": 2, "useCount": 3, "forAccounts": [frank["did"]]}, auth=admin)
        assert r.status_code == 200, r.text
        (entry,) = r.json()["codes"]
        assert entry["account"] == frank["did"] and len(entry["codes"]) == 2
        assert signup(c, "grace", invite=entry["codes"][0]).status_code == 200

        r = c.get("/xrpc/com.atproto.server.getAccountInviteCodes", params={"createAvailable": "false"},
                  headers=bearer(frank["accessJwt"]))
        assert r.status_code == 200, r.text
        codes = {x["code"]: x for x in r.json()["codes"]}
        assert set(codes) == set(entry["codes"])
        used = codes[entry["codes"][0]]
        assert used["available"] == 3 and used["createdBy"] == "admin" and used["forAccount"] == frank["did"]
        assert [u["usedBy"] for u in used["uses"]] == ["did:web:grace.localhost"]


def test_earned_invite_codes(invite_pds):
    admin = ("admin", invite_pds.admin_password())
    with invite_pds.client() as c:
        code = c.post("/xrpc/com.atproto.server.createInviteCode", json={"useCount": 1}, auth=admin).json()["code"]
        henry = signup(c, "henry", invite=code).json()
        time.sleep(2.2)  # PDS_INVITE_INTERVAL=1000 ms: two codes earned
        r = c.get("/xrpc/com.atproto.server.getAccountInviteCodes", headers=bearer(henry["accessJwt"]))
        assert r.status_code == 200, r.text
        codes = r.json()["codes"]
        assert len(codes) >= 2
        assert all(x["createdBy"] == henry["did"] and x["available"] == 1 and x["uses"] == [] for x in codes)
        # asking again creates nothing new until more time has passed, and codes are usable
        again = c.get("/xrpc/com.atproto.server.getAccountInviteCodes", params={"createAvailable": "false"},
                      headers=bearer(henry["accessJwt"])).json()["codes"]
        assert {x["code"] for x in again} == {x["code"] for x in codes}
        assert signup(c, "irene", invite=codes[0]["code"]).status_code == 200
        # includeUsed=false hides the used one
        unused = c.get("/xrpc/com.atproto.server.getAccountInviteCodes",
                       params={"createAvailable": "false", "includeUsed": "false"},
                       headers=bearer(henry["accessJwt"])).json()["codes"]
        assert codes[0]["code"] not in {x["code"] for x in unused}
        bad = c.get("/xrpc/com.atproto.server.getAccountInviteCodes", params={"includeUsed": "maybe"},
                    headers=bearer(henry["accessJwt"]))
        assert_error(bad, 400, "InvalidRequest")


def test_admin_routes_refuse_users(pds, c):
    user = signup(c, "ivan").json()
    for nsid, body in (("createInviteCode", {"useCount": 1}), ("createInviteCodes", {"codeCount": 1, "useCount": 1})):
        url = f"/xrpc/com.atproto.server.{nsid}"
        assert_error(c.post(url, json=body), 401, "AuthenticationRequired")
        assert_error(c.post(url, json=body, headers=bearer(user["accessJwt"])), 401, "AuthenticationRequired")
        assert_error(c.post(url, json=body, auth=("admin", "not-the-password")), 401, "AuthenticationRequired")
        assert_error(c.post(url, json=body, auth=("ivan", pds.admin_password())), 401, "AuthenticationRequired")
    assert db_rows(pds, "SELECT COUNT(*) AS n FROM invite_code")[0]["n"] == 0


@pytest.mark.parametrize("body", [
    {}, {"useCount": 0}, {"useCount": "1"}, {"useCount": True}, {"useCount": 1.5},
    {"useCount": 1, "forAccount": "not a did"}, {"useCount": 10**9},
])
def test_create_invite_code_bad_input(pds, c, body):
    r = c.post("/xrpc/com.atproto.server.createInviteCode", json=body, auth=("admin", pds.admin_password()))
    assert_error(r, 400, "InvalidRequest")


# -- status ---------------------------------------------------------------------------------------------


def test_check_account_status(pds, c):
    user = signup(c, "judy").json()
    r = c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=bearer(user["accessJwt"]))
    assert r.status_code == 200, r.text
    body = r.json()
    (root,) = db_rows(pds, "SELECT cid, rev FROM repo_root WHERE did = ?", (user["did"],))
    assert body == {
        "activated": True, "validDid": True, "repoCommit": root["cid"], "repoRev": root["rev"],
        "repoBlocks": 2, "indexedRecords": 0, "privateStateValues": 0, "expectedBlobs": 0, "importedBlobs": 0,
    }
    assert_error(c.get("/xrpc/com.atproto.server.checkAccountStatus"), 401, "AuthenticationRequired")


def test_deactivate_and_activate(pds, c):
    user = signup(c, "kevin").json()
    did, headers = user["did"], bearer(user["accessJwt"])
    (last,) = db_rows(pds, "SELECT MAX(seq) AS seq FROM repo_seq")
    assert_error(c.post("/xrpc/com.atproto.server.deactivateAccount", json={"deleteAfter": "tomorrow"},
                        headers=headers), 400, "InvalidRequest")
    r = c.post("/xrpc/com.atproto.server.deactivateAccount", json={"deleteAfter": "2030-01-01T00:00:00.000Z"},
               headers=headers)
    assert r.status_code == 200, r.text
    events = db_rows(pds, "SELECT event_type, event FROM repo_seq WHERE seq > ? ORDER BY seq", (last["seq"],))
    assert [e["event_type"] for e in events] == ["account"]
    body = dagcbor.decode(events[0]["event"])
    assert body == {"did": did, "active": False, "status": "deactivated", "time": body["time"]}

    session = c.get("/xrpc/com.atproto.server.getSession", headers=headers).json()
    assert session["active"] is False and session["status"] == "deactivated"
    status = c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=headers).json()
    assert status["activated"] is False
    # a deactivated account may still sign in, and is told so
    login = c.post("/xrpc/com.atproto.server.createSession",
                   json={"identifier": "kevin.localhost", "password": PASSWORD}).json()
    assert login["active"] is False and login["status"] == "deactivated"

    (last,) = db_rows(pds, "SELECT MAX(seq) AS seq FROM repo_seq")
    r = c.post("/xrpc/com.atproto.server.activateAccount", headers=headers)
    assert r.status_code == 200, r.text
    events = db_rows(pds, "SELECT event_type, event FROM repo_seq WHERE seq > ? ORDER BY seq", (last["seq"],))
    assert [e["event_type"] for e in events] == ["account", "identity", "sync"]
    account, identity, sync = (dagcbor.decode(e["event"]) for e in events)
    assert account == {"did": did, "active": True, "time": account["time"]}
    assert identity == {"did": did, "handle": "kevin.localhost", "time": identity["time"]}
    (root,) = db_rows(pds, "SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    assert sync["rev"] == root["rev"] and read_car(sync["blocks"])[0] == [CID.decode(root["cid"])]
    session = c.get("/xrpc/com.atproto.server.getSession", headers=headers).json()
    assert session["active"] is True and "status" not in session


def test_no_secrets_in_logs(pds, c):
    # runs last in this module: everything above has gone through the server by now
    user = signup(c, "lucy", password="a-very-distinct-password-123").json()
    logs = pds.logs()
    for secret in (PASSWORD, "a-very-distinct-password-123", user["accessJwt"], user["refreshJwt"]):
        assert secret not in logs
    assert "createAccount" in logs  # the requests were logged, just not their secrets
