"""E-mail two-factor on the OAuth sign-in page, against a real server and SMTP server: an account
with sign-in codes on gets a code by mail after the right password, the page asks for it, a wrong
code is refused, and the right one (once) completes the authorization."""

from __future__ import annotations

import re

import pytest

from tests.helpers.accounts import PASSWORD, create_account
from tests.helpers.oauth_client import PASSWORD_FIELD, OAuthClient, client_metadata, metadata_host
from tests.helpers.smtp import SmtpCapture, token_in


@pytest.fixture(scope="module")
def smtp():
    with SmtpCapture("plain") as server:
        yield server


@pytest.fixture(scope="module")
def pds_env(smtp):
    return {"PDS_EMAIL_SMTP_URL": smtp.url(), "PDS_EMAIL_FROM_ADDRESS": "pds@example.test"}


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


def _with_sign_in_codes(c, smtp) -> dict:
    user = create_account(c, "oauth2fa")
    address = f"{user['name']}@example.com"
    assert c.post("/xrpc/com.atproto.server.requestEmailConfirmation", headers=user["headers"]).status_code == 200
    r = c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"],
               json={"email": address, "token": token_in(smtp.wait_for(address)[-1])})
    assert r.status_code == 200, r.text
    assert c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"]).json()["tokenRequired"]
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
               json={"email": address, "emailAuthFactor": True, "token": token_in(smtp.wait_for(address, 2)[-1])})
    assert r.status_code == 200, r.text
    return {**user, "address": address}


def _post(client: OAuthClient, request_uri: str, page, **fields):
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    data = {"request_uri": request_uri, "client_id": client.client_id, "decision": "allow", "csrf_token": csrf,
            **fields}
    return client.http.post(client.path_of(client.server["authorization_endpoint"]), data=data,
                            follow_redirects=False)


def test_oauth_sign_in_asks_for_the_mailed_code(c, host, smtp):
    user = _with_sign_in_codes(c, smtp)
    client_id = host.client_id("twofa")
    redirect = "http://127.0.0.1:9/callback"
    host.document = client_metadata(client_id, redirect_uri=redirect)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=redirect)
    client.discover()
    r = client.par()
    assert r.status_code == 201, r.text
    request_uri = r.json()["request_uri"]
    page = client.authorize_page(request_uri)
    assert 'name="sign_in_code"' not in page.text

    # The right password: no code yet, so one is mailed and the page asks for it.
    r = _post(client, request_uri, page, identifier=user["handle"], **{PASSWORD_FIELD: PASSWORD})
    assert r.status_code == 401 and 'name="sign_in_code"' in r.text and "sign-in code" in r.text
    code = token_in(smtp.wait_for(user["address"], 3)[-1])
    # A wrong code: refused, the page asks again.
    r = _post(client, request_uri, r, identifier=user["handle"], sign_in_code="AAAAA-BBBBB",
              **{PASSWORD_FIELD: PASSWORD})
    assert r.status_code == 401 and "not right" in r.text
    # The right code with a wrong password: refused as a wrong password (the code is not used up).
    r = _post(client, request_uri, r, identifier=user["handle"], sign_in_code=code, **{PASSWORD_FIELD: "nope nope"})
    assert r.status_code == 401 and "Wrong handle, e-mail or password" in r.text
    r = _post(client, request_uri, r, identifier=user["handle"], sign_in_code=code.lower(),
              **{PASSWORD_FIELD: PASSWORD})
    params = client.callback_params(r)
    r = client.exchange(params["code"])
    assert r.status_code == 200 and r.json()["sub"] == user["did"], r.text
    assert len(smtp.to(user["address"])) == 3  # one code, no more
