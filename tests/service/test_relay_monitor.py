"""The relay monitor (issue #15) against fake relays on loopback (tests/helpers/fake_relays.py):
each scenario of the issue's "What must be shown" ends in the right status and action, and a relay
consuming the firehose over a real WebSocket sees the re-announced account's latest commit.

Each test runs its own ``squall serve`` with short intervals (settings and SQUALL_RELAY_MONITOR_*
knobs); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from squall.config import ConfigError, load_settings
from tests.helpers.accounts import create_account
from tests.helpers.fake_relays import FakeRelay
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess
from tests.helpers.relay import collect, http_key_resolver, stream_url

MIN_GAP = 0.2
FAST = {
    "PDS_RELAY_MONITOR_INTERVAL": "1",
    "SQUALL_RELAY_MONITOR_MIN_REQUEST_GAP": str(MIN_GAP),
    "SQUALL_RELAY_MONITOR_REQUEST_TIMEOUT": "1.5",
    "SQUALL_RELAY_MONITOR_RECHECK_DELAY": "0.5",
    "SQUALL_RELAY_MONITOR_DESYNC_SECONDS": "1",
    "SQUALL_RELAY_MONITOR_REANNOUNCE_MIN_SECONDS": "0.5",
}


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.pds = PdsProcess(tmp_path / "data")
        self.stack = ExitStack()
        self.relays: list[FakeRelay] = []

    def relay(self, *, known: bool = True, checker: bool = True) -> FakeRelay:
        relay = FakeRelay("localhost", self.pds.url,
                          resolve_key=http_key_resolver(self.pds.url) if checker else None).start()
        self.stack.callback(relay.stop)
        if known:
            relay.know_host()
        self.relays.append(relay)
        return relay

    def start(self, extra_urls: list[str] = (), **env: str) -> None:
        urls = [r.url for r in self.relays] + list(extra_urls)
        self.pds.env_extra = {**FAST, "PDS_RELAY_MONITOR_URLS": ",".join(urls), **env}
        self.pds.start()
        self.stack.callback(self.pds.stop)
        self.admin = ("admin", self.pds.admin_password())
        self.c = self.stack.enter_context(self.pds.client())

    def status(self, **params: str) -> dict:
        r = self.c.get("/xrpc/_admin/relays", params={"accounts": "true", **params}, auth=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def relay_row(self, relay: FakeRelay | str) -> dict:
        url = relay if isinstance(relay, str) else relay.url
        return next(r for r in self.status()["relays"] if r["url"] == url)

    def account_row(self, relay: FakeRelay, did: str) -> dict | None:
        return next((a for a in self.status()["accounts"] if a["relay"] == relay.url and a["did"] == did), None)

    def post(self, path: str, body: dict) -> dict:
        r = self.c.post(f"/xrpc/_admin/relays/{path}", json=body, auth=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def our_rev(self, did: str) -> str:
        r = self.c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": did})
        assert r.status_code == 200, r.text
        return r.json()["rev"]

    def write_post(self, account: dict, text: str) -> None:
        r = self.c.post("/xrpc/com.atproto.repo.createRecord", headers=account["headers"], json={
            "repo": account["did"], "collection": "app.bsky.feed.post",
            "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2025-01-01T00:00:00.000Z"}})
        assert r.status_code == 200, r.text


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    with w.stack:
        yield w


def wait(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def actions(status_or_row: dict, action: str, did: str | None = None) -> list[dict]:
    return [a for a in status_or_row["actions"] if a["action"] == action and (did is None or a["did"] == did)]


# -- settings ----------------------------------------------------------------------------------------


def test_settings_are_checked_and_name_the_variable():
    base = {"PDS_HOSTNAME": "localhost"}
    settings, _ = load_settings(base)
    assert settings.relay_monitor_interval == 600 and settings.relay_monitor_urls == []
    settings, _ = load_settings({**base, "PDS_RELAY_MONITOR_URLS": "https://a.example, https://b.example/",
                                 "PDS_RELAY_MONITOR_EVENT_LIMITS": "10/s,100/h"})
    assert settings.relay_monitor_urls == ["https://a.example", "https://b.example/"]
    for name, value in (("PDS_RELAY_MONITOR_URLS", "relay.example"), ("PDS_RELAY_MONITOR_INTERVAL", "0"),
                        ("PDS_RELAY_MONITOR_INTERVAL", "soon"), ("PDS_RELAY_MONITOR_EVENT_LIMITS", "50 per second"),
                        ("PDS_RELAY_MONITOR_ACCOUNT_LIMIT", "0")):
        with pytest.raises(ConfigError) as err:
            load_settings({**base, name: value})
        assert str(err.value).startswith(f"{name}:") and "\n" not in str(err.value)


def test_advancing_the_sequence_never_lowers_it(tmp_path):
    from squall.store import sequencer
    from squall.store.db import Database

    async def run() -> None:
        db = Database(tmp_path / "pds.sqlite")
        await db.open()
        try:
            assert await db.write(sequencer.advance_next_seq, 40) == 40  # no event yet: the row is created
            first = await db.write(sequencer.append_event, "did:web:a.localhost", "identity",
                                   {"did": "did:web:a.localhost", "time": sequencer.now_iso()})
            assert first == 41
            assert await db.write(sequencer.advance_next_seq, 10) == 41  # below the floor: unchanged
            assert await db.write(sequencer.advance_next_seq, 100) == 100
            second = await db.write(sequencer.append_event, "did:web:a.localhost", "identity",
                                    {"did": "did:web:a.localhost", "time": sequencer.now_iso()})
            assert second == 101
        finally:
            await db.close()

    asyncio.run(run())


# -- host scenarios ----------------------------------------------------------------------------------


def test_unknown_host_gets_one_crawl_request_then_is_active_and_history_survives_a_restart(world):
    relay = world.relay(known=False)
    world.start()
    row = wait(lambda: (r := world.relay_row(relay))["status"] == "ok" and r, "the relay to follow us")
    crawls = actions(row, "requestCrawl")
    assert len(crawls) == 1 and crawls[0]["reason"] == "relay doesn't know us" and crawls[0]["result"] == "ok"
    assert relay.crawl_requests == ["localhost"]
    assert row["hostStatus"] == "active" and row["lastCrawlRequest"] is not None
    # Self-checks: our public URL (dev mode: http://localhost:<port>) serves describeServer and the firehose.
    status = wait(lambda: (s := world.status())["selfChecks"] and len(s["selfChecks"]) == 2 and s, "self-checks")
    assert {c["name"]: c["ok"] for c in status["selfChecks"]} == {"describeServer": True, "subscribeRepos": True}
    assert row["clockSkewMs"] is not None and abs(row["clockSkewMs"]) < 2000 and row["warnings"] == []
    # The admin status has the same rows.
    admin_status = world.c.get("/xrpc/_admin/status", auth=world.admin).json()
    assert [r["url"] for r in admin_status["relays"]["relays"]] == [relay.url]
    # A restart keeps the history; the relay stays known, so no second crawl request.
    wait(lambda: len(world.relay_row(relay)["lagHistory"]) >= 2, "two host checks")
    before = world.relay_row(relay)
    world.pds.stop()
    world.pds.start()
    after = world.relay_row(relay)
    assert after["lagHistory"][:len(before["lagHistory"])] == before["lagHistory"]
    assert actions(after, "requestCrawl") == crawls
    assert relay.crawl_requests == ["localhost"]


def test_relay_seq_ahead_is_fixed_by_the_operator_advancing_our_sequence(world):
    relay = world.relay()
    world.start()
    account = create_account(world.c, "seq")
    relay.wait_for(lambda: relay.repo(account["did"]) is not None and relay.repo(account["did"]).rev is not None,
                   what="the relay to see the account")
    ours = world.relay_row(relay)["ourSeq"] or 0
    relay.seq_override = ours + 500  # e.g. our database was restored from an old backup
    row = world.post("check", {"relay": relay.url})["relays"][0]
    assert row["status"] == "seq_ahead" and "our sequence went backwards" in row["message"]
    # Without confirmation: a plan, nothing changed.
    plan = world.post("advance-sequence", {"relay": relay.url})
    assert plan["applied"] is False and plan["theirSeq"] == ours + 500 and plan["nextSeq"] == ours + 501
    r = world.c.post("/xrpc/_admin/relays/advance-sequence", json={"relay": relay.url, "confirm": "yes"},
                     auth=world.admin)
    assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"
    done = world.post("advance-sequence", {"relay": relay.url, "confirm": True})
    assert done["applied"] is True and done["firstSeq"] > ours + 500 and done["accounts"] == 1
    # The firehose carries the #identity past the relay's seq, and the relay consumed it.
    frames = asyncio.run(collect(stream_url(world.pds.url, cursor=ours), timeout=5,
                                                        until_seq=done["firstSeq"]))
    identity = [b for h, b in frames.frames if h.get("t") == "#identity" and b["did"] == account["did"]]
    assert identity and identity[-1]["seq"] > ours + 500
    relay.wait_for(lambda: any(t == "#identity" and b["seq"] > ours + 500 for t, b in relay.events),
                   what="the relay to see the #identity past its seq")
    # A new write gets a seq past the relay's too; with the relay caught up, the host is ok again.
    world.write_post(account, "after the fix")
    relay.seq_override = None
    relay.wait_for(lambda: relay.seq > ours + 500 + 1, what="the relay to consume the new commit")
    row = world.post("check", {"relay": relay.url})["relays"][0]
    assert row["status"] == "ok" and actions(row, "advanceSequence")
    assert relay.check_errors == []


def test_host_states_idle_throttled_banned_and_account_limit(world):
    relay = world.relay()
    world.start(PDS_RELAY_MONITOR_ACCOUNT_LIMIT="10")
    relay.wait_for(lambda: relay.known_host, what="host known")
    relay.host_status = "idle"
    crawls_before = len(relay.crawl_requests)
    row = world.post("check", {"relay": relay.url})["relays"][0]
    assert row["status"] == "idle" and actions(row, "requestCrawl")
    assert len(relay.crawl_requests) == crawls_before + 1 and relay.host_status == "active"
    relay.host_status = "throttled"
    relay.account_count_override = 9
    row = world.post("check", {"relay": relay.url})["relays"][0]
    assert row["status"] == "throttled" and "per-host limits" in row["message"]
    assert [r["limit"] for r in row["eventRate"]] == [50, 1500, 10000]
    assert any("near its limit of 10" in w for w in row["warnings"])
    relay.host_status = "banned"
    relay.account_count_override = 10
    row = world.post("check", {"relay": relay.url})["relays"][0]
    assert row["status"] == "banned" and any("at its limit of 10" in w for w in row["warnings"])


def test_relay_that_falls_behind_is_reported(world):
    relay = world.relay()
    world.start(PDS_RELAY_MONITOR_INTERVAL="600")  # checks only when asked
    account = create_account(world.c, "lag")
    relay.wait_for(lambda: relay.repo(account["did"]) is not None, what="the relay to see the account")
    base = relay.seq
    relay.seq_override = base
    statuses = []
    for i in range(4):
        for j in range(12):  # the relay's seq stays put while ours grows: lag grows every check
            world.write_post(account, f"post {i}.{j}")
        statuses.append(world.post("check", {"relay": relay.url})["relays"][0])
    assert statuses[0]["status"] == "ok"  # two points (the start check's and this one) are not a trend
    assert statuses[-1]["status"] == "behind" and "relay is behind" in statuses[-1]["message"]
    assert "our events vs the relay's per-host limits" in statuses[-1]["message"]
    lags = [p["lag"] for p in statuses[-1]["lagHistory"]]
    assert lags[-3:] == sorted(lags[-3:]) and lags[-1] > lags[-3]
    relay.seq_override = None  # it catches up
    relay.wait_for(lambda: relay.seq >= statuses[-1]["ourSeq"], what="the relay to catch up")
    assert world.post("check", {"relay": relay.url})["relays"][0]["status"] == "ok"


# -- account scenarios ----------------------------------------------------------------------------------


def test_relay_missing_an_account_gets_it_reannounced(world):
    relay = world.relay()
    world.start()
    account = create_account(world.c, "miss")
    did = account["did"]
    wait(lambda: (a := world.account_row(relay, did)) and a["status"] == "ok", "the account to check ok")
    relay.forget(did)
    started = time.time()
    world.post("check", {"relay": relay.url, "did": did})
    status = world.status()
    announced = [a for a in actions(status, "reannounce", did) if a["reason"].endswith("relay doesn't know this account")]
    assert announced and announced[0]["relay"] == relay.url
    relay.wait_for(lambda: relay.repo(did) is not None and relay.repo(did).rev == world.our_rev(did),
                   what="the relay to relearn the account")
    row = wait(lambda: (a := world.account_row(relay, did)) and a["status"] == "ok" and a["checkedAt"] and a,
               "the account to check ok again")
    assert row["action"] == "reannounce"
    assert time.time() - started < 15
    assert relay.check_errors == []


def test_relay_dropping_commits_while_caught_up_is_commits_dropped_and_reannounced(world):
    relay = world.relay()
    world.start()
    account = create_account(world.c, "drop")
    did = account["did"]
    relay.wait_for(lambda: relay.repo(did) is not None and relay.repo(did).rev is not None, what="account seen")
    relay.drop_commits_of.add(did)
    world.write_post(account, "this commit is dropped by the relay")
    ours = world.our_rev(did)
    relay.wait_for(lambda: relay.seq >= (world.relay_row(relay)["ourSeq"] or 0), what="relay consumed the commit")
    assert relay.repo(did).rev < ours
    dropped = wait(lambda: [a for a in actions(world.status(), "reannounce", did) if "commits dropped" in a["reason"]],
                   "the commits-dropped re-announce")
    assert dropped[0]["relay"] == relay.url
    relay.wait_for(lambda: relay.repo(did).rev == ours, what="the relay to get our rev from the #sync")
    relay.drop_commits_of.clear()
    wait(lambda: (a := world.account_row(relay, did)) and a["status"] == "ok", "the account to check ok again")


def test_throttled_and_inactive_accounts(world):
    relay = world.relay()
    world.start()
    account = create_account(world.c, "thr")
    did = account["did"]
    relay.wait_for(lambda: relay.repo(did) is not None, what="account seen")
    relay.throttled.add(did)
    world.post("check", {"relay": relay.url, "did": did})
    row = world.account_row(relay, did)
    assert row["status"] == "throttled" and row["theirStatus"] == "throttled" and row["theirActive"] is False
    relay.throttled.clear()
    # The relay thinks the account is deactivated while it is active here: #account is emitted.
    with relay.lock:
        relay.repos[did].active = False
        relay.repos[did].status = "deactivated"
    world.post("check", {"relay": relay.url, "did": did})
    assert actions(world.status(), "emitAccount", did)
    relay.wait_for(lambda: relay.repo(did).active is True, what="the relay to see the #account")
    wait(lambda: (a := world.account_row(relay, did)) and a["status"] == "ok", "the account to check ok again")


def test_relay_rev_ahead_of_ours_is_an_alarm(world):
    relay = world.relay()
    world.start()
    account = create_account(world.c, "roll")
    did = account["did"]
    relay.wait_for(lambda: relay.repo(did) is not None and relay.repo(did).rev is not None, what="account seen")
    with relay.lock:
        relay.repos[did].rev = "3zzzzzzzzzzz2"  # a rev from the future: our repo went back
    world.post("check", {"relay": relay.url, "did": did})
    row = world.account_row(relay, did)
    assert row["status"] == "rolled_back" and "rolled back" in row["message"]


# -- failures -----------------------------------------------------------------------------------------------


def test_relays_down_or_hanging_are_unreachable_and_the_pds_is_unaffected(world):
    hanging = world.relay()
    hanging.hang = True
    closed = f"http://127.0.0.1:{free_port()}"
    world.start(extra_urls=[closed])
    account = create_account(world.c, "down")
    for _ in range(5):
        started = time.monotonic()
        world.write_post(account, "still writing")
        assert time.monotonic() - started < 1.0
        assert world.c.get("/xrpc/_health").status_code == 200
    for url in (closed, hanging.url):
        row = wait(lambda: (r := world.relay_row(url))["status"] == "unreachable" and r, f"{url} unreachable")
        assert row["lastError"]
    assert "no answer within 1.5s" in world.relay_row(hanging.url)["lastError"]
    r = world.c.post("/xrpc/_admin/relays/request-crawl", json={"relay": closed}, auth=world.admin)
    assert r.status_code == 200 and r.json()["results"][0]["ok"] is False
    assert world.c.get("/xrpc/_admin/status", auth=world.admin).status_code == 200


def test_requests_to_one_relay_are_paced(world):
    relay = world.relay()
    world.start()
    for i in range(3):
        create_account(world.c, f"pace{i}")
    wait(lambda: len([t for t, nsid, _ in relay.requests if nsid != "com.atproto.sync.requestCrawl"]) >= 8,
         "several requests")
    times = [t for t, nsid, _ in list(relay.requests) if nsid != "com.atproto.sync.requestCrawl"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= MIN_GAP * 0.95, gaps


def test_admin_routes_refuse_bad_input_and_other_credentials(world):
    relay = world.relay()
    world.start()
    account = create_account(world.c, "adm")
    assert world.c.get("/xrpc/_admin/relays").status_code == 401
    r = world.c.get("/xrpc/_admin/relays", headers=account["headers"])
    assert r.status_code in (401, 403) and r.json()["error"]
    for path, body, message in (("announce", {}, "Input/did is required"),
                                ("announce", {"did": "nope"}, "Input/did must be a valid did"),
                                ("advance-sequence", {}, "Input/relay is required"),
                                ("request-crawl", {"relay": "https://elsewhere.example"}, "not a monitored relay")):
        r = world.c.post(f"/xrpc/_admin/relays/{path}", json=body, auth=world.admin)
        assert r.status_code == 400 and message in r.json()["message"], r.text
    r = world.c.post("/xrpc/_admin/relays/announce", content=b"[1", auth=world.admin)
    assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"
    r = world.c.post("/xrpc/_admin/relays/announce", json={"did": "did:web:nobody.localhost"}, auth=world.admin)
    assert r.status_code == 404 and r.json()["error"] == "AccountNotFound"
    r = world.c.post("/xrpc/_admin/relays/check", json={"did": "did:web:nobody.localhost"}, auth=world.admin)
    assert r.status_code == 404 and r.json()["error"] == "AccountNotFound"
    r = world.c.get("/xrpc/_admin/relays", params={"accounts": "maybe"}, auth=world.admin)
    assert r.status_code == 400


# -- the end to end: a WebSocket relay sees the re-announced account's latest commit, via the CLI -----------


def test_late_relay_sees_the_reannounced_accounts_latest_commit_and_the_cli_shows_it(world):
    early = world.relay()
    world.start(PDS_RELAY_MONITOR_INTERVAL="600")
    account = create_account(world.c, "late")
    did = account["did"]
    # Checks run only when asked (interval 600 s, the start check is past): the account's creation
    # pokes the monitor, which asks the relay about it shortly after.
    wait(lambda: world.account_row(early, did), "the new account to be checked", timeout=10)
    for i in range(3):
        world.write_post(account, f"before the relay came {i}")
    latest = world.our_rev(did)
    # A relay that starts consuming now (live tail) never saw this account.
    early.forget(did)
    with early.lock:
        early.checker.repos.pop(did, None)
    env = world.pds.env()
    status = subprocess.run([sys.executable, "-m", "squall.cli", "relay", "status", "--accounts"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert early.url in status.stdout and "status:" in status.stdout
    out = subprocess.run([sys.executable, "-m", "squall.cli", "relay", "announce", account["handle"]], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"re-announced {did}")
    early.wait_for(lambda: early.repo(did) is not None and early.repo(did).rev == latest,
                   what="the relay to hold the latest commit")
    assert early.checker.repos[did].rev == latest  # the #sync's signed commit, checked like a relay
    assert early.check_errors == []
    checked = subprocess.run([sys.executable, "-m", "squall.cli", "relay", "check"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert f"{early.url}  {account['handle']}: ok" in checked.stdout
