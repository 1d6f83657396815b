"""DAG-CBOR: interop vectors byte for byte, every forbidden input refused with a clear message,
and property tests (round trips, mutated input never escapes as anything but DecodeError)."""

from __future__ import annotations

import base64
import re

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.atproto import dagcbor
from squall.atproto.cid import CID, DAG_CBOR, RAW
from squall.atproto.errors import AtprotoError, DecodeError

from .vectors import load_json


def b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


FIXTURES = load_json("data-model/data-model-fixtures.json")


# -- interop vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("case", FIXTURES, ids=lambda c: c["cid"])
def test_fixture_decodes_and_reencodes_identically(case):
    block = b64(case["cbor_base64"])
    value = dagcbor.decode(block)
    assert dagcbor.encode(value) == block
    assert str(CID.from_block(block)) == case["cid"]
    cid, again = dagcbor.cid_for(value)
    assert again == block and str(cid) == case["cid"]


def test_fixture_links_and_bytes_decode_to_cid_and_bytes():
    value = dagcbor.decode(b64(FIXTURES[1]["cbor_base64"]))
    assert value["a"] == CID.decode("bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a")
    assert type(value["b"]) is bytes and len(value["b"]) == 32
    assert value["c"]["ref"].codec == RAW
    assert value["c"]["size"] == 10000


# -- encoding ---------------------------------------------------------------------------------


def test_keys_sort_length_first_then_bytewise():
    encoded = dagcbor.encode({"bb": 1, "a": 2, "ab": 3, "é": 4, "z": 5})
    keys = list(cbor2.loads(encoded))
    # "é" is two UTF-8 bytes, so it sorts among the two-byte keys, after "ab" and "bb" bytewise.
    assert keys == ["a", "z", "ab", "bb", "é"]


def test_already_sorted_and_unsorted_maps_encode_the_same():
    value = {"a": 1, "bb": {"c": 2, "dd": [3]}}
    shuffled = {"bb": {"dd": [3], "c": 2}, "a": 1}
    assert dagcbor.encode(value) == dagcbor.encode(shuffled)


@pytest.mark.parametrize(
    "value,encoded",
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65536, "1a00010000"),
        (2**32, "1b0000000100000000"),
        (-1, "20"),
        (-25, "3818"),
        (2**63 - 1, "1b7fffffffffffffff"),
        (-(2**63), "3b7fffffffffffffff"),
        ("", "60"),
        (b"", "40"),
        ([], "80"),
        ({}, "a0"),
        (True, "f5"),
        (False, "f4"),
        (None, "f6"),
    ],
)
def test_shortest_forms(value, encoded):
    assert dagcbor.encode(value).hex() == encoded
    assert dagcbor.decode(bytes.fromhex(encoded)) == value


def test_cid_link_is_tag_42_with_zero_prefix():
    cid = CID.from_block(b"hello", RAW)
    assert dagcbor.encode(cid) == b"\xd8\x2a\x58\x25\x00" + cid.bytes


@pytest.mark.parametrize(
    "value,message",
    [
        (1.5, "floats are not allowed"),
        (1.0, "floats are not allowed"),
        (float("nan"), "floats are not allowed"),
        ({"a": [float("inf")]}, "floats are not allowed"),
        (2**63, "outside the 64-bit signed range"),
        (-(2**63) - 1, "outside the 64-bit signed range"),
        ({1: "a"}, "map keys must be strings"),
        ({b"a": 1}, "map keys must be strings"),
        ((1, 2), "tuple is not an atproto data model type"),
        (bytearray(b"x"), "bytearray is not an atproto data model type"),
        ({"a": {1, 2}}, "set is not an atproto data model type"),
    ],
)
def test_encode_refuses_values_outside_the_data_model(value, message):
    with pytest.raises(DecodeError, match=message):
        dagcbor.encode(value)


