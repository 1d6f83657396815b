"""DAG-CBOR encode/decode throughput: squall's strict cbor2 path against libipld and cbrrr.

    .venv/bin/python bench/cbor_libs.py [--seconds 1.0] [--objects 4000]

The corpus imitates what a PDS moves: MST nodes (short prefix-compressed keys, CID links),
posts (unicode text, facets, blob refs, reply refs) and signed commits. Throughput is bytes of
DAG-CBOR per second over the whole corpus, best of several rounds. libipld and cbrrr are
optional (pip install them into .venv for this script only); missing ones are skipped.

A second table checks strictness: for each input DAG-CBOR forbids, does the library refuse it?
A fast decoder that accepts forbidden input would need our checks on top anyway.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from typing import Any, Callable

import cbor2

from squall.atproto import dagcbor
from squall.atproto.cid import CID, RAW

# -- corpus -----------------------------------------------------------------------------------

_TEXT_POOL = string.ascii_letters + string.digits + "  .,!?'" + "äöüéñ日本語テキスト😀🎉→"


def _tid(rng: random.Random) -> str:
    return "".join(rng.choice("234567abcdefghijklmnopqrstuvwxyz") for _ in range(13))


def _cid(rng: random.Random, codec: int = 0x71) -> CID:
    return CID.from_block(rng.randbytes(16), codec)


def _mst_node(rng: random.Random) -> dict[str, Any]:
    entries = []
    for i in range(rng.randint(1, 16)):
        suffix = f"app.bsky.feed.post/{_tid(rng)}" if i == 0 else _tid(rng)[rng.randint(0, 8) :]
        entries.append(
            {
                "k": suffix.encode(),
                "p": 0 if i == 0 else rng.randint(19, 28),
                "t": _cid(rng) if rng.random() < 0.3 else None,
                "v": _cid(rng),
            }
        )
    return {"e": entries, "l": _cid(rng) if rng.random() < 0.5 else None}


def _post(rng: random.Random) -> dict[str, Any]:
    text = "".join(rng.choice(_TEXT_POOL) for _ in range(rng.randint(10, 300)))
    post: dict[str, Any] = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2025-01-02T03:04:05.678Z",
        "langs": ["en"],
    }
    if rng.random() < 0.4:
        ref = {"uri": f"at://did:plc:{_tid(rng)}abcdefghijk/app.bsky.feed.post/{_tid(rng)}", "cid": str(_cid(rng))}
        post["reply"] = {"root": ref, "parent": ref}
    if rng.random() < 0.3:
        post["facets"] = [
            {
                "index": {"byteStart": 0, "byteEnd": rng.randint(1, 40)},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/" + _tid(rng)}],
            }
        ]
    if rng.random() < 0.3:
        post["embed"] = {
            "$type": "app.bsky.embed.images",
            "images": [
                {
                    "alt": "",
                    "image": {"$type": "blob", "ref": _cid(rng, RAW), "mimeType": "image/jpeg", "size": rng.randint(1000, 999999)},
                    "aspectRatio": {"width": 1200, "height": 800},
                }
                for _ in range(rng.randint(1, 4))
            ],
        }
    return post


def _commit(rng: random.Random) -> dict[str, Any]:
    return {
        "did": "did:plc:" + _tid(rng) + "abcdefghijk",
        "version": 3,
        "data": _cid(rng),
        "rev": _tid(rng),
        "prev": None,
        "sig": rng.randbytes(64),
    }


def corpus(n: int, seed: int = 7) -> list[Any]:
    rng = random.Random(seed)
    makers = [_mst_node, _mst_node, _post, _post, _post, _commit]
    return [rng.choice(makers)(rng) for _ in range(n)]


# -- adapters ---------------------------------------------------------------------------------


def _to_libipld(value: Any) -> Any:
    # libipld wants CIDs as their bytes (it turns any CID-shaped bytes into a link, see below).
    t = type(value)
    if t is dict:
        return {k: _to_libipld(v) for k, v in value.items()}
    if t is list:
        return [_to_libipld(v) for v in value]
    if t is CID:
        return value.bytes
    return value


def _cbor2_raw_loads(data: bytes) -> Any:
    return cbor2.loads(data, semantic_decoders={42: lambda v, imm: CID.from_bytes(v[1:])})


def libraries() -> list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any], Callable[[Any], Any]]]:
    """(name, encode, decode, prepare-value-for-encode)."""
    libs: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any], Callable[[Any], Any]]] = [
        ("squall (cbor2, strict)", dagcbor.encode, dagcbor.decode, lambda v: v),
        (
            "cbor2 bare (no checks)",
            lambda v: cbor2.dumps(v, canonical=True, default=dagcbor._default),
            _cbor2_raw_loads,
            lambda v: v,
        ),
    ]
    try:
        import libipld

        libs.append(("libipld " + _version("libipld"), libipld.encode_dag_cbor, libipld.decode_dag_cbor, _to_libipld))
    except ImportError:
        print("libipld not installed: skipped")
    try:
        import cbrrr

        libs.append(
            (
                "cbrrr " + _version("cbrrr"),
                lambda v: cbrrr.encode_dag_cbor(v, cid_type=CID),
                lambda b: cbrrr.decode_dag_cbor(b, cid_ctor=CID.from_bytes),
                lambda v: v,
            )
        )
    except ImportError:
        print("cbrrr not installed: skipped")
    return libs


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "?"


# -- measurement ------------------------------------------------------------------------------


def _best_rate(fn: Callable[[], None], nbytes: int, seconds: float) -> float:
    best = float("inf")
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        rounds += 1
    return nbytes / best / 1e6


def throughput(values: list[Any], seconds: float) -> None:
    blocks = [dagcbor.encode(v) for v in values]
    total = sum(map(len, blocks))
    print(f"corpus: {len(values)} objects, {total / 1e6:.2f} MB of DAG-CBOR, mean {total / len(values):.0f} B/object")
    print()
    print(f"{'library':<26} {'encode MB/s':>12} {'decode MB/s':>12} {'enc µs/obj':>11} {'dec µs/obj':>11}  same bytes")
    for name, enc, dec, prep in libraries():
        prepared = [prep(v) for v in values]
        same = all(enc(p) == b for p, b in zip(prepared, blocks))
        enc_rate = _best_rate(lambda: [enc(p) for p in prepared], total, seconds)
        dec_rate = _best_rate(lambda: [dec(b) for b in blocks], total, seconds)
        enc_us = total / enc_rate / len(values)
        dec_us = total / dec_rate / len(values)
        print(f"{name:<26} {enc_rate:>12.1f} {dec_rate:>12.1f} {enc_us:>11.2f} {dec_us:>11.2f}  {'yes' if same else 'NO'}")


# Inputs DAG-CBOR (as atproto restricts it) forbids; each must be refused.
FORBIDDEN: dict[str, bytes] = {
    "float64 1.0": bytes.fromhex("fb3ff0000000000000"),
    "float16 NaN": bytes.fromhex("f97e00"),
    "non-minimal int": bytes.fromhex("1805"),
    "unsorted keys": bytes.fromhex("a2626262016161 02".replace(" ", "")),
    "duplicate keys": bytes.fromhex("a2616101616102"),
    "tag 1 (date)": bytes.fromhex("c100"),
    "tag 2 (bignum)": bytes.fromhex("c24101"),
    "tag 28 (shared)": bytes.fromhex("d81c80"),
    "undefined": bytes.fromhex("f7"),
    "simple(16)": bytes.fromhex("f0"),
    "int map key": bytes.fromhex("a10102"),
    "bytes map key": bytes.fromhex("a1416102"),
    "indefinite array": bytes.fromhex("9fff"),
    "trailing bytes": bytes.fromhex("0000"),
    "invalid UTF-8": bytes.fromhex("62fffe"),
    "int > 2^63-1": bytes.fromhex("1b8000000000000000"),
    "tag 42 w/o 0x00": bytes.fromhex("d82a4101"),
    "depth 10000": b"\x81" * 10000 + b"\x00",
}


def strictness() -> None:
    libs = [(name, dec) for name, _, dec, _ in libraries()]
    print()
    print("refuses forbidden input?  " + "  ".join(f"{name.split(' ')[0]:>8}" for name, _ in libs))
    for case, data in FORBIDDEN.items():
        marks = []
        for _, dec in libs:
            try:
                dec(data)
                marks.append("ACCEPTS")
            except Exception:
                marks.append("refuses")
        print(f"{case:<25} " + "  ".join(f"{m:>8}" for m in marks))
    # A byte string shaped like a CID must be written as a byte string (major type 2), not a link.
    cid_shaped = {"b": CID.from_block(b"x").bytes}
    expected = dagcbor.encode(cid_shaped)
    print()
    for name, enc, _, prep in libraries():
        try:
            verdict = "yes" if enc(prep(cid_shaped)) == expected else "NO: writes a tag-42 link"
        except Exception as exc:
            verdict = f"error: {exc}"
        print(f"{name:<26} encodes CID-shaped bytes as bytes: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--objects", type=int, default=4000, help="corpus size")
    args = parser.parse_args()
    throughput(corpus(args.objects), args.seconds)
    strictness()


if __name__ == "__main__":
    main()
