"""com.atproto.admin.* against a real ``squall serve`` (did:plc accounts on the PLC test double):
who may call them, account/record/blob takedowns and what they hide, handle/email/password
changes, invite management, and bad input."""

from __future__ import annotations

import itertools
import os

import httpx
import pytest

from squall.atproto import dagcbor
from tests.helpers.accounts import PASSWORD, assert_error, bearer, create_account, db_rows, signup
from tests.helpers.pds import PdsProcess

ADMIN_METHODS = {
    "com.atproto.admin.getAccountInfo": "GET",
    "com.atproto.admin.getAccountInfos": "GET",
    "com.atproto.admin.updateSubjectStatus": "POST",
    "com.atproto.admin.getSubjectStatus": "GET",
    "com.atproto.admin.deleteAccount": "POST",
    "com.atproto.admin.updateAccountHandle": "POST",
    "com.atproto.admin.updateAccountEmail": "POST",
    "com.atproto.admin.updateAccountPassword": "POST",
    "com.atproto.admin.disableInviteCodes": "POST",
    "com.atproto.admin.enableAccountInvites": "POST",
    "com.atproto.admin.disableAccountInvites": "POST",
    "com.atproto.admin.getInviteCodes": "GET",
    "com.atproto.admin.sendEmail": "POST",
}
REPO_REF = "com.atproto.admin.defs#repoRef"
STRONG_REF = "com.atproto.repo.strongRef"
BLOB_REF = "com.atproto.admin.defs#repoBlobRef"
POST = "app.bsky.feed.post"

_names = itertools.count()


@pytest.fixture(scope="module")
def pds_env(plc):
    return plc.pds_env()


def status_update(c, admin, subject: dict, **attrs) -> httpx.Response:
    return c.post("/xrpc/com.atproto.admin.updateSubjectStatus", json={"subject": subject, **attrs}, auth=admin)


def repo_ref(did: str) -> dict:
    return {"$type": REPO_REF, "did": did}


def post(c, user: dict, text: str = "hello", **extra) -> dict:
    record = {"$type": POST, "text": text, "createdAt": "2024-05-01T12:00:00.000Z", **extra}
    r = c.post("/xrpc/com.atproto.repo.createRecord",
               json={"repo": user["did"], "collection": POST, "record": record}, headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()


def events(pds: PdsProcess, did: str, kind: str) -> list[dict]:
    rows = db_rows(pds, "SELECT event FROM repo_seq WHERE did = ? AND event_type = ? ORDER BY seq", (did, kind))
    return [dagcbor.decode(bytes(r["event"])) for r in rows]


def login(c, identifier: str, password: str = PASSWORD) -> httpx.Response:
    return c.post("/xrpc/com.atproto.server.createSession", json={"identifier": identifier, "password": password})


# -- who may call ----------------------------------------------------------------------------------


@pytest.mark.parametrize("nsid", sorted(ADMIN_METHODS))
def test_admin_methods_refuse_anonymous_users_and_wrong_passwords(c, admin, nsid):
    user = create_account(c, "who")
    method = ADMIN_METHODS[nsid]
    for headers, auth in (({}, None), (user["headers"], None), ({}, ("admin", "wrong-password")),
                          ({}, (user["handle"], PASSWORD))):
        if method == "GET":
            r = c.get(f"/xrpc/{nsid}", params={"did": user["did"]}, headers=headers, auth=auth)
        else:
            r = c.post(f"/xrpc/{nsid}", json={"did": user["did"]}, headers=headers, auth=auth)
        assert_error(r, 401, "AuthenticationRequired")
    # the user is untouched
    assert c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).status_code == 200


def test_delete_token_route_is_admin_only(pds, c):
    user = create_account(c, "tok")
    for headers in ({}, user["headers"]):
        r = c.post("/xrpc/_admin/account-delete-token", json={"did": user["did"]}, headers=headers)
        assert_error(r, 401, "AuthenticationRequired")
    assert db_rows(pds, "SELECT did FROM account_token WHERE did = ?", (user["did"],)) == []


# -- account info ------------------------------------------------------------------------------------


