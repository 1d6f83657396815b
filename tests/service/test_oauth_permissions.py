"""Issue #17: granular OAuth permission scopes, end to end against a real server with the test
OAuth client (tests/helpers/oauth_client.py); the official client's run is
test_oauth_official_client.py. Permission sets come from a loopback lexicon host."""

from __future__ import annotations

import os

import pytest

from tests.helpers.accounts import PASSWORD, create_account
from tests.helpers.lexicon_host import LexiconHost
from tests.helpers.oauth_client import OAuthClient, client_metadata, metadata_host

REDIRECT = "http://127.0.0.1:9/callback"
GRANULAR = "atproto repo:app.bsky.feed.post?action=create blob:image/*"
SET_NSID = "com.example.squalltest.authNotes"


@pytest.fixture(scope="module")
def lexicon_host():
    with LexiconHost() as host:
        host.permission_set(SET_NSID, [
            {"type": "permission", "resource": "repo", "collection": ["com.example.squalltest.note"],
             "action": ["create", "delete"]},
            {"type": "permission", "resource": "repo", "collection": ["app.bsky.feed.post"]},  # not its namespace
        ], title="Write notes", detail="Create and delete your notes")
        yield host


@pytest.fixture(scope="module")
def pds_env(lexicon_host):
    return {"PDS_DEV_LEXICON_AUTHORITIES": f"com.example.squalltest={lexicon_host.did}"}


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


@pytest.fixture(scope="module")
def user(c):
    return create_account(c, "perm")


def session_for(c, host, user, variant: str, scope: str) -> OAuthClient:
    client_id = host.client_id(variant)
    host.document = client_metadata(client_id, redirect_uri=REDIRECT, scope=scope)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    client.discover()
    client.login(identifier=user["handle"], password=PASSWORD, scope=scope)
    return client


def post(repo: str, text: str) -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-05-01T00:00:00.000Z"}


