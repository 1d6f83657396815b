"""XRPC method inputs in the lexicon core (squall.atproto.lexicon): query parameters arrive as
strings and are typed by the method's Lexicon, JSON inputs are checked against its input schema.
Both against small Lexicons written here and against the bundled com.atproto methods."""

from __future__ import annotations

import pytest

from squall.atproto.lexicon import (
    LexiconNotFoundError,
    Lexicons,
    LexiconSchemaError,
    LexiconValidationError,
    load_bundled,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID_STR = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"

QUERY = {
    "lexicon": 1,
    "id": "com.example.query",
    "defs": {"main": {"type": "query", "parameters": {
        "type": "params",
        "required": ["did"],
        "properties": {
            "did": {"type": "string", "format": "did"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
            "page": {"type": "integer"},
            "reverse": {"type": "boolean"},
            "full": {"type": "boolean", "default": True},
            "cids": {"type": "array", "items": {"type": "string", "format": "cid"}, "maxLength": 2},
            "sizes": {"type": "array", "items": {"type": "integer", "maximum": 10}},
            "sort": {"type": "string", "knownValues": ["recent", "usage"], "default": "recent"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "name": {"type": "string", "maxLength": 5},
        },
    }, "output": {"encoding": "application/json"}}},
}

PROCEDURE = {
    "lexicon": 1,
    "id": "com.example.procedure",
    "defs": {
        "main": {"type": "procedure", "input": {"encoding": "application/json", "schema": {
            "type": "object",
            "required": ["repo", "items"],
            "nullable": ["swap"],
            "properties": {
                "repo": {"type": "string", "format": "at-identifier"},
                "items": {"type": "array", "maxLength": 3,
                          "items": {"type": "union", "closed": True, "refs": ["#a", "#b"]}},
                "swap": {"type": "string", "format": "cid"},
                "when": {"type": "string", "format": "datetime"},
                "flag": {"type": "boolean"},
                "body": {"type": "unknown"},
            },
        }}},
        "a": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}},
        "b": {"type": "object", "properties": {"uri": {"type": "string", "format": "at-uri"}}},
    },
}

BYTES_IN = {
    "lexicon": 1,
    "id": "com.example.upload",
    "defs": {"main": {"type": "procedure", "input": {"encoding": "*/*"}}},
}


@pytest.fixture(scope="module")
def lex() -> Lexicons:
    return Lexicons([QUERY, PROCEDURE, BYTES_IN])


@pytest.fixture(scope="module")
def bundled() -> Lexicons:
    return load_bundled()


def _params_error(schema, pairs) -> LexiconValidationError:
    with pytest.raises(LexiconValidationError) as info:
        schema.validate_params(pairs)
    return info.value


def _input_error(schema, body) -> LexiconValidationError:
    with pytest.raises(LexiconValidationError) as info:
        schema.validate_input(body)
    return info.value


# --- parameters ------------------------------------------------------------------------------------


def test_parameters_are_typed_and_defaults_filled(lex):
    query = lex.method("com.example.query")
    assert query.type == "query" and query.has_params and not query.has_input_schema
    assert query.validate_params([("did", DID)]) == {"did": DID, "limit": 50, "full": True, "sort": "recent"}
    got = query.validate_params([("did", DID), ("limit", "7"), ("page", "-3"), ("reverse", "true"),
                                 ("full", "false"), ("cids", CID_STR), ("cids", CID_STR), ("sizes", "1"),
                                 ("sizes", "10"), ("sort", "usage"), ("mode", "b"), ("name", "abcde")])
    assert got == {"did": DID, "limit": 7, "page": -3, "reverse": True, "full": False, "cids": [CID_STR, CID_STR],
                   "sizes": [1, 10], "sort": "usage", "mode": "b", "name": "abcde"}
    assert type(got["limit"]) is int and got["reverse"] is True
    # "1" and "0" are booleans too (as the handlers' own parsing took them)
    assert query.validate_params([("did", DID), ("reverse", "1"), ("full", "0")])["full"] is False
    # a single value of an array parameter is still an array
    assert query.validate_params([("did", DID), ("cids", CID_STR)])["cids"] == [CID_STR]
    # knownValues are not a closed set
    assert query.validate_params([("did", DID), ("sort", "other")])["sort"] == "other"


def test_unknown_parameters_are_allowed_and_dropped(lex):
    query = lex.method("com.example.query")
    got = query.validate_params([("did", DID), ("extra", "x"), ("limit", "2"), ("extra", "y")])
    assert "extra" not in got and got["limit"] == 2


@pytest.mark.parametrize("pairs, path, message", [
    ([], "Params", 'Params must have the property "did"'),
    ([("limit", "5")], "Params", 'Params must have the property "did"'),
    ([("did", "not-a-did")], "Params/did", "Params/did must be a valid did"),
    ([("did", "")], "Params/did", "Params/did must be a valid did"),
    ([("did", DID), ("did", DID)], "Params/did", "Params/did must appear once"),
    ([("did", DID), ("limit", "0")], "Params/limit", "Params/limit can not be less than 1"),
    ([("did", DID), ("limit", "101")], "Params/limit", "Params/limit can not be greater than 100"),
    ([("did", DID), ("limit", "ten")], "Params/limit", "Params/limit must be an integer"),
    ([("did", DID), ("limit", "1.5")], "Params/limit", "Params/limit must be an integer"),
    ([("did", DID), ("limit", "")], "Params/limit", "Params/limit must be an integer"),
    ([("did", DID), ("limit", "+5")], "Params/limit", "Params/limit must be an integer"),
    ([("did", DID), ("limit", " 5")], "Params/limit", "Params/limit must be an integer"),
    ([("did", DID), ("limit", "٣")], "Params/limit", "Params/limit must be an integer"),  # not an ASCII digit
    ([("did", DID), ("page", "9" * 5000)], "Params/page", "Params/page must be an integer"),
    ([("did", DID), ("reverse", "yes")], "Params/reverse", "Params/reverse must be a boolean"),
    ([("did", DID), ("reverse", "True")], "Params/reverse", "Params/reverse must be a boolean"),
    ([("did", DID), ("cids", "zzz")], "Params/cids/0", "Params/cids/0 must be a valid cid"),
    ([("did", DID), ("cids", CID_STR), ("cids", "x")], "Params/cids/1", "Params/cids/1 must be a valid cid"),
    ([("did", DID)] + [("cids", CID_STR)] * 3, "Params/cids", "Params/cids must not have more than 2 elements"),
    ([("did", DID), ("sizes", "11")], "Params/sizes/0", "Params/sizes/0 can not be greater than 10"),
    ([("did", DID), ("mode", "c")], "Params/mode", "Params/mode must be one of (a|b)"),
    ([("did", DID), ("name", "abcdef")], "Params/name", "Params/name must not be longer than 5 bytes"),
])
def test_invalid_parameters_name_the_parameter(lex, pairs, path, message):
    error = _params_error(lex.method("com.example.query"), pairs)
    assert error.path == path
    assert str(error).startswith(message), str(error)


def test_format_failures_say_which_format(lex, bundled):
    error = _params_error(lex.method("com.example.query"), [("did", "nope")])
    assert error.format == "did"
    error = _input_error(bundled.method("com.atproto.server.createAccount"), {"handle": "not a handle"})
    assert (error.path, error.format) == ("Input/handle", "handle")
    assert str(error).startswith("Input/handle must be a valid handle")
    error = _params_error(lex.method("com.example.query"), [("did", DID), ("limit", "0")])
    assert error.format is None


def test_method_without_parameters_takes_any_query_string(bundled):
    method = bundled.method("com.atproto.server.describeServer")
    assert not method.has_params
    assert method.validate_params([("anything", "x")]) == {}


# --- JSON input -----------------------------------------------------------------------------------------


def test_valid_inputs(lex):
    method = lex.method("com.example.procedure")
    assert method.type == "procedure" and method.input_encoding == "application/json" and method.has_input_schema
    method.validate_input({"repo": DID, "items": []})
    method.validate_input({"repo": "alice.example.com", "items": [{"$type": "com.example.procedure#a", "n": 0},
                                                                  {"$type": "com.example.procedure#b"}],
                           "swap": None, "when": "2024-05-01T12:00:00Z", "flag": False, "body": {"x": [1]},
                           "unknownProperty": 5})


@pytest.mark.parametrize("body, path, message", [
    ({"items": []}, "Input", 'Input must have the property "repo"'),
    ({"repo": DID}, "Input", 'Input must have the property "items"'),
    ({"repo": 5, "items": []}, "Input/repo", "Input/repo must be a string"),
    ({"repo": None, "items": []}, "Input/repo", "Input/repo must be a string"),
    ({"repo": "not an identifier", "items": []}, "Input/repo", "Input/repo must be a valid at-identifier"),
    ({"repo": DID, "items": "x"}, "Input/items", "Input/items must be an array"),
    ({"repo": DID, "items": [{}] * 4}, "Input/items", "Input/items must not have more than 3 elements"),
    ({"repo": DID, "items": [5]}, "Input/items/0", "Input/items/0 must be an object which includes the \"$type\""),
    ({"repo": DID, "items": [{"$type": "com.example.other"}]}, "Input/items/0", "Input/items/0 $type must be one of"),
    ({"repo": DID, "items": [{"$type": "com.example.procedure#a"}]}, "Input/items/0",
     'Input/items/0 must have the property "n"'),
    ({"repo": DID, "items": [{"$type": "com.example.procedure#a", "n": -1}]}, "Input/items/0/n",
     "Input/items/0/n can not be less than 0"),
    ({"repo": DID, "items": [{"$type": "com.example.procedure#b", "uri": "http://x"}]}, "Input/items/0/uri",
     "Input/items/0/uri must be a valid at-uri"),
    ({"repo": DID, "items": [], "swap": "not-a-cid"}, "Input/swap", "Input/swap must be a valid cid"),
    ({"repo": DID, "items": [], "when": "yesterday"}, "Input/when", "Input/when must be a valid datetime"),
    ({"repo": DID, "items": [], "flag": "true"}, "Input/flag", "Input/flag must be a boolean"),
    ({"repo": DID, "items": [], "body": "text"}, "Input/body", "Input/body must be an object"),
])
def test_invalid_inputs_name_the_property(lex, body, path, message):
    error = _input_error(lex.method("com.example.procedure"), body)
    assert error.path == path
    assert str(error).startswith(message), str(error)


def test_non_json_input_has_no_schema_to_check(lex, bundled):
    for method in (lex.method("com.example.upload"), bundled.method("com.atproto.repo.uploadBlob")):
        assert method.input_encoding == "*/*" and not method.has_input_schema
        method.validate_input(b"anything")
    method = bundled.method("com.atproto.server.activateAccount")
    assert method.input_encoding is None and not method.has_input_schema


def test_method_lookup_errors():
    lex = Lexicons([QUERY, PROCEDURE])
    with pytest.raises(LexiconNotFoundError):
        lex.method("com.example.nothing")
    with pytest.raises(LexiconNotFoundError):
        lex.method("com.example.procedure#a")  # an object, not a method
    broken = {"lexicon": 1, "id": "com.example.broken", "defs": {"main": {
        "type": "procedure", "input": {"encoding": "application/json", "schema": {"type": "ref",
                                                                                  "ref": "com.example.gone"}}}}}
    with pytest.raises(LexiconSchemaError, match="com.example.gone"):
        Lexicons([broken]).method("com.example.broken")


def test_parameters_schema_allows_only_primitives_and_arrays_of_them():
    doc = {"lexicon": 1, "id": "com.example.bad", "defs": {"main": {"type": "query", "parameters": {
        "type": "params", "properties": {"o": {"type": "object", "properties": {}}}}}}}
    with pytest.raises(LexiconSchemaError):
        Lexicons([doc])


# --- the bundled com.atproto methods ---------------------------------------------------------------------


def test_bundled_methods_compile(bundled):
    nsids = bundled.method_nsids()
    assert all(nsid.startswith("com.atproto.") for nsid in nsids)
    assert {"com.atproto.repo.createRecord", "com.atproto.repo.getRecord", "com.atproto.sync.getBlocks",
            "com.atproto.admin.updateSubjectStatus", "com.atproto.server.createSession"} <= nsids
    for nsid in nsids:
        assert bundled.method(nsid).nsid == nsid


def test_bundled_create_record_and_get_record(bundled):
    create = bundled.method("com.atproto.repo.createRecord")
    body = {"repo": DID, "collection": "app.bsky.feed.post", "record": {"text": "hi"}}
    create.validate_input(body)
    create.validate_input({**body, "rkey": "self", "validate": True, "swapCommit": CID_STR})
    assert str(_input_error(create, {"collection": "a.b.c", "record": {}})) == 'Input must have the property "repo"'
    assert str(_input_error(create, {**body, "repo": "did:nope"})).startswith("Input/repo must be a valid")
    assert str(_input_error(create, {**body, "collection": "nsid"})).startswith("Input/collection must be a valid nsid")
    assert str(_input_error(create, {**body, "rkey": "a/b"})).startswith("Input/rkey must be a valid record-key")
    assert _input_error(create, {**body, "rkey": "a" * 513}).path == "Input/rkey"
    assert str(_input_error(create, {**body, "record": []})) == "Input/record must be an object"
    get = bundled.method("com.atproto.repo.getRecord")
    pairs = [("repo", "alice.test"), ("collection", "app.bsky.feed.post"), ("rkey", "3k43tv4rft22g")]
    assert get.validate_params(pairs) == dict(pairs)
    assert str(_params_error(get, pairs[:2])) == 'Params must have the property "rkey"'
    assert _params_error(get, pairs + [("cid", "zzz")]).path == "Params/cid"


def test_bundled_put_record_swap_record_is_nullable(bundled):
    put = bundled.method("com.atproto.repo.putRecord")
    put.validate_input({"repo": DID, "collection": "a.b.c", "rkey": "k", "record": {}, "swapRecord": None})
    assert _input_error(put, {"repo": DID, "collection": "a.b.c", "rkey": "k", "record": {},
                              "swapCommit": None}).path == "Input/swapCommit"


def test_bundled_apply_writes_union(bundled):
    apply = bundled.method("com.atproto.repo.applyWrites")
    writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "a.b.c", "value": {}},
              {"$type": "com.atproto.repo.applyWrites#update", "collection": "a.b.c", "rkey": "k", "value": {}},
              {"$type": "com.atproto.repo.applyWrites#delete", "collection": "a.b.c", "rkey": "k"}]
    apply.validate_input({"repo": DID, "writes": writes})
    error = _input_error(apply, {"repo": DID, "writes": [{**writes[1], "rkey": None}]})
    assert error.path == "Input/writes/0/rkey"
    error = _input_error(apply, {"repo": DID, "writes": [{"collection": "a.b.c", "value": {}}]})
    assert error.path == "Input/writes/0"


