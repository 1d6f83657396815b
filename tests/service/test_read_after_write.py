"""Read-after-write against a real ``squall serve`` and a fake AppView on loopback that checks every
service JWT (signature against the user's key in the PLC double, aud, lxm, expiry).

The fake AppView answers as if it had indexed the user's repo up to a rev the test chooses
(``atproto-repo-rev``); the user's records written after that rev must show up in the answers,
which must stay valid against the app.bsky view lexicons; an AppView that is current gets its
answer relayed byte for byte."""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from squall.atproto.lexicon import load_bundled
from squall.atproto.tid import tid_from_parts
from tests.helpers.accounts import bearer, signup
from tests.helpers.fake_services import start_service
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

CDN = "https://cdn.example.com/img/%s/plain/%s/%s@jpeg"
OLD = "2020-01-01T00:00:00.000Z"
LEXICONS = load_bundled()


def valid(ref: str, value) -> None:
    LEXICONS.validate_object(ref, value)  # raises, naming the path, when a view is not valid


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with PlcDirectoryDouble() as plc:
        appview = start_service(plc, "appview", "bsky_appview", "BskyAppView")
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url,
               "PDS_BSKY_APP_VIEW_URL": appview.url, "PDS_BSKY_APP_VIEW_DID": appview.did,
               "PDS_BSKY_APP_VIEW_CDN_URL_PATTERN": CDN}
        try:
            with PdsProcess(tmp_path_factory.mktemp("raw") / "data", env_extra=env) as pds:
                yield {"pds": pds, "plc": plc, "appview": appview}
        finally:
            appview.stop()


_n = iter(range(1000))


@pytest.fixture
def c(world):
    world["appview"].reset()
    with world["pds"].client() as client:
        yield client
    assert world["appview"].jwt_errors() == []


@pytest.fixture
def user(c):
    r = signup(c, f"raw{next(_n)}x{os.getpid() % 1000}")
    assert r.status_code == 200, r.text
    body = r.json()
    return {"did": body["did"], "handle": body["handle"], "headers": bearer(body["accessJwt"])}


def create(c, user, record: dict, collection: str = "app.bsky.feed.post", rkey: str | None = None) -> dict:
    body = {"repo": user["did"], "collection": collection, "record": record}
    if rkey is not None:
        body["rkey"] = rkey
        r = c.post("/xrpc/com.atproto.repo.putRecord", json=body, headers=user["headers"])
    else:
        r = c.post("/xrpc/com.atproto.repo.createRecord", json=body, headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()  # uri, cid, commit {cid, rev}


def post(c, user, text: str, *, reply_to: dict | None = None, root: dict | None = None, **extra) -> dict:
    record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-05-01T00:00:00.000Z", **extra}
    if reply_to is not None:
        root = root or reply_to
        record["reply"] = {"root": {"uri": root["uri"], "cid": root["cid"]},
                           "parent": {"uri": reply_to["uri"], "cid": reply_to["cid"]}}
    return create(c, user, record)


def upload_png(c, user) -> dict:
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000)
    r = c.post("/xrpc/com.atproto.repo.uploadBlob", content=data,
               headers={**user["headers"], "content-type": "image/png"})
    assert r.status_code == 200, r.text
    return r.json()["blob"]


def other_post(uri: str = "at://did:plc:bbbbbbbbbbbbbbbbbbbbbbbb/app.bsky.feed.post/3kaaaaaaaaaa2",
               when: str = OLD) -> dict:
    """A post of someone else, as the AppView shows it."""
    return {"$type": "app.bsky.feed.defs#postView", "uri": uri,
            "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
            "author": {"did": "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", "handle": "bob.example.com", "displayName": "Bob"},
            "record": {"$type": "app.bsky.feed.post", "text": "hello from bob", "createdAt": when},
            "replyCount": 0, "repostCount": 0, "likeCount": 3, "quoteCount": 0, "indexedAt": when, "labels": []}


def own_post_view(user, created: dict, text: str, display_name: str | None = None, when: str = OLD) -> dict:
    """One of the user's posts as the AppView indexed it (before the newest writes)."""
    author = {"did": user["did"], "handle": user["handle"]}
    if display_name:
        author["displayName"] = display_name
    return {"$type": "app.bsky.feed.defs#postView", "uri": created["uri"], "cid": created["cid"], "author": author,
            "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": when},
            "replyCount": 0, "repostCount": 0, "likeCount": 0, "quoteCount": 0, "indexedAt": when, "labels": []}


