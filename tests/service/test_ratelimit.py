"""Rate limits: the limiter with a fake clock, then against a real ``squall serve``.

The server under test trusts proxy headers, so each test speaks from its own client address
through ``X-Forwarded-For`` and the tests' counters stay apart.
"""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request

from squall.ratelimit import GLOBAL_IP, KeyBy, RateLimit, RateLimiter, client_ip, limit_key, tightest
from tests.helpers.accounts import PASSWORD, assert_error, bearer, signup
from tests.helpers.pds import PdsProcess

CREATE_SESSION = "/xrpc/com.atproto.server.createSession"
DESCRIBE = "/xrpc/com.atproto.server.describeServer"
BYPASS_IP = "203.0.113.77"


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the limiter --------------------------------------------------------------------------------


def test_window_allows_points_then_refuses_until_it_rolls_over():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit("t", 3, 60)
    remaining = [limiter.consume(limit, "k").remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = limiter.consume(limit, "k")
    assert refused.exceeded and refused.remaining == 0 and refused.reset_at == clock.now + 60
    clock.now += 59.5
    assert limiter.consume(limit, "k").exceeded
    assert not limiter.consume(limit, "other").exceeded  # counters are per key
    clock.now += 0.5  # the window opened by the first request has ended
    fresh = limiter.consume(limit, "k")
    assert not fresh.exceeded and fresh.remaining == 2 and fresh.reset_at == clock.now + 60


def test_refused_requests_do_not_extend_the_window():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit("t", 1, 10)
    limiter.consume(limit, "k")
    for _ in range(5):
        clock.now += 1.9
        assert limiter.consume(limit, "k").exceeded
    clock.now += 0.5
    assert not limiter.consume(limit, "k").exceeded


def test_expired_keys_are_forgotten():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit("t", 5, 60)
    for i in range(100):
        limiter.consume(limit, f"ip{i}")
        clock.now += 0.1
    assert limiter.tracked_keys(limit) == 100
    clock.now += 55  # the first ~50 windows have ended
    limiter.consume(limit, "late")
    assert 40 < limiter.tracked_keys(limit) < 60
    clock.now += 60
    limiter.consume(limit, "later")
    assert limiter.tracked_keys(limit) == 1


def test_tracked_keys_are_capped_by_forgetting_the_oldest():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, max_keys=10)
    limit = RateLimit("t", 1, 3600)
    limiter.consume(limit, "first")
    assert limiter.consume(limit, "first").exceeded
    for i in range(10):
        clock.now += 1
        limiter.consume(limit, f"ip{i}")
    assert limiter.tracked_keys(limit) == 10
    # "first" was the oldest and was dropped: memory stays bounded at the price of one counter
    assert not limiter.consume(limit, "first").exceeded
    assert limiter.tracked_keys(limit) == 10
    assert limiter.consume(limit, "ip9").exceeded  # a recent key is still counted


def test_limits_are_counted_apart_and_names_are_unique():
    limiter = RateLimiter(clock=FakeClock())
    a, b = RateLimit("a", 1, 60), RateLimit("b", 1, 60)
    limiter.consume(a, "k")
    assert limiter.consume(a, "k").exceeded
    assert not limiter.consume(b, "k").exceeded
    with pytest.raises(ValueError, match="'a'"):
        limiter.consume(RateLimit("a", 2, 60), "k")
    with pytest.raises(ValueError):
        RateLimit("bad", 0, 60)
    with pytest.raises(ValueError):
        RateLimiter(max_keys=0)


def test_headers_and_the_tightest_status():
    clock = FakeClock(1000.2)
    limiter = RateLimiter(clock=clock)
    wide, narrow = RateLimit("wide", 100, 300), RateLimit("narrow", 2, 60)
    statuses = [limiter.consume(wide, "k"), limiter.consume(narrow, "k")]
    best = tightest(statuses)
    assert best.limit is narrow
    assert best.headers(clock()) == {"ratelimit-limit": "2", "ratelimit-remaining": "1",
                                     "ratelimit-reset": "1061", "ratelimit-policy": "2;w=60"}
    limiter.consume(narrow, "k")
    clock.now += 20.5  # 39.5 s left, announced as 40 (never too early)
    refused = tightest([limiter.consume(wide, "k"), limiter.consume(narrow, "k")])
    assert refused.exceeded and refused.limit is narrow
    assert refused.headers(clock())["retry-after"] == "40"
    assert tightest([]) is None