@pytest.mark.parametrize("nsid, pairs, expected", [
    ("com.atproto.repo.listRecords", [("repo", DID), ("collection", "a.b.c")],
     {"repo": DID, "collection": "a.b.c", "limit": 50}),
    ("com.atproto.sync.listRepos", [], {"limit": 500}),
    ("com.atproto.sync.listBlobs", [("did", DID)], {"did": DID, "limit": 500}),
    ("com.atproto.repo.listMissingBlobs", [], {"limit": 500}),
    ("com.atproto.admin.getInviteCodes", [], {"sort": "recent", "limit": 100}),
    ("com.atproto.server.getAccountInviteCodes", [], {"includeUsed": True, "createAvailable": True}),
    ("com.atproto.sync.getBlocks", [("did", DID), ("cids", CID_STR)], {"did": DID, "cids": [CID_STR]}),
    ("com.atproto.admin.getAccountInfos", [("dids", DID)], {"dids": [DID]}),
])
def test_bundled_parameter_defaults(bundled, nsid, pairs, expected):
    assert bundled.method(nsid).validate_params(pairs) == expected


@pytest.mark.parametrize("nsid, pairs, path", [
    ("com.atproto.repo.listRecords", [("repo", DID), ("collection", "a.b.c"), ("limit", "101")], "Params/limit"),
    ("com.atproto.repo.listRecords", [("repo", DID), ("collection", "a.b.c"), ("limit", "0")], "Params/limit"),
    ("com.atproto.sync.listRepos", [("limit", "1001")], "Params/limit"),
    ("com.atproto.sync.listBlobs", [("did", DID), ("since", "not-a-tid")], "Params/since"),
    ("com.atproto.sync.getRepo", [("did", DID), ("since", "x")], "Params/since"),
    ("com.atproto.admin.getInviteCodes", [("limit", "501")], "Params/limit"),
    ("com.atproto.identity.resolveHandle", [("handle", "not a handle")], "Params/handle"),
    ("com.atproto.server.getServiceAuth", [("aud", DID), ("lxm", "not an nsid")], "Params/lxm"),
    ("com.atproto.server.getServiceAuth", [("aud", DID), ("exp", "soon")], "Params/exp"),
    ("com.atproto.admin.getSubjectStatus", [("uri", "https://example.com")], "Params/uri"),
    ("com.atproto.sync.getBlob", [("did", DID)], "Params"),
])
def test_bundled_parameter_errors(bundled, nsid, pairs, path):
    assert _params_error(bundled.method(nsid), pairs).path == path