def test_get_account_info(c, admin):
    invite = c.post("/xrpc/com.atproto.server.createInviteCode", json={"useCount": 2}, auth=admin).json()["code"]
    user = create_account(c, "info", invite=invite)
    c.post("/xrpc/com.atproto.server.createInviteCodes",
           json={"useCount": 1, "codeCount": 2, "forAccounts": [user["did"]]}, auth=admin)
    r = c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": user["did"]}, auth=admin)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["did"] == user["did"] and view["handle"] == user["handle"]
    assert view["email"] == f"{user['name']}@example.com"
    assert view["indexedAt"].endswith("Z") and "emailConfirmedAt" not in view and "deactivatedAt" not in view
    assert view["invitesDisabled"] is False
    assert view["invitedBy"]["code"] == invite and view["invitedBy"]["forAccount"] == "admin"
    assert {"usedBy": user["did"], "usedAt": view["invitedBy"]["uses"][0]["usedAt"]} in view["invitedBy"]["uses"]
    assert len(view["invites"]) == 2
    assert all(i["forAccount"] == user["did"] and i["available"] == 1 and i["uses"] == [] for i in view["invites"])

    c.post("/xrpc/com.atproto.server.deactivateAccount", json={}, headers=user["headers"])
    view = c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": user["did"]}, auth=admin).json()
    assert view["deactivatedAt"].endswith("Z")


def test_get_account_info_errors(c, admin):
    r = c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, auth=admin)
    assert_error(r, 400, "NotFound")
    assert_error(c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": "nope"}, auth=admin),
                 400, "InvalidRequest")
    assert_error(c.get("/xrpc/com.atproto.admin.getAccountInfo", auth=admin), 400, "InvalidRequest")


def test_get_account_infos_in_order_without_unknown_or_repeated(c, admin):
    a, b = create_account(c, "infos"), create_account(c, "infos")
    unknown = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
    r = c.get("/xrpc/com.atproto.admin.getAccountInfos",
              params=[("dids", b["did"]), ("dids", unknown), ("dids", a["did"]), ("dids", b["did"])], auth=admin)
    assert r.status_code == 200, r.text
    assert [i["did"] for i in r.json()["infos"]] == [b["did"], a["did"]]
    assert_error(c.get("/xrpc/com.atproto.admin.getAccountInfos", auth=admin), 400, "InvalidRequest")
    r = c.get("/xrpc/com.atproto.admin.getAccountInfos", params=[("dids", a["did"]), ("dids", "x")], auth=admin)
    assert_error(r, 400, "InvalidRequest")
    r = c.get("/xrpc/com.atproto.admin.getAccountInfos", params=[("dids", a["did"])] * 501, auth=admin)
    assert_error(r, 400, "InvalidRequest")


# -- account takedown --------------------------------------------------------------------------------


def test_account_takedown_hides_everything_and_ends_sessions_then_reversal_restores(pds, c, admin):
    user = create_account(c, "down")
    did = user["did"]
    record = post(c, user)
    rkey = record["uri"].rsplit("/", 1)[1]
    blob = c.post("/xrpc/com.atproto.repo.uploadBlob", content=b"\x89PNG\r\n\x1a\n" + os.urandom(300),
                  headers={**user["headers"], "Content-Type": "image/png"}).json()["blob"]
    post(c, user, "with image", embed={"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": ""}]})
    cid = blob["ref"]["$link"]

    r = status_update(c, admin, repo_ref(did), takedown={"applied": True, "ref": "case-17"})
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": repo_ref(did), "takedown": {"applied": True, "ref": "case-17"}}
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": did}, auth=admin)
    assert r.json() == {"subject": repo_ref(did), "takedown": {"applied": True, "ref": "case-17"},
                        "deactivated": {"applied": False}}
    assert events(pds, did, "account")[-1] == {"did": did, "active": False, "status": "takendown",
                                               "time": events(pds, did, "account")[-1]["time"]}
    assert db_rows(pds, "SELECT id FROM refresh_token WHERE did = ?", (did,)) == []

    # hidden from everyone else
    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}), 400, "RepoTakendown")
    assert_error(c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": did}), 400, "RepoTakendown")
    assert_error(c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}), 400, "RepoTakendown")
    assert_error(c.get("/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": POST, "rkey": rkey}),
                 400, "RecordNotFound")
    assert c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": did, "collection": POST}).status_code == 400
    assert_error(c.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": did}), 400, "RepoTakendown")
    status = c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": did}).json()
    assert status["active"] is False and status["status"] == "takendown"
    # the admin still sees the repo
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}, auth=admin).status_code == 200

    # the sessions stop working
    assert c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).status_code == 400
    assert c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(user["refreshJwt"])).status_code >= 400
    assert_error(login(c, user["handle"]), 401, "AccountTakedown")
    r = c.post("/xrpc/com.atproto.repo.createRecord", headers=user["headers"],
               json={"repo": did, "collection": POST,
                     "record": {"$type": POST, "text": "x", "createdAt": "2024-05-01T12:00:00.000Z"}})
    assert_error(r, 401, "AccountTakedown")

    # reversal
    r = status_update(c, admin, repo_ref(did), takedown={"applied": False})
    assert r.status_code == 200 and r.json()["takedown"] == {"applied": False}
    last = events(pds, did, "account")[-1]
    assert last == {"did": did, "active": True, "time": last["time"]}
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": did}, auth=admin)
    assert r.json()["takedown"] == {"applied": False}
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}).status_code == 200
    assert c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}).status_code == 200
    r = c.get("/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": POST, "rkey": rkey})
    assert r.status_code == 200 and r.json()["cid"] == record["cid"]
    session = login(c, user["handle"])
    assert session.status_code == 200
    assert c.get("/xrpc/com.atproto.server.getSession", headers=bearer(session.json()["accessJwt"])).status_code == 200


