"""The firehose's edges against a real server: slow and stuck consumers, SIGTERM, retention, and
crawl requests to fake relays on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sqlite3
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from squall.firehose.frames import decode_frame
from squall.store.sequencer import append_event, now_iso
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess
from tests.helpers.relay import RawSubscriber, collect, stream_url

PASSWORD = "correct horse battery"
_names = itertools.count()


def create_account(c: httpx.Client, prefix: str = "life") -> str:
    name = f"{prefix}user{next(_names)}"
    r = c.post("/xrpc/com.atproto.server.createAccount",
               json={"handle": f"{name}.localhost", "email": f"{name}@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["did"]


def db_seqs(pds: PdsProcess) -> list[int]:
    with closing(sqlite3.connect(f"file:{pds.data_dir / 'pds.sqlite'}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM repo_seq ORDER BY seq")]


def append_big_events(pds: PdsProcess, n: int, size: int) -> None:
    """Sequence ``n`` large events through the sequencer's own append path, as another writer
    process would (the fan-out finds them by polling)."""
    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout=5000")
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            append_event(conn, "did:web:bulk.localhost", "sync",
                         {"did": "did:web:bulk.localhost", "blocks": bytes([i % 256]) * size,
                          "rev": f"3kbulk{i:07d}", "time": now_iso()})
            conn.execute("COMMIT")


# -- slow consumers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_queue_pds(tmp_path_factory):
    env = {"SQUALL_FIREHOSE_QUEUE_FRAMES": "10", "SQUALL_FIREHOSE_POLL_SECONDS": "0.05",
           "SQUALL_FIREHOSE_CLOSE_GRACE_SECONDS": "3", "SQUALL_FIREHOSE_PING_SECONDS": "0"}
    with PdsProcess(tmp_path_factory.mktemp("slow") / "data", env_extra=env) as proc:
        yield proc


def test_consumer_that_falls_behind_gets_consumer_too_slow(small_queue_pds):
    pds = small_queue_pds
    start = db_seqs(pds)[-1] if db_seqs(pds) else 0
    client = RawSubscriber(stream_url(pds.url), rcvbuf=4096)
    client.connect()
    try:
        append_big_events(pds, 120, 64 * 1024)  # ~7.5 MB: more than socket buffers and the queue hold
        time.sleep(0.8)  # not reading while the fan-out overflows this subscriber's queue
        client.read_for(8.0)
    finally:
        client.close()
    frames = [decode_frame(m) for m in client.messages]
    assert frames, "nothing received"
    header, body = frames[-1]
    assert header == {"op": -1} and body["error"] == "ConsumerTooSlow"
    assert client.close_code == 1008 and client.close_reason == "ConsumerTooSlow"
    seqs = [b["seq"] for h, b in frames[:-1]]
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))  # in order, no gap, then cut off
    assert len(seqs) < 120


def test_consumer_that_never_reads_is_dropped(small_queue_pds):
    pds = small_queue_pds
    client = RawSubscriber(stream_url(pds.url), rcvbuf=4096)
    client.connect()
    try:
        append_big_events(pds, 120, 64 * 1024)
        time.sleep(6.0)  # overflow, then the grace for the error frame runs out
        client.read_for(15.0)  # the socket ends: whatever was buffered, then EOF or reset
        assert client.eof
    finally:
        client.close()
    # the server is healthy and serves new subscribers afterwards
    assert httpx.get(pds.url + "/xrpc/_health").status_code == 200
    seqs = db_seqs(pds)
    got = asyncio.run(collect(stream_url(pds.url, cursor=seqs[-2]), count=1))
    assert got.seqs == [seqs[-1]]


def test_slow_consumers_leave_no_errors_in_the_log(small_queue_pds):
    logs = small_queue_pds.logs()
    assert "Traceback" not in logs and '"level": "ERROR"' not in logs


# -- shutdown ---------------------------------------------------------------------------------------


async def test_sigterm_drains_and_closes_subscribers_with_1001(tmp_path):
    pds = PdsProcess(tmp_path / "data").start()
    try:
        subs = [asyncio.create_task(collect(stream_url(pds.url), timeout=20)) for _ in range(3)]
        await asyncio.sleep(0.5)
        with pds.client() as c:
            did = await asyncio.to_thread(create_account, c)
        code = await asyncio.to_thread(pds.stop)  # SIGTERM right after the write
        results = await asyncio.gather(*subs)
    finally:
        pds.stop()
    assert code in (0, -signal.SIGTERM)  # exited on its own (uvicorn re-raises the signal), not killed
    for got in results:
        assert [h["t"] for h, _ in got.frames] == ["#identity", "#account", "#sync"]
        assert all(b["did"] == did for _, b in got.frames)
        assert got.close_code == 1001
    assert "Traceback" not in pds.logs()


# -- retention --------------------------------------------------------------------------------------


async def test_retention_prunes_old_events_and_outdated_cursor_replays_the_window(tmp_path):
    env = {"PDS_REPO_BACKFILL_LIMIT_MS": "2500", "SQUALL_FIREHOSE_PRUNE_SECONDS": "0.2"}
    with PdsProcess(tmp_path / "data", env_extra=env) as pds:
        with pds.client() as c:
            create_account(c)  # seqs 1..3
            deadline = time.monotonic() + 10
            while db_seqs(pds) != [3] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert db_seqs(pds) == [3]  # old ones pruned, never the newest
            create_account(c)  # seqs 4..6, inside the window
        # seq 1 and 2 are gone: a cursor before them is outdated
        got = await collect(stream_url(pds.url, cursor=0), until_seq=6)
        assert got.infos and got.infos[0]["name"] == "OutdatedCursor"
        assert got.frames[0][0] == {"op": 1, "t": "#info"}
        assert got.seqs == [4, 5, 6]
        got = await collect(stream_url(pds.url, cursor=1), until_seq=6)
        assert got.infos[0]["name"] == "OutdatedCursor" and got.seqs == [4, 5, 6]
        # the cursor right before the window is not outdated
        got = await collect(stream_url(pds.url, cursor=3), until_seq=6)
        assert got.infos == [] and got.seqs == [4, 5, 6]
        # the seq survives pruning: after everything ages out, the next event continues it
        deadline = time.monotonic() + 10
        while db_seqs(pds) != [6] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert db_seqs(pds) == [6]
    with PdsProcess(pds.data_dir, env_extra=env) as again:
        with again.client() as c:
            create_account(c)
        assert db_seqs(again)[-1] == 9


# -- crawlers ---------------------------------------------------------------------------------------


class FakeCrawler:
    """A relay's requestCrawl endpoint on loopback that records what it is sent."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                outer.requests.append({"path": self.path, "content_type": self.headers.get("content-type"),
                                       "body": json.loads(raw or b"null"), "at": time.monotonic()})
                self.send_response(outer.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeCrawler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_crawl_requests_at_start_then_throttled(tmp_path):
    with FakeCrawler() as relay, FakeCrawler(status=500) as broken:
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        env = {"PDS_CRAWLERS": f"{relay.url}/,{broken.url},{dead}"}
        with PdsProcess(tmp_path / "data", env_extra=env) as pds:
            assert wait_for(lambda: len(relay.requests) == 1 and len(broken.requests) == 1)
            req = relay.requests[0]
            assert req["path"] == "/xrpc/com.atproto.sync.requestCrawl"
            assert req["content_type"].startswith("application/json")
            assert req["body"] == {"hostname": "localhost"}
            with pds.client() as c:
                started = time.monotonic()
                for _ in range(3):
                    create_account(c)  # failing crawlers never hold a write up
                assert time.monotonic() - started < 5
            time.sleep(0.5)
            assert len(relay.requests) == 1 and len(broken.requests) == 1  # once per 20 minutes
            logs = pds.logs()
        assert "crawl request refused" in logs and "crawl request failed" in logs
        assert "Traceback" not in logs


def test_crawl_requests_after_writes_once_per_interval(tmp_path):
    with FakeCrawler() as relay:
        env = {"PDS_CRAWLERS": relay.url, "SQUALL_FIREHOSE_CRAWL_MIN_SECONDS": "1.5"}
        with PdsProcess(tmp_path / "data", env_extra=env) as pds, pds.client() as c:
            assert wait_for(lambda: len(relay.requests) == 1)
            create_account(c)  # within the interval of the start announcement
            time.sleep(0.3)
            assert len(relay.requests) == 1
            time.sleep(1.5)
            assert len(relay.requests) == 1  # no writes, no request
            create_account(c)
            assert wait_for(lambda: len(relay.requests) == 2)
            create_account(c)
            time.sleep(0.3)
            assert len(relay.requests) == 2
    gaps = [b["at"] - a["at"] for a, b in zip(relay.requests, relay.requests[1:])]
    assert all(g >= 1.5 for g in gaps)
    assert all(r["body"] == {"hostname": "localhost"} for r in relay.requests)


def test_periodic_reannounce_without_writes(tmp_path):
    with FakeCrawler() as relay:
        env = {"PDS_CRAWLERS": relay.url, "SQUALL_FIREHOSE_CRAWL_REANNOUNCE_SECONDS": "0.5"}
        with PdsProcess(tmp_path / "data", env_extra=env):
            assert wait_for(lambda: len(relay.requests) >= 4, timeout=5)


# -- tuning knobs -----------------------------------------------------------------------------------


def test_tuning_variables_are_checked_and_named():
    from squall.firehose.options import FirehoseOptions, OptionsError

    opts = FirehoseOptions.from_env({"SQUALL_FIREHOSE_QUEUE_FRAMES": "7", "SQUALL_FIREHOSE_PING_SECONDS": "0"})
    assert opts.queue_frames == 7 and opts.ping_seconds == 0 and opts.crawl_min_seconds == 1200
    for name, value in (("SQUALL_FIREHOSE_QUEUE_FRAMES", "1.5"), ("SQUALL_FIREHOSE_QUEUE_FRAMES", "0"),
                        ("SQUALL_FIREHOSE_POLL_SECONDS", "soon"), ("SQUALL_FIREHOSE_DRAIN_SECONDS", "-1")):
        with pytest.raises(OptionsError, match=name):
            FirehoseOptions.from_env({name: value})


def test_bad_tuning_variable_stops_the_start(tmp_path):
    pds = PdsProcess(tmp_path / "data", env_extra={"SQUALL_FIREHOSE_QUEUE_FRAMES": "lots"})
    with pytest.raises(RuntimeError) as err:
        pds.start(timeout=15)
    assert "SQUALL_FIREHOSE_QUEUE_FRAMES" in str(err.value)
