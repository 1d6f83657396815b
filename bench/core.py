"""Protocol-core benchmark (issue #2): prints one table of throughput numbers.

    .venv/bin/python bench/core.py [--records 10000] [--seconds 1.0]

Rows: DAG-CBOR encode/decode of records, MST inserts (one at a time and bulk build), one
createRecord-sized commit into a tree of ``--records`` records (MST work, diff, covering proof and
signature, as the service does per write), commit sign/verify for secp256k1 and P-256, and a CAR
export of the whole repo. Single thread, no I/O: the block store is in memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "images" / "pds"))

from squall.atproto import dagcbor  # noqa: E402
from squall.atproto.blockstore import MemoryBlockStore  # noqa: E402
from squall.atproto.car import encode_car, write_car  # noqa: E402
from squall.atproto.cid import CID  # noqa: E402
from squall.atproto.commit import sign_commit, verify_commit  # noqa: E402
from squall.atproto.crypto import P256Keypair, Secp256k1Keypair  # noqa: E402
from squall.atproto.mst import EMPTY_ROOT_CID, NodeCache, NodeStore, NodeWrangler  # noqa: E402
from squall.atproto.repo import CREATE, Write, apply_writes, repo_blocks  # noqa: E402
from squall.atproto.tid import TidClock  # noqa: E402

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
_WORDS = "the quick brown fox jumps over a lazy dog while reading atproto specs über café 日本 🎉".split()


def make_post(rng: random.Random, i: int) -> dict:
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 40)))
    post: dict = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-05-01T12:00:00.000Z", "langs": ["en"]}
    if i % 3 == 0:
        post["facets"] = [
            {
                "index": {"byteStart": 0, "byteEnd": 5},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": f"https://example.com/{i}"}],
            }
        ]
    if i % 5 == 0:
        post["embed"] = {
            "$type": "app.bsky.embed.images",
            "images": [
                {
                    "alt": "a picture",
                    "image": {
                        "$type": "blob",
                        "ref": CID.from_block(rng.randbytes(32), 0x55),
                        "mimeType": "image/jpeg",
                        "size": rng.randint(10_000, 900_000),
                    },
                }
            ],
        }
    return post


def best(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Best time of one call of ``fn`` over repeated rounds lasting about ``seconds``."""
    fn()  # warm up
    times = []
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline and len(times) >= 3:
            return min(times), len(times)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``."""
    fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed > seconds:
            return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    n_records = args.records
    seconds = args.seconds
    rng = random.Random(42)
    rows: list[tuple[str, str, str]] = []

    # -- DAG-CBOR ------------------------------------------------------------------------------
    posts = [make_post(rng, i) for i in range(2000)]
    blocks = [dagcbor.encode(p) for p in posts]
    total = sum(map(len, blocks))
    t, _ = best(lambda: [dagcbor.encode(p) for p in posts], seconds)
    rows.append(("DAG-CBOR encode (posts)", f"{total / t / 1e6:.1f} MB/s", f"{len(posts) / t:,.0f} records/s"))
    t, _ = best(lambda: [dagcbor.decode(b) for b in blocks], seconds)
    rows.append(("DAG-CBOR decode, strict (posts)", f"{total / t / 1e6:.1f} MB/s", f"{len(posts) / t:,.0f} records/s"))

    # -- MST -----------------------------------------------------------------------------------
    clock = TidClock()
    collections = ["app.bsky.feed.post"] * 5 + ["app.bsky.feed.like"] * 4 + ["app.bsky.graph.follow"]
    keys = [f"{rng.choice(collections)}/{clock.next_tid()}" for _ in range(n_records)]
    vals = [CID.from_block(i.to_bytes(4, "big")) for i in range(n_records)]

    def inserts() -> CID:
        w = NodeWrangler(NodeStore(MemoryBlockStore()))
        root = EMPTY_ROOT_CID
        for k, v in zip(keys, vals):
            root = w.put(root, k, v)
        return root

    t, _ = best(inserts, seconds)
    rows.append((f"MST insert x{n_records:,} (one at a time)", f"{t * 1000:.0f} ms", f"{n_records / t:,.0f} inserts/s"))

    shuffled = list(zip(keys, vals))
    rng.shuffle(shuffled)

    def random_inserts() -> CID:
        w = NodeWrangler(NodeStore(MemoryBlockStore()))
        root = EMPTY_ROOT_CID
        for k, v in shuffled:
            root = w.put(root, k, v)
        return root

    t, _ = best(random_inserts, seconds)
    rows.append((f"MST insert x{n_records:,} (random order)", f"{t * 1000:.0f} ms", f"{n_records / t:,.0f} inserts/s"))
    t, _ = best(lambda: NodeWrangler(NodeStore(MemoryBlockStore())).build(zip(keys, vals)), seconds)
    rows.append((f"MST bulk build x{n_records:,}", f"{t * 1000:.0f} ms", f"{n_records / t:,.0f} keys/s"))

    # -- a repo of n_records posts, then single-record commits into it -------------------------
    key = Secp256k1Keypair.generate()
    store = MemoryBlockStore()
    head = None
    paths = [k.split("/") for k in keys]
    for i in range(0, n_records, 200):
        writes = [Write(CREATE, c, r, make_post(rng, i + j)) for j, (c, r) in enumerate(paths[i : i + 200])]
        result = apply_writes(store, head, writes, key, DID, clock.next_tid())
        for cid, block in result.new_blocks.items():
            store.put(cid, block)
        head = result.commit_cid
    cache = NodeCache()
    counter = [0]

    def one_create() -> None:
        nonlocal head
        counter[0] += 1
        w = [Write(CREATE, "app.bsky.feed.post", clock.next_tid(), make_post(rng, counter[0]))]
        res = apply_writes(store, head, w, key, DID, clock.next_tid(), node_cache=cache)
        for cid, block in res.new_blocks.items():
            store.put(cid, block)
        head = res.commit_cid

    per_s = rate(one_create, seconds)
    rows.append((f"createRecord commit into {n_records:,}-record repo (secp256k1)", f"{1e6 / per_s:.0f} µs", f"{per_s:,.0f} commits/s"))

    # the same without the signature: the Python share of a write
    class NoSign:
        def sign(self, message: bytes) -> bytes:
            return bytes(64)

    def one_create_unsigned() -> None:
        counter[0] += 1
        w = [Write(CREATE, "app.bsky.feed.post", clock.next_tid(), make_post(rng, counter[0]))]
        apply_writes(store, head, w, NoSign(), DID, clock.next_tid(), node_cache=cache)  # type: ignore[arg-type]

    per_s = rate(one_create_unsigned, seconds)
    rows.append(("  of which MST + blocks, without signing", f"{1e6 / per_s:.0f} µs", f"{per_s:,.0f} commits/s"))

    # -- commit signatures ---------------------------------------------------------------------
    for name, kind in (("secp256k1", Secp256k1Keypair), ("P-256", P256Keypair)):
        kp = kind.generate()
        rev = clock.next_tid()
        data = CID.from_block(b"bench")
        per_s = rate(lambda: sign_commit(DID, data, rev, kp), seconds)
        rows.append((f"commit sign ({name})", f"{1e6 / per_s:.0f} µs", f"{per_s:,.0f} /s"))
        _, block, commit = sign_commit(DID, data, rev, kp)
        pub = kp.public_key
        per_s = rate(lambda: verify_commit(block, pub), seconds)
        rows.append((f"commit verify from block ({name})", f"{1e6 / per_s:.0f} µs", f"{per_s:,.0f} /s"))

    # -- CAR export ----------------------------------------------------------------------------
    def export() -> int:
        return sum(len(chunk) for chunk in write_car([head], repo_blocks(store, head)))  # type: ignore[list-item]

    t, _ = best(export, seconds)
    size = export()
    rows.append((f"CAR export, {n_records + counter[0]:,}-record repo (cold nodes)", f"{t * 1000:.0f} ms", f"{size / 1e6:.1f} MB, {size / t / 1e6:.0f} MB/s"))
    assert encode_car([head], repo_blocks(store, head))  # type: ignore[list-item]

    width = max(len(r[0]) for r in rows)
    print(f"squall protocol core — Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'benchmark'.ljust(width)}  {'time / throughput':>18}  rate")
    print("-" * (width + 40))
    for name, a, b in rows:
        print(f"{name.ljust(width)}  {a:>18}  {b}")


if __name__ == "__main__":
    main()
