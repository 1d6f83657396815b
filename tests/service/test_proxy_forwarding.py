"""Service proxying against a real ``squall serve``: a fake AppView, a fake chat service and a
third fake service on loopback check every service-auth JWT they receive (signature against the
user's key in the PLC double, aud, lxm, expiry) and record the headers and bodies that reached
them."""

from __future__ import annotations

import time

import httpx
import pytest
from starlette.responses import StreamingResponse

from tests.helpers.accounts import PASSWORD, assert_error, bearer, signup
from tests.helpers.fake_services import answer, register_service_did, start_service
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

TIMELINE = "app.bsky.feed.getTimeline"
LIST_CONVOS = "chat.bsky.convo.listConvos"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with PlcDirectoryDouble() as plc:
        appview = start_service(plc, "appview", "bsky_appview", "BskyAppView")
        chat = start_service(plc, "chat", "bsky_chat", "BskyChatService")
        other = start_service(plc, "other", "other_appview", "BskyAppView")
        # A service whose document points at a port where nothing listens.
        dead_did = register_service_did(plc, {"dead": ("BskyAppView", f"http://127.0.0.1:{free_port()}")})
        env = {
            "PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url,
            "PDS_BSKY_APP_VIEW_URL": appview.url, "PDS_BSKY_APP_VIEW_DID": appview.did,
            "PDS_BSKY_CHAT_URL": chat.url, "PDS_BSKY_CHAT_DID": chat.did,
        }
        try:
            with PdsProcess(tmp_path_factory.mktemp("proxy") / "data", env_extra=env) as pds:
                yield {"pds": pds, "plc": plc, "appview": appview, "chat": chat, "other": other,
                       "dead_did": dead_did}
        finally:
            for service in (appview, chat, other):
                service.stop()


@pytest.fixture(scope="module")
def user(world):
    with world["pds"].client() as c:
        r = signup(c, "alice")
        assert r.status_code == 200, r.text
        session = r.json()
        assert session["did"].startswith("did:plc:")
        plain = c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": "plain"},
                       headers=bearer(session["accessJwt"]))
        privileged = c.post("/xrpc/com.atproto.server.createAppPassword",
                            json={"name": "privileged", "privileged": True}, headers=bearer(session["accessJwt"]))
        assert plain.status_code == 200 and privileged.status_code == 200, (plain.text, privileged.text)
        tokens = {"full": session["accessJwt"]}
        for kind, created in (("app", plain.json()), ("privileged_app", privileged.json())):
            login = c.post("/xrpc/com.atproto.server.createSession",
                           json={"identifier": "alice.localhost", "password": created["password"]})
            assert login.status_code == 200, login.text
            tokens[kind] = login.json()["accessJwt"]
        return {"did": session["did"], "tokens": tokens}


@pytest.fixture
def c(world):
    for name in ("appview", "chat", "other"):
        world[name].reset()
    with world["pds"].client() as client:
        yield client
    for name in ("appview", "chat", "other"):
        assert world[name].jwt_errors() == []


def auth(user, kind: str = "full", **extra: str) -> dict[str, str]:
    return {**bearer(user["tokens"][kind]), **extra}


def only_request(service, nsid: str):
    got = service.requests()
    assert [r.nsid for r in got] == [nsid]
    return got[0]


# -- forwarding and the token ---------------------------------------------------------------------------


def test_query_reaches_the_appview_with_a_verified_token(world, c, user):
    before = int(time.time())
    r = c.get(f"/xrpc/{TIMELINE}", params={"limit": "5", "cursor": "abc/def"}, headers=auth(user))
    assert r.status_code == 200, r.text
    assert r.json()["service"] == "appview" and r.json()["iss"] == user["did"]
    got = only_request(world["appview"], TIMELINE)
    assert got.method == "GET" and got.query == "limit=5&cursor=abc%2Fdef"
    claims = got.claims
    assert claims["iss"] == user["did"] and claims["aud"] == world["appview"].did and claims["lxm"] == TIMELINE
    assert before <= claims["iat"] <= time.time() and claims["exp"] - claims["iat"] == 60
    assert got.jwt_header["alg"] == "ES256K" and got.jwt_header["typ"] == "JWT"
    assert set(claims) == {"iat", "iss", "aud", "exp", "lxm", "jti"}


def test_each_call_gets_a_fresh_token(world, c, user):
    for _ in range(3):
        assert c.get(f"/xrpc/{TIMELINE}", headers=auth(user)).status_code == 200
    jtis = {r.claims["jti"] for r in world["appview"].requests()}
    assert len(jtis) == 3


