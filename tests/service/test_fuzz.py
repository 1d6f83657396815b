"""A bounded fuzz suite over the XRPC surface, driven by the bundled Lexicons (issue #20): for
every registered method, random and near-valid parameters and bodies (hostile strings, wrong
types, stray fields, repeated parameters, junk bytes) from the caller it needs; hostile CARs to
importRepo. Every answer must be a 4xx/2xx (never a 5xx), arrive within the client's timeout
(no hang), and the server's memory must stay bounded.

CI runs ``SQUALL_FUZZ_EXAMPLES`` (default 40) examples per method (160 CARs), about 30 s on 2 cores. A
longer run: ``SQUALL_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest -q tests/service/test_fuzz.py
tests/core/test_fuzz_decoders.py``.
"""

from __future__ import annotations

import base64
import os

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.auth.policy import Auth
from tests.helpers.accounts import create_account
from tests.helpers.lexsample import Subject, method_def, object_strategy, params_strategy
from tests.service.test_auth_matrix import REGISTRY
from tests.core.test_fuzz_decoders import CAR, mutated, nasty_cbor

EXAMPLES = int(os.environ.get("SQUALL_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MAX_RSS_GROWTH = 150 * 1024 * 1024
# deleteSession / refreshSession spend the session's refresh token: fuzzed with a throwaway one.
JUNK_BODIES = st.one_of(st.binary(max_size=256), st.just(b"[" * 5000), st.just(b'{"a":' * 3000),
                        st.just(b"\xff\xfe\x00"), st.just(b'{"repo": "\\ud800"}'), st.just(b"1e999999"))


@pytest.fixture(scope="module")
def world(pds, c, admin):
    owner = create_account(c, "fzowner")
    target = create_account(c, "fztarget")
    basic = base64.b64encode(f"{admin[0]}:{admin[1]}".encode()).decode()
    rss = psutil.Process(pds.proc.pid).memory_info().rss
    yield {"owner": owner, "target": target, "admin": {"Authorization": f"Basic {basic}"}}
    grown = psutil.Process(pds.proc.pid).memory_info().rss - rss
    assert grown < MAX_RSS_GROWTH, f"the server grew by {grown >> 20} MB under fuzzing"


def _credentials(c, world, method) -> tuple[dict[str, str], Subject]:
    if method.auth in (Auth.ADMIN, Auth.ACCESS_OR_ADMIN):
        return world["admin"], Subject(world["target"]["did"], world["target"]["handle"])
    owner = world["owner"]
    if method.auth is Auth.REFRESH:
        r = c.post("/xrpc/com.atproto.server.createSession",
                   json={"identifier": owner["did"], "password": "correct horse battery"})
        return {"Authorization": f"Bearer {r.json()['refreshJwt']}"}, Subject(owner["did"], owner["handle"])
    return owner["headers"], Subject(owner["did"], owner["handle"])


def _check(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        body = r.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body


# deactivateAccount last: a deactivated owner makes later write calls shorter, not wrong
NSIDS = sorted(REGISTRY.nsids(), key=lambda n: (n == "com.atproto.server.deactivateAccount", n))


@pytest.mark.parametrize("nsid", NSIDS)
@FUZZ
@given(data=st.data())
def test_method(c, world, nsid, data):
    method = REGISTRY.get(nsid)
    headers, subject = _credentials(c, world, method)
    params = data.draw(params_strategy(nsid, subject), label="params")
    url = f"/xrpc/{nsid}"
    if method.kind == "query":
        r = c.get(url, params=params, headers=headers)
    elif method.input == "bytes" or method.input is None:
        body = data.draw(st.binary(max_size=512), label="body")
        r = c.post(url, params=params, content=body, headers={**headers, "Content-Type": "application/octet-stream"})
    else:
        schema = (method_def(nsid) or {}).get("input", {}).get("schema")
        strategy = object_strategy(schema, subject, nsid) if schema else st.dictionaries(st.text(max_size=8),
                                                                                          st.text(max_size=8))
        if data.draw(st.integers(0, 9), label="junk?") == 0:
            raw = data.draw(JUNK_BODIES, label="raw body")
            r = c.post(url, params=params, content=raw, headers={**headers, "Content-Type": "application/json"})
        else:
            r = c.post(url, params=params, json=data.draw(strategy, label="body"), headers=headers)
    _check(r)


@pytest.fixture(scope="module")
def own_car(c) -> bytes:
    owner = create_account(c, "fzcar")
    r = c.post("/xrpc/com.atproto.repo.createRecord", headers=owner["headers"], json={
        "repo": owner["did"], "collection": "app.bsky.feed.post",
        "record": {"text": "fuzz", "createdAt": "2024-05-01T12:00:00.000Z"}})
    assert r.status_code == 200, r.text
    r = c.get("/xrpc/com.atproto.sync.getRepo", params={"did": owner["did"]})
    assert r.status_code == 200, r.text
    return r.content


@settings(FUZZ, max_examples=EXAMPLES * 4)
@given(data=st.data())
def test_import_repo_with_hostile_cars(c, world, own_car, data):
    fresh = create_account(c, "fzimport")  # a fresh active account, so a CAR is judged on its merits
    car = data.draw(st.one_of(mutated(own_car), mutated(CAR), nasty_cbor(), st.binary(max_size=2048)), label="car")
    r = c.post("/xrpc/com.atproto.repo.importRepo", content=car,
               headers={**fresh["headers"], "Content-Type": "application/vnd.ipld.car"})
    _check(r)
    assert r.status_code in (400, 413), (r.status_code, r.text[:300])
