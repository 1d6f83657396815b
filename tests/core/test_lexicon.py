"""Lexicon schema parsing and record validation (squall.atproto.lexicon) against the interop vectors
in tests/fixtures/interop/lexicon and the bundled Bluesky record Lexicons."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from squall.atproto.cid import CID
from squall.atproto.datamodel import from_json
from squall.atproto.lexicon import (
    LexiconNotFoundError,
    Lexicons,
    LexiconSchemaError,
    LexiconValidationError,
    bundled_documents,
    grapheme_len,
    load_bundled,
    parse_lexicon_doc,
)

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "interop" / "lexicon"
RECORD_NSID = "example.lexicon.record"
CID_STR = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"
BLOB_CID = "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
POST_URI = f"at://{DID}/app.bsky.feed.post/3k43tv4rft22g"


def _load(name: str):
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _case_id(case) -> str:
    return case["name"]


@pytest.fixture(scope="module")
def catalog() -> Lexicons:
    return Lexicons(json.loads(p.read_text(encoding="utf-8")) for p in sorted((VECTORS / "catalog").glob("*.json")))


@pytest.fixture(scope="module")
def bundled() -> Lexicons:
    return load_bundled()


def _expect_invalid(lex: Lexicons, nsid: str, record, path: str | None = None) -> LexiconValidationError:
    with pytest.raises(LexiconValidationError) as info:
        lex.validate_record(nsid, record)
    if path is not None:
        assert info.value.path == path, str(info.value)
    return info.value


# --- schema documents ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", _load("lexicon-valid.json"), ids=_case_id)
def test_valid_lexicon_documents_parse(case):
    doc = parse_lexicon_doc(case["lexicon"])
    assert doc.id == case["lexicon"]["id"]
    assert set(doc.defs) == set(case["lexicon"]["defs"])
    Lexicons([case["lexicon"]])


@pytest.mark.parametrize("case", _load("lexicon-invalid.json"), ids=_case_id)
def test_invalid_lexicon_documents_are_rejected(case):
    with pytest.raises(LexiconSchemaError):
        parse_lexicon_doc(case["lexicon"])
    with pytest.raises(LexiconSchemaError):
        Lexicons([case["lexicon"]])


def test_catalog_loads_every_primary_type(catalog):
    assert set(catalog) == {
        "example.lexicon.record",
        "example.lexicon.query",
        "example.lexicon.procedure",
        "example.lexicon.subscription",
        "example.lexicon.permissionset",
    }
    assert catalog.record_types() == {RECORD_NSID}
    assert catalog.get_def("example.lexicon.query").type == "query"
    assert catalog.get_def("example.lexicon.subscription#main").type == "subscription"
    assert catalog.get_def("example.lexicon.permissionset").type == "permission-set"
    assert catalog.get_def("example.lexicon.record#demoToken").type == "token"
    # The procedure refers to app.bsky.actor.defs, which the catalog lacks: only record schemas
    # must resolve when the collection is built.
    assert catalog.get_def("app.bsky.actor.defs#preferences") is None


def _doc(defs, nsid="com.example.test"):
    return {"lexicon": 1, "id": nsid, "defs": defs}


def _record_doc(properties, required=(), nullable=(), key="tid", nsid="com.example.test", extra=None):
    record = {"type": "object", "properties": properties}
    if required:
        record["required"] = list(required)
    if nullable:
        record["nullable"] = list(nullable)
    defs = {"main": {"type": "record", "key": key, "record": record}}
    defs.update(extra or {})
    return _doc(defs, nsid)


@pytest.mark.parametrize(
    "doc, message",
    [
        ("not a doc", "JSON object"),
        ({"lexicon": 1.0, "id": "com.example.test", "defs": {"a": {"type": "token"}}}, "integer 1"),
        ({"lexicon": True, "id": "com.example.test", "defs": {"a": {"type": "token"}}}, "integer 1"),
        ({"lexicon": 2, "id": "com.example.test", "defs": {"a": {"type": "token"}}}, "integer 1"),
        (_doc({}), "defs must not be empty"),
        (_doc({"a": {"type": "params", "properties": {}}}), "named definition"),
        (_doc({"a": {"type": "union", "refs": []}}), "named definition"),
        (_doc({"a": {"type": "wibble"}}), "unknown type"),
        (_doc({"a": {"type": "string", "format": "email"}}), "unknown string format"),
        (_doc({"a": {"type": "string", "minLength": 5, "maxLength": 2}}), "greater than maxLength"),
        (_doc({"a": {"type": "string", "maxGraphemes": "10"}}), "maxGraphemes must be an integer"),
        (_doc({"a": {"type": "integer", "const": 1, "default": 2}}), "mutually exclusive"),
        (_doc({"a": {"type": "integer", "enum": [1, "two"]}}), "array of integers"),
        (_doc({"a": {"type": "blob", "accept": ["text/ht*"]}}), "accept entry"),
        (_doc({"a": {"type": "blob", "accept": ["*"]}}), "accept entry"),
        (_doc({"a": {"type": "object", "properties": {}, "required": ["x"]}}), "not defined in properties"),
        (_doc({"a": {"type": "object", "properties": {"x": {"type": "token"}}}}), "not allowed here"),
        (_doc({"a": {"type": "object", "properties": {"x": {"type": "union", "refs": [], "closed": True}}}}), "closed union"),
        (_doc({"a": {"type": "object", "properties": {"x": {"type": "ref", "ref": "#b#c"}}}}), "more than one"),
        (_doc({"a": {"type": "object", "properties": {"x": {"type": "ref", "ref": "not an nsid"}}}}), "NSID"),
        (_doc({"a": {"type": "array"}}), "must have items"),
        (_record_doc({}, key="sometimes"), "record key type"),
        (_record_doc({}, key="literal:.."), "literal record key"),
        (_doc({"main": {"type": "query", "output": {"schema": {"type": "object", "properties": {}}}}}), "encoding"),
        (_doc({"main": {"type": "query", "errors": [{"name": "Bad Name"}]}}), "whitespace"),
        (_doc({"main": {"type": "subscription", "message": {"schema": {"type": "object", "properties": {}}}}}), "union"),
        (_doc({"main": {"type": "permission-set", "permissions": [{"type": "permission"}]}}), "resource"),
        (_doc({"main": {"type": "permission-set", "title:lang": {"123": "x"}, "permissions": []}}), "language"),
    ],
)
def test_malformed_schemas_are_rejected_with_a_reason(doc, message):
    with pytest.raises(LexiconSchemaError, match=message):
        parse_lexicon_doc(doc)


def test_collection_rejects_unresolved_and_misdirected_refs():
    with pytest.raises(LexiconSchemaError, match="com.example.other#thing"):
        Lexicons([_record_doc({"x": {"type": "ref", "ref": "com.example.other#thing"}})])
    with pytest.raises(LexiconSchemaError, match="token"):
        Lexicons([_record_doc({"x": {"type": "ref", "ref": "#tok"}}, extra={"tok": {"type": "token"}})])
    with pytest.raises(LexiconSchemaError, match="string"):
        Lexicons([_record_doc({"x": {"type": "union", "refs": ["#s"]}}, extra={"s": {"type": "string"}})])
    with pytest.raises(LexiconSchemaError, match="twice"):
        Lexicons([_doc({"a": {"type": "token"}}), _doc({"b": {"type": "token"}})])


# --- the interop record vectors -----------------------------------------------------------------


@pytest.mark.parametrize("case", _load("record-data-valid.json"), ids=_case_id)
def test_valid_records(catalog, case):
    catalog.validate_record(RECORD_NSID, from_json(case["data"]))
    catalog.validate_record_key(RECORD_NSID, case["rkey"])


INVALID_RECORDS = _load("record-data-invalid.json")


@pytest.mark.parametrize("case", INVALID_RECORDS, ids=[f"{i}-{c['name']}" for i, c in enumerate(INVALID_RECORDS)])
def test_invalid_records(catalog, case):
    data = from_json(case["data"])
    error = _expect_invalid(catalog, RECORD_NSID, data)
    assert str(error).startswith("Record")
    # Each vector breaks one field: the error must be about that field, not something else.
    fields = [k for k in case["data"] if k not in ("$type", "integer")]
    if "integer" not in case["data"] and fields:
        # Some vectors also lack the required "integer"; with it added they must still fail.
        data["integer"] = 1
        error = _expect_invalid(catalog, RECORD_NSID, data)
    if fields:
        assert len(fields) == 1
        assert error.path.startswith(f"Record/{fields[0]}"), str(error)


def test_record_type_and_key_of_catalog(catalog):
    assert catalog.has_record_type(RECORD_NSID)
    assert not catalog.has_record_type("example.lexicon.query")
    assert catalog.record_key_type(RECORD_NSID) == "literal:demo"
    with pytest.raises(LexiconValidationError, match="demo"):
        catalog.validate_record_key(RECORD_NSID, "self")


def test_record_must_be_an_object_with_matching_type(catalog):
    _expect_invalid(catalog, RECORD_NSID, [1], path="Record")
    _expect_invalid(catalog, RECORD_NSID, {"integer": 1}, path="Record/$type")
    _expect_invalid(catalog, RECORD_NSID, {"$type": "example.lexicon.other", "integer": 1}, path="Record/$type")
    # Spec: a main definition's $type is the bare NSID, never "nsid#main".
    _expect_invalid(catalog, RECORD_NSID, {"$type": RECORD_NSID + "#main", "integer": 1}, path="Record/$type")
    with pytest.raises(LexiconNotFoundError):
        catalog.validate_record("example.lexicon.nothing", {"$type": "example.lexicon.nothing"})


# --- semantics beyond the vectors ---------------------------------------------------------------


def test_scalar_types_are_exact(catalog):
    base = {"$type": RECORD_NSID}
    _expect_invalid(catalog, RECORD_NSID, {**base, "integer": True}, path="Record/integer")
    _expect_invalid(catalog, RECORD_NSID, {**base, "integer": 1.5}, path="Record/integer")
    _expect_invalid(catalog, RECORD_NSID, {**base, "integer": 1, "boolean": 1}, path="Record/boolean")
    _expect_invalid(catalog, RECORD_NSID, {**base, "integer": 1, "bytes": bytearray(b"x")}, path="Record/bytes")
    _expect_invalid(catalog, RECORD_NSID, {**base, "integer": 1, "cid-link": CID_STR}, path="Record/cid-link")
    catalog.validate_record(RECORD_NSID, {**base, "integer": 1, "cid-link": CID.decode(CID_STR)})
    # Properties the schema does not name are ignored.
    catalog.validate_record(RECORD_NSID, {**base, "integer": 1, "extra": {"anything": [1, 2]}})


def test_unknown_must_be_a_plain_object(catalog):
    base = {"$type": RECORD_NSID, "integer": 1}
    blob = {"$type": "blob", "ref": CID.decode(CID_STR), "mimeType": "text/plain", "size": 1}
    for bad in (False, 3, "text", [1], b"bytes", CID.decode(CID_STR), blob):
        _expect_invalid(catalog, RECORD_NSID, {**base, "unknown": bad}, path="Record/unknown")
    catalog.validate_record(RECORD_NSID, {**base, "unknown": {"nested": blob}})


def test_union_accepts_main_with_or_without_suffix_and_open_unknown_types():
    lex = Lexicons(
        [
            _record_doc(
                {
                    "open": {"type": "union", "refs": ["com.example.thing", "#local"]},
                    "closed": {"type": "union", "refs": ["com.example.thing"], "closed": True},
                },
                extra={"local": {"type": "object", "required": ["s"], "properties": {"s": {"type": "string"}}}},
            ),
            _doc({"main": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}, "com.example.thing"),
        ]
    )
    nsid = "com.example.test"
    ok = {"$type": nsid}
    for spelled in ("com.example.thing", "com.example.thing#main"):
        lex.validate_record(nsid, {**ok, "open": {"$type": spelled, "n": 1}, "closed": {"$type": spelled, "n": 2}})
        _expect_invalid(lex, nsid, {**ok, "open": {"$type": spelled}}, path="Record/open")
    lex.validate_record(nsid, {**ok, "open": {"$type": "com.example.test#local", "s": "x"}})
    _expect_invalid(lex, nsid, {**ok, "open": {"$type": "com.example.test#local", "s": 1}}, path="Record/open/s")
    # An open union lets through a variant it does not know (a newer schema may add it) ...
    lex.validate_record(nsid, {**ok, "open": {"$type": "org.other.thing", "whatever": True}})
    # ... a closed one does not.
    _expect_invalid(lex, nsid, {**ok, "closed": {"$type": "org.other.thing"}}, path="Record/closed")
    _expect_invalid(lex, nsid, {**ok, "open": {"$type": 5}}, path="Record/open")


def test_required_nullable_and_default():
    lex = Lexicons(
        [
            _record_doc(
                {
                    "a": {"type": "string"},
                    "b": {"type": "string"},
                    "c": {"type": "integer", "default": 3},
                    "d": {"type": "boolean"},
                },
                required=["a", "b", "c"],
                nullable=["b", "d"],
            )
        ]
    )
    nsid = "com.example.test"
    lex.validate_record(nsid, {"$type": nsid, "a": "x", "b": None})  # c is satisfied by its default
    lex.validate_record(nsid, {"$type": nsid, "a": "x", "b": "y", "c": 4, "d": None})
    _expect_invalid(lex, nsid, {"$type": nsid, "b": None}, path="Record")  # a missing
    _expect_invalid(lex, nsid, {"$type": nsid, "a": None, "b": None}, path="Record/a")  # a not nullable
    _expect_invalid(lex, nsid, {"$type": nsid, "a": "x"}, path="Record")  # b required even if nullable
    _expect_invalid(lex, nsid, {"$type": nsid, "a": "x", "b": None, "c": None}, path="Record/c")
    record = {"$type": nsid, "a": "x", "b": None}
    lex.validate_record(nsid, record)
    assert "c" not in record  # validation never inserts defaults


def test_recursive_schema_terminates_and_validates_depth():
    lex = Lexicons(
        [
            _record_doc(
                {"root": {"type": "ref", "ref": "#node"}},
                extra={
                    "node": {
                        "type": "object",
                        "required": ["v"],
                        "properties": {
                            "v": {"type": "integer", "minimum": 0},
                            "children": {"type": "array", "items": {"type": "ref", "ref": "#node"}},
                        },
                    }
                },
            )
        ]
    )
    nsid = "com.example.test"
    tree = {"v": 1, "children": [{"v": 2, "children": [{"v": 3}]}, {"v": 4}]}
    lex.validate_record(nsid, {"$type": nsid, "root": tree})
    tree["children"][0]["children"][0]["v"] = -1
    _expect_invalid(lex, nsid, {"$type": nsid, "root": tree}, path="Record/root/children/0/children/0/v")


def test_string_lengths_count_utf8_bytes_and_graphemes():
    lex = Lexicons(
        [
            _record_doc(
                {
                    "bytes": {"type": "string", "minLength": 4, "maxLength": 8},
                    "graphemes": {"type": "string", "minGraphemes": 2, "maxGraphemes": 3},
                }
            )
        ]
    )
    nsid = "com.example.test"
    ok = {"$type": nsid}
    lex.validate_record(nsid, {**ok, "bytes": "éé"})  # 2 code points, 4 bytes
    lex.validate_record(nsid, {**ok, "bytes": "😀😀"})  # 8 bytes
    _expect_invalid(lex, nsid, {**ok, "bytes": "é"}, path="Record/bytes")  # 2 bytes
    _expect_invalid(lex, nsid, {**ok, "bytes": "😀😀a"}, path="Record/bytes")  # 9 bytes
    family = "👩\u200d👩\u200d👦\u200d👦"  # one grapheme of 7 code points
    lex.validate_record(nsid, {**ok, "graphemes": family * 3})
    lex.validate_record(nsid, {**ok, "graphemes": "e\u0301e\u0301"})  # combining accents: 2 graphemes
    _expect_invalid(lex, nsid, {**ok, "graphemes": family * 4}, path="Record/graphemes")
    _expect_invalid(lex, nsid, {**ok, "graphemes": family}, path="Record/graphemes")
    _expect_invalid(lex, nsid, {**ok, "graphemes": "e\u0301"}, path="Record/graphemes")


def test_grapheme_len():
    assert grapheme_len("") == 0
    assert grapheme_len("abc") == 3
    assert grapheme_len("🇩🇪🏳️‍🌈") == 2
    assert grapheme_len("👩‍👩‍👦‍👦") == 1
    assert grapheme_len("\r\n") == 1
    assert grapheme_len("a\r\nb\n\r") == 5  # CR LF is one cluster, LF CR is two
    assert grapheme_len("한국어") == 3


def _blob(mime="image/png", size=1000, cid=BLOB_CID):
    return {"$type": "blob", "ref": CID.decode(cid), "mimeType": mime, "size": size}


def test_blob_accept_and_shape():
    lex = Lexicons(
        [
            _record_doc(
                {
                    "any": {"type": "blob"},
                    "star": {"type": "blob", "accept": ["*/*"], "maxSize": 10},
                    "img": {"type": "blob", "accept": ["image/*", "video/mp4"]},
                }
            )
        ]
    )
    nsid = "com.example.test"
    ok = {"$type": nsid}
    lex.validate_record(nsid, {**ok, "any": _blob("application/x-whatever", 10**9)})
    lex.validate_record(nsid, {**ok, "star": _blob("text/plain", 10)})
    _expect_invalid(lex, nsid, {**ok, "star": _blob("text/plain", 11)}, path="Record/star")
    for mime in ("image/png", "image/webp", "IMAGE/JPEG", "video/mp4", "video/mp4; codecs=avc1"):
        lex.validate_record(nsid, {**ok, "img": _blob(mime)})
    for mime in ("video/webm", "text/plain", "imagex/png", "image"):
        _expect_invalid(lex, nsid, {**ok, "img": _blob(mime)}, path="Record/img")
    broken = [
        {k: v for k, v in _blob().items() if k != "size"},
        {**_blob(), "extra": 1},
        {**_blob(), "ref": BLOB_CID},
        {**_blob(), "size": -1},
        {**_blob(), "size": "12"},
        {**_blob(), "mimeType": ""},
        {"cid": BLOB_CID, "mimeType": "image/png"},  # the legacy blob form is not written any more
    ]
    for bad in broken:
        _expect_invalid(lex, nsid, {**ok, "any": bad}, path="Record/any")


# --- the bundled Lexicons -----------------------------------------------------------------------


def _now():
    return "2024-05-01T12:34:56.789Z"


def _strong_ref():
    return {"uri": POST_URI, "cid": CID_STR}


def _post(**fields):
    return {"$type": "app.bsky.feed.post", "text": "hello", "createdAt": _now(), **fields}


def test_bundled_set_is_complete_and_description_free(bundled):
    expected_records = {
        "app.bsky.actor.profile",
        "app.bsky.actor.status",
        "app.bsky.feed.post",
        "app.bsky.feed.like",
        "app.bsky.feed.repost",
        "app.bsky.feed.generator",
        "app.bsky.feed.threadgate",
        "app.bsky.feed.postgate",
        "app.bsky.graph.follow",
        "app.bsky.graph.block",
        "app.bsky.graph.list",
        "app.bsky.graph.listitem",
        "app.bsky.graph.listblock",
        "app.bsky.graph.starterpack",
        "app.bsky.graph.verification",
        "app.bsky.labeler.service",
        "app.bsky.notification.declaration",
        "chat.bsky.actor.declaration",
        "com.atproto.lexicon.schema",
    }
    assert bundled.record_types() == expected_records

    def walk(node, in_properties=False):
        if isinstance(node, dict):
            for key, value in node.items():
                assert not (key == "description" and isinstance(value, str) and not in_properties)
                walk(value, key == "properties")
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in bundled_documents():
        walk(doc)
        # Every union and ref in every definition resolves inside the bundle.
        parsed = bundled.get_doc(doc["id"])
        for name in parsed.defs:
            text = json.dumps(doc["defs"][name])
            for target in _refs(parsed.defs[name]):
                assert bundled.get_def(target) is not None, (doc["id"], name, target, text[:80])


def _refs(definition):
    kind = getattr(definition, "type", None)
    if kind == "ref":
        yield definition.ref
    elif kind == "union":
        yield from definition.refs
    elif kind == "array":
        yield from _refs(definition.items)
    elif kind == "object":
        for prop in definition.properties.values():
            yield from _refs(prop)
    elif kind == "record":
        yield from _refs(definition.record)


def test_load_bundled_gives_independent_instances():
    first, second = load_bundled(), load_bundled()
    assert first is not second
    assert first.record_types() == second.record_types()


def test_bundled_record_key_types(bundled):
    assert bundled.record_key_type("app.bsky.feed.post") == "tid"
    assert bundled.record_key_type("app.bsky.actor.profile") == "literal:self"
    assert bundled.record_key_type("app.bsky.feed.generator") == "any"
    assert bundled.record_key_type("com.atproto.lexicon.schema") == "nsid"
    bundled.validate_record_key("app.bsky.feed.post", "3k43tv4rft22g")
    bundled.validate_record_key("app.bsky.actor.profile", "self")
    bundled.validate_record_key("app.bsky.feed.generator", "my-feed_1.x:y~z")
    bundled.validate_record_key("com.atproto.lexicon.schema", "app.bsky.feed.post")
    for nsid, rkey in [
        ("app.bsky.feed.post", "self"),
        ("app.bsky.feed.post", "3K43TV4RFT22G"),
        ("app.bsky.actor.profile", "3k43tv4rft22g"),
        ("app.bsky.feed.generator", ".."),
        ("app.bsky.feed.generator", "a/b"),
        ("com.atproto.lexicon.schema", "not-an-nsid"),
    ]:
        with pytest.raises(LexiconValidationError):
            bundled.validate_record_key(nsid, rkey)
    with pytest.raises(LexiconNotFoundError):
        bundled.record_key_type("com.example.nothing")


def test_valid_post_with_facets_images_reply_and_langs(bundled):
    text = "hi @alice.test see https://example.com #tag"
    post = _post(
        text=text,
        facets=[
            {
                "index": {"byteStart": 3, "byteEnd": 14},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": DID}],
            },
            {
                "index": {"byteStart": 19, "byteEnd": 38},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"}],
            },
            {"index": {"byteStart": 39, "byteEnd": 43}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "tag"}]},
        ],
        embed={
            "$type": "app.bsky.embed.images",
            "images": [
                {"image": _blob("image/jpeg", 900_000), "alt": "a cat", "aspectRatio": {"width": 4, "height": 3}},
                {"image": _blob("image/webp"), "alt": ""},
            ],
        },
        reply={"root": _strong_ref(), "parent": _strong_ref()},
        langs=["en", "pt-BR"],
        labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]},
        tags=["one", "two"],
    )
    bundled.validate_record("app.bsky.feed.post", from_json(json.loads(json.dumps(_jsonable(post)))))
    bundled.validate_record("app.bsky.feed.post", post)


def _jsonable(value):
    """The atproto JSON form of a data-model value (so the test also goes through from_json)."""
    if isinstance(value, CID):
        return {"$link": str(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def test_post_embeds_quote_record_with_media_video_and_external(bundled):
    quote = {"$type": "app.bsky.embed.record", "record": _strong_ref()}
    bundled.validate_record("app.bsky.feed.post", _post(embed=quote))
    video = {
        "$type": "app.bsky.embed.video",
        "video": _blob("video/mp4", 50_000_000),
        "captions": [{"lang": "en", "file": _blob("text/vtt", 1000)}],
        "alt": "clip",
    }
    bundled.validate_record("app.bsky.feed.post", _post(embed=video))
    with_media = {"$type": "app.bsky.embed.recordWithMedia", "record": {"record": _strong_ref()}, "media": video}
    bundled.validate_record("app.bsky.feed.post", _post(embed=with_media))
    external = {
        "$type": "app.bsky.embed.external",
        "external": {"uri": "https://example.com/a", "title": "A", "description": "", "thumb": _blob("image/png")},
    }
    bundled.validate_record("app.bsky.feed.post", _post(embed=external))
    # Errors deep in an embed name their path.
    bad = copy.deepcopy(with_media)
    bad["media"]["captions"][0]["file"]["mimeType"] = "text/plain"
    _expect_invalid(bundled, "app.bsky.feed.post", _post(embed=bad), path="Record/embed/media/captions/0/file")
    bad = copy.deepcopy(with_media)
    bad["record"]["record"]["cid"] = "not a cid"
    _expect_invalid(bundled, "app.bsky.feed.post", _post(embed=bad), path="Record/embed/record/record/cid")
    bad = copy.deepcopy(video)
    bad["video"]["size"] = 300_000_001
    _expect_invalid(bundled, "app.bsky.feed.post", _post(embed=bad), path="Record/embed/video")
    # An embed type this server does not know is let through (the union is open).
    bundled.validate_record("app.bsky.feed.post", _post(embed={"$type": "com.example.embed.poll", "options": []}))


def test_post_text_limits(bundled):
    flag = "🇩🇪"  # one grapheme, two code points, eight UTF-8 bytes
    bundled.validate_record("app.bsky.feed.post", _post(text=flag * 300))
    error = _expect_invalid(bundled, "app.bsky.feed.post", _post(text=flag * 301), path="Record/text")
    assert "300 graphemes" in str(error)
    bundled.validate_record("app.bsky.feed.post", _post(text="a" * 300))
    _expect_invalid(bundled, "app.bsky.feed.post", _post(text="a" * 301), path="Record/text")
    # 300 graphemes but more than 3000 bytes
    family = "👩\u200d👩\u200d👦\u200d👦"
    error = _expect_invalid(bundled, "app.bsky.feed.post", _post(text=family * 200), path="Record/text")
    assert "3000 bytes" in str(error)


@pytest.mark.parametrize(
    "changes, path",
    [
        ({"createdAt": "2024-05-01 12:34:56Z"}, "Record/createdAt"),
        ({"createdAt": "yesterday"}, "Record/createdAt"),
        ({"createdAt": 1714567296}, "Record/createdAt"),
        ({"langs": ["en", "123"]}, "Record/langs/1"),
        ({"langs": ["en", "de", "fr", "es"]}, "Record/langs"),
        ({"tags": ["x" * 65]}, "Record/tags/0"),
        ({"reply": {"root": {"uri": POST_URI, "cid": CID_STR}}}, "Record/reply"),
        ({"reply": {"root": _strong_ref(), "parent": {"uri": "https://x.example", "cid": CID_STR}}}, "Record/reply/parent/uri"),
        ({"facets": [{"index": {"byteStart": -1, "byteEnd": 2}, "features": []}]}, "Record/facets/0/index/byteStart"),
        ({"facets": [{"index": {"byteStart": 0, "byteEnd": 2}, "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "alice"}]}]}, "Record/facets/0/features/0/did"),
        ({"facets": [{"index": {"byteStart": 0, "byteEnd": 2}, "features": [{"did": DID}]}]}, "Record/facets/0/features/0"),
        ({"embed": {"$type": "app.bsky.embed.images", "images": [{"image": _blob("text/plain"), "alt": ""}]}}, "Record/embed/images/0/image"),
        ({"embed": {"$type": "app.bsky.embed.images", "images": [{"image": _blob("image/png", 2_000_001), "alt": ""}]}}, "Record/embed/images/0/image"),
        ({"embed": {"$type": "app.bsky.embed.images", "images": [{"image": _blob(), "alt": 5}]}}, "Record/embed/images/0/alt"),
        ({"embed": {"$type": "app.bsky.embed.images", "images": [{"image": _blob()}]}}, "Record/embed/images/0"),
        ({"embed": {"$type": "app.bsky.embed.images", "images": [{"image": _blob(), "alt": ""}] * 5}}, "Record/embed/images"),
        ({"embed": {"$type": "app.bsky.embed.images#main", "images": [{"image": _blob(), "alt": "", "aspectRatio": {"width": 0, "height": 1}}]}}, "Record/embed/images/0/aspectRatio/width"),
        ({"labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "x" * 129}]}}, "Record/labels/values/0/val"),
    ],
)
def test_invalid_posts(bundled, changes, path):
    _expect_invalid(bundled, "app.bsky.feed.post", _post(**changes), path=path)


def test_post_missing_required_fields(bundled):
    post = _post()
    del post["createdAt"]
    error = _expect_invalid(bundled, "app.bsky.feed.post", post, path="Record")
    assert '"createdAt"' in str(error)
    post = _post()
    del post["text"]
    _expect_invalid(bundled, "app.bsky.feed.post", post, path="Record")


def test_profile(bundled):
    nsid = "app.bsky.actor.profile"
    profile = {
        "$type": nsid,
        "displayName": "Alice",
        "description": "about me " * 10,
        "avatar": _blob("image/png", 500_000),
        "banner": _blob("image/jpeg", 999_999),
        "pinnedPost": _strong_ref(),
        "createdAt": _now(),
    }
    bundled.validate_record(nsid, profile)
    bundled.validate_record(nsid, {"$type": nsid})  # every field is optional
    _expect_invalid(bundled, nsid, {**profile, "avatar": _blob("image/gif")}, path="Record/avatar")
    _expect_invalid(bundled, nsid, {**profile, "avatar": _blob("image/png", 1_000_001)}, path="Record/avatar")
    _expect_invalid(bundled, nsid, {**profile, "displayName": "x" * 65}, path="Record/displayName")
    _expect_invalid(bundled, nsid, {**profile, "description": "x" * 257}, path="Record/description")
    _expect_invalid(bundled, nsid, {**profile, "website": "not a uri"}, path="Record/website")


def test_follow_like_repost_block(bundled):
    follow = {"$type": "app.bsky.graph.follow", "subject": DID, "createdAt": _now()}
    bundled.validate_record("app.bsky.graph.follow", follow)
    bundled.validate_record("app.bsky.graph.follow", {**follow, "subject": "did:web:example.com"})
    for bad in ("alice.example.com", "did:plc", "did:PLC:abc", "", DID + " "):
        _expect_invalid(bundled, "app.bsky.graph.follow", {**follow, "subject": bad}, path="Record/subject")
    like = {"$type": "app.bsky.feed.like", "subject": _strong_ref(), "createdAt": _now()}
    bundled.validate_record("app.bsky.feed.like", like)
    _expect_invalid(bundled, "app.bsky.feed.like", {**like, "subject": {"uri": POST_URI}}, path="Record/subject")
    bundled.validate_record("app.bsky.feed.repost", {**like, "$type": "app.bsky.feed.repost", "via": _strong_ref()})
    bundled.validate_record("app.bsky.graph.block", {**follow, "$type": "app.bsky.graph.block"})
    # A like is not a follow.
    _expect_invalid(bundled, "app.bsky.graph.follow", like, path="Record/$type")


def test_other_bundled_records(bundled):
    list_uri = f"at://{DID}/app.bsky.graph.list/3k43tv4rft22g"
    cases = {
        "app.bsky.graph.list": {"name": "Friends", "purpose": "app.bsky.graph.defs#curatelist", "createdAt": _now()},
        "app.bsky.graph.listitem": {"subject": DID, "list": list_uri, "createdAt": _now()},
        "app.bsky.graph.listblock": {"subject": list_uri, "createdAt": _now()},
        "app.bsky.graph.starterpack": {"name": "Pack", "list": list_uri, "feeds": [{"uri": list_uri}], "createdAt": _now()},
        "app.bsky.graph.verification": {"subject": DID, "handle": "alice.example.com", "displayName": "Alice", "createdAt": _now()},
        "app.bsky.feed.threadgate": {
            "post": POST_URI,
            "allow": [{"$type": "app.bsky.feed.threadgate#mentionRule"}, {"$type": "app.bsky.feed.threadgate#listRule", "list": list_uri}],
            "createdAt": _now(),
        },
        "app.bsky.feed.postgate": {"post": POST_URI, "embeddingRules": [{"$type": "app.bsky.feed.postgate#disableRule"}], "createdAt": _now()},
        "app.bsky.feed.generator": {"did": "did:web:feed.example.com", "displayName": "Feed", "createdAt": _now()},
        "app.bsky.labeler.service": {
            "policies": {
                "labelValues": ["spam", "!warn"],
                "labelValueDefinitions": [
                    {"identifier": "spam", "severity": "alert", "blurs": "none", "locales": [{"lang": "en", "name": "Spam", "description": "spam"}]}
                ],
            },
            "reasonTypes": ["com.atproto.moderation.defs#reasonSpam"],
            "subjectTypes": ["account", "record"],
            "createdAt": _now(),
        },
        "app.bsky.actor.status": {"status": "app.bsky.actor.status#live", "durationMinutes": 30, "createdAt": _now()},
        "app.bsky.notification.declaration": {"allowSubscriptions": "followers"},
        "chat.bsky.actor.declaration": {"allowIncoming": "following"},
        "com.atproto.lexicon.schema": {"lexicon": 1, "id": "com.example.thing", "defs": {}},
    }
    for nsid, fields in cases.items():
        bundled.validate_record(nsid, {"$type": nsid, **fields})
    # knownValues are advice, not an enum.
    bundled.validate_record("chat.bsky.actor.declaration", {"$type": "chat.bsky.actor.declaration", "allowIncoming": "someday"})
    bad = {
        "app.bsky.graph.list": ({"name": "", "purpose": "x", "createdAt": _now()}, "Record/name"),
        "app.bsky.graph.starterpack": ({"name": "P", "list": list_uri, "feeds": [{"uri": list_uri}] * 4, "createdAt": _now()}, "Record/feeds"),
        "app.bsky.feed.threadgate": ({"post": POST_URI, "allow": [{"$type": "app.bsky.feed.threadgate#listRule"}], "createdAt": _now()}, "Record/allow/0"),
        "app.bsky.graph.verification": ({"subject": DID, "handle": "not a handle", "displayName": "A", "createdAt": _now()}, "Record/handle"),
        "app.bsky.actor.status": ({"status": "x", "durationMinutes": 0, "createdAt": _now()}, "Record/durationMinutes"),
        "com.atproto.lexicon.schema": ({"id": "com.example.thing"}, "Record"),
    }
    for nsid, (fields, path) in bad.items():
        _expect_invalid(bundled, nsid, {"$type": nsid, **fields}, path=path)