@pytest.mark.parametrize("nsid, body, path", [
    ("com.atproto.server.createSession", {"identifier": "a"}, "Input"),
    ("com.atproto.server.createSession", {"identifier": "a", "password": "b", "allowTakendown": "yes"},
     "Input/allowTakendown"),
    ("com.atproto.server.createInviteCodes", {"useCount": 1, "forAccounts": ["nope"]}, "Input/forAccounts/0"),
    ("com.atproto.server.deactivateAccount", {"deleteAfter": "tomorrow"}, "Input/deleteAfter"),
    ("com.atproto.server.deleteAccount", {"did": DID, "password": "p"}, "Input"),
    ("com.atproto.admin.updateSubjectStatus", {"subject": {"$type": "com.atproto.admin.defs#repoRef"}},
     "Input/subject"),
    ("com.atproto.admin.updateSubjectStatus",
     {"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": DID}, "takedown": {"ref": "x"}},
     "Input/takedown"),
    ("com.atproto.admin.updateSubjectStatus",
     {"subject": {"$type": "com.atproto.repo.strongRef", "uri": "x", "cid": CID_STR}}, "Input/subject/uri"),
    ("com.atproto.identity.signPlcOperation", {"rotationKeys": "did:key:z"}, "Input/rotationKeys"),
    ("com.atproto.identity.signPlcOperation", {"services": []}, "Input/services"),
    ("com.atproto.identity.submitPlcOperation", {}, "Input"),
])
def test_bundled_input_errors(bundled, nsid, body, path):
    assert _input_error(bundled.method(nsid), body).path == path
