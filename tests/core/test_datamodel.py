"""atproto JSON ↔ data model: interop vectors, validity lists, conversions and round trips."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.atproto import dagcbor, datamodel
from squall.atproto.cid import CID, RAW
from squall.atproto.errors import DecodeError

from .test_dagcbor import values
from .vectors import load_json

FIXTURES = load_json("data-model/data-model-fixtures.json")
VALID = load_json("data-model/data-model-valid.json")
INVALID = load_json("data-model/data-model-invalid.json")


def b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("case", FIXTURES, ids=lambda c: c["cid"])
def test_json_to_cbor_is_byte_exact(case):
    value = datamodel.from_json(case["json"])
    block = dagcbor.encode(value)
    assert block == b64(case["cbor_base64"])
    assert str(CID.from_block(block)) == case["cid"]


@pytest.mark.parametrize("case", FIXTURES, ids=lambda c: c["cid"])
def test_cbor_to_json_gives_back_the_fixture_json(case):
    value = dagcbor.decode(b64(case["cbor_base64"]))
    datamodel.validate(value)
    assert datamodel.to_json(value) == case["json"]
    # And through a real JSON text, as an API response would carry it.
    assert datamodel.from_json(json.loads(json.dumps(datamodel.to_json(value)))) == value


@pytest.mark.parametrize("case", VALID, ids=lambda c: c["note"])
def test_valid_cases_pass(case):
    value = datamodel.from_json(case["json"])
    dagcbor.encode(value)  # and are encodable


def test_integer_like_float_becomes_an_integer():
    value = datamodel.from_json(VALID[1]["json"])
    assert value["rcrd"]["a"] == 123 and type(value["rcrd"]["a"]) is int
    assert dagcbor.encode(value) == dagcbor.encode(datamodel.from_json(VALID[0]["json"]))


INVALID_MESSAGES = {
    "top-level not an object": "top level .* must be a JSON object, not a string",
    "float": r"rcrd.a: floats are not allowed .*123\.456",
    "record with $type null": r"rcrd: \$type must be a string, not null",
    "record with $type wrong type": r"rcrd: \$type must be a string, not a number",
    "record with empty $type string": r"rcrd: \$type must not be empty",
    "blob with string size": "blb: blob size must be a non-negative integer",
    "blob with missing key": "blb: blob must have exactly .*; missing ref",
    "bytes with wrong field type": r"lnk: \$bytes must be a base64 string, not an array",
    "bytes with extra fields": r"lnk: a \$bytes object must have no other keys",
    "link with wrong field type": r"lnk: \$link must be a CID string, not a number",
    "link with bogus CID": r"lnk: \$link is not a valid CID",
    "link with extra fields": r"lnk: a \$link object must have no other keys",
}


def test_every_invalid_case_has_an_expected_message():
    assert {c["note"] for c in INVALID} == set(INVALID_MESSAGES)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["note"])
def test_invalid_cases_fail_with_a_clear_message(case):
    with pytest.raises(DecodeError, match=INVALID_MESSAGES[case["note"]]):
        datamodel.from_json(case["json"])


@pytest.mark.parametrize(
    "obj,message",
    [
        ({"a": float("nan")}, "floats are not allowed"),
        ({"a": float("inf")}, "floats are not allowed"),
        ({"a": 1e300}, "floats are not allowed"),
        ({"a": 2**63}, "outside the 64-bit signed range"),
        ({"a": [{"b": -(2**63) - 1}]}, r"a\[0\].b: integer .* outside"),
        ({"a": (1, 2)}, "tuple is not a JSON data-model type"),
        ({"a": {"$bytes": "not base64!"}}, "not standard base64"),
        ({"a": {"$bytes": "aGk-"}}, "not standard base64"),  # URL-safe alphabet
        ({"a": {"$bytes": "aGk==="}}, "not standard base64"),
        ({"a": {"$bytes": "a"}}, "not valid base64"),
        ({"a": {"$link": "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"}}, "CIDv0"),
        ({"b": {"$type": "blob", "ref": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity", "mimeType": "a/b", "size": 1}}, "blob ref must be a link"),
        ({"b": {"$type": "blob", "ref": {"$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"}, "mimeType": "", "size": 1}}, "mimeType must be a non-empty string"),
        ({"b": {"$type": "blob", "ref": {"$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"}, "mimeType": "a/b", "size": -1}}, "size must be a non-negative integer"),
        ({"b": {"$type": "blob", "ref": {"$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"}, "mimeType": "a/b", "size": 1, "x": 1}}, "unexpected x"),
    ],
)
def test_more_invalid_json(obj, message):
    with pytest.raises(DecodeError, match=message):
        datamodel.from_json(obj)


def test_bytes_accept_padding_on_input_and_write_none():
    assert datamodel.from_json({"a": {"$bytes": "aGk="}}) == {"a": b"hi"}
    assert datamodel.from_json({"a": {"$bytes": "aGk"}}) == {"a": b"hi"}
    assert datamodel.to_json({"a": b"hi"}) == {"a": {"$bytes": "aGk"}}
    assert datamodel.from_json({"a": {"$bytes": ""}}) == {"a": b""}


def test_blob_ref_is_a_cid_and_legacy_blobs_stay_plain_objects():
    blob = datamodel.from_json(FIXTURES[1]["json"])["c"]
    assert type(blob["ref"]) is CID and blob["ref"].codec == RAW
    legacy = {"cid": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity", "mimeType": "image/jpeg"}
    assert datamodel.from_json({"img": legacy}) == {"img": legacy}


def test_validate_applies_the_object_rules_to_cbor_values():
    cid = CID.from_block(b"img", RAW)
    datamodel.validate({"a": [{"$type": "blob", "ref": cid, "mimeType": "image/png", "size": 3}]})
    with pytest.raises(DecodeError, match=r"a\[0\]: \$type must not be empty"):
        datamodel.validate({"a": [{"$type": ""}]})
    with pytest.raises(DecodeError, match="blob ref must be a link"):
        datamodel.validate({"$type": "blob", "ref": cid.bytes, "mimeType": "image/png", "size": 3})


def test_depth_is_bounded():
    deep: object = 1
    for _ in range(dagcbor.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(DecodeError, match="nesting deeper"):
        datamodel.from_json({"a": deep})


def test_to_json_refuses_non_data_model_values():
    with pytest.raises(DecodeError, match="float is not an atproto data model type"):
        datamodel.to_json({"a": 1.5})
    with pytest.raises(DecodeError, match="map keys must be strings"):
        datamodel.to_json({1: 1})


def test_value_from_json_accepts_any_top_level():
    assert datamodel.value_from_json([{"$link": str(CID.from_block(b"x"))}]) == [CID.from_block(b"x")]


def _without_type_rules(value: object) -> bool:
    # Random values may contain "$type" keys that break the object rules; skip those.
    if isinstance(value, dict):
        if "$type" in value or "$link" in value or "$bytes" in value:
            return False
        return all(_without_type_rules(v) for v in value.values())
    if isinstance(value, list):
        return all(_without_type_rules(v) for v in value)
    return True


@given(values.filter(_without_type_rules))
@settings(max_examples=300)
def test_json_round_trip_property(value):
    text = json.dumps(datamodel.to_json(value))
    back = datamodel.value_from_json(json.loads(text))
    assert back == value
    assert dagcbor.encode(back) == dagcbor.encode(value)