def test_takedown_without_ref_is_stamped_and_keeps_deactivation(pds, c, admin):
    user = create_account(c, "stamp")
    did = user["did"]
    assert c.post("/xrpc/com.atproto.server.deactivateAccount", json={}, headers=user["headers"]).status_code == 200
    assert status_update(c, admin, repo_ref(did), takedown={"applied": True}).status_code == 200
    ref = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": did}, auth=admin).json()["takedown"]["ref"]
    assert ref.endswith("Z") and ref[:4].isdigit()
    assert status_update(c, admin, repo_ref(did), takedown={"applied": False}).status_code == 200
    # still deactivated: the reversal announces that, not "active"
    last = events(pds, did, "account")[-1]
    assert last["active"] is False and last["status"] == "deactivated"


def test_admin_deactivation_and_bare_status_event(pds, c, admin):
    user = create_account(c, "deact")
    did = user["did"]
    before = len(events(pds, did, "account"))
    assert status_update(c, admin, repo_ref(did), deactivated={"applied": True}).status_code == 200
    assert events(pds, did, "account")[-1]["status"] == "deactivated"
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": did}, auth=admin).json()
    assert r["deactivated"] == {"applied": True} and r["takedown"] == {"applied": False}
    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}), 400, "RepoDeactivated")
    assert status_update(c, admin, repo_ref(did), deactivated={"applied": False}).status_code == 200
    assert events(pds, did, "account")[-1]["active"] is True
    # activation announces identity and the current commit too, as activateAccount does
    assert events(pds, did, "sync")
    # neither attribute: the current status is announced again
    assert status_update(c, admin, repo_ref(did)).status_code == 200
    assert len(events(pds, did, "account")) == before + 3
    r = status_update(c, admin, repo_ref(did), takedown={"applied": True}, deactivated={"applied": False})
    assert_error(r, 400, "InvalidRequest")
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}).status_code == 200  # nothing applied


# -- record and blob takedowns ----------------------------------------------------------------------