def refused(r, scope: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json() == {"error": "ScopeMissingError", "message": f'Missing required scope "{scope}"'}


def test_granular_session(c, host, user):
    s = session_for(c, host, user, "granular", GRANULAR)
    did = user["did"]
    r = s.xrpc("POST", "com.atproto.repo.createRecord",
               json={"repo": did, "collection": "app.bsky.feed.post", "record": post(did, "hello")})
    assert r.status_code == 200, r.text
    rkey = r.json()["uri"].rsplit("/", 1)[1]
    refused(s.xrpc("POST", "com.atproto.repo.deleteRecord",
                   json={"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey}),
            "repo:app.bsky.feed.post?action=delete")
    refused(s.xrpc("POST", "com.atproto.repo.putRecord",
                   json={"repo": did, "collection": "app.bsky.actor.profile", "rkey": "self",
                         "record": {"$type": "app.bsky.actor.profile", "displayName": "x"}}),
            "repo:app.bsky.actor.profile?action=create")
    # putRecord upserts, so it needs update as well as create.
    refused(s.xrpc("POST", "com.atproto.repo.putRecord",
                   json={"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey, "record": post(did, "x")}),
            "repo:app.bsky.feed.post?action=update")
    # applyWrites: every operation is checked; one refused operation refuses the whole call.
    writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post",
               "value": post(did, "batch")},
              {"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": rkey}]
    refused(s.xrpc("POST", "com.atproto.repo.applyWrites", json={"repo": did, "writes": writes}),
            "repo:app.bsky.feed.post?action=delete")
    r = s.xrpc("POST", "com.atproto.repo.applyWrites", json={"repo": did, "writes": writes[:1]})
    assert r.status_code == 200, r.text
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(300)
    r = s.http.request("POST", "/xrpc/com.atproto.repo.uploadBlob", content=png, headers={
            "Authorization": f"DPoP {s.access_token}", "Content-Type": "image/png",
            "DPoP": s.proof("POST", f"{s.resource}/xrpc/com.atproto.repo.uploadBlob", access_token=s.access_token)})
    assert r.status_code == 200, r.text
    r = s.http.request("POST", "/xrpc/com.atproto.repo.uploadBlob", content=b"plain text", headers={
        "Authorization": f"DPoP {s.access_token}", "Content-Type": "text/plain",
        "DPoP": s.proof("POST", f"{s.resource}/xrpc/com.atproto.repo.uploadBlob", access_token=s.access_token)})
    refused(r, "blob:text/plain")
    # Account and identity methods: no permission for them was granted.
    r = s.xrpc("POST", "com.atproto.server.createAppPassword", json={"name": "sneaky"})
    assert r.status_code == 403 and r.json()["error"] == "InvalidToken", r.text
    refused(s.xrpc("POST", "com.atproto.server.deactivateAccount", json={}), "account:status?action=manage")
    refused(s.xrpc("POST", "com.atproto.identity.updateHandle", json={"handle": user["handle"]}), "identity:handle")
    # Service tokens: only for an rpc: permission.
    r = s.xrpc("GET", "com.atproto.server.getServiceAuth",
               params={"aud": "did:web:api.bsky.app", "lxm": "app.bsky.feed.getTimeline"})
    refused(r, "rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app")
    # getSession answers, without the e-mail address.
    r = s.xrpc("GET", "com.atproto.server.getSession")
    assert r.status_code == 200 and "email" not in r.json()


def test_rpc_and_attribute_permissions(c, host):
    user = create_account(c, "permrpc")
    scope = ("atproto rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app identity:handle "
             "account:email")
    s = session_for(c, host, user, "rpc", scope)
    r = s.xrpc("GET", "com.atproto.server.getServiceAuth",
               params={"aud": "did:web:api.bsky.app", "lxm": "app.bsky.feed.getTimeline"})
    assert r.status_code == 200 and r.json()["token"], r.text
    refused(s.xrpc("GET", "com.atproto.server.getServiceAuth",
                   params={"aud": "did:web:api.bsky.app", "lxm": "app.bsky.feed.getFeed"}),
            "rpc:app.bsky.feed.getFeed?aud=did:web:api.bsky.app")
    refused(s.xrpc("GET", "com.atproto.server.getServiceAuth",
                   params={"aud": "did:web:evil.example", "lxm": "app.bsky.feed.getTimeline"}),
            "rpc:app.bsky.feed.getTimeline?aud=did:web:evil.example")
    refused(s.xrpc("GET", "com.atproto.server.getServiceAuth", params={"aud": "did:web:api.bsky.app"}),
            "rpc:*?aud=did:web:api.bsky.app")
    legacy = c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).json()
    assert s.xrpc("GET", "com.atproto.server.getSession").json()["email"] == legacy["email"]
    # identity:handle lets the call through to the handle rules (a did:web account keeps its handle).
    r = s.xrpc("POST", "com.atproto.identity.updateHandle", json={"handle": "re" + user["handle"]})
    assert r.status_code == 400 and "did:web account" in r.json()["message"], r.text


def test_invalid_scopes_refused_at_par(c, host):
    client_id = host.client_id("bad")
    declared = "atproto repo:app.bsky.feed.post rpc:app.bsky.feed.getTimeline include:com.example.squalltest.missing"
    host.document = client_metadata(client_id, redirect_uri=REDIRECT, scope=declared)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    client.discover()
    for scope, words in (("atproto rpc:app.bsky.feed.getTimeline", "aud"),
                         ("atproto repo:app.bsky.feed.like", "not declared"),
                         ("atproto include:com.example.squalltest.missing", "could not be used")):
        r = client.par(scope=scope)
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text
        assert words in r.json()["error_description"]


def test_permission_set_from_lexicon_host(c, host, user, lexicon_host):
    scope = f"atproto include:{SET_NSID}"
    client_id = host.client_id("set")
    host.document = client_metadata(client_id, redirect_uri=REDIRECT, scope=scope)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    client.discover()
    hits = lexicon_host.record_hits
    r = client.par(scope=scope)
    assert r.status_code == 201, r.text
    page = client.authorize_page(r.json()["request_uri"])
    assert "Write notes" in page.text and "Create and delete your notes" in page.text
    assert "Create and delete records of type com.example.squalltest.note" in page.text
    tokens = client.login(identifier=user["handle"], password=PASSWORD, scope=scope)
    # The grant holds what the set lists inside its own namespace, nothing else.
    assert tokens["scope"] == "atproto repo:com.example.squalltest.note?action=create&action=delete"
    assert lexicon_host.record_hits == hits + 1  # resolved once, then from the cache
    did = user["did"]
    record = {"$type": "com.example.squalltest.note", "text": "from a permission set"}
    r = client.xrpc("POST", "com.atproto.repo.createRecord",
                    json={"repo": did, "collection": "com.example.squalltest.note", "record": record})
    assert r.status_code == 200, r.text
    rkey = r.json()["uri"].rsplit("/", 1)[1]
    refused(client.xrpc("POST", "com.atproto.repo.createRecord",
                        json={"repo": did, "collection": "app.bsky.feed.post", "record": post(did, "no")}),
            "repo:app.bsky.feed.post?action=create")
    r = client.xrpc("POST", "com.atproto.repo.deleteRecord",
                    json={"repo": did, "collection": "com.example.squalltest.note", "rkey": rkey})
    assert r.status_code == 200, r.text
