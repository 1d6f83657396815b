"""Custom feeds, push registration, the reference's default routes and appeal rules, and the small
local methods (sync.getHead, sync.getCheckout, server.reserveSigningKey, temp.checkSignupQueue),
against a real ``squall serve`` with a fake AppView, feed generator, notification service and
report service on loopback, each verifying every service JWT it receives (signature against the
user's key in the PLC double, aud, lxm, expiry)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.responses import JSONResponse

from squall.atproto.car import read_car
from tests.helpers.accounts import assert_error, bearer, signup
from tests.helpers.fake_services import (appview_get_feed, register_service_did, start_feed_generator,
                                         start_notification_service, start_service)
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

GET_FEED = "app.bsky.feed.getFeed"
SKELETON = "app.bsky.feed.getFeedSkeleton"
REGISTER = "app.bsky.notification.registerPush"
UNREGISTER = "app.bsky.notification.unregisterPush"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with PlcDirectoryDouble() as plc:
        appview = start_service(plc, "appview", "bsky_appview", "BskyAppView")
        feedgen = start_feed_generator(plc)
        notif = start_notification_service(plc)
        report = start_service(plc, "report", "atproto_labeler", "AtprotoLabeler")
        # the AppView's getFeed takes the token the PDS minted for the generator, as the real one
        # does (audience not its own; lxm getFeedSkeleton)
        appview.expect_token(GET_FEED, aud=None, lxm={SKELETON, GET_FEED})
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url,
               "PDS_BSKY_APP_VIEW_URL": appview.url, "PDS_BSKY_APP_VIEW_DID": appview.did,
               "PDS_REPORT_SERVICE_URL": report.url, "PDS_REPORT_SERVICE_DID": report.did}
        services = {"appview": appview, "feedgen": feedgen, "notif": notif, "report": report}
        try:
            with PdsProcess(tmp_path_factory.mktemp("feeds") / "data", env_extra=env) as pds:
                yield {"pds": pds, "plc": plc, **services}
        finally:
            for service in services.values():
                service.stop()


SERVICES = ("appview", "feedgen", "notif", "report")


@pytest.fixture
def c(world):
    for name in SERVICES:
        world[name].reset()
    with world["pds"].client() as client:
        yield client
    for name in SERVICES:
        assert world[name].jwt_errors() == []


@pytest.fixture(scope="module")
def user(world):
    with world["pds"].client() as c:
        r = signup(c, "carol")
        assert r.status_code == 200, r.text
        body = r.json()
        return {"did": body["did"], "handle": body["handle"], "headers": bearer(body["accessJwt"])}


def only(service, nsid: str):
    got = service.requests()
    assert [r.nsid for r in got] == [nsid]
    return got[0]


# -- custom feeds ------------------------------------------------------------------------------------------


def test_custom_feed_generator_receives_its_own_audience(world, c, user):
    appview, feedgen, pds = world["appview"], world["feedgen"], world["pds"]
    r = c.post("/xrpc/com.atproto.repo.createRecord", headers=user["headers"], json={
        "repo": user["did"], "collection": "app.bsky.feed.generator", "rkey": "cats",
        "record": {"$type": "app.bsky.feed.generator", "did": feedgen.did, "displayName": "Cats",
                   "createdAt": "2024-05-01T00:00:00.000Z"}})
    assert r.status_code == 200, r.text
    feed_uri = r.json()["uri"]
    post_uri = f"at://{user['did']}/app.bsky.feed.post/3kcatcatcat22"

    async def generator_view(request, record):
        # as the AppView: the feed's record names the generator's service DID
        uri = request.query_params["feed"]
        did, _, rkey = uri[len("at://"):].partition("/app.bsky.feed.generator/")
        async with httpx.AsyncClient(timeout=5) as client:
            got = await client.get(f"{pds.url}/xrpc/com.atproto.repo.getRecord",
                                   params={"repo": did, "collection": "app.bsky.feed.generator", "rkey": rkey})
        value = got.json()["value"]
        return JSONResponse({"view": {"uri": uri, "cid": got.json()["cid"], "did": value["did"],
                                      "creator": {"did": did, "handle": user["handle"]},
                                      "displayName": value["displayName"], "indexedAt": value["createdAt"]},
                             "isOnline": True, "isValid": True})

    async def skeleton(request, record):
        return JSONResponse({"feed": [{"post": post_uri}], "cursor": "c1"})

    appview.on("app.bsky.feed.getFeedGenerator", generator_view)
    appview.on(GET_FEED, appview_get_feed(world["plc"].url, lambda uri: {"uri": uri}))
    feedgen.on(SKELETON, skeleton)

    r = c.get(f"/xrpc/{GET_FEED}", params={"feed": feed_uri, "limit": "10"}, headers=user["headers"])
    assert r.status_code == 200, r.text
    assert r.json() == {"feed": [{"post": {"uri": post_uri}}]}
    got = only(feedgen, SKELETON)
    assert got.jwt_error is None
    assert got.claims["aud"] == feedgen.did and got.claims["lxm"] == SKELETON and got.claims["iss"] == user["did"]
    asked = appview.requests("app.bsky.feed.getFeedGenerator")
    assert len(asked) == 1 and asked[0].claims["aud"] == appview.did
    assert asked[0].claims["lxm"] == "app.bsky.feed.getFeedGenerator"
    feed_call = appview.requests(GET_FEED)[0]
    assert parse_qs(feed_call.query) == {"feed": [feed_uri], "limit": ["10"]}
    assert feed_call.claims["aud"] == feedgen.did and feed_call.claims["lxm"] == SKELETON


def test_unknown_feed_generator_error_is_relayed(world, c, user):
    world["appview"].on("app.bsky.feed.getFeedGenerator",
                        lambda request, record: _json(400, {"error": "UnknownFeed", "message": "no such feed"}))
    r = c.get(f"/xrpc/{GET_FEED}", params={"feed": f"at://{user['did']}/app.bsky.feed.generator/nope"},
              headers=user["headers"])
    assert_error(r, 400, "UnknownFeed")
    assert world["appview"].requests(GET_FEED) == [] and world["feedgen"].requests() == []
    r = c.get(f"/xrpc/{GET_FEED}", params={"feed": "https://not-an-at-uri"}, headers=user["headers"])
    assert_error(r, 400, "InvalidRequest")


async def _json(status: int, body: dict):
    return JSONResponse(body, status_code=status)


# -- push registration -----------------------------------------------------------------------------------


def push_body(service_did: str) -> dict:
    return {"serviceDid": service_did, "token": "device-token-123", "platform": "ios", "appId": "xyz.blueskyweb.app"}


def test_push_registration_reaches_a_notification_service_that_is_not_the_appview(world, c, user):
    notif, appview = world["notif"], world["appview"]
    for nsid in (REGISTER, UNREGISTER):
        notif.reset()
        r = c.post(f"/xrpc/{nsid}", json=push_body(notif.did), headers=user["headers"])
        assert r.status_code == 200, r.text
        got = only(notif, nsid)
        assert got.claims["aud"] == notif.did and got.claims["lxm"] == nsid and got.claims["iss"] == user["did"]
        assert got.headers["content-type"] == "application/json"
        assert json.loads(got.body) == push_body(notif.did)
    assert appview.requests() == []


def test_push_registration_for_the_appview_goes_to_the_appview(world, c, user):
    appview = world["appview"]
    r = c.post(f"/xrpc/{REGISTER}", json=push_body(appview.did), headers=user["headers"])
    assert r.status_code == 200, r.text
    got = only(appview, REGISTER)
    assert got.claims["aud"] == appview.did and got.claims["lxm"] == REGISTER
    assert world["notif"].requests() == []


def test_push_registration_bad_input(world, c, user):
    plc = world["plc"]
    no_notif = register_service_did(plc, {"other": ("Something", "http://127.0.0.1:9")})
    body = assert_error(c.post(f"/xrpc/{REGISTER}", json=push_body(no_notif), headers=user["headers"]),
                        400, "InvalidRequest")
    assert "notification service" in body["message"]
    assert_error(c.post(f"/xrpc/{REGISTER}", json=push_body("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"),
                        headers=user["headers"]), 400, "InvalidRequest")
    assert_error(c.post(f"/xrpc/{REGISTER}", json={"token": "x"}, headers=user["headers"]), 400, "InvalidRequest")
    assert_error(c.post(f"/xrpc/{REGISTER}", json=push_body("not-a-did"), headers=user["headers"]),
                 400, "InvalidRequest")
    assert_error(c.post(f"/xrpc/{REGISTER}", content=b"{nope", headers={**user["headers"],
                                                                         "content-type": "application/json"}),
                 400, "InvalidRequest")
    assert_error(c.post(f"/xrpc/{REGISTER}", json=push_body(world["notif"].did)), 401, "AuthenticationRequired")
    assert world["notif"].requests() == [] and world["appview"].requests() == []


# -- default route and appeals ---------------------------------------------------------------------------


@pytest.mark.parametrize("nsid, params", [
    ("com.atproto.identity.resolveIdentity", {"identifier": "bob.example.com"}),
    ("com.atproto.identity.resolveDid", {"did": "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"}),
    ("com.atproto.label.queryLabels", {"uriPatterns": "*"}),
])
def test_unregistered_com_atproto_method_goes_to_the_appview(world, c, user, nsid, params):
    r = c.get(f"/xrpc/{nsid}", params=params, headers=user["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["service"] == "appview"
    got = only(world["appview"], nsid)
    assert got.claims["aud"] == world["appview"].did and got.claims["lxm"] == nsid


def test_default_route_keeps_the_other_rules(world, c, user):
    r = c.post("/xrpc/com.atproto.identity.refreshIdentity", json={"identifier": user["did"]},
               headers=user["headers"])
    assert r.status_code == 200 and only(world["appview"], "com.atproto.identity.refreshIdentity")
    world["appview"].reset()
    # still: authentication first, protected methods never, unknown namespaces not implemented
    assert_error(c.get("/xrpc/com.atproto.identity.resolveIdentity", params={"identifier": "x"}),
                 401, "AuthenticationRequired")
    assert_error(c.post("/xrpc/com.atproto.server.requestEmailUpdate", json={},
                        headers={**user["headers"], "atproto-proxy": "did:web:api.bsky.app#bsky_appview"}),
                 400, "InvalidToken")
    assert_error(c.get("/xrpc/com.example.custom.getThing", headers=user["headers"]), 501, "MethodNotImplemented")
    assert world["appview"].requests() == []


def test_taken_down_session_may_appeal_and_nothing_else(world, c):
    pds = world["pds"]
    r = signup(c, "dave")
    assert r.status_code == 200, r.text
    did = r.json()["did"]
    admin = ("admin", pds.admin_password())
    r = c.post("/xrpc/com.atproto.admin.updateSubjectStatus", auth=admin, json={
        "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
        "takedown": {"applied": True, "ref": "test"}})
    assert r.status_code == 200, r.text
    r = c.post("/xrpc/com.atproto.server.createSession",
               json={"identifier": did, "password": "correct horse battery", "allowTakendown": True})
    assert r.status_code == 200, r.text
    taken = bearer(r.json()["accessJwt"])

    report = {"reasonType": "com.atproto.moderation.defs#reasonAppeal", "reason": "please",
              "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did}}
    r = c.post("/xrpc/com.atproto.moderation.createReport", json=report, headers=taken)
    assert r.status_code == 200, r.text
    got = only(world["report"], "com.atproto.moderation.createReport")
    assert got.claims["iss"] == did and got.claims["aud"] == world["report"].did
    r = c.get("/xrpc/app.bsky.actor.getPreferences", headers=taken)
    assert r.status_code == 200 and r.json() == {"preferences": []}
    # anything else is refused, and nothing reaches the AppView
    assert_error(c.get("/xrpc/app.bsky.feed.getTimeline", headers=taken), 400, "InvalidToken")
    assert_error(c.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": []}, headers=taken),
                 400, "InvalidToken")
    assert world["appview"].requests() == []


def test_chat_privileges_follow_the_reference_list(world, c, user):
    r = c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": "plain"}, headers=user["headers"])
    assert r.status_code == 200, r.text
    login = c.post("/xrpc/com.atproto.server.createSession",
                   json={"identifier": user["did"], "password": r.json()["password"]})
    # no chat service is configured here: the header names one, so the privilege rule is what answers
    app = {**bearer(login.json()["accessJwt"]), "atproto-proxy": f"{world['appview'].did}#bsky_appview"}
    for nsid in ("chat.bsky.convo.getConvoAvailability", "chat.bsky.convo.acceptConvo",
                 "chat.bsky.convo.updateAllRead", "chat.bsky.convo.removeReaction"):
        assert_error(c.post(f"/xrpc/{nsid}", json={}, headers=app), 400, "InvalidToken")
    r = c.get("/xrpc/com.atproto.server.getServiceAuth",
              params={"aud": world["appview"].did, "lxm": "chat.bsky.convo.sendMessage"}, headers=app)
    assert_error(r, 400, "InvalidRequest")


# -- small local methods ---------------------------------------------------------------------------------


def test_get_head_and_get_checkout(world, c, user):
    latest = c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": user["did"]}).json()
    r = c.get("/xrpc/com.atproto.sync.getHead", params={"did": user["did"]})
    assert r.status_code == 200 and r.json() == {"root": latest["cid"]}
    r = c.get("/xrpc/com.atproto.sync.getCheckout", params={"did": user["did"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.car"
    roots, blocks = read_car(r.content)
    assert [str(root) for root in roots] == [latest["cid"]] and len(blocks) >= 2
    for nsid in ("getHead", "getCheckout"):
        assert_error(c.get(f"/xrpc/com.atproto.sync.{nsid}", params={"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}),
                     400, "RepoNotFound")
        assert_error(c.get(f"/xrpc/com.atproto.sync.{nsid}", params={"did": "nope"}), 400, "InvalidRequest")
        assert_error(c.get(f"/xrpc/com.atproto.sync.{nsid}"), 400, "InvalidRequest")


def test_reserve_signing_key(world, c):
    did = "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz"
    first = c.post("/xrpc/com.atproto.server.reserveSigningKey", json={"did": did})
    assert first.status_code == 200, first.text
    key = first.json()["signingKey"]
    assert key.startswith("did:key:z")
    again = c.post("/xrpc/com.atproto.server.reserveSigningKey", json={"did": did})
    assert again.json()["signingKey"] == key  # the same key for the same account
    a = c.post("/xrpc/com.atproto.server.reserveSigningKey", json={}).json()["signingKey"]
    b = c.post("/xrpc/com.atproto.server.reserveSigningKey", json={}).json()["signingKey"]
    assert a != b and key not in (a, b)
    assert_error(c.post("/xrpc/com.atproto.server.reserveSigningKey", json={"did": "not a did"}),
                 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.server.reserveSigningKey", json={"did": 5}), 400, "InvalidRequest")
    # the private half is kept, never shown
    assert "private" not in first.text.lower()


def test_check_signup_queue(world, c, user):
    r = c.get("/xrpc/com.atproto.temp.checkSignupQueue", headers=user["headers"])
    assert r.status_code == 200 and r.json() == {"activated": True}
    assert_error(c.get("/xrpc/com.atproto.temp.checkSignupQueue"), 401, "AuthenticationRequired")
