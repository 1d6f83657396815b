"""atproto OAuth against a real server: metadata, PAR + DPoP nonce, the authorization page, code
exchange, DPoP-bound XRPC calls, refresh rotation, replay detection and revocation."""

from __future__ import annotations

import pytest

from tests.helpers.accounts import PASSWORD, create_account, db_rows
from tests.helpers.oauth_client import OAuthClient, client_metadata, metadata_host


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


@pytest.fixture(scope="module")
def user(c):
    return create_account(c, "oauth")


def new_client(c, host, variant: str = "main", **meta) -> OAuthClient:
    client_id = host.client_id(variant)
    redirect = "http://127.0.0.1:9/callback"
    host.document = client_metadata(client_id, redirect_uri=redirect, **meta)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=redirect)
    client.discover()
    return client


def test_metadata_documents(c, pds):
    prm = c.get("/.well-known/oauth-protected-resource").json()
    issuer = f"http://localhost:{pds.port}"
    assert prm["resource"] == issuer and prm["authorization_servers"] == [issuer]
    asm = c.get("/.well-known/oauth-authorization-server").json()
    assert asm["issuer"] == issuer
    assert asm["pushed_authorization_request_endpoint"] == f"{issuer}/oauth/par"
    assert asm["token_endpoint"] == f"{issuer}/oauth/token"
    assert asm["authorization_endpoint"] == f"{issuer}/oauth/authorize"
    assert {"atproto", "transition:generic", "transition:chat.bsky"} <= set(asm["scopes_supported"])
    assert asm["response_types_supported"] == ["code"]
    assert asm["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert asm["code_challenge_methods_supported"] == ["S256"]
    assert asm["token_endpoint_auth_methods_supported"] == ["none", "private_key_jwt"]
    assert asm["dpop_signing_alg_values_supported"] == ["ES256"]
    assert asm["require_pushed_authorization_requests"] is True
    assert asm["authorization_response_iss_parameter_supported"] is True
    assert asm["client_id_metadata_document_supported"] is True


def test_full_flow(c, pds, host, user):
    client = new_client(c, host)
    # First PAR without a nonce: the server asks for one, the client retries.
    r = client.par(retry=False)
    assert_oauth_error(r, 400, "use_dpop_nonce")
    assert r.headers["dpop-nonce"]
    client.nonce = r.headers["dpop-nonce"]
    hits_before = host.hits
    r = client.par()
    assert r.status_code == 201, r.text
    assert host.hits >= hits_before  # metadata came from the loopback host (cached afterwards)
    body = r.json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:") and 0 < body["expires_in"] <= 300

    page = client.authorize_page(body["request_uri"])
    assert page.status_code == 200
    assert "Squall test client" in page.text and "csrf_token" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY"

    r = client.submit(body["request_uri"], identifier=user["handle"], password=PASSWORD, page=page)
    params = client.callback_params(r)
    assert params["state"] == client.state and params["iss"] == client.server["issuer"]

    r = client.exchange(params["code"])
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "DPoP" and tokens["sub"] == user["did"]
    assert tokens["scope"] == "atproto transition:generic" and 0 < tokens["expires_in"] <= 3600
    assert r.headers["cache-control"] == "no-store"

    # The code is single-use; a second exchange also revokes the grant it produced.
    again = client.exchange(params["code"])
    assert_oauth_error(again, 400, "invalid_grant")
    r = client.xrpc("GET", "com.atproto.server.getSession")
    assert r.status_code == 401

    tokens = client.login(identifier=user["handle"], password=PASSWORD)
    r = client.xrpc("POST", "com.atproto.repo.createRecord",
                    json={"repo": user["did"], "collection": "app.bsky.feed.post",
                          "record": {"$type": "app.bsky.feed.post", "text": "via oauth",
                                     "createdAt": "2024-01-01T00:00:00.000Z"}})
    assert r.status_code == 200, r.text
    uri = r.json()["uri"]
    assert uri.startswith(f"at://{user['did']}/app.bsky.feed.post/")
    assert r.headers.get("dpop-nonce")
    r = client.xrpc("GET", "com.atproto.server.getSession")
    assert r.status_code == 200 and r.json()["did"] == user["did"]

    # Refresh rotates; the old refresh token is refused and its reuse revokes the session.
    old_refresh, old_access = client.refresh_token, client.access_token
    r = client.refresh()
    assert r.status_code == 200, r.text
    assert client.refresh_token != old_refresh and client.access_token != old_access
    assert client.xrpc("GET", "com.atproto.server.getSession").status_code == 200
    r = client.refresh(old_refresh)
    assert_oauth_error(r, 400, "invalid_grant")
    assert client.xrpc("GET", "com.atproto.server.getSession").status_code == 401
    assert_oauth_error(client.refresh(), 400, "invalid_grant")

    # Revocation ends a fresh session at once.
    client.login(identifier=user["did"], password=PASSWORD)
    assert client.xrpc("GET", "com.atproto.server.getSession").status_code == 200
    assert client.revoke(client.refresh_token).status_code == 200
    r = client.xrpc("GET", "com.atproto.server.getSession")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert_oauth_error(client.refresh(), 400, "invalid_grant")
    # Stored secrets are hashes.
    rows = db_rows(pds, "SELECT refresh_hash FROM oauth_session")
    assert all(len(row["refresh_hash"]) == 64 for row in rows)


def test_deny_redirects_with_access_denied(c, host, user):
    client = new_client(c, host)
    r = client.par()
    assert r.status_code == 201, r.text
    request_uri = r.json()["request_uri"]
    params = client.callback_params(client.submit(request_uri, identifier="", password="", decision="deny"))
    assert params["error"] == "access_denied" and params["state"] == client.state
    assert params["iss"] == client.server["issuer"] and "code" not in params
    assert client.authorize_page(request_uri).status_code == 400  # the request is gone


def test_legacy_bearer_still_works(c, user):
    r = c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"])
    assert r.status_code == 200 and r.json()["did"] == user["did"]


def assert_oauth_error(r, status: int, error: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    assert body.get("error_description")
    return body