def test_record_takedown_hides_the_record_until_reversed(pds, c, admin):
    user = create_account(c, "rec")
    did = user["did"]
    keep, hide = post(c, user, "keep"), post(c, user, "hide")
    rkey = hide["uri"].rsplit("/", 1)[1]
    subject = {"$type": STRONG_REF, "uri": hide["uri"], "cid": hide["cid"]}
    r = status_update(c, admin, subject, takedown={"applied": True, "ref": "spam"})
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": subject, "takedown": {"applied": True, "ref": "spam"}}
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"uri": hide["uri"]}, auth=admin)
    assert r.json() == {"subject": subject, "takedown": {"applied": True, "ref": "spam"}}

    params = {"repo": did, "collection": POST, "rkey": rkey}
    for headers in ({}, user["headers"]):
        assert_error(c.get("/xrpc/com.atproto.repo.getRecord", params=params, headers=headers), 400, "RecordNotFound")
    by_handle = {**params, "repo": user["handle"]}
    assert_error(c.get("/xrpc/com.atproto.repo.getRecord", params=by_handle), 400, "RecordNotFound")
    listed = c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": did, "collection": POST}).json()
    assert [r["uri"] for r in listed["records"]] == [keep["uri"]]
    # the rest of the repo is untouched
    assert c.get("/xrpc/com.atproto.repo.getRecord",
                 params={**params, "rkey": keep["uri"].rsplit("/", 1)[1]}).status_code == 200
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}).status_code == 200

    r = status_update(c, admin, subject, takedown={"applied": False})
    assert r.status_code == 200
    r = c.get("/xrpc/com.atproto.repo.getRecord", params=params)
    assert r.status_code == 200 and r.json()["value"]["text"] == "hide"
    listed = c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": did, "collection": POST}).json()
    assert len(listed["records"]) == 2


def test_record_taken_down_then_deleted_and_rewritten_is_visible(c, admin):
    user = create_account(c, "rew")
    rec = post(c, user, "first")
    rkey = rec["uri"].rsplit("/", 1)[1]
    assert status_update(c, admin, {"$type": STRONG_REF, "uri": rec["uri"], "cid": rec["cid"]},
                         takedown={"applied": True}).status_code == 200
    r = c.post("/xrpc/com.atproto.repo.deleteRecord", json={"repo": user["did"], "collection": POST, "rkey": rkey},
               headers=user["headers"])
    assert r.status_code == 200, r.text
    record = {"$type": POST, "text": "second", "createdAt": "2024-05-01T12:00:00.000Z"}
    r = c.post("/xrpc/com.atproto.repo.putRecord", headers=user["headers"],
               json={"repo": user["did"], "collection": POST, "rkey": rkey, "record": record})
    assert r.status_code == 200, r.text
    r = c.get("/xrpc/com.atproto.repo.getRecord", params={"repo": user["did"], "collection": POST, "rkey": rkey})
    assert r.status_code == 200 and r.json()["value"]["text"] == "second"


def test_record_takedown_survives_a_restart(pds, c, admin):
    user = create_account(c, "restart")
    rec = post(c, user, "hidden after restart")
    assert status_update(c, admin, {"$type": STRONG_REF, "uri": rec["uri"], "cid": rec["cid"]},
                         takedown={"applied": True}).status_code == 200
    pds.stop()
    pds.start()
    with pds.client() as fresh:
        r = fresh.get("/xrpc/com.atproto.repo.getRecord",
                      params={"repo": user["did"], "collection": POST, "rkey": rec["uri"].rsplit("/", 1)[1]})
        assert_error(r, 400, "RecordNotFound")


def test_blob_takedown(pds, c, admin):
    user = create_account(c, "blob")
    did = user["did"]
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
    blob = c.post("/xrpc/com.atproto.repo.uploadBlob", content=data,
                  headers={**user["headers"], "Content-Type": "image/png"}).json()["blob"]
    post(c, user, "pic", embed={"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": ""}]})
    cid = blob["ref"]["$link"]
    subject = {"$type": BLOB_REF, "did": did, "cid": cid}
    r = status_update(c, admin, subject, takedown={"applied": True, "ref": "dmca-1"})
    assert r.status_code == 200 and r.json() == {"subject": subject, "takedown": {"applied": True, "ref": "dmca-1"}}
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": did, "blob": cid}, auth=admin)
    assert r.json() == {"subject": subject, "takedown": {"applied": True, "ref": "dmca-1"}}
    for kw in ({}, {"headers": user["headers"]}, {"auth": admin}):
        assert_error(c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}, **kw),
                     400, "BlobNotFound")
    r = c.post("/xrpc/com.atproto.repo.uploadBlob", content=data,
               headers={**user["headers"], "Content-Type": "image/png"})
    assert r.status_code == 400
    assert status_update(c, admin, subject, takedown={"applied": False}).status_code == 200
    r = c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid})
    assert r.status_code == 200 and r.content == data