def serve(body: dict, rev: str, status: int = 200):
    async def handler(request, record):
        raw = json.dumps(body).encode()
        return Response(raw, status_code=status, media_type="application/json",
                        headers={"atproto-repo-rev": rev})
    return handler


def latest_rev(c, user) -> str:
    r = c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": user["did"]})
    assert r.status_code == 200, r.text
    return r.json()["rev"]


# -- timeline and author feed ----------------------------------------------------------------------------


def test_new_post_appears_in_the_timeline(world, c, user):
    first = post(c, user, "first, already indexed")
    seen_rev = first["commit"]["rev"]
    second = post(c, user, "second, not yet indexed", embed={
        "$type": "app.bsky.embed.images",
        "images": [{"image": upload_png(c, user), "alt": "a picture", "aspectRatio": {"width": 4, "height": 3}}]})
    upstream = {"feed": [{"post": own_post_view(user, first, "first, already indexed")},
                         {"post": other_post()}], "cursor": "next-page"}
    world["appview"].on("app.bsky.feed.getTimeline", serve(upstream, seen_rev))

    r = c.get("/xrpc/app.bsky.feed.getTimeline", params={"limit": "2"}, headers=user["headers"])
    assert r.status_code == 200, r.text
    assert int(r.headers["atproto-upstream-lag"]) >= 0
    assert r.headers["atproto-repo-rev"] == seen_rev
    body = r.json()
    assert body["cursor"] == "next-page"
    assert [item["post"]["uri"] for item in body["feed"]] == [second["uri"], first["uri"], other_post()["uri"]]
    new = body["feed"][0]["post"]
    assert new["cid"] == second["cid"] and new["record"]["text"] == "second, not yet indexed"
    assert new["author"] == {"did": user["did"], "handle": user["handle"]}
    image = new["embed"]["images"][0]
    cid = new["record"]["embed"]["images"][0]["image"]["ref"]["$link"]
    assert image["thumb"] == f"https://cdn.example.com/img/feed_thumbnail/plain/{user['did']}/{cid}@jpeg"
    assert image["fullsize"] == f"https://cdn.example.com/img/feed_fullsize/plain/{user['did']}/{cid}@jpeg"
    assert image["alt"] == "a picture" and image["aspectRatio"] == {"width": 4, "height": 3}
    for item in body["feed"]:
        valid("app.bsky.feed.defs#feedViewPost", item)
    got = world["appview"].requests("app.bsky.feed.getTimeline")
    assert len(got) == 1 and got[0].claims["iss"] == user["did"] and got[0].query == "limit=2"


def test_new_post_appears_in_the_own_author_feed_only(world, c, user):
    first = post(c, user, "indexed")
    seen_rev = first["commit"]["rev"]
    newer = post(c, user, "not indexed")
    upstream = {"feed": [{"post": own_post_view(user, first, "indexed")}]}
    world["appview"].on("app.bsky.feed.getAuthorFeed", serve(upstream, seen_rev))

    for actor in (user["did"], user["handle"]):
        r = c.get("/xrpc/app.bsky.feed.getAuthorFeed", params={"actor": actor}, headers=user["headers"])
        assert r.status_code == 200, r.text
        feed = r.json()["feed"]
        assert [item["post"]["uri"] for item in feed] == [newer["uri"], first["uri"]]
        for item in feed:
            valid("app.bsky.feed.defs#feedViewPost", item)
        assert "atproto-upstream-lag" in r.headers

    # someone else's feed is not the place for the user's posts
    r = c.get("/xrpc/app.bsky.feed.getAuthorFeed", params={"actor": "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"},
              headers=user["headers"])
    assert r.status_code == 200 and r.json() == upstream and "atproto-upstream-lag" not in r.headers
    # posts_no_replies leaves the user's newer reply out
    reply = post(c, user, "a reply", reply_to=first)
    r = c.get("/xrpc/app.bsky.feed.getAuthorFeed", params={"actor": user["did"], "filter": "posts_no_replies"},
              headers=user["headers"])
    assert [item["post"]["uri"] for item in r.json()["feed"]] == [newer["uri"], first["uri"]]
    assert reply["uri"] not in r.text


