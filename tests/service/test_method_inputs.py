"""Method inputs from the lexicons, against a real server: the dispatcher checks every call of a
com.atproto method against its bundled Lexicon before the handler runs, and answers a bad
parameter or body with a 400 InvalidRequest envelope that names the property (the reference's
wording: parameter errors are prefixed "Error: ")."""

from __future__ import annotations

import pytest

from squall.app import feature_modules
from squall.atproto.lexicon import bundled_documents, load_bundled
from squall.xrpc.registry import LOOSENED_FORMATS, Registry
from tests.helpers.accounts import assert_error, create_account

XRPC = "/xrpc/"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

# com.atproto methods served without a bundled Lexicon, each with the reason. None today: every
# com.atproto method the PDS registers has one (app.bsky.* methods are not in the bundle's scope).
EXEMPT: dict[str, str] = {}
# Method lexicons bundled for the calls this PDS makes as a client, not for methods it serves: the
# relay monitor checks its requests to relays and the fake relays' answers against them.
CLIENT_ONLY: dict[str, str] = {
    "com.atproto.sync.getHostStatus": "served by relays; the relay monitor calls it",
    "com.atproto.sync.listHosts": "served by relays",
    "com.atproto.sync.requestCrawl": "served by relays; the crawler notifier calls it",
}


@pytest.fixture(scope="module")
def user(c):
    return create_account(c, "inputs")


def _message(r, name: str = "InvalidRequest") -> str:
    return assert_error(r, 400, name)["message"]


def test_every_com_atproto_method_has_a_bundled_lexicon():
    methods = [m for module in feature_modules() for m in getattr(module, "METHODS", ())]
    lexicons = load_bundled()
    served = {m.nsid for m in methods if m.nsid.startswith("com.atproto.")}
    assert served, "no com.atproto methods registered"
    missing = sorted(served - lexicons.method_nsids() - set(EXEMPT))
    assert missing == [], f"com.atproto methods without a bundled Lexicon (add one, or list it in EXEMPT): {missing}"
    assert set(EXEMPT) <= served, "EXEMPT lists a method that is not served"
    # the bundle describes nothing the PDS does not serve, but for the calls it makes as a client
    assert lexicons.method_nsids() - set(CLIENT_ONLY) <= served
    assert not set(CLIENT_ONLY) & served, "CLIENT_ONLY lists a method the PDS serves"
    # registering checks the kinds agree (query/procedure) and compiles each schema once
    registry = Registry()
    registry.extend(methods)
    for nsid in served - set(EXEMPT):
        assert registry.schema(nsid) is not None, nsid


def test_loosened_formats_name_real_formats():
    docs = {doc["id"]: doc for doc in bundled_documents()}
    for (nsid, where, name), reason in LOOSENED_FORMATS.items():
        main = docs[nsid]["defs"]["main"]
        node = main["parameters"] if where == "parameters" else main["input"]["schema"]
        assert "format" in node["properties"][name] and reason, (nsid, name)
    registry = Registry()
    registry.extend(m for module in feature_modules() for m in getattr(module, "METHODS", ())
                    if m.nsid == "com.atproto.server.getServiceAuth")
    got = registry.schema("com.atproto.server.getServiceAuth").validate_params([("aud", DID + "#bsky_appview")])
    assert got == {"aud": DID + "#bsky_appview"}


def test_missing_and_malformed_query_parameters(c, user):
    get = XRPC + "com.atproto.repo.getRecord"
    r = c.get(get, params={"repo": user["did"], "collection": "app.bsky.feed.post"})
    assert _message(r) == 'Error: Params must have the property "rkey"'
    r = c.get(get, params={"repo": "not an identifier", "collection": "app.bsky.feed.post", "rkey": "k"})
    assert _message(r).startswith("Error: Params/repo must be a valid at-identifier")
    r = c.get(XRPC + "com.atproto.sync.getLatestCommit", params={"did": "nobody"})
    assert _message(r).startswith("Error: Params/did must be a valid did")
    r = c.get(XRPC + "com.atproto.sync.getLatestCommit")
    assert _message(r) == 'Error: Params must have the property "did"'
    r = c.get(XRPC + "com.atproto.repo.listRecords", params={"repo": user["did"], "collection": "a.b.c",
                                                             "limit": 101})
    assert _message(r) == "Error: Params/limit can not be greater than 100"
    r = c.get(XRPC + "com.atproto.repo.listRecords", params={"repo": user["did"], "collection": "a.b.c",
                                                             "limit": "ten"})
    assert _message(r) == "Error: Params/limit must be an integer"
    r = c.get(XRPC + "com.atproto.repo.listRecords", params={"repo": user["did"], "collection": "a.b.c",
                                                             "reverse": "maybe"})
    assert _message(r) == "Error: Params/reverse must be a boolean"
    r = c.get(XRPC + "com.atproto.sync.listRepos", params={"limit": 0})
    assert _message(r) == "Error: Params/limit can not be less than 1"
    r = c.get(XRPC + "com.atproto.sync.getBlocks", params=[("did", user["did"]), ("cids", "nope")])
    assert _message(r).startswith("Error: Params/cids/0 must be a valid cid")
    r = c.get(XRPC + "com.atproto.sync.getRepo", params=[("did", user["did"]), ("did", user["did"])])
    assert _message(r) == "Error: Params/did must appear once"


