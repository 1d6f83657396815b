"""The SSRF guard on proxied calls, against a real ``squall serve`` with dev mode OFF.

The server itself still listens on loopback (tests may only use 127.0.0.1), but it is configured
as production would be: https only, public addresses only. Its AppView is configured at
``https://127.0.0.1:<port>`` where a listener counts connections, and an ``atproto-proxy``
header names a DID whose (cached) document points at loopback too. Neither may be contacted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import pytest

from tests.helpers.accounts import assert_error, bearer, signup
from tests.helpers.fake_services import ConnectionCounter
from tests.helpers.pds import PdsProcess

APPVIEW_DID = "did:web:appview.example.com"
CACHED_DID = "did:plc:ssrftestaaaaaaaaaaaaaaaa"


@pytest.fixture(scope="module")
def counter():
    counter = ConnectionCounter()
    yield counter
    counter.close()


@pytest.fixture(scope="module")
def pds(tmp_path_factory, counter):
    env = {"PDS_DEV_MODE": "false", "PDS_BSKY_APP_VIEW_URL": f"https://127.0.0.1:{counter.port}",
           "PDS_BSKY_APP_VIEW_DID": APPVIEW_DID}
    with PdsProcess(tmp_path_factory.mktemp("ssrf") / "data", env_extra=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def token(pds):
    with pds.client() as c:
        r = signup(c, "mallory")
        assert r.status_code == 200, r.text
        return r.json()["accessJwt"]


def seed_did_cache(pds: PdsProcess, did: str, doc: dict) -> None:
    # The document as if it had been resolved a moment ago (the PLC directory is not reachable here).
    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", timeout=10)) as conn:
        conn.execute("INSERT OR REPLACE INTO did_cache (did, doc, updated_at) VALUES (?, ?, ?)",
                     (did, json.dumps(doc), int(time.time())))
        conn.commit()


def test_default_appview_on_loopback_is_refused(pds, token, counter):
    with pds.client() as c:
        body = assert_error(c.get("/xrpc/app.bsky.feed.getTimeline", headers=bearer(token)), 502, "UpstreamFailure")
    assert "not allowed" in body["message"]
    assert counter.count == 0


def test_proxy_header_to_a_document_pointing_at_loopback_is_refused(pds, token, counter):
    seed_did_cache(pds, CACHED_DID, {
        "id": CACHED_DID,
        "service": [{"id": "#evil", "type": "BskyAppView", "serviceEndpoint": f"https://127.0.0.1:{counter.port}"},
                    {"id": "#metadata", "type": "BskyAppView", "serviceEndpoint": "https://169.254.169.254"},
                    {"id": "#plain", "type": "BskyAppView", "serviceEndpoint": f"http://127.0.0.1:{counter.port}"}],
    })
    with pds.client() as c:
        for service_id in ("evil", "metadata", "plain"):
            r = c.get("/xrpc/app.bsky.feed.getTimeline",
                      headers={**bearer(token), "atproto-proxy": f"{CACHED_DID}#{service_id}"})
            body = assert_error(r, 502, "UpstreamFailure")
            assert "not allowed" in body["message"], service_id
    assert counter.count == 0


def test_local_account_document_is_not_a_way_in(pds, token, counter):
    # A local did:web account's document names this PDS (https://localhost): loopback, so refused.
    with pds.client() as c:
        r = c.get("/xrpc/com.example.thing.get",
                  headers={**bearer(token), "atproto-proxy": "did:web:mallory.localhost#atproto_pds"})
    body = assert_error(r, 502, "UpstreamFailure")
    assert "not allowed" in body["message"]