@pytest.mark.parametrize("subject, error", [
    ({"$type": REPO_REF, "did": "did:plc:cccccccccccccccccccccccc"}, "NotFound"),
    ({"$type": REPO_REF, "did": "not-a-did"}, "InvalidRequest"),
    ({"$type": REPO_REF}, "InvalidRequest"),
    ({"$type": STRONG_REF, "uri": "at://did:plc:cccccccccccccccccccccccc/app.bsky.feed.post/3kabc",
      "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}, "NotFound"),
    ({"$type": STRONG_REF, "uri": "at://did:plc:cccccccccccccccccccccccc", "cid": "x"}, "InvalidRequest"),
    ({"$type": STRONG_REF, "uri": "https://example.com", "cid": "x"}, "InvalidRequest"),
    ({"$type": BLOB_REF, "did": "did:plc:cccccccccccccccccccccccc",
      "cid": "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}, "NotFound"),
    ({"$type": BLOB_REF, "did": "did:plc:cccccccccccccccccccccccc", "cid": "not-a-cid"}, "InvalidRequest"),
    ({"$type": "com.example.other", "did": "did:plc:cccccccccccccccccccccccc"}, "InvalidRequest"),
    ({"did": "did:plc:cccccccccccccccccccccccc"}, "InvalidRequest"),
])
def test_update_subject_status_bad_subjects(c, admin, subject, error):
    assert_error(status_update(c, admin, subject, takedown={"applied": True}), 400, error)


def test_update_subject_status_bad_bodies(c, admin):
    user = create_account(c, "badbody")
    ref = repo_ref(user["did"])
    for body in ({}, {"subject": "x"}, {"subject": ref, "takedown": {"applied": "yes"}},
                 {"subject": ref, "takedown": {}}, {"subject": ref, "takedown": {"applied": True, "ref": 5}},
                 {"subject": ref, "takedown": {"applied": True, "ref": "r" * 2000}},
                 {"subject": ref, "deactivated": []}):
        r = c.post("/xrpc/com.atproto.admin.updateSubjectStatus", json=body, auth=admin)
        assert_error(r, 400, "InvalidRequest")
    r = c.post("/xrpc/com.atproto.admin.updateSubjectStatus", content=b"{not json",
               headers={"Content-Type": "application/json"}, auth=admin)
    assert_error(r, 400, "InvalidRequest")
    # nothing was applied by any of them
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user["did"]}).status_code == 200


def test_get_subject_status_errors(c, admin):
    unknown = "did:plc:dddddddddddddddddddddddd"
    assert_error(c.get("/xrpc/com.atproto.admin.getSubjectStatus", auth=admin), 400, "InvalidRequest")
    assert_error(c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": unknown}, auth=admin),
                 400, "NotFound")
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus",
              params={"blob": "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}, auth=admin)
    assert_error(r, 400, "InvalidRequest")
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"uri": "at://x y"}, auth=admin)
    assert_error(r, 400, "InvalidRequest")
    r = c.get("/xrpc/com.atproto.admin.getSubjectStatus", params={"did": unknown, "blob": "zz"}, auth=admin)
    assert_error(r, 400, "InvalidRequest")


# -- handle, email, password -----------------------------------------------------------------------


def test_update_account_handle(pds, plc, c, admin):
    user = create_account(c, "hdl")
    other = create_account(c, "hdl")
    did = user["did"]
    new = f"renamed{next(_names)}.localhost"
    r = c.post("/xrpc/com.atproto.admin.updateAccountHandle", json={"did": did, "handle": new.upper()}, auth=admin)
    assert r.status_code == 200, r.text
    assert plc.log(did)[-1]["alsoKnownAs"] == [f"at://{new}"]
    assert c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": new}).json() == {"did": did}
    assert_error(c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": user["handle"]}),
                 400, "HandleNotFound")
    assert events(pds, did, "identity")[-1]["handle"] == new
    # the reserved names are open to the admin
    r = c.post("/xrpc/com.atproto.admin.updateAccountHandle", json={"did": did, "handle": "support.localhost"},
               auth=admin)
    assert r.status_code == 200, r.text
    r = c.post("/xrpc/com.atproto.admin.updateAccountHandle", json={"did": did, "handle": other["handle"]},
               auth=admin)
    assert_error(r, 400, "HandleNotAvailable")
    for bad in ("no spaces allowed", "x.localhost", "a.b.localhost", "evil.onion"):
        r = c.post("/xrpc/com.atproto.admin.updateAccountHandle", json={"did": did, "handle": bad}, auth=admin)
        assert_error(r, 400, "InvalidHandle")
    r = c.post("/xrpc/com.atproto.admin.updateAccountHandle",
               json={"did": "did:plc:eeeeeeeeeeeeeeeeeeeeeeee", "handle": f"free{next(_names)}.localhost"}, auth=admin)
    assert_error(r, 400, "AccountNotFound")
    r = c.post("/xrpc/com.atproto.admin.updateAccountHandle", json={"did": did}, auth=admin)
    assert_error(r, 400, "InvalidRequest")


def test_update_account_email(c, admin):
    user, other = create_account(c, "mail"), create_account(c, "mail")
    new = f"changed{next(_names)}@example.org"
    r = c.post("/xrpc/com.atproto.admin.updateAccountEmail", json={"account": user["handle"], "email": new},
               auth=admin)
    assert r.status_code == 200, r.text
    view = c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": user["did"]}, auth=admin).json()
    assert view["email"] == new and "emailConfirmedAt" not in view
    assert login(c, new).status_code == 200
    r = c.post("/xrpc/com.atproto.admin.updateAccountEmail", json={"account": user["did"], "email": new}, auth=admin)
    assert r.status_code == 200  # unchanged is fine
    other_email = f"{other['name']}@example.com"
    r = c.post("/xrpc/com.atproto.admin.updateAccountEmail", json={"account": user["did"], "email": other_email},
               auth=admin)
    assert_error(r, 400, "InvalidRequest")
    r = c.post("/xrpc/com.atproto.admin.updateAccountEmail", json={"account": user["did"], "email": "nope"},
               auth=admin)
    assert_error(r, 400, "InvalidRequest")
    r = c.post("/xrpc/com.atproto.admin.updateAccountEmail",
               json={"account": "nobody-here.localhost", "email": "n@example.com"}, auth=admin)
    assert_error(r, 400, "AccountNotFound")
    r = c.post("/xrpc/com.atproto.admin.updateAccountEmail", json={"account": "bad handle!", "email": "n@example.com"},
               auth=admin)
    assert_error(r, 400, "InvalidRequest")


def test_update_account_password_ends_sessions(pds, c, admin):
    user = create_account(c, "pw")
    r = c.post("/xrpc/com.atproto.admin.updateAccountPassword",
               json={"did": user["did"], "password": "a brand new password"}, auth=admin)
    assert r.status_code == 200, r.text
    assert db_rows(pds, "SELECT id FROM refresh_token WHERE did = ?", (user["did"],)) == []
    assert_error(c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(user["refreshJwt"])),
                 400, "ExpiredToken")
    assert_error(login(c, user["handle"]), 401, "AuthenticationRequired")
    assert login(c, user["handle"], "a brand new password").status_code == 200
    r = c.post("/xrpc/com.atproto.admin.updateAccountPassword", json={"did": user["did"], "password": "short"},
               auth=admin)
    assert_error(r, 400, "InvalidPassword")
    r = c.post("/xrpc/com.atproto.admin.updateAccountPassword",
               json={"did": "did:plc:ffffffffffffffffffffffff", "password": "long enough password"}, auth=admin)
    assert_error(r, 400, "AccountNotFound")
    r = c.post("/xrpc/com.atproto.admin.updateAccountPassword", json={"did": user["did"], "password": 12345678},
               auth=admin)
    assert_error(r, 400, "InvalidRequest")