def test_unknown_parameters_are_allowed(c, user):
    r = c.get(XRPC + "com.atproto.sync.getLatestCommit", params={"did": user["did"], "unexpected": "1"})
    assert r.status_code == 200, r.text
    r = c.get(XRPC + "com.atproto.repo.describeRepo", params={"repo": user["handle"], "x": ["a", "b"]})
    assert r.status_code == 200, r.text


def test_missing_and_malformed_json_input(c, user):
    create = XRPC + "com.atproto.repo.createRecord"
    good = {"repo": user["did"], "collection": "com.example.note", "record": {"n": 1}}
    headers = user["headers"]
    r = c.post(create, headers=headers, json={k: v for k, v in good.items() if k != "repo"})
    assert _message(r) == 'Input must have the property "repo"'
    r = c.post(create, headers=headers, json={**good, "repo": 42})
    assert _message(r) == "Input/repo must be a string"
    r = c.post(create, headers=headers, json={**good, "collection": "not-an-nsid"})
    assert _message(r).startswith("Input/collection must be a valid nsid")
    r = c.post(create, headers=headers, json={**good, "rkey": "a" * 513})
    assert _message(r).startswith("Input/rkey must not be longer than 512")
    r = c.post(create, headers=headers, json={**good, "record": "text"})
    assert _message(r) == "Input/record must be an object"
    r = c.post(create, headers=headers, json={**good, "validate": "yes"})
    assert _message(r) == "Input/validate must be a boolean"
    r = c.post(XRPC + "com.atproto.repo.deleteRecord", headers=headers,
               json={"repo": user["did"], "collection": "com.example.note"})
    assert _message(r) == 'Input must have the property "rkey"'
    r = c.post(XRPC + "com.atproto.repo.applyWrites", headers=headers,
               json={"repo": user["did"], "writes": [{"$type": "com.atproto.repo.applyWrites#delete",
                                                      "collection": "com.example.note"}]})
    assert _message(r) == 'Input/writes/0 must have the property "rkey"'
    r = c.post(XRPC + "com.atproto.server.createSession", json={"identifier": user["handle"]})
    assert _message(r) == 'Input must have the property "password"'
    r = c.post(XRPC + "com.atproto.server.createAppPassword", headers=headers, json={"name": 5})
    assert _message(r) == "Input/name must be a string"
    # nothing was written by any of these
    r = c.get(XRPC + "com.atproto.repo.listRecords", params={"repo": user["did"], "collection": "com.example.note"})
    assert r.status_code == 200 and r.json()["records"] == []


def test_admin_inputs_are_checked(c, admin):
    r = c.post(XRPC + "com.atproto.admin.updateSubjectStatus", auth=admin, json={})
    assert _message(r) == 'Input must have the property "subject"'
    r = c.post(XRPC + "com.atproto.admin.updateSubjectStatus", auth=admin,
               json={"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": "nope"}})
    assert _message(r).startswith("Input/subject/did must be a valid did")
    r = c.get(XRPC + "com.atproto.admin.getAccountInfos", auth=admin, params={"dids": [DID, "x"]})
    assert _message(r).startswith("Error: Params/dids/1 must be a valid did")


def test_a_malformed_handle_is_invalid_handle_where_the_method_declares_it(c):
    r = c.post(XRPC + "com.atproto.server.createAccount",
               json={"handle": "not a handle", "email": "x@example.com", "password": "correct horse battery"})
    assert _message(r, "InvalidHandle").startswith("Input/handle must be a valid handle")
    # resolveHandle declares no InvalidHandle: a malformed handle is an InvalidRequest
    r = c.get(XRPC + "com.atproto.identity.resolveHandle", params={"handle": "not a handle"})
    assert _message(r).startswith("Error: Params/handle must be a valid handle")


def test_authentication_comes_before_input_checks(c):
    r = c.post(XRPC + "com.atproto.repo.createRecord", json={"repo": 42})
    assert r.status_code == 401, r.text
    r = c.post(XRPC + "com.atproto.admin.updateSubjectStatus", json={})
    assert r.status_code == 401, r.text
