"""squall.auth.scopes: the atproto permission scope syntax, matching and permission-set expansion."""

from __future__ import annotations

import pytest

from squall.auth.scopes import (AccountPermission, BlobPermission, IncludeScope, Permissions, PermissionSetError,
                                RepoPermission, RpcPermission, ScopeError, StaticScope, describe,
                                expand_permission_set, parse)


@pytest.mark.parametrize("text,expected", [
    ("atproto", StaticScope("atproto")),
    ("repo:app.bsky.feed.post", RepoPermission(("app.bsky.feed.post",))),
    ("repo:app.bsky.feed.post?action=create", RepoPermission(("app.bsky.feed.post",), ("create",))),
    ("repo?collection=app.bsky.feed.post&collection=app.bsky.feed.like&action=delete&action=create",
     RepoPermission(("app.bsky.feed.post", "app.bsky.feed.like"), ("create", "delete"))),
    ("repo:*", RepoPermission(("*",))),
    ("rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview",
     RpcPermission(("app.bsky.feed.getTimeline",), "did:web:api.bsky.app#bsky_appview")),
    ("rpc:*?aud=did:web:api.bsky.app", RpcPermission(("*",), "did:web:api.bsky.app")),
    ("blob:image/*", BlobPermission(("image/*",))),
    ("blob?accept=image/png&accept=video/*", BlobPermission(("image/png", "video/*"))),
    ("account:email", AccountPermission("email", "read")),
    ("account:status?action=manage", AccountPermission("status", "manage")),
    ("include:com.example.authBasic?aud=did:web:example.com", IncludeScope("com.example.authBasic", "did:web:example.com")),
])
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text", [
    "", "repo", "repo:", "repo:notannsid", "repo:app.bsky.feed.post?action=destroy", "repo:a.b.c?bogus=1",
    "repo:app.bsky.feed.post?collection=app.bsky.feed.like",  # positional and parameter
    "rpc:app.bsky.feed.getTimeline", "rpc:*?aud=*", "rpc:app.bsky.feed.getTimeline?aud=nope",
    "rpc:a.b.c?aud=did:web:x&aud=did:web:y", "blob:image", "blob:*/png", "account:password",
    "account:email?action=delete", "identity:did", "include:*", "include:com.example.x?aud=*",
    "transition:everything", "foo", "repo:app.bsky.feed.post extra",
])
def test_parse_refuses(text):
    with pytest.raises(ScopeError):
        parse(text)


def test_canonical_text_round_trips():
    for text in ("repo:app.bsky.feed.post?action=create", "blob:image/*", "account:status?action=manage",
                 "rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview", "identity:*",
                 "repo?collection=a.b.c&collection=a.b.d"):
        assert str(parse(text)) == text
        assert parse(str(parse(text))) == parse(text)


def test_matching():
    p = Permissions("atproto repo:app.bsky.feed.post?action=create blob:image/*")
    assert p.repo("app.bsky.feed.post", "create") is None
    missing = p.repo("app.bsky.feed.post", "delete")
    assert missing is not None and missing.scope == "repo:app.bsky.feed.post?action=delete"
    assert missing.message == 'Missing required scope "repo:app.bsky.feed.post?action=delete"'
    assert p.repo("app.bsky.actor.profile", "create") is not None
    assert p.blob("image/png") is None and p.blob("IMAGE/PNG; charset=x") is None
    assert p.blob("text/plain").scope == "blob:text/plain"
    assert p.blob("imagex/png") is not None
    assert p.rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#bsky_appview") is not None
    assert p.account("email") is not None and p.identity("handle") is not None


def test_rpc_audiences():
    p = Permissions("atproto rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app")
    assert p.rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#bsky_appview") is None  # bare DID: any service
    assert p.rpc("app.bsky.feed.getTimeline", "did:web:evil.example#bsky_appview") is not None
    exact = Permissions("atproto rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview")
    assert exact.rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#bsky_appview") is None
    assert exact.rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#other") is not None
    wild = Permissions("atproto rpc:*?aud=did:web:api.bsky.app")
    assert wild.rpc("app.bsky.feed.getFeed", "did:web:api.bsky.app#bsky_appview") is None


def test_account_manage_includes_read_and_transitions():
    p = Permissions("atproto account:email?action=manage identity:*")
    assert p.account("email", "read") is None and p.account("email", "manage") is None
    assert p.identity("handle") is None
    assert Permissions("atproto account:email").account("email", "manage") is not None
    assert Permissions("atproto transition:email").account("email") is None
    generic = Permissions("atproto transition:generic")
    assert generic.repo("any.thing.here", "delete") is None and generic.blob("text/plain") is None
    assert generic.rpc("app.bsky.feed.getTimeline", "did:web:x#y") is None
    assert generic.rpc("chat.bsky.convo.listConvos", "did:web:x#y") is not None
    assert Permissions("atproto transition:generic transition:chat.bsky").rpc("chat.bsky.convo.listConvos", "did:web:x") is None
    assert generic.account("status", "manage") is not None and generic.identity("handle") is not None


def _set(permissions, nsid="com.example.authBasic"):
    return {"lexicon": 1, "id": nsid, "defs": {"main": {"type": "permission-set", "title": "Basic",
                                                         "detail": "Posts", "permissions": permissions}}}


def test_permission_set_expansion_limits():
    doc = _set([
        {"type": "permission", "resource": "repo", "collection": ["com.example.post", "app.bsky.feed.post"],
         "action": ["create"]},
        {"type": "permission", "resource": "rpc", "lxm": ["com.example.getThing"], "inheritAud": True},
        {"type": "permission", "resource": "rpc", "lxm": ["com.example.other"], "aud": "did:web:svc.example"},
        {"type": "permission", "resource": "account", "attr": "email"},  # not allowed in a set
        {"type": "permission", "resource": "repo", "collection": ["org.elsewhere.thing"]},  # outside the namespace
    ])
    pset = expand_permission_set(IncludeScope("com.example.authBasic", "did:web:svc.example"), doc)
    assert pset.title == "Basic" and pset.detail == "Posts"
    assert pset.scopes == ("repo:com.example.post?action=create",
                           "rpc:com.example.getThing?aud=did:web:svc.example",
                           "rpc:com.example.other?aud=did:web:svc.example")
    # inheritAud without an aud on the include: that entry is dropped, never widened.
    assert "rpc:com.example.getThing" not in " ".join(
        expand_permission_set(IncludeScope("com.example.authBasic"), doc).scopes)
    with pytest.raises(PermissionSetError):
        expand_permission_set(IncludeScope("com.example.authBasic"), {**doc, "id": "com.example.other"})
    with pytest.raises(PermissionSetError):
        expand_permission_set(IncludeScope("com.example.authBasic"),
                              {**doc, "defs": {"main": {"type": "record"}}})


def test_words():
    assert describe("repo:app.bsky.feed.post?action=create") == \
        "Create records of type app.bsky.feed.post in your repository"
    assert describe("blob:image/*") == "Upload image files"
    assert describe("account:status?action=manage").startswith("Manage your account's status")
    assert describe("transition:generic").startswith("Read and write")
