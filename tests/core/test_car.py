"""CAR v1: streaming read and write, verification, limits, hostile input."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.atproto import car, dagcbor
from squall.atproto.cid import CID, RAW, encode_varint
from squall.atproto.errors import DecodeError


def make_blocks(n: int) -> list[tuple[CID, bytes]]:
    return [dagcbor.cid_for({"n": i, "text": "x" * (i % 50)}) for i in range(n)]


BLOCKS = make_blocks(50)
ROOT = BLOCKS[0][0]
CAR = car.encode_car([ROOT], BLOCKS)


def section(cid: CID, data: bytes) -> bytes:
    return encode_varint(len(cid.bytes) + len(data)) + cid.bytes + data


def header(value: object) -> bytes:
    raw = dagcbor.encode(value)
    return encode_varint(len(raw)) + raw


def test_layout_matches_the_carv1_spec():
    # varint(header) ‖ {"roots": [root], "version": 1} ‖ varint(cid+block) ‖ cid ‖ block …
    hdr = dagcbor.encode({"roots": [ROOT], "version": 1})
    assert CAR.startswith(encode_varint(len(hdr)) + hdr)
    assert list(dagcbor.decode(hdr)) == ["roots", "version"]
    assert CAR[len(hdr) + 1 :] == b"".join(section(c, d) for c, d in BLOCKS)


def test_read_car_round_trip():
    roots, blocks = car.read_car(CAR)
    assert roots == [ROOT]
    assert blocks == dict(BLOCKS)


@pytest.mark.parametrize("read_size", [1, 2, 7, 100, 1 << 20])
def test_reader_over_files_with_any_read_size(read_size):
    reader = car.CarReader(io.BytesIO(CAR), read_size=read_size)
    assert reader.roots == [ROOT]
    assert list(reader) == BLOCKS


def test_reader_over_an_iterator_of_uneven_chunks():
    cuts = [0, 1, 3, 4, 50, 51, 400, 1000, len(CAR)]
    chunks = (CAR[a:b] for a, b in zip(cuts, cuts[1:]))
    assert list(car.CarReader(chunks)) == BLOCKS


async def test_async_reader_over_an_async_iterator():
    async def chunks():
        for i in range(0, len(CAR), 13):
            yield CAR[i : i + 13]

    reader = car.AsyncCarReader(chunks())
    assert await reader.read_header() == [ROOT]
    assert [item async for item in reader] == BLOCKS


async def test_async_reader_over_an_async_read_method_and_sync_sources():
    class Body:
        def __init__(self, data: bytes):
            self.buf = io.BytesIO(data)

        async def read(self, n: int) -> bytes:
            return self.buf.read(n)

    assert [item async for item in car.AsyncCarReader(Body(CAR), read_size=5)] == BLOCKS
    assert [item async for item in car.AsyncCarReader(CAR)] == BLOCKS
    assert [item async for item in car.AsyncCarReader(io.BytesIO(CAR))] == BLOCKS


def test_any_block_order_and_duplicates_are_accepted():
    shuffled = list(reversed(BLOCKS)) + BLOCKS[:5]
    data = car.encode_car([ROOT], shuffled)
    assert list(car.CarReader(data)) == shuffled
    roots, blocks = car.read_car(data)
    assert blocks == dict(BLOCKS)


def test_raw_blocks_and_no_roots():
    blob = (CID.from_block(b"\x00binary", RAW), b"\x00binary")
    roots, blocks = car.read_car(car.encode_car([], [blob]))
    assert roots == [] and blocks == {blob[0]: blob[1]}


def test_writer_streams_lazily_in_bounded_chunks():
    pulled = 0

    def source():
        nonlocal pulled
        for item in make_blocks(400):
            pulled += 1
            yield item

    chunks = car.write_car([ROOT], source(), chunk_size=1024)
    first = next(chunks)
    assert 1024 <= len(first) < 1024 + 200  # one chunk, not the whole CAR
    assert pulled < 400
    rest = b"".join(chunks)
    assert pulled == 400
    assert car.read_car(first + rest)[1] == dict(make_blocks(400))


async def test_async_writer_matches_the_sync_writer():
    async def source():
        for item in BLOCKS:
            yield item

    streamed = b"".join([c async for c in car.awrite_car([ROOT], source(), chunk_size=100)])
    assert streamed == CAR
    assert b"".join([c async for c in car.awrite_car([ROOT], BLOCKS)]) == CAR


def test_writer_input_errors():
    with pytest.raises(DecodeError, match="root must be a CID"):
        car.encode_car([str(ROOT)], [])  # type: ignore[list-item]
    with pytest.raises(DecodeError, match="block key must be a CID"):
        car.encode_car([ROOT], [(str(ROOT), b"x")])  # type: ignore[list-item]
    with pytest.raises(DecodeError, match="block must be bytes"):
        car.encode_car([ROOT], [(ROOT, "text")])  # type: ignore[list-item]
    with pytest.raises(DecodeError, match="does not hash to its CID"):
        car.encode_car([ROOT], [(ROOT, b"not the block")], verify=True)
    # Without verify, the writer trusts its (store-checked) input.
    assert car.encode_car([ROOT], [(ROOT, b"x")])


# -- hostile and broken input -----------------------------------------------------------------

GOOD_HEADER = header({"version": 1, "roots": [ROOT]})


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty CAR"),
        (GOOD_HEADER[:5], "ends inside its header"),
        (b"\x80", "ends inside its header"),
        (CAR[:-1], "ends inside a section"),
        (CAR + b"\x05", "ends inside a section"),
        (CAR + b"\x00", "empty CAR section"),
        (b"\x00", "CAR header is empty"),
        (b"\xff" * 9 + b"\x01", "header length varint at byte 0 is longer than 9 bytes"),
        (GOOD_HEADER + b"\xff" * 10, "section length varint at byte .* longer than 9 bytes"),
        (encode_varint(10_000_000) + b"\xa0", "header of 10000000 bytes exceeds"),
        (header({"version": 2, "roots": [ROOT]}), "CAR version 2 is not supported"),
        (header({"version": 1}), "'roots' must be a list of CIDs"),
        (header({"version": 1, "roots": [str(ROOT)]}), "'roots' must be a list of CIDs"),
        (header({"roots": [ROOT]}), "no integer 'version'"),
        (header([1, [ROOT]]), "header must be a map"),
        (encode_varint(3) + b"\xa1\x61\x61", "not valid DAG-CBOR"),
        (GOOD_HEADER + section(BLOCKS[1][0], BLOCKS[2][1]), "does not hash to its CID"),
        (GOOD_HEADER + encode_varint(40) + b"\x01\x70\x12\x20" + b"\x00" * 36, "bad CID.*codec 0x70"),
        (GOOD_HEADER + encode_varint(5) + BLOCKS[0][0].bytes, "longer than the section|bad CID"),
        (GOOD_HEADER + encode_varint(car.MAX_BLOCK_SIZE + 200) + b"\x01", "over the 2097152-byte block limit"),
    ],
)
def test_bad_input_is_refused_with_a_specific_message(data, message):
    with pytest.raises(DecodeError, match=message):
        car.read_car(data)


def test_oversize_block_is_refused_even_when_it_fits_the_section_slack():
    big = b"\x00" * 1001
    cid = CID.from_block(big, RAW)
    with pytest.raises(DecodeError, match="1001 bytes exceeds the 1000-byte limit"):
        car.read_car(car.encode_car([cid], [(cid, big)]), max_block_size=1000)
    assert car.read_car(car.encode_car([cid], [(cid, big)]), max_block_size=1001)[1] == {cid: big}


def test_oversize_section_is_refused_before_it_is_buffered():
    # A stream that announces a 100 MB section and then never ends: the parser must fail on the
    # length alone, after reading only a few bytes.
    def endless():
        yield GOOD_HEADER + encode_varint(100_000_000)
        while True:
            yield b"\x00" * 65536

    with pytest.raises(DecodeError, match="over the 2097152-byte block limit"):
        list(car.CarReader(endless()))


def test_total_size_and_block_count_limits():
    with pytest.raises(DecodeError, match="exceeds the 1000-byte limit"):
        car.read_car(CAR, max_total_size=1000)
    assert car.read_car(CAR, max_total_size=len(CAR))[1] == dict(BLOCKS)
    with pytest.raises(DecodeError, match="more than 10 blocks"):
        car.read_car(CAR, max_blocks=10)
    assert len(car.read_car(CAR, max_blocks=50)[1]) == 50


def test_huge_header_is_refused_by_length_not_by_reading_it():
    def stream():
        yield encode_varint(car.MAX_HEADER_SIZE + 1)
        raise AssertionError("the reader must not ask for the header body")

    with pytest.raises(DecodeError, match="exceeds the 65536-byte limit"):
        car.CarReader(stream())


def test_non_bytes_sources_and_chunks():
    with pytest.raises(DecodeError, match="cannot read a CAR from int"):
        car.CarReader(5)
    with pytest.raises(DecodeError, match="chunks must be bytes"):
        car.CarReader(["text"])


# -- property ---------------------------------------------------------------------------------

blocks_strategy = st.lists(
    st.one_of(
        st.binary(max_size=300).map(lambda b: (CID.from_block(b, RAW), b)),
        st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=5).map(dagcbor.cid_for),
    ),
    max_size=30,
)


@given(blocks_strategy, st.integers(1, 50), st.integers(1, 400))
@settings(max_examples=200)
def test_write_read_round_trip(blocks, read_size, chunk_size):
    roots = [c for c, _ in blocks[:2]]
    chunks = list(car.write_car(roots, blocks, chunk_size=chunk_size))
    data = b"".join(chunks)
    assert data == car.encode_car(roots, blocks)
    reader = car.CarReader(io.BytesIO(data), read_size=read_size)
    assert reader.roots == roots
    assert list(reader) == blocks
    assert list(car.CarReader(iter(chunks))) == blocks
