"""Sign up and log in with the Python ``atproto`` SDK, a client written by others."""

from __future__ import annotations

import pytest
from atproto import Client, models
from atproto_client.exceptions import BadRequestError, UnauthorizedError

PASSWORD = "sdk-password-1234"


@pytest.fixture(scope="module")
def pds_env():
    # The SDK follows the PDS endpoint of the DID document; serving on 127.0.0.1 keeps it on loopback.
    return {"PDS_HOSTNAME": "127.0.0.1", "PDS_SERVICE_HANDLE_DOMAINS": ".test"}


def test_sdk_signup_login_refresh_and_app_password(pds):
    client = Client(base_url=pds.url)
    described = client.com.atproto.server.describe_server()
    assert described.available_user_domains == [".test"] and described.invite_code_required is False

    created = client.com.atproto.server.create_account(
        models.ComAtprotoServerCreateAccount.Data(handle="sdkuser.test", email="sdk@example.com", password=PASSWORD)
    )
    assert created.handle == "sdkuser.test" and created.did == "did:web:sdkuser.test"

    client.login("sdkuser.test", PASSWORD, fetch_bsky_profile=False)
    me = client.com.atproto.server.get_session()
    assert me.did == created.did and me.handle == "sdkuser.test" and me.email == "sdk@example.com"
    assert me.active is True

    refresh_jwt = created.refresh_jwt  # the session createAccount returned
    refreshed = client.com.atproto.server.refresh_session(headers={"Authorization": f"Bearer {refresh_jwt}"})
    assert refreshed.did == created.did and refreshed.refresh_jwt != refresh_jwt
    with pytest.raises(BadRequestError) as err:  # the spent refresh token is refused
        client.com.atproto.server.refresh_session(headers={"Authorization": f"Bearer {refresh_jwt}"})
    assert err.value.response.content.error == "ExpiredToken"

    app = client.com.atproto.server.create_app_password(
        models.ComAtprotoServerCreateAppPassword.Data(name="sdk-app")
    )
    listed = client.com.atproto.server.list_app_passwords()
    assert [p.name for p in listed.passwords] == ["sdk-app"]

    other = Client(base_url=pds.url)
    other.login("sdk@example.com", app.password, fetch_bsky_profile=False)
    assert other.com.atproto.server.get_session().did == created.did

    with pytest.raises(UnauthorizedError):
        Client(base_url=pds.url).login("sdkuser.test", "not the password", fetch_bsky_profile=False)