def test_new_reply_in_the_timeline_carries_its_parent(world, c, user):
    root = post(c, user, "root")
    seen_rev = root["commit"]["rev"]
    reply = post(c, user, "reply to bob", reply_to=other_post())
    world["appview"].on("app.bsky.feed.getTimeline", serve({"feed": []}, seen_rev))
    world["appview"].on("app.bsky.feed.getPosts", serve({"posts": [other_post()]}, seen_rev))
    r = c.get("/xrpc/app.bsky.feed.getTimeline", headers=user["headers"])
    assert r.status_code == 200, r.text
    item = r.json()["feed"][0]
    assert item["post"]["uri"] == reply["uri"]
    assert item["reply"]["parent"]["uri"] == other_post()["uri"] and item["reply"]["root"]["uri"] == other_post()["uri"]
    valid("app.bsky.feed.defs#feedViewPost", item)
    asked = world["appview"].requests("app.bsky.feed.getPosts")
    assert asked and asked[0].claims["lxm"] == "app.bsky.feed.getPosts"


# -- threads -----------------------------------------------------------------------------------------------


def thread_of(view: dict, replies: list | None = None) -> dict:
    return {"$type": "app.bsky.feed.defs#threadViewPost", "post": view, "replies": replies or []}


def test_new_reply_appears_in_the_thread_under_its_parent(world, c, user):
    root = post(c, user, "a thread")
    reply = post(c, user, "first reply", reply_to=root)
    seen_rev = reply["commit"]["rev"]
    second = post(c, user, "reply to the reply", reply_to=reply, root=root)
    third = post(c, user, "second direct reply", reply_to=root)
    upstream = {"thread": thread_of(own_post_view(user, root, "a thread"),
                                    [thread_of(own_post_view(user, reply, "first reply"))])}
    world["appview"].on("app.bsky.feed.getPostThread", serve(upstream, seen_rev))

    r = c.get("/xrpc/app.bsky.feed.getPostThread", params={"uri": root["uri"]}, headers=user["headers"])
    assert r.status_code == 200, r.text
    assert "atproto-upstream-lag" in r.headers
    thread = r.json()["thread"]
    valid("app.bsky.feed.defs#threadViewPost", thread)
    assert thread["post"]["uri"] == root["uri"]
    assert [t["post"]["uri"] for t in thread["replies"]] == [third["uri"], reply["uri"]]
    nested = thread["replies"][1]["replies"]
    assert [t["post"]["uri"] for t in nested] == [second["uri"]]
    assert nested[0]["post"]["record"]["text"] == "reply to the reply"


def test_thread_of_a_post_the_appview_has_not_seen(world, c, user):
    anchor = post(c, user, "indexed")
    seen_rev = anchor["commit"]["rev"]
    parent = other_post()
    mine = post(c, user, "my new reply", reply_to=parent)
    answer_to_mine = post(c, user, "and a follow-up", reply_to=mine, root=parent)

    async def thread(request, record):
        uri = request.query_params["uri"]
        if uri == parent["uri"]:
            return JSONResponse({"thread": thread_of(parent)}, headers={"atproto-repo-rev": seen_rev})
        return JSONResponse({"error": "NotFound", "message": f"Post not found: {uri}"}, status_code=400,
                            headers={"atproto-repo-rev": seen_rev})

    world["appview"].on("app.bsky.feed.getPostThread", thread)
    r = c.get("/xrpc/app.bsky.feed.getPostThread", params={"uri": mine["uri"], "parentHeight": "5"},
              headers=user["headers"])
    assert r.status_code == 200, r.text
    assert "atproto-upstream-lag" in r.headers
    built = r.json()["thread"]
    valid("app.bsky.feed.defs#threadViewPost", built)
    assert built["post"]["uri"] == mine["uri"] and built["post"]["record"]["text"] == "my new reply"
    assert built["parent"]["post"]["uri"] == parent["uri"]
    assert [t["post"]["uri"] for t in built["replies"]] == [answer_to_mine["uri"]]
    asked = [parse_qs(rq.query) for rq in world["appview"].requests("app.bsky.feed.getPostThread")]
    assert asked[-1] == {"uri": [parent["uri"]], "depth": ["0"], "parentHeight": ["5"]}

    # a post that is neither known to the AppView nor one of the user's newer ones stays NotFound
    r = c.get("/xrpc/app.bsky.feed.getPostThread",
              params={"uri": f"at://{user['did']}/app.bsky.feed.post/3kzzzzzzzzzz2"}, headers=user["headers"])
    assert r.status_code == 400 and r.json()["error"] == "NotFound"


