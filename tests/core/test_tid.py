"""TIDs: syntax vectors, encoding against an independent base-32 oracle, and TidClock ordering."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.atproto import syntax
from squall.atproto.errors import InvalidSyntax
from squall.atproto.tid import (
    MAX_CLOCK_ID,
    MAX_MICROS,
    TidClock,
    ensure_valid_tid,
    is_valid_tid,
    tid_clock_id,
    tid_from_parts,
    tid_timestamp,
)

SYNTAX = Path(__file__).resolve().parents[1] / "fixtures" / "interop" / "syntax"


def _read_lines(path: Path) -> list[str]:
    # Fixture rule: no trimming; skip blank lines and lines starting with '#'.
    text = path.read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]


VALID = _read_lines(SYNTAX / "tid_syntax_valid.txt")
INVALID = _read_lines(SYNTAX / "tid_syntax_invalid.txt")

# Python's int(..., 32) uses 0-9a-v; map the sortable alphabet onto it for an independent decoder.
_TO_STD32 = str.maketrans("234567abcdefghijklmnopqrstuvwxyz", "0123456789abcdefghijklmnopqrstuv")


def _oracle_value(tid: str) -> int:
    return int(tid.translate(_TO_STD32), 32)


def test_fixture_counts():
    assert len(VALID) == 4 and len(INVALID) == 9


@pytest.mark.parametrize("tid", VALID)
def test_valid_tids(tid):
    assert is_valid_tid(tid)
    assert syntax.is_valid_tid(tid)
    ensure_valid_tid(tid)
    syntax.FORMAT_VALIDATORS["tid"](tid)
    value = _oracle_value(tid)
    assert tid_timestamp(tid) == value >> 10
    assert tid_clock_id(tid) == value & 1023


@pytest.mark.parametrize("tid", INVALID)
def test_invalid_tids(tid):
    assert not is_valid_tid(tid)
    with pytest.raises(InvalidSyntax):
        ensure_valid_tid(tid)
    with pytest.raises(InvalidSyntax):
        tid_timestamp(tid)


def test_error_messages_say_what_is_wrong():
    with pytest.raises(InvalidSyntax, match="13 characters"):
        ensure_valid_tid("222")
    with pytest.raises(InvalidSyntax, match="top bit"):
        ensure_valid_tid("kjzfcijpj2z2a")
    with pytest.raises(InvalidSyntax, match="base32-sortable"):
        ensure_valid_tid("3JZFCIJPJ2Z2A")
    with pytest.raises(InvalidSyntax, match="string"):
        ensure_valid_tid(None)


def test_known_encodings():
    assert tid_from_parts(0, 0) == "2222222222222"
    # The largest TID a 53-bit timestamp can give; bit 63 stays clear.
    assert tid_from_parts(MAX_MICROS, MAX_CLOCK_ID) == "bzzzzzzzzzzzz"
    assert tid_timestamp("3jzfcijpj2z2a") == _oracle_value("3jzfcijpj2z2a") >> 10


@given(st.integers(0, MAX_MICROS), st.integers(0, MAX_CLOCK_ID))
def test_parts_round_trip(micros, clock_id):
    tid = tid_from_parts(micros, clock_id)
    assert is_valid_tid(tid)
    assert len(tid) == 13
    assert _oracle_value(tid) == (micros << 10) | clock_id
    assert tid_timestamp(tid) == micros
    assert tid_clock_id(tid) == clock_id


@given(
    st.tuples(st.integers(0, MAX_MICROS), st.integers(0, MAX_CLOCK_ID)),
    st.tuples(st.integers(0, MAX_MICROS), st.integers(0, MAX_CLOCK_ID)),
)
def test_string_order_is_numeric_order(a, b):
    assert (tid_from_parts(*a) < tid_from_parts(*b)) == (a < b)


@pytest.mark.parametrize(
    "micros, clock_id", [(-1, 0), (MAX_MICROS + 1, 0), (0, -1), (0, MAX_CLOCK_ID + 1), (1.5, 0), (0, "1")]
)
def test_tid_from_parts_range_checks(micros, clock_id):
    with pytest.raises(InvalidSyntax):
        tid_from_parts(micros, clock_id)


# -- TidClock ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self) -> int:
        return self.readings.pop(0)


def test_clock_survives_a_clock_that_stands_still_and_goes_backwards():
    fake = FakeClock([1000, 1000, 999, 500, 2000, 2000, 1500, 3000])
    clock = TidClock(now=fake, clock_id=7)
    tids = [clock.next_tid() for _ in range(8)]
    assert tids == sorted(tids)
    assert len(set(tids)) == 8
    assert [tid_timestamp(t) for t in tids] == [1000, 1001, 1002, 1003, 2000, 2001, 2002, 3000]
    assert {tid_clock_id(t) for t in tids} == {7}


def test_clock_default_uses_wall_clock_and_random_clock_id():
    before = time.time_ns() // 1000
    tid = TidClock().next_tid()
    after = time.time_ns() // 1000
    assert before <= tid_timestamp(tid) <= after + 1
    ids = {TidClock().clock_id for _ in range(64)}
    assert len(ids) > 1  # 64 draws from 1024 values colliding into one is ~1e-190
    assert all(0 <= i <= MAX_CLOCK_ID for i in ids)


def test_clocks_do_not_share_state():
    a = TidClock(now=lambda: 5_000, clock_id=1)
    b = TidClock(now=lambda: 5_000, clock_id=1)
    assert [a.next_tid() for _ in range(3)] == [b.next_tid() for _ in range(3)]


def test_clock_starts_after_last_and_observed_tids():
    clock = TidClock(now=lambda: 100, clock_id=0, last=500)
    assert tid_timestamp(clock.next_tid()) == 501
    clock.observe(tid_from_parts(10_000, 3))
    assert tid_timestamp(clock.next_tid()) == 10_001
    clock.observe(tid_from_parts(50, 3))  # older TIDs do not pull the clock back
    assert tid_timestamp(clock.next_tid()) == 10_002


def test_clock_rejects_bad_clock_id():
    with pytest.raises(InvalidSyntax):
        TidClock(clock_id=1024)


def test_clock_is_strictly_monotonic_across_threads():
    clock = TidClock(now=lambda: 42, clock_id=9)
    results: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        for _ in range(500):
            out.append(clock.next_tid())

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [tid for out in results for tid in out]
    assert len(set(everything)) == 4000
    for out in results:
        assert out == sorted(out)