def test_encode_refuses_cycles_and_depth():
    loop: list = []
    loop.append(loop)
    with pytest.raises(DecodeError, match="nesting deeper"):
        dagcbor.encode(loop)
    deep: list = []
    for _ in range(dagcbor.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(DecodeError, match="nesting deeper"):
        dagcbor.encode(deep)


def nested(levels: int, leaf: bytes = b"\x00") -> bytes:
    return b"\x81" * levels + leaf


def test_depth_limit_boundary_is_the_same_for_encode_and_decode():
    ok = nested(dagcbor.MAX_DEPTH)
    value = dagcbor.decode(ok)
    assert dagcbor.encode(value) == ok
    with pytest.raises(DecodeError, match="nesting deeper than 128 levels"):
        dagcbor.decode(nested(dagcbor.MAX_DEPTH + 1))
    # An empty container at the limit encloses nothing, so it is fine.
    assert dagcbor.encode(dagcbor.decode(nested(dagcbor.MAX_DEPTH, b"\x80"))) == nested(dagcbor.MAX_DEPTH, b"\x80")


def test_errors_are_value_errors():
    assert issubclass(DecodeError, AtprotoError) and issubclass(AtprotoError, ValueError)


# -- strict decoding: each forbidden input, with the message it must produce --------------------

GOOD_CID = CID.from_block(b"x")

MALFORMED = {
    "empty input": (b"", "empty input"),
    "float64": (bytes.fromhex("fb3ff8000000000000"), "floats are not allowed"),
    "float32": (bytes.fromhex("fa3fc00000"), "floats are not allowed"),
    "float16": (bytes.fromhex("f93c00"), "floats are not allowed"),
    "NaN": (bytes.fromhex("f97e00"), "floats are not allowed"),
    "infinity": (bytes.fromhex("fb7ff0000000000000"), "floats are not allowed"),
    "float nested in a map": (bytes.fromhex("a16161f93c00"), "floats are not allowed"),
    "non-minimal int (1 byte)": (bytes.fromhex("1817"), "not in its shortest form"),
    "non-minimal int (2 bytes)": (bytes.fromhex("1900ff"), "not in its shortest form"),
    "non-minimal int (4 bytes)": (bytes.fromhex("1a0000ffff"), "not in its shortest form"),
    "non-minimal int (8 bytes)": (bytes.fromhex("1b00000000ffffffff"), "not in its shortest form"),
    "non-minimal negative int": (bytes.fromhex("3800"), "not in its shortest form"),
    "non-minimal string length": (bytes.fromhex("780161"), "text string at byte 0 is not in its shortest form"),
    "non-minimal array length": (bytes.fromhex("980100"), "array at byte 0 is not in its shortest form"),
    "non-minimal map length": (bytes.fromhex("b8016161 00".replace(" ", "")), "map at byte 0 is not in its shortest form"),
    "int above 2^63-1": (bytes.fromhex("1b8000000000000000"), "outside the 64-bit signed range"),
    "int below -2^63": (bytes.fromhex("3b8000000000000000"), "outside the 64-bit signed range"),
    "keys bytewise out of order": (bytes.fromhex("a2616201616100"), "out of order"),
    "keys length-first out of order": (bytes.fromhex("a262616101616200"), "out of order"),
    "duplicate keys": (bytes.fromhex("a2616101616102"), "duplicate map key 'a'"),
    "integer key": (bytes.fromhex("a10102"), "map key at byte 1 is not a text string"),
    "byte-string key": (bytes.fromhex("a1416102"), "map key at byte 1 is not a text string"),
    "array key": (bytes.fromhex("a18000"), "map key at byte 1 is not a text string"),
    "tag 0 (date string)": (bytes.fromhex("c06161"), "CBOR tag 0 at byte 0 is not allowed"),
    "tag 1 (epoch date)": (bytes.fromhex("c100"), "CBOR tag 1 at byte 0 is not allowed"),
    "tag 2 (bignum)": (bytes.fromhex("c24101"), "CBOR tag 2 at byte 0 is not allowed"),
    "tag 28 (shared value)": (bytes.fromhex("d81c80"), "CBOR tag 28 at byte 0 is not allowed"),
    "tag 29 (shared reference)": (bytes.fromhex("82d81c80d81d00"), "CBOR tag 28 at byte 1 is not allowed"),
    "tag 258 (set)": (bytes.fromhex("d9010280"), "CBOR tag 258 at byte 0 is not allowed"),
    "tag 55799 (self-describe)": (bytes.fromhex("d9d9f700"), "CBOR tag 55799 at byte 0 is not allowed"),
    "unknown tag 43": (bytes.fromhex("d82b00"), "CBOR tag 43 at byte 0 is not allowed"),
    "tag 42 in a long head": (bytes.fromhex("d9002a4100"), "tag at byte 0 is not in its shortest form"),
    "tag 42 over a text string": (bytes.fromhex("d82a6100"), "must wrap a byte string"),
    "tag 42 without the 0x00 prefix": (b"\xd8\x2a\x58\x24" + GOOD_CID.bytes, "0x00 multibase prefix"),
    "tag 42 over empty bytes": (bytes.fromhex("d82a40"), "0x00 multibase prefix"),
    "tag 42 over a CIDv0": (b"\xd8\x2a\x58\x23\x00" + GOOD_CID.bytes[2:], "invalid CID link"),
    "tag 42 over a dag-pb CID": (b"\xd8\x2a\x58\x25\x00\x01\x70" + GOOD_CID.bytes[2:], "invalid CID link.*codec 0x70"),
    "tag 42 over a truncated CID": (b"\xd8\x2a\x58\x24\x00" + GOOD_CID.bytes[:-1], "invalid CID link"),
    "undefined": (bytes.fromhex("f7"), "'undefined' at byte 0 is not allowed"),
    "simple value 16": (bytes.fromhex("f0"), "simple value at byte 0 is not allowed"),
    "two-byte simple value": (bytes.fromhex("f820"), "simple value at byte 0 is not allowed"),
    "reserved additional info": (bytes.fromhex("1c"), "reserved additional information 28"),
    "lone break": (bytes.fromhex("ff"), "unexpected 'break'"),
    "indefinite array": (bytes.fromhex("9f00ff"), "indefinite-length array"),
    "indefinite map": (bytes.fromhex("bf616100ff"), "indefinite-length map"),
    "indefinite text": (bytes.fromhex("7f6161ff"), "indefinite-length text string"),
    "indefinite bytes": (bytes.fromhex("5f4100ff"), "indefinite-length byte string"),
    "trailing bytes": (bytes.fromhex("0000"), "1 trailing bytes"),
    "two concatenated maps": (bytes.fromhex("a0a0"), "1 trailing bytes"),
    "invalid UTF-8": (bytes.fromhex("62c328"), "invalid UTF-8"),
    "UTF-8 surrogate": (bytes.fromhex("63eda080"), "invalid UTF-8"),
    "invalid UTF-8 in a key": (bytes.fromhex("a161ff00"), "invalid UTF-8"),
    "truncated string": (bytes.fromhex("6561"), "runs past the end"),
    "truncated bytes": (bytes.fromhex("4561"), "runs past the end"),
    "truncated head": (bytes.fromhex("19"), "truncated"),
    "array claiming 2^64-1 items": (bytes.fromhex("9bffffffffffffffff"), "more than the input holds"),
    "map claiming 2^32 entries": (bytes.fromhex("bb0000000100000000"), "more than the input holds"),
    "string claiming 4 GB": (bytes.fromhex("7affffffff61"), "runs past the end"),
    "depth bomb": (nested(100_000), "nesting deeper than 128 levels"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_decode_refuses_with_a_specific_message(name):
    data, message = MALFORMED[name]
    with pytest.raises(DecodeError, match=message):
        dagcbor.decode(data)


@pytest.mark.parametrize("name", [n for n in MALFORMED if n != "empty input"])
def test_diagnostic_scanner_refuses_every_malformed_case_on_its_own(name):
    data, message = MALFORMED[name]
    with pytest.raises(DecodeError, match=message):
        dagcbor._strict_scan(data)


def test_oversize_block_is_refused_before_parsing():
    big = dagcbor.encode(b"x" * (dagcbor.MAX_BLOCK_SIZE))
    with pytest.raises(DecodeError, match="exceeds the 2097152-byte limit"):
        dagcbor.decode(big)
    assert dagcbor.decode(big, max_size=len(big)) == b"x" * dagcbor.MAX_BLOCK_SIZE
    with pytest.raises(DecodeError, match="exceeds the 10-byte limit"):
        dagcbor.decode(dagcbor.encode("x" * 20), max_size=10)


def test_decode_refuses_non_bytes():
    with pytest.raises(DecodeError, match="must be bytes, not str"):
        dagcbor.decode("a0")  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview():
    block = dagcbor.encode({"a": [1, GOOD_CID]})
    assert dagcbor.decode(bytearray(block)) == dagcbor.decode(memoryview(block)) == {"a": [1, GOOD_CID]}


def test_unicode_keys_in_canonical_order_are_accepted():
    # "é" and "zz" are both two UTF-8 bytes long; bytewise 0x7a ("z") < 0xc3 (first byte of "é").
    data = dagcbor.encode({"zz": 1, "é": 2, "a": 3})
    assert list(dagcbor.decode(data)) == ["a", "zz", "é"]
    bad = bytes.fromhex("a2") + dagcbor.encode("é")[0:] + b"\x02" + dagcbor.encode("zz") + b"\x01"
    with pytest.raises(DecodeError, match="out of order"):
        dagcbor.decode(bad)


# -- properties -------------------------------------------------------------------------------

cids = st.builds(CID.from_block, st.binary(max_size=64), st.sampled_from([DAG_CBOR, RAW]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=dagcbor.INT_MIN, max_value=dagcbor.INT_MAX)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | cids
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=40,
)


@given(values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_encode_decode_round_trip_is_byte_identical(value):
    block = dagcbor.encode(value)
    back = dagcbor.decode(block)
    assert back == value
    assert dagcbor.encode(back) == block
    dagcbor._strict_scan(block)  # the independent scanner accepts every encoding we produce


@given(values, st.data())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_input_is_refused_with_decode_error_or_is_canonical(value, data):
    block = bytearray(dagcbor.encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(block) - 1, 0)))
        if kind == "flip" and block:
            block[at] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            block.insert(at, data.draw(st.integers(0, 255)))
        elif kind == "delete" and block:
            del block[at]
        elif kind == "truncate":
            del block[at:]
    mutated = bytes(block)
    try:
        decoded = dagcbor.decode(mutated)
    except DecodeError as exc:
        assert str(exc)
        # The diagnostic scanner must agree the input is bad.
        with pytest.raises(DecodeError):
            dagcbor._strict_scan(mutated)
        return
    # Anything accepted must be canonical: it re-encodes to exactly the input, and the scanner agrees.
    assert dagcbor.encode(decoded) == mutated
    dagcbor._strict_scan(mutated)


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_random_bytes_never_raise_anything_but_decode_error(data):
    try:
        value = dagcbor.decode(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            dagcbor._strict_scan(data)
    else:
        assert dagcbor.encode(value) == data


def test_error_messages_name_the_fault_not_just_the_library():
    # The fast path's cbor2 error text must not leak through when we know better.
    with pytest.raises(DecodeError) as info:
        dagcbor.decode(bytes.fromhex("a2616101616102"))
    assert not re.search(r"cbor2|CBORDecodeError", str(info.value))
