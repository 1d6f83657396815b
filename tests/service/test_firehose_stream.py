"""subscribeRepos against a real server: live stream, every cursor case, reconnecting while
writes continue, many subscribers, pings, and bad input from clients."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from contextlib import closing

import httpx
import pytest
import websockets

from squall.firehose.frames import decode_frame
from tests.helpers.pds import PdsProcess
from tests.helpers.relay import RawSubscriber, collect, expect_error, stream_url

PASSWORD = "correct horse battery"
_names = itertools.count()


def db_seqs(pds: PdsProcess) -> list[int]:
    with closing(sqlite3.connect(f"file:{pds.data_dir / 'pds.sqlite'}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM repo_seq ORDER BY seq")]


async def create_account(c: httpx.AsyncClient, prefix: str = "u") -> str:
    name = f"{prefix}user{next(_names)}"
    r = await c.post("/xrpc/com.atproto.server.createAccount",
                     json={"handle": f"{name}.localhost", "email": f"{name}@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["did"]


@pytest.fixture(scope="module")
def pds_env():
    return {"SQUALL_FIREHOSE_PING_SECONDS": "0.2"}


def current_seq(pds: PdsProcess) -> int:
    seqs = db_seqs(pds)
    return seqs[-1] if seqs else 0


async def test_live_without_cursor_starts_at_now(pds):
    async with httpx.AsyncClient(base_url=pds.url) as c:
        await create_account(c)  # before the subscription: must not be sent
        before = current_seq(pds)
        task = asyncio.create_task(collect(stream_url(pds.url), count=3))
        await asyncio.sleep(0.3)
        did = await create_account(c)
        got = await task
    assert got.seqs == [before + 1, before + 2, before + 3]
    assert [h["t"] for h, _ in got.frames] == ["#identity", "#account", "#sync"]
    assert all(b["did"] == did for _, b in got.frames)


async def test_cursor_replays_then_goes_live_without_gap_or_duplicate(pds):
    async with httpx.AsyncClient(base_url=pds.url) as c:
        for _ in range(2):
            await create_account(c)
        current = current_seq(pds)
        cursor = current - 4
        task = asyncio.create_task(collect(stream_url(pds.url, cursor=cursor), until_seq=current + 6))
        await asyncio.sleep(0.2)
        await create_account(c)
        await create_account(c)
        got = await task
    assert got.seqs == list(range(cursor + 1, current + 7))
    assert got.infos == [] and got.errors == []


async def test_cursor_zero_replays_everything_and_current_cursor_replays_nothing(pds):
    async with httpx.AsyncClient(base_url=pds.url) as c:
        await create_account(c)
        all_seqs = db_seqs(pds)
        got = await collect(stream_url(pds.url, cursor=0), until_seq=all_seqs[-1])
        assert got.seqs == all_seqs
        current = all_seqs[-1]
        task = asyncio.create_task(collect(stream_url(pds.url, cursor=current), count=3))
        await asyncio.sleep(0.2)
        await create_account(c)
        got = await task
    assert got.seqs == [current + 1, current + 2, current + 3]


async def test_future_cursor_is_an_error_and_a_close(pds):
    current = current_seq(pds)
    body, code, reason = await expect_error(stream_url(pds.url, cursor=current + 1000))
    assert body["error"] == "FutureCursor" and str(current + 1000) in body["message"]
    assert code == 1008 and reason == "FutureCursor"


@pytest.mark.parametrize("query", [
    "cursor=-1", "cursor=abc", "cursor=1.5", "cursor=", "cursor=%201", "cursor=0x10",
    "cursor=99999999999999999999999999", "cursor=9223372036854775808", "cursor=1&cursor=2",
    "cursor=" + "9" * 5000,
])
async def test_bad_cursor_is_invalid_request(pds, query):
    url = stream_url(pds.url) + "?" + query
    body, code, reason = await expect_error(url)
    assert body["error"] == "InvalidRequest" and "cursor" in body["message"]
    assert len(body["message"]) < 200  # a huge cursor is not echoed back
    assert code == 1008 and reason == "InvalidRequest"


async def test_unknown_parameters_are_ignored(pds):
    seqs = db_seqs(pds)
    url = stream_url(pds.url) + f"?wantedCollections=app.bsky.feed.post&cursor={seqs[-3]}&x=%00"
    got = await collect(url, until_seq=seqs[-1])
    assert got.seqs == seqs[-2:]


@pytest.mark.parametrize("send", [{"text": "hello"}, {"data": b"\xa1\x62op\x01"}, {"data": b"\xff" * 70000}])
def test_client_messages_get_invalid_request_and_close(pds, send):
    client = RawSubscriber(stream_url(pds.url))
    client.connect()
    try:
        client.send_raw(**send)
        client.read_for(3.0)
    finally:
        client.close()
    assert client.close_code == 1008 and client.close_reason == "InvalidRequest"
    errors = [decode_frame(m) for m in client.messages]
    assert errors and errors[-1][0] == {"op": -1} and errors[-1][1]["error"] == "InvalidRequest"


def test_pings_on_an_interval(pds):
    client = RawSubscriber(stream_url(pds.url))
    client.connect()
    try:
        client.read_for(1.5)
    finally:
        client.close()
    assert client.pings >= 3  # every 0.2 s in this server
    assert client.close_code is None


def test_plain_get_is_refused(pds):
    r = httpx.get(pds.url + "/xrpc/com.atproto.sync.subscribeRepos")
    assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"


async def test_reconnecting_with_last_seq_while_writes_continue(pds):
    start = current_seq(pds)
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        async with httpx.AsyncClient(base_url=pds.url) as c:
            while not stop.is_set():
                await create_account(c, "w")
                n += 1
        return n

    writing = asyncio.create_task(writer())
    seen: list[int] = []
    cursor = start
    try:
        for _ in range(6):
            # take a few events, drop the connection, come back with the last seq seen
            got = await collect(stream_url(pds.url, cursor=cursor), count=4, timeout=10)
            assert got.errors == [] and got.infos == []
            assert got.seqs, "no events while writes were running"
            seen.extend(got.seqs)
            cursor = got.seqs[-1]
    finally:
        stop.set()
        written = await writing
    assert written >= 2
    final = current_seq(pds)
    got = await collect(stream_url(pds.url, cursor=cursor), until_seq=final)
    seen.extend(got.seqs)
    assert seen == list(range(start + 1, final + 1))


async def test_hundred_subscribers_receive_every_event_in_order(pds):
    start = current_seq(pds)
    accounts = 4
    subs = [asyncio.create_task(collect(stream_url(pds.url), count=3 * accounts, timeout=30)) for _ in range(100)]
    await asyncio.sleep(1.0)  # all connected
    async with httpx.AsyncClient(base_url=pds.url) as c:
        for _ in range(accounts):
            await create_account(c, "many")
    results = await asyncio.gather(*subs)
    expected = list(range(start + 1, start + 3 * accounts + 1))
    for got in results:
        assert got.seqs == expected
    frames = {tuple(b["seq"] for _, b in got.frames) for got in results}
    assert len(frames) == 1
    assert "Traceback" not in pds.logs()


def test_server_log_has_no_tracebacks(pds):
    logs = pds.logs()
    assert "Traceback" not in logs
    assert '"level": "ERROR"' not in logs