# -- invites ---------------------------------------------------------------------------------------


def codes_of(c, admin, did: str) -> list[dict]:
    return c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": did}, auth=admin).json()["invites"]


def test_account_invites_and_disabling_codes(c, admin):
    user = create_account(c, "inv")
    did = user["did"]
    made = c.post("/xrpc/com.atproto.server.createInviteCodes",
                  json={"useCount": 1, "codeCount": 3, "forAccounts": [did]}, auth=admin).json()["codes"][0]["codes"]
    r = c.post("/xrpc/com.atproto.admin.disableAccountInvites", json={"account": did, "note": "abuse"}, auth=admin)
    assert r.status_code == 200
    info = c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": did}, auth=admin).json()
    assert info["invitesDisabled"] is True
    assert c.post("/xrpc/com.atproto.admin.enableAccountInvites", json={"account": did}, auth=admin).status_code == 200
    info = c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": did}, auth=admin).json()
    assert info["invitesDisabled"] is False

    r = c.post("/xrpc/com.atproto.admin.disableInviteCodes", json={"codes": [made[0]]}, auth=admin)
    assert r.status_code == 200
    assert {i["code"]: i["disabled"] for i in codes_of(c, admin, did)} == {made[0]: True, made[1]: False, made[2]: False}
    # a disabled code signs nobody up
    r = signup(c, f"late{next(_names)}", invite=made[0])
    assert_error(r, 400, "InvalidInviteCode")
    r = c.post("/xrpc/com.atproto.admin.disableInviteCodes", json={"accounts": [did]}, auth=admin)
    assert r.status_code == 200
    assert all(i["disabled"] for i in codes_of(c, admin, did))

    assert_error(c.post("/xrpc/com.atproto.admin.disableInviteCodes", json={"accounts": ["admin"]}, auth=admin),
                 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.admin.disableInviteCodes", json={"codes": "abc"}, auth=admin),
                 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.admin.disableInviteCodes", json={"codes": [1]}, auth=admin),
                 400, "InvalidRequest")
    unknown = "did:plc:gggggggggggggggggggggggg"
    for nsid in ("enableAccountInvites", "disableAccountInvites"):
        assert_error(c.post(f"/xrpc/com.atproto.admin.{nsid}", json={"account": unknown}, auth=admin),
                     400, "AccountNotFound")
        assert_error(c.post(f"/xrpc/com.atproto.admin.{nsid}", json={}, auth=admin), 400, "InvalidRequest")


