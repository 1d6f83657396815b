"""Revoking an app password or changing the password cuts every access token issued under it at
once, not when it expires two hours later (issue #20, finding 5; the reference PDS waits).
Revoking an OAuth grant already ends its tokens at once (test_oauth_flow); a password change
ends the account's OAuth grants too."""

from __future__ import annotations

import pytest

from tests.helpers.accounts import PASSWORD, assert_error, bearer, create_account
from tests.helpers.oauth_client import OAuthClient, client_metadata, metadata_host

GET_SESSION = "/xrpc/com.atproto.server.getSession"
REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


def app_password(c, user, name: str, privileged: bool = False) -> str:
    r = c.post("/xrpc/com.atproto.server.createAppPassword", headers=user["headers"],
               json={"name": name, "privileged": privileged})
    assert r.status_code == 200, r.text
    return r.json()["password"]


def login(c, identifier: str, password: str) -> dict:
    r = c.post("/xrpc/com.atproto.server.createSession", json={"identifier": identifier, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def works(c, token: str) -> bool:
    r = c.get(GET_SESSION, headers=bearer(token))
    if r.status_code == 200:
        return True
    assert_error(r, 400, "ExpiredToken")
    assert r.json()["message"] == "Token has been revoked"
    return False


def test_revoking_an_app_password_cuts_its_access_tokens_at_once(c):
    user = create_account(c, "revapp")
    phone = login(c, user["handle"], app_password(c, user, "phone"))
    laptop = login(c, user["handle"], app_password(c, user, "laptop", privileged=True))
    assert works(c, phone["accessJwt"]) and works(c, laptop["accessJwt"])
    r = c.post("/xrpc/com.atproto.server.revokeAppPassword", headers=user["headers"], json={"name": "phone"})
    assert r.status_code == 200, r.text
    assert not works(c, phone["accessJwt"])  # was valid for up to 2 h more
    # its refresh token was already refused (as the reference)
    r = c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(phone["refreshJwt"]))
    assert_error(r, 400, "ExpiredToken")
    # the other app password and the full session are untouched
    assert works(c, laptop["accessJwt"]) and works(c, user["accessJwt"])
    # an app password made again under the same name works
    again = login(c, user["handle"], app_password(c, user, "phone"))
    assert works(c, again["accessJwt"])
    assert not works(c, phone["accessJwt"])


def test_changing_the_password_cuts_every_access_token_at_once(c, admin, host):
    user = create_account(c, "revpw")
    app = login(c, user["handle"], app_password(c, user, "app"))
    client_id = host.client_id("revpw")
    host.document = client_metadata(client_id, redirect_uri=REDIRECT)
    oauth = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    oauth.login(identifier=user["handle"], password=PASSWORD)
    assert oauth.xrpc("GET", "com.atproto.server.getSession").status_code == 200
    assert works(c, user["accessJwt"]) and works(c, app["accessJwt"])
    r = c.post("/xrpc/com.atproto.admin.updateAccountPassword", auth=admin,
               json={"did": user["did"], "password": "a brand new password"})
    assert r.status_code == 200, r.text
    assert not works(c, user["accessJwt"])
    assert not works(c, app["accessJwt"])
    r = oauth.xrpc("GET", "com.atproto.server.getSession")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    # signing in with the new password right away gives a token that works
    fresh = login(c, user["handle"], "a brand new password")
    assert works(c, fresh["accessJwt"])
    # another account is untouched
    other = create_account(c, "revpw")
    assert works(c, other["accessJwt"])