def test_only_allow_listed_headers_are_forwarded(world, c, user):
    headers = auth(user, **{
        "accept-language": "fr, en;q=0.5", "atproto-accept-labelers": "did:plc:labeler;redact",
        "x-bsky-topics": "dev", "cookie": "session=user-secret", "x-forwarded-for": "203.0.113.9",
        "x-real-ip": "203.0.113.9", "forwarded": "for=203.0.113.9", "x-custom-secret": "hush",
        "origin": "https://evil.example", "referer": "https://evil.example/page",
        "proxy-authorization": "Basic c2VjcmV0", "dpop": "x.y.z",
    })
    r = c.get(f"/xrpc/{TIMELINE}", headers=headers)
    assert r.status_code == 200, r.text
    got = only_request(world["appview"], TIMELINE)
    assert got.headers["accept-language"] == "fr, en;q=0.5"
    assert got.headers["atproto-accept-labelers"] == "did:plc:labeler;redact"
    assert got.headers["x-bsky-topics"] == "dev"
    for name in ("cookie", "x-forwarded-for", "x-real-ip", "forwarded", "x-custom-secret", "origin", "referer",
                 "proxy-authorization", "dpop", "atproto-proxy"):
        assert name not in got.headers, name
    # The user's own access token never leaves the PDS: the upstream sees only the service token.
    assert user["tokens"]["full"] not in str(got.headers)
    assert got.headers["authorization"].startswith("Bearer ") and got.claims["iss"] == user["did"]


def test_allow_listed_response_headers_come_back(world, c, user):
    r = c.get(f"/xrpc/{TIMELINE}", headers=auth(user))
    assert r.status_code == 200
    assert r.headers["atproto-repo-rev"] == "3kfakerev"
    assert r.headers["atproto-content-labelers"] == "did:plc:labeler"
    assert r.headers["content-language"] == "en"
    assert r.headers["content-type"] == "application/json"
    assert "set-cookie" not in r.headers and "x-upstream-internal" not in r.headers


def test_procedure_body_is_forwarded_unchanged(world, c, user):
    raw = b'{"seenAt":"2024-01-01T00:00:00.000Z",  "extra":[1,2,3]}'
    r = c.post("/xrpc/app.bsky.notification.updateSeen", content=raw,
               headers=auth(user, **{"content-type": "application/json"}))
    assert r.status_code == 200, r.text
    got = only_request(world["appview"], "app.bsky.notification.updateSeen")
    assert got.method == "POST" and got.body == raw
    assert got.headers["content-type"] == "application/json"
    assert got.claims["lxm"] == "app.bsky.notification.updateSeen"


def test_large_streamed_response_arrives_whole(world, c, user):
    payload = bytes(range(256)) * 8192  # 2 MiB, in 64 KiB chunks without a content-length

    async def stream(request, record):
        async def chunks():
            for i in range(0, len(payload), 65536):
                yield payload[i:i + 65536]
        return StreamingResponse(chunks(), media_type="application/octet-stream")

    world["appview"].on("app.bsky.unspecced.getBigThing", stream)
    r = c.get("/xrpc/app.bsky.unspecced.getBigThing", headers=auth(user))
    assert r.status_code == 200 and r.content == payload


# -- targets -------------------------------------------------------------------------------------------


def test_chat_goes_to_the_chat_service(world, c, user):
    r = c.get(f"/xrpc/{LIST_CONVOS}", headers=auth(user))
    assert r.status_code == 200, r.text
    assert r.json()["service"] == "chat"
    got = only_request(world["chat"], LIST_CONVOS)
    assert got.claims["aud"] == world["chat"].did and got.claims["lxm"] == LIST_CONVOS
    assert world["appview"].requests() == []


def test_proxy_header_names_a_service_by_did_document(world, c, user):
    other = world["other"]
    r = c.get(f"/xrpc/{TIMELINE}", headers=auth(user, **{"atproto-proxy": f"{other.did}#other_appview"}))
    assert r.status_code == 200, r.text
    assert r.json()["service"] == "other"
    got = only_request(other, TIMELINE)
    assert got.claims["aud"] == other.did
    assert world["appview"].requests() == []


def test_proxy_header_reaches_methods_outside_the_defaults(world, c, user):
    other = world["other"]
    assert_error(c.get("/xrpc/com.example.custom.getThing", headers=auth(user)), 501, "MethodNotImplemented")
    r = c.get("/xrpc/com.example.custom.getThing",
              headers=auth(user, **{"atproto-proxy": f"{other.did}#other_appview"}))
    assert r.status_code == 200, r.text
    assert only_request(other, "com.example.custom.getThing").claims["lxm"] == "com.example.custom.getThing"