def test_get_invite_codes_pages_by_recent_and_usage(c, admin):
    # a fresh set: three admin codes, one of them used twice
    codes = c.post("/xrpc/com.atproto.server.createInviteCodes", json={"useCount": 5, "codeCount": 3},
                   auth=admin).json()["codes"][0]["codes"]
    create_account(c, "use", invite=codes[1])
    create_account(c, "use", invite=codes[1])
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "sort": "recent", **({"cursor": cursor} if cursor else {})}
        r = c.get("/xrpc/com.atproto.admin.getInviteCodes", params=params, auth=admin)
        assert r.status_code == 200, r.text
        page = r.json()
        seen.extend(page["codes"])
        cursor = page.get("cursor")
        if not cursor:
            break
    names = [x["code"] for x in seen]
    assert len(names) == len(set(names)) and set(codes) <= set(names)
    times = [x["createdAt"] for x in seen]
    assert times == sorted(times, reverse=True)

    r = c.get("/xrpc/com.atproto.admin.getInviteCodes", params={"sort": "usage", "limit": 1}, auth=admin)
    top = r.json()["codes"][0]
    assert top["code"] == codes[1] and len(top["uses"]) == 2
    r2 = c.get("/xrpc/com.atproto.admin.getInviteCodes", params={"sort": "usage", "limit": 1,
                                                                  "cursor": r.json()["cursor"]}, auth=admin)
    assert r2.json()["codes"][0]["code"] != codes[1]

    assert_error(c.get("/xrpc/com.atproto.admin.getInviteCodes", params={"sort": "oldest"}, auth=admin),
                 400, "InvalidRequest")
    assert_error(c.get("/xrpc/com.atproto.admin.getInviteCodes", params={"cursor": "garbage"}, auth=admin),
                 400, "InvalidRequest")
    assert_error(c.get("/xrpc/com.atproto.admin.getInviteCodes", params={"sort": "usage", "cursor": "x::y"},
                       auth=admin), 400, "InvalidRequest")
    assert_error(c.get("/xrpc/com.atproto.admin.getInviteCodes", params={"limit": 501}, auth=admin),
                 400, "InvalidRequest")


# -- no mail ---------------------------------------------------------------------------------------


def test_send_email_is_refused_clearly(c, admin):
    user = create_account(c, "mailto")
    r = c.post("/xrpc/com.atproto.admin.sendEmail", auth=admin,
               json={"recipientDid": user["did"], "senderDid": user["did"], "content": "hi"})
    body = assert_error(r, 400, "InvalidRequest")
    assert "e-mail" in body["message"]


def test_server_log_has_no_tracebacks(pds):
    assert "Traceback" not in pds.logs()
