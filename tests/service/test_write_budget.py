"""Per-account repository write budgets (the reference's repo-write-hour / repo-write-day: create 3
points, update 2, delete 1, applyWrites the sum) and the OAuth PAR / token limits (issue #20).

The server trusts proxy headers, so each test speaks from its own address through
X-Forwarded-For; one of them is in PDS_RATE_LIMIT_BYPASS_IPS.
"""

from __future__ import annotations

import itertools

import pytest

from squall.ratelimit import OAUTH_PAR, OAUTH_TOKEN, REPO_WRITE, RateLimit, RateLimiter, apply_writes_points
from tests.helpers.accounts import assert_error, create_account

HOUR_POINTS = 10
BYPASS_IP = "203.0.113.99"
_ips = itertools.count(1)


@pytest.fixture(scope="module")
def pds_env() -> dict[str, str]:
    return {"PDS_RATE_LIMITS_ENABLED": "true", "PDS_TRUST_PROXY_HEADERS": "true",
            "PDS_RATE_LIMIT_BYPASS_IPS": BYPASS_IP, "PDS_RATE_LIMIT_REPO_WRITE_HOUR": str(HOUR_POINTS)}


def from_ip(ip: str | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": ip or f"198.51.100.{next(_ips)}"}


def post(text: str = "hi") -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-05-01T12:00:00.000Z"}


def create(c, user, headers):
    return c.post("/xrpc/com.atproto.repo.createRecord", headers={**user["headers"], **headers},
                  json={"repo": user["did"], "collection": "app.bsky.feed.post", "record": post()})


def test_the_limiter_counts_points():
    limiter = RateLimiter(clock=lambda: 1000.0, points={"w": 10})
    limit = RateLimit("w", 99, 60)  # the operator's 10 points win over the declared 99
    assert [limiter.consume(limit, "k", 3).remaining for _ in range(3)] == [7, 4, 1]
    refused = limiter.consume(limit, "k", 3)
    assert refused.exceeded and refused.remaining == 1
    assert limiter.consume(limit, "k", 1).remaining == 0  # a cheaper write still fits
    assert apply_writes_points({"writes": [{"$type": "com.atproto.repo.applyWrites#create"},
                                           {"$type": "com.atproto.repo.applyWrites#update"},
                                           {"$type": "com.atproto.repo.applyWrites#delete"}]}) == 6
    assert apply_writes_points({"writes": "nonsense"}) == 1
    assert [(limit.points, limit.window) for limit in REPO_WRITE] == [(5000, 3600), (35000, 86400)]
    assert OAUTH_PAR.window == OAUTH_TOKEN.window == 300


def test_writes_spend_the_budget_then_get_429_with_headers(c):
    user = create_account(c, "budget")
    ip = from_ip()
    uris = []
    for expected_remaining in (7, 4, 1):
        r = create(c, user, ip)
        assert r.status_code == 200, r.text
        assert r.headers["ratelimit-remaining"] == str(expected_remaining)
        uris.append(r.json()["uri"])
    r = create(c, user, ip)  # 3 more points do not fit in the 1 left
    assert_error(r, 429, "RateLimitExceeded")
    assert r.headers["ratelimit-limit"] == str(HOUR_POINTS)
    assert r.headers["ratelimit-remaining"] == "1"
    assert r.headers["ratelimit-policy"] == f"{HOUR_POINTS};w=3600"
    assert 3500 <= int(r.headers["retry-after"]) <= 3600
    rkey = uris[0].rsplit("/", 1)[1]
    delete = {"repo": user["did"], "collection": "app.bsky.feed.post", "rkey": rkey}
    r = c.post("/xrpc/com.atproto.repo.deleteRecord", headers={**user["headers"], **ip}, json=delete)
    assert r.status_code == 200, r.text  # a delete costs 1
    assert r.headers["ratelimit-remaining"] == "0"
    r = c.post("/xrpc/com.atproto.repo.deleteRecord", headers={**user["headers"], **from_ip()}, json=delete)
    assert_error(r, 429, "RateLimitExceeded")  # the budget is the account's, whatever its address
    # another account has its own budget
    other = create_account(c, "budget")
    assert create(c, other, ip).status_code == 200


def test_apply_writes_costs_the_sum_of_its_writes(c):
    user = create_account(c, "budgetaw")
    ip = from_ip()

    def apply(n_creates: int):
        writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post",
                   "value": post(str(i))} for i in range(n_creates)]
        return c.post("/xrpc/com.atproto.repo.applyWrites", headers={**user["headers"], **ip},
                      json={"repo": user["did"], "writes": writes})

    r = apply(3)
    assert r.status_code == 200, r.text
    assert r.headers["ratelimit-remaining"] == "1"
    assert_error(apply(1), 429, "RateLimitExceeded")


def test_the_bypass_addresses_have_no_write_budget(c):
    user = create_account(c, "budgetbp")
    for _ in range(HOUR_POINTS):
        r = create(c, user, from_ip(BYPASS_IP))
        assert r.status_code == 200, r.text
        assert "ratelimit-remaining" not in r.headers


@pytest.mark.parametrize("path, limit", [("/oauth/par", OAUTH_PAR), ("/oauth/token", OAUTH_TOKEN)])
def test_oauth_par_and_token_are_rate_limited(c, path, limit):
    ip = from_ip()
    for _ in range(limit.points):
        r = c.post(path, data={"client_id": "x"}, headers=ip)
        assert r.status_code in (400, 401), r.text
    r = c.post(path, data={"client_id": "x"}, headers=ip)
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "invalid_request"
    assert int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-limit"] == str(limit.points)
    assert c.post(path, data={"client_id": "x"}, headers=from_ip(BYPASS_IP)).status_code != 429