def test_keys():
    ip = "192.0.2.1"
    assert limit_key(GLOBAL_IP, ip=ip) == ip
    login = RateLimit("l", 1, 1, KeyBy.IDENTIFIER_IP)
    assert (limit_key(login, ip=ip, identifier="Alice.Example")
            == limit_key(login, ip=ip, identifier="alice.example"))
    assert limit_key(login, ip=ip, identifier="alice") != limit_key(login, ip="192.0.2.2", identifier="alice")
    assert len(limit_key(login, ip=ip, identifier="x" * 100_000)) < 100  # bounded size
    assert limit_key(RateLimit("d", 1, 1, KeyBy.DID), ip=ip, did="did:web:a") == "did:web:a"
    assert limit_key(RateLimit("d", 1, 1, KeyBy.DID_IP), ip=ip, did="did:web:a") == f"did:web:a {ip}"


def _request(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 1234)})


def test_client_ip_is_the_peer_unless_proxy_headers_are_trusted():
    assert client_ip(_request("10.0.0.1", ["198.51.100.1"]), False) == "10.0.0.1"
    assert client_ip(_request("10.0.0.1", []), True) == "10.0.0.1"
    assert client_ip(_request("10.0.0.1", ["198.51.100.1"]), True) == "198.51.100.1"
    # the leftmost entry is the client's own writing; the rightmost is the proxy's
    assert client_ip(_request("10.0.0.1", ["6.6.6.6, 198.51.100.1"]), True) == "198.51.100.1"
    assert client_ip(_request("10.0.0.1", ["6.6.6.6", "198.51.100.1:5555"]), True) == "198.51.100.1"
    assert client_ip(_request("10.0.0.1", ["[2001:DB8::1]:443"]), True) == "2001:db8::1"


def test_bypass_ips_accept_networks():
    limiter = RateLimiter(bypass_ips=["192.0.2.0/24", "2001:db8::1"])
    assert limiter.bypassed("192.0.2.200") and limiter.bypassed("2001:db8:0::1")
    assert not limiter.bypassed("192.0.3.1") and not limiter.bypassed("not-an-ip")


# -- a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pds_env() -> dict[str, str]:
    return {"PDS_RATE_LIMITS_ENABLED": "true", "PDS_TRUST_PROXY_HEADERS": "true",
            "PDS_RATE_LIMIT_BYPASS_IPS": f"{BYPASS_IP},198.18.0.0/15"}