# -- profiles ----------------------------------------------------------------------------------------------


def profile_view(user, name: str) -> dict:
    return {"did": user["did"], "handle": user["handle"], "displayName": name, "description": "old words",
            "avatar": "https://cdn.example.com/img/avatar/plain/old@jpeg", "followersCount": 7, "followsCount": 2,
            "postsCount": 1, "indexedAt": OLD}


def bob_profile() -> dict:
    return {"did": "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", "handle": "bob.example.com", "displayName": "Bob"}


@pytest.fixture
def edited(c, user):
    """The user's profile, edited after the AppView's rev: (rev the AppView saw, avatar CID, banner CID)."""
    first = create(c, user, {"$type": "app.bsky.actor.profile", "displayName": "Old Name"},
                   "app.bsky.actor.profile", "self")
    avatar, banner = upload_png(c, user), upload_png(c, user)
    create(c, user, {"$type": "app.bsky.actor.profile", "displayName": "New Name", "description": "new words",
                     "avatar": avatar, "banner": banner}, "app.bsky.actor.profile", "self")
    return first["commit"]["rev"], avatar["ref"]["$link"], banner["ref"]["$link"]


def test_profile_edit_in_get_profile(world, c, user, edited):
    seen_rev, avatar, banner = edited
    world["appview"].on("app.bsky.actor.getProfile", serve(profile_view(user, "Old Name"), seen_rev))
    r = c.get("/xrpc/app.bsky.actor.getProfile", params={"actor": user["did"]}, headers=user["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    valid("app.bsky.actor.defs#profileViewDetailed", body)
    assert body["displayName"] == "New Name" and body["description"] == "new words"
    assert body["avatar"] == f"https://cdn.example.com/img/avatar/plain/{user['did']}/{avatar}@jpeg"
    assert body["banner"] == f"https://cdn.example.com/img/banner/plain/{user['did']}/{banner}@jpeg"
    assert body["followersCount"] == 7  # what only the AppView knows is kept
    assert "atproto-upstream-lag" in r.headers


def test_profile_edit_in_get_profiles(world, c, user, edited):
    seen_rev, avatar, _ = edited
    upstream = {"profiles": [bob_profile(), profile_view(user, "Old Name")]}
    world["appview"].on("app.bsky.actor.getProfiles", serve(upstream, seen_rev))
    r = c.get("/xrpc/app.bsky.actor.getProfiles", params={"actors": [bob_profile()["did"], user["did"]]},
              headers=user["headers"])
    assert r.status_code == 200, r.text
    bob, me = r.json()["profiles"]
    assert bob == bob_profile()
    assert me["displayName"] == "New Name" and me["avatar"].endswith(f"/{avatar}@jpeg")
    for profile in (bob, me):
        valid("app.bsky.actor.defs#profileViewDetailed", profile)


def test_profile_edit_in_the_author_of_liked_posts(world, c, user, edited):
    seen_rev, avatar, _ = edited
    mine = post(c, user, "liked post of mine")
    upstream = {"feed": [{"post": own_post_view(user, mine, "liked post of mine", display_name="Old Name")},
                         {"post": other_post()}]}
    world["appview"].on("app.bsky.feed.getActorLikes", serve(upstream, seen_rev))
    r = c.get("/xrpc/app.bsky.feed.getActorLikes", params={"actor": user["did"]}, headers=user["headers"])
    assert r.status_code == 200, r.text
    feed = r.json()["feed"]
    assert [item["post"]["uri"] for item in feed] == [mine["uri"], other_post()["uri"]]  # nothing inserted
    assert feed[0]["post"]["author"]["displayName"] == "New Name"
    assert feed[0]["post"]["author"]["avatar"].endswith(f"/{avatar}@jpeg")
    assert feed[1]["post"]["author"] == other_post()["author"]
    for item in feed:
        valid("app.bsky.feed.defs#feedViewPost", item)


# -- left untouched ----------------------------------------------------------------------------------------


def test_up_to_date_appview_is_left_untouched(world, c, user):
    first = post(c, user, "indexed")
    create(c, user, {"$type": "app.bsky.actor.profile", "displayName": "Name"}, "app.bsky.actor.profile", "self")
    current = latest_rev(c, user)
    timeline = {"feed": [{"post": own_post_view(user, first, "indexed")}]}
    raw = json.dumps(timeline, indent=1).encode()  # formatting a rewrite would not keep

    async def exact(request, record):
        return Response(raw, media_type="application/json", headers={"atproto-repo-rev": current})

    world["appview"].on("app.bsky.feed.getTimeline", exact)
    world["appview"].on("app.bsky.actor.getProfile", serve(profile_view(user, "Name"), current))
    r = c.get("/xrpc/app.bsky.feed.getTimeline", headers=user["headers"])
    assert r.status_code == 200 and r.content == raw
    assert "atproto-upstream-lag" not in r.headers
    r = c.get("/xrpc/app.bsky.actor.getProfile", params={"actor": user["did"]}, headers=user["headers"])
    assert r.json() == profile_view(user, "Name") and "atproto-upstream-lag" not in r.headers
    assert world["appview"].requests("app.bsky.feed.getPosts") == []


def test_unexpected_shape_or_no_rev_is_left_untouched(world, c, user):
    first = post(c, user, "indexed")
    post(c, user, "newer")
    odd = {"feed": "not a list"}
    world["appview"].on("app.bsky.feed.getTimeline", serve(odd, first["commit"]["rev"]))
    r = c.get("/xrpc/app.bsky.feed.getTimeline", headers=user["headers"])
    assert r.status_code == 200 and r.json() == odd and "atproto-upstream-lag" not in r.headers

    async def no_rev(request, record):
        return JSONResponse({"feed": []})

    world["appview"].on("app.bsky.feed.getTimeline", no_rev)
    r = c.get("/xrpc/app.bsky.feed.getTimeline", headers=user["headers"])
    assert r.status_code == 200 and r.json() == {"feed": []}

    # a rev from before the account lived here (its previous PDS) is not comparable
    before = tid_from_parts(1_577_836_800_000_000, 0)  # 2020-01-01
    world["appview"].on("app.bsky.feed.getTimeline", serve({"feed": []}, before))
    r = c.get("/xrpc/app.bsky.feed.getTimeline", headers=user["headers"])
    assert r.status_code == 200 and r.json() == {"feed": []} and "atproto-upstream-lag" not in r.headers


@pytest.mark.parametrize("value", ["cdn.example.com/%s/%s/%s", "https://cdn.example.com/img/%s/%s",
                                   "https://cdn.example.com/img/%s/%s/%s/%s"])
def test_bad_cdn_pattern_stops_the_start_naming_the_variable(value):
    from squall.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as info:
        load_settings({"PDS_BSKY_APP_VIEW_CDN_URL_PATTERN": value})
    assert str(info.value).startswith("PDS_BSKY_APP_VIEW_CDN_URL_PATTERN:") and "\n" not in str(info.value)
    settings, _ = load_settings({"PDS_BSKY_APP_VIEW_CDN_URL_PATTERN": CDN})
    assert settings.bsky_app_view_cdn_url_pattern == CDN


def test_compressed_answers(world, c, user):
    import gzip

    first = post(c, user, "indexed")
    newer = post(c, user, "newer")
    body = json.dumps({"feed": [{"post": own_post_view(user, first, "indexed")}]}).encode()

    def compressed(encoding: str, data: bytes):
        async def handler(request, record):
            return Response(data, media_type="application/json",
                            headers={"atproto-repo-rev": first["commit"]["rev"], "content-encoding": encoding})
        return handler

    # gzip is read and rewritten (and sent back plain)
    world["appview"].on("app.bsky.feed.getTimeline", compressed("gzip", gzip.compress(body)))
    r = c.get("/xrpc/app.bsky.feed.getTimeline", headers={**user["headers"], "accept-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert [item["post"]["uri"] for item in r.json()["feed"]] == [newer["uri"], first["uri"]]
    # an encoding this PDS does not decode is relayed untouched, with its header
    opaque = b"\x00opaque-bytes"
    world["appview"].on("app.bsky.feed.getTimeline", compressed("zz-unknown", opaque))
    with httpx.Client(base_url=world["pds"].url) as raw_client:
        r = raw_client.get("/xrpc/app.bsky.feed.getTimeline",
                           headers={**user["headers"], "accept-encoding": "zz-unknown"})
        assert r.headers["content-encoding"] == "zz-unknown" and r.read() == opaque
    assert "atproto-upstream-lag" not in r.headers
