"""The OAuth sign-in form shares createSession's password-attempt limits (per identifier + IP), so
a password guesser gains nothing by switching doors."""

from __future__ import annotations

import pytest

from tests.helpers.accounts import PASSWORD, create_account
from tests.helpers.oauth_client import OAuthClient, client_metadata, metadata_host

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def pds_env() -> dict[str, str]:
    return {"PDS_RATE_LIMITS_ENABLED": "true"}


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


def test_sign_in_form_is_limited_with_create_session(c, host):
    user = create_account(c, "oauthrl")
    other = create_account(c, "oauthrl2")
    client_id = host.client_id("rl")
    host.document = client_metadata(client_id, redirect_uri=REDIRECT)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    client.discover()
    # 30 wrong passwords through createSession use up the 5-minute budget for this identifier + IP.
    for _ in range(30):
        r = c.post("/xrpc/com.atproto.server.createSession",
                   json={"identifier": user["handle"], "password": "wrong-password"})
        assert r.status_code == 401, r.text
    r = client.par()
    assert r.status_code == 201, r.text
    page = client.submit(r.json()["request_uri"], identifier=user["handle"], password=PASSWORD)
    assert page.status_code == 429
    assert "Too many sign-in attempts" in page.text
    # the limit is per identifier: another account signs in through the same form
    r = client.par()
    assert r.status_code == 201, r.text
    ok = client.submit(r.json()["request_uri"], identifier=other["handle"], password=PASSWORD)
    assert "code" in client.callback_params(ok)
