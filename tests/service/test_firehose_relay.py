"""Every #commit checked the way a Sync 1.1 relay does, over a long mixed write sequence through
the XRPC API (creates, updates, deletes, applyWrites batches, enough records for a deep tree);
then the checker itself shown to reject tampered events."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from contextlib import closing

import httpx
import pytest
import websockets

from squall.atproto import dagcbor
from squall.atproto.car import encode_car, read_car
from squall.atproto.mst import key_height
from squall.firehose.frames import decode_frame
from tests.helpers.pds import PdsProcess
from tests.helpers.relay import RelayChecker, SyncCheckFailed, http_key_resolver, stream_url

PASSWORD = "correct horse battery"
COLLECTIONS = ("app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow")
CREATE = "com.atproto.repo.applyWrites#create"
UPDATE = "com.atproto.repo.applyWrites#update"
DELETE = "com.atproto.repo.applyWrites#delete"


def record(collection: str, n: int) -> dict:
    now = "2024-05-01T00:00:00.000Z"
    if collection == "app.bsky.feed.post":
        return {"$type": collection, "text": f"post {n}", "createdAt": now}
    subject = {"uri": f"at://did:web:x{n}.localhost/app.bsky.feed.post/3k{n:011d}",
               "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
    if collection == "app.bsky.feed.like":
        return {"$type": collection, "subject": subject, "createdAt": now}
    return {"$type": collection, "subject": f"did:web:x{n}.localhost", "createdAt": now}


def repo_rev(pds: PdsProcess, did: str) -> str:
    with closing(sqlite3.connect(f"file:{pds.data_dir / 'pds.sqlite'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT rev FROM repo_root WHERE did = ?", (did,)).fetchone()[0]


def max_seq(pds: PdsProcess) -> int:
    with closing(sqlite3.connect(f"file:{pds.data_dir / 'pds.sqlite'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT MAX(seq) FROM repo_seq").fetchone()[0] or 0


class Writer:
    """Drives one account through the XRPC write methods and remembers what it holds."""

    def __init__(self, c: httpx.Client, did: str, token: str, rng: random.Random) -> None:
        self.c, self.did, self.rng = c, did, rng
        self.headers = {"Authorization": f"Bearer {token}"}
        self.records: dict[tuple[str, str], int] = {}
        self.n = 0
        self.commits = 0
        self.ops = 0

    def _post(self, nsid: str, body: dict) -> dict:
        r = self.c.post(f"/xrpc/{nsid}", json={"repo": self.did, **body}, headers=self.headers)
        assert r.status_code == 200, (nsid, r.text)
        self.commits += 1
        return r.json()

    def create(self) -> None:
        self.n += 1
        collection = self.rng.choice(COLLECTIONS)
        out = self._post("com.atproto.repo.createRecord", {"collection": collection, "record": record(collection, self.n)})
        self.records[(collection, out["uri"].rsplit("/", 1)[1])] = self.n
        self.ops += 1

    def update(self) -> None:
        collection, rkey = self.rng.choice(sorted(self.records))
        self.n += 1
        self._post("com.atproto.repo.putRecord", {"collection": collection, "rkey": rkey, "record": record(collection, self.n)})
        self.ops += 1

    def delete(self) -> None:
        collection, rkey = self.rng.choice(sorted(self.records))
        del self.records[(collection, rkey)]
        self._post("com.atproto.repo.deleteRecord", {"collection": collection, "rkey": rkey})
        self.ops += 1

    def batch(self, creates: int, updates: int, deletes: int) -> None:
        existing = self.rng.sample(sorted(self.records), updates + deletes)
        writes = []
        for _ in range(creates):
            self.n += 1
            collection = self.rng.choice(COLLECTIONS)  # the key is chosen by the server (a TID)
            writes.append({"$type": CREATE, "collection": collection, "value": record(collection, self.n)})
        for collection, rkey in existing[:updates]:
            self.n += 1
            writes.append({"$type": UPDATE, "collection": collection, "rkey": rkey, "value": record(collection, self.n)})
        for collection, rkey in existing[updates:]:
            writes.append({"$type": DELETE, "collection": collection, "rkey": rkey})
            del self.records[(collection, rkey)]
        self.rng.shuffle(writes)
        out = self._post("com.atproto.repo.applyWrites", {"writes": writes})
        for write, result in zip(writes, out["results"]):
            if write["$type"] == CREATE:
                self.records[(write["collection"], result["uri"].rsplit("/", 1)[1])] = self.n
        self.ops += len(writes)


@pytest.fixture(scope="module")
def stream(pds):
    """A long mixed write sequence on two accounts, with every frame the firehose sent for it."""
    frames: list[bytes] = []

    async def run() -> tuple[list[Writer], int]:
        async def consume(stop_at: asyncio.Future) -> None:
            async with websockets.connect(stream_url(pds.url, cursor=0), max_size=None) as ws:
                newest = 0
                while True:
                    # The last frame may arrive before the writers know the final seq: look again
                    # every 0.5 s as well as on every frame.
                    if stop_at.done() and newest >= stop_at.result():
                        return
                    try:
                        frames.append(await asyncio.wait_for(ws.recv(), timeout=0.5))
                    except asyncio.TimeoutError:
                        continue
                    newest = max(newest, decode_frame(frames[-1])[1].get("seq", 0))

        last: asyncio.Future = asyncio.get_running_loop().create_future()
        consumer = asyncio.create_task(consume(last))

        def write_all() -> list[Writer]:
            rng = random.Random(20240501)
            writers = []
            with httpx.Client(base_url=pds.url, timeout=30) as c:
                for name in ("relaya", "relayb"):
                    r = c.post("/xrpc/com.atproto.server.createAccount",
                               json={"handle": f"{name}.localhost", "email": f"{name}@example.com", "password": PASSWORD})
                    assert r.status_code == 200, r.text
                    writers.append(Writer(c, r.json()["did"], r.json()["accessJwt"], rng))
                for step in range(260):
                    w = writers[step % 2]
                    roll = rng.random()
                    if len(w.records) < 20 or roll < 0.45:
                        w.create()
                    elif roll < 0.6:
                        w.update()
                    elif roll < 0.75:
                        w.delete()
                    else:
                        w.batch(creates=rng.randrange(1, 60), updates=rng.randrange(0, 5), deletes=rng.randrange(0, 5))
            return writers

        writers = await asyncio.to_thread(write_all)
        final = max_seq(pds)
        last.set_result(final)
        await asyncio.wait_for(consumer, timeout=60)
        return writers, final

    writers, final = asyncio.run(run())
    return frames, writers, final


def test_every_commit_passes_relay_checks(pds, stream):
    frames, writers, final = stream
    checker = RelayChecker(http_key_resolver(pds.url))
    for frame in frames:
        checker.feed(frame)
    assert checker.last_seq == final
    assert checker.counts["#commit"] == sum(w.commits for w in writers)
    assert checker.ops_checked == sum(w.ops for w in writers)
    assert checker.counts["#sync"] == 2 and checker.counts["#identity"] == 2
    for w in writers:
        assert checker.repos[w.did].rev == repo_rev(pds, w.did)  # the checker followed every commit
    # the trees grew deep enough to split and merge nodes on the way
    keys = [f"{c}/{k}" for w in writers for c, k in w.records]
    assert max(key_height(k) for k in keys) >= 3  # a tree four or more levels deep
    assert max(len(w.records) for w in writers) >= 300


def _tamper(frame: bytes, change) -> bytes:
    header, body = decode_frame(frame)
    change(body)
    return dagcbor.encode(header) + dagcbor.encode(body)


def _drop_block(body: dict, keep) -> None:
    roots, blocks = read_car(body["blocks"])
    body["blocks"] = encode_car(roots, [(cid, data) for cid, data in blocks.items() if keep(cid)])


@pytest.mark.parametrize("name, change", [
    ("prevData", lambda b: b.__setitem__("prevData", b["commit"])),
    ("since", lambda b: b.__setitem__("since", "2222222222222")),
    ("dropped op", lambda b: b.__setitem__("ops", b["ops"][1:])),
    ("swapped cid", lambda b: b["ops"][0].__setitem__("cid", b["commit"])),
    ("missing proof node", lambda b: _drop_block(b, lambda cid: cid == b["commit"] or cid in {o.get("cid") for o in b["ops"]})),
    ("tooBig", lambda b: b.__setitem__("tooBig", True)),
])
def test_checker_rejects_tampered_commits(pds, stream, name, change):
    frames, writers, final = stream
    # tamper with a multi-op applyWrites commit late in the stream
    index = max(i for i, f in enumerate(frames)
                if decode_frame(f)[0].get("t") == "#commit" and len(decode_frame(f)[1]["ops"]) > 2)
    checker = RelayChecker(http_key_resolver(pds.url))
    for frame in frames[:index]:
        checker.feed(frame)
    with pytest.raises(SyncCheckFailed):
        checker.feed(_tamper(frames[index], change))
