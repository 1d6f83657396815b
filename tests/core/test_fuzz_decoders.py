"""Hostile bytes to the core's decoders (issue #20): DAG-CBOR and CAR parsing of random, mutated
and deliberately nasty input raises the core's own ``AtprotoError`` (which callers turn into a
400) and nothing else — no RecursionError, MemoryError, IndexError — and finishes quickly.

CI-sized (500 examples each); ``SQUALL_FUZZ_EXAMPLES`` (x20 here) scales it for a longer run.
"""

from __future__ import annotations

import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.atproto import dagcbor
from squall.atproto.car import encode_car, read_car
from squall.atproto.cid import CID
from squall.atproto.errors import AtprotoError

EXAMPLES = int(os.environ.get("SQUALL_FUZZ_EXAMPLES", "0")) * 20 or 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BLOCKS = [dagcbor.encode({"n": i, "text": "x" * i, "list": [i, {"k": b"\x01" * 3}]}) for i in range(6)]
CAR = encode_car([CID.from_block(BLOCKS[0])], [(CID.from_block(b), b) for b in BLOCKS])


def nasty_cbor() -> st.SearchStrategy[bytes]:
    depth = st.integers(min_value=100, max_value=100_000)
    return st.one_of(
        depth.map(lambda n: b"\x81" * n + b"\x00"),                      # arrays nested n deep
        depth.map(lambda n: b"\xa1\x61a" * n + b"\x00"),                 # maps nested n deep
        st.just(b"\x9b" + b"\xff" * 8),                                   # an array of 2^64-1 items
        st.just(b"\x5b" + b"\x7f" + b"\xff" * 7),                         # a byte string of 2^63 bytes
        st.just(b"\x9f" * 1000),                                          # indefinite lengths
        st.just(b"\xd8\x2a\x58\x05\x00\x01\x02\x03\x04"),                 # tag 42 with a bogus CID
        st.just(b"\xc2\x49" + b"\x01" * 9),                               # a bignum
        st.just(b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00"),                 # NaN
        st.binary(max_size=512),
    )


def mutated(base: bytes) -> st.SearchStrategy[bytes]:
    def apply(ops: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(base)
        for kind, pos, value in ops:
            if not data:
                break
            pos %= len(data)
            if kind == 0:
                data[pos] = value
            elif kind == 1:
                del data[pos:]
            elif kind == 2:
                data[pos:pos] = bytes([value]) * (value % 9 + 1)
            else:
                data[pos:pos] = b"\xff\xff\xff\xff\x0f"  # a varint length of ~4 GB
        return bytes(data)

    op = st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255))
    return st.lists(op, min_size=1, max_size=6).map(apply)


def _bounded(fn, data: bytes) -> None:
    started = time.monotonic()
    try:
        fn(data)
    except AtprotoError:
        pass
    assert time.monotonic() - started < 2.0


@FUZZ
@given(st.one_of(nasty_cbor(), mutated(BLOCKS[3])))
def test_dagcbor_decode_refuses_hostile_bytes_cleanly(data):
    _bounded(dagcbor.decode, data)


@FUZZ
@given(st.one_of(mutated(CAR), st.binary(max_size=1024), nasty_cbor().map(lambda b: bytes([len(b) % 128]) + b)))
def test_read_car_refuses_hostile_bytes_cleanly(data):
    _bounded(read_car, data)