def test_proxy_header_for_the_configured_appview(world, c, user):
    appview = world["appview"]
    r = c.get(f"/xrpc/{TIMELINE}", headers=auth(user, **{"atproto-proxy": f"{appview.did}#bsky_appview"}))
    assert r.status_code == 200 and r.json()["service"] == "appview"


@pytest.mark.parametrize("value, message", [
    ("#bsky_appview", "no did specified"),
    ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "no service id"),
    ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa#", "no service id"),
    ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa#a#b", "invalid proxy header format"),
    ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa#bsky appview", "cannot contain spaces"),
    ("not-a-did#bsky_appview", "not a DID"),
    ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa#bsky_appview", "could not resolve proxy did"),
])
def test_bad_proxy_header(world, c, user, value, message):
    body = assert_error(c.get(f"/xrpc/{TIMELINE}", headers=auth(user, **{"atproto-proxy": value})),
                        400, "InvalidRequest")
    assert message in body["message"]


def test_unknown_service_id(world, c, user):
    other = world["other"]
    body = assert_error(c.get(f"/xrpc/{TIMELINE}", headers=auth(user, **{"atproto-proxy": f"{other.did}#nope"})),
                        400, "InvalidRequest")
    assert "service url" in body["message"]
    assert other.requests() == []


def test_two_proxy_headers_are_refused(world, c, user):
    other = world["other"]
    headers = [("authorization", f"Bearer {user['tokens']['full']}"),
               ("atproto-proxy", f"{other.did}#other_appview"), ("atproto-proxy", f"{other.did}#other_appview")]
    assert_error(c.get(f"/xrpc/{TIMELINE}", headers=headers), 400, "InvalidRequest")


def test_no_default_service_is_method_not_implemented(world, c, user):
    assert_error(c.get("/xrpc/com.atproto.moderation.createReport", headers=auth(user)), 501,
                 "MethodNotImplemented")  # no report service configured here
    assert_error(c.get("/xrpc/tools.ozone.moderation.getRepo", headers=auth(user)), 501, "MethodNotImplemented")


# -- who may call --------------------------------------------------------------------------------------


def test_proxying_needs_an_access_token(world, c, user):
    assert_error(c.get(f"/xrpc/{TIMELINE}"), 401, "AuthenticationRequired")
    assert_error(c.get(f"/xrpc/{TIMELINE}", headers=bearer("not.a.token")), 400, "InvalidToken")
    # an anonymous caller cannot make the PDS resolve or contact anything
    other = world["other"]
    assert_error(c.get(f"/xrpc/{TIMELINE}", headers={"atproto-proxy": f"{other.did}#other_appview"}),
                 401, "AuthenticationRequired")
    assert world["appview"].requests() == [] and other.requests() == []


@pytest.mark.parametrize("nsid", ["com.atproto.server.requestEmailConfirmation", "com.atproto.server.requestemailupdate",
                                  "COM.ATPROTO.IDENTITY.signPlcOperation"])
def test_protected_methods_are_never_proxied(world, c, user, nsid):
    other = world["other"]
    body = assert_error(c.post(f"/xrpc/{nsid}", json={},
                               headers=auth(user, **{"atproto-proxy": f"{other.did}#other_appview"})),
                        400, "InvalidToken")
    assert body["message"] == "Bad token method"
    assert other.requests() == []


def test_app_password_without_privilege_cannot_reach_chat(world, c, user):
    body = assert_error(c.get(f"/xrpc/{LIST_CONVOS}", headers=auth(user, "app")), 400, "InvalidToken")
    assert body["message"] == "Bad token method"
    body = assert_error(c.post("/xrpc/chat.bsky.convo.sendMessage", json={"convoId": "x"},
                               headers=auth(user, "app")), 400, "InvalidToken")
    # a chat method newer than the reference's list is held back too
    assert_error(c.post("/xrpc/chat.bsky.convo.addReaction", json={}, headers=auth(user, "app")),
                 400, "InvalidToken")
    assert world["chat"].requests() == []
    # … but an ordinary app password may use the AppView, and a privileged one may chat
    assert c.get(f"/xrpc/{TIMELINE}", headers=auth(user, "app")).status_code == 200
    r = c.get(f"/xrpc/{LIST_CONVOS}", headers=auth(user, "privileged_app"))
    assert r.status_code == 200, r.text
    assert only_request(world["chat"], LIST_CONVOS).claims["iss"] == user["did"]


def test_only_get_head_and_post(world, c, user):
    assert_error(c.put(f"/xrpc/{TIMELINE}", headers=auth(user)), 400, "InvalidRequest")
    assert world["appview"].requests() == []