def _from(ip: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": ip, **(headers or {})}


@pytest.fixture(scope="module")
def account(pds):
    with pds.client() as c:
        r = signup(c, "rlalice", email="rlalice@example.com")
        assert r.status_code == 200, r.text
        return r.json()


def test_login_brute_force_is_refused_per_identifier_and_ip(c, account):
    handle, attacker = account["handle"], "192.0.2.10"
    for expected_remaining in range(29, -1, -1):
        r = c.post(CREATE_SESSION, json={"identifier": handle, "password": "wrong password"},
                   headers=_from(attacker))
        assert_error(r, 401, "AuthenticationRequired")
        assert r.headers["ratelimit-limit"] == "30"
        assert r.headers["ratelimit-policy"] == "30;w=300"
        assert r.headers["ratelimit-remaining"] == str(expected_remaining)
    before = time.time()
    r = c.post(CREATE_SESSION, json={"identifier": handle, "password": PASSWORD}, headers=_from(attacker))
    assert_error(r, 429, "RateLimitExceeded")  # even the right password, once the limit is reached
    assert r.headers["content-type"] == "application/json"
    assert r.headers["ratelimit-remaining"] == "0" and r.headers["ratelimit-limit"] == "30"
    assert 0 < int(r.headers["retry-after"]) <= 300
    assert before + 290 < int(r.headers["ratelimit-reset"]) <= time.time() + 301
    # the counter is per identifier: the login is case-insensitive, so is the counter
    r = c.post(CREATE_SESSION, json={"identifier": handle.upper(), "password": PASSWORD}, headers=_from(attacker))
    assert_error(r, 429, "RateLimitExceeded")
    # …and per address: a client-written leftmost X-Forwarded-For entry does not get around it
    r = c.post(CREATE_SESSION, json={"identifier": handle, "password": PASSWORD},
               headers=_from(f"192.0.2.99, {attacker}"))
    assert_error(r, 429, "RateLimitExceeded")
    # another identifier from the same address, and the same identifier from elsewhere, still log in
    r = c.post(CREATE_SESSION, json={"identifier": "rlalice@example.com", "password": PASSWORD},
               headers=_from(attacker))
    assert r.status_code == 200, r.text
    assert r.headers["ratelimit-remaining"] == "29"
    r = c.post(CREATE_SESSION, json={"identifier": handle, "password": PASSWORD}, headers=_from("192.0.2.11"))
    assert r.status_code == 200, r.text
    assert r.headers["ratelimit-limit"] == "30" and r.headers["ratelimit-remaining"] == "29"


def test_handle_changes_are_limited_per_account(c, account):
    headers = _from("192.0.2.20", bearer(account["accessJwt"]))
    for expected_remaining in range(9, -1, -1):
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": "not a handle"}, headers=headers)
        assert_error(r, 400, "InvalidHandle")
        assert r.headers["ratelimit-policy"] == "10;w=300"
        assert r.headers["ratelimit-remaining"] == str(expected_remaining)
    # per account, not per address
    r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": "not a handle"},
               headers=_from("192.0.2.21", bearer(account["accessJwt"])))
    assert_error(r, 429, "RateLimitExceeded")
    assert r.headers["ratelimit-policy"] == "10;w=300" and int(r.headers["retry-after"]) > 0


def test_global_limit_per_ip_counts_every_call_and_spares_no_admin(c, admin):
    ip = "192.0.2.30"
    for i in range(GLOBAL_IP.points):
        r = c.get(DESCRIBE, headers=_from(ip))
        assert r.status_code == 200, (i, r.text)
    assert r.headers["ratelimit-policy"] == "3000;w=300" and r.headers["ratelimit-remaining"] == "0"
    r = c.get(DESCRIBE, headers=_from(ip))
    assert_error(r, 429, "RateLimitExceeded")
    assert r.headers["ratelimit-policy"] == "3000;w=300" and int(r.headers["retry-after"]) > 0
    # unknown methods and admin calls count too: the admin password must not be guessable freely
    assert_error(c.get("/xrpc/com.example.nothing", headers=_from(ip)), 429, "RateLimitExceeded")
    r = c.get("/xrpc/com.atproto.admin.getInviteCodes", auth=admin, headers=_from(ip))
    assert_error(r, 429, "RateLimitExceeded")
    r = c.get(DESCRIBE, headers=_from("192.0.2.31"))
    assert r.status_code == 200 and r.headers["ratelimit-remaining"] == str(GLOBAL_IP.points - 1)


@pytest.mark.parametrize("ip", [BYPASS_IP, "198.19.3.4"])
def test_bypass_ips_are_not_limited(c, account, ip):
    for _ in range(35):
        r = c.post(CREATE_SESSION, json={"identifier": account["handle"], "password": "wrong password"},
                   headers=_from(ip))
        assert_error(r, 401, "AuthenticationRequired")
        assert "ratelimit-limit" not in r.headers


def test_disabled_by_the_setting(tmp_path):
    with PdsProcess(tmp_path / "data", env_extra={"PDS_RATE_LIMITS_ENABLED": "false"}) as pds, pds.client() as c:
        r = signup(c, "rloff")
        assert r.status_code == 200, r.text
        for _ in range(35):
            r = c.post(CREATE_SESSION, json={"identifier": "rloff.localhost", "password": "wrong password"})
            assert_error(r, 401, "AuthenticationRequired")
            assert "ratelimit-limit" not in r.headers
        r = c.post(CREATE_SESSION, json={"identifier": "rloff.localhost", "password": PASSWORD})
        assert r.status_code == 200, r.text