# -- upstream failures ---------------------------------------------------------------------------------


def test_upstream_4xx_envelope_is_passed_through(world, c, user):
    world["appview"].on("app.bsky.feed.getPostThread",
                        answer(400, {"error": "NotFound", "message": "Post not found: at://x"},
                               headers={"atproto-repo-rev": "3krev"}))
    r = c.get("/xrpc/app.bsky.feed.getPostThread", headers=auth(user))
    assert r.status_code == 400
    assert r.json() == {"error": "NotFound", "message": "Post not found: at://x"}
    assert r.headers["atproto-repo-rev"] == "3krev"


def test_upstream_500_becomes_502(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", answer(500, {"error": "InternalServerError", "message": "boom"}))
    r = c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user))
    assert r.status_code == 502
    assert r.json() == {"error": "InternalServerError", "message": "boom"}


def test_upstream_503_keeps_status_and_retry_after(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", answer(503, b"<html>down</html>", media_type="text/html",
                                                        headers={"retry-after": "30"}))
    r = c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user))
    assert_error(r, 503, "NotEnoughResources")
    assert r.headers["retry-after"] == "30"


def test_upstream_429_passes_rate_limit_advice(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed",
                        answer(429, {"error": "RateLimitExceeded", "message": "slow down"},
                               headers={"ratelimit-remaining": "0", "retry-after": "5"}))
    r = c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user))
    assert_error(r, 429, "RateLimitExceeded")
    assert r.headers["ratelimit-remaining"] == "0" and r.headers["retry-after"] == "5"


def test_upstream_error_without_envelope(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", answer(500, b"not json", media_type="text/plain"))
    assert_error(c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user)), 502, "UpstreamFailure")


def test_upstream_unreachable(world, c, user):
    body = assert_error(c.get(f"/xrpc/{TIMELINE}", headers=auth(user, **{"atproto-proxy": f"{world['dead_did']}#dead"})),
                        502, "UpstreamFailure")
    assert "unreachable" in body["message"]


def test_oversized_upstream_response(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", answer(200, b"x" * (10 * 1024 * 1024 + 1),
                                                        media_type="application/json"))
    body = assert_error(c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user)), 502, "UpstreamFailure")
    assert "too large" in body["message"]


def _chunks(count: int, size: int = 65536, *, fail: bool = False):
    async def handler(request, record):
        async def body():
            for _ in range(count):
                yield b"y" * size
            if fail:
                raise RuntimeError("upstream dies mid-body")  # uvicorn then drops the connection
        return StreamingResponse(body(), media_type="application/json")
    return handler


def test_upstream_dying_before_the_read_ahead_ends_is_a_clean_502(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", _chunks(8, fail=True))  # 512 KiB, then the connection drops
    assert_error(c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user)), 502, "UpstreamFailure")


def test_short_response_without_length_gets_its_exact_length(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", _chunks(3, 1000))
    r = c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user))
    assert r.status_code == 200 and r.headers["content-length"] == "3000" and r.content == b"y" * 3000


def test_upstream_dying_within_a_declared_length_is_visible(world, c, user):
    async def short(request, record):
        async def body():
            yield b"z" * 50_000
            raise RuntimeError("upstream dies mid-body")
        return StreamingResponse(body(), headers={"content-length": "100000"}, media_type="application/json")

    world["appview"].on("app.bsky.feed.getFeed", short)
    with pytest.raises(httpx.HTTPError):  # the client sees an incomplete body, not a whole one
        c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user))
    assert c.get(f"/xrpc/{TIMELINE}", headers=auth(user)).status_code == 200


def test_oversized_stream_without_length_is_cut_off(world, c, user):
    world["appview"].on("app.bsky.feed.getFeed", _chunks(200))  # 12.5 MiB, over the 10 MiB bound
    try:
        r = c.get("/xrpc/app.bsky.feed.getFeed", headers=auth(user))
        received = len(r.content)
    except httpx.HTTPError:
        received = None
    assert received is None or received <= 10 * 1024 * 1024
    assert c.get(f"/xrpc/{TIMELINE}", headers=auth(user)).status_code == 200


def test_request_body_over_the_limit(world, c, user):
    big = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    assert_error(c.post("/xrpc/app.bsky.notification.updateSeen", content=big,
                        headers=auth(user, **{"content-type": "application/json"})), 413, "PayloadTooLarge")
    assert world["appview"].requests() == []


def test_head_is_forwarded_as_head(world, c, user):
    r = c.head(f"/xrpc/{TIMELINE}", headers=auth(user))
    assert r.status_code == 200 and r.content == b""
    assert only_request(world["appview"], TIMELINE).method == "HEAD"
