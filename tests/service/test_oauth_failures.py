"""atproto OAuth refusals: PKCE, DPoP proofs (method, URL, token hash, key, replay), expired and
unbound tokens, redirect URIs, client metadata, CSRF, wrong passwords and scope limits."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from joserfc.jwk import ECKey

from squall.oauth.tokens import AccessTokens
from tests.helpers.accounts import PASSWORD, create_account
from tests.helpers.oauth_client import OAuthClient, client_metadata, metadata_host

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


@pytest.fixture(scope="module")
def user(c):
    return create_account(c, "oauthf")


def new_client(c, host, variant: str, **meta) -> OAuthClient:
    client_id = host.client_id(variant)
    host.document = client_metadata(client_id, redirect_uri=REDIRECT, **meta)
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    client.discover()
    return client


@pytest.fixture(scope="module")
def session(c, host, user) -> OAuthClient:
    client = new_client(c, host, "session")
    client.login(identifier=user["handle"], password=PASSWORD)
    return client


def oauth_error(r, status: int, error: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    assert body["error_description"]
    return body["error_description"]


def approved_code(client: OAuthClient, user) -> str:
    r = client.par()
    assert r.status_code == 201, r.text
    return client.callback_params(client.submit(r.json()["request_uri"], identifier=user["handle"],
                                                password=PASSWORD))["code"]


# -- PKCE -----------------------------------------------------------------------------------------


def test_par_requires_pkce_s256(c, host):
    client = new_client(c, host, "pkce")
    assert "PKCE" in oauth_error(client.par(code_challenge=None, code_challenge_method=None), 400, "invalid_request")
    oauth_error(client.par(code_challenge_method="plain"), 400, "invalid_request")
    oauth_error(client.par(code_challenge="short"), 400, "invalid_request")


def test_wrong_or_missing_code_verifier(c, host, user):
    client = new_client(c, host, "verifier")
    code = approved_code(client, user)
    oauth_error(client.exchange(code, verifier="x" * 43), 400, "invalid_grant")
    # A wrong verifier spends the code: the right one no longer works either.
    oauth_error(client.exchange(code), 400, "invalid_grant")
    code = approved_code(client, user)
    oauth_error(client.exchange(code, verifier=""), 400, "invalid_grant")


def test_token_dpop_key_must_match_par(c, host, user):
    client = new_client(c, host, "jkt")
    code = approved_code(client, user)
    desc = oauth_error(client.exchange(code, key=ECKey.generate_key("P-256")), 400, "invalid_dpop_proof")
    assert "DPoP key" in desc


def test_par_requires_a_dpop_proof(c, host):
    client = new_client(c, host, "noproof")
    r = c.post("/oauth/par", data={"client_id": client.client_id, "response_type": "code"})
    oauth_error(r, 400, "invalid_dpop_proof")
    assert r.headers["dpop-nonce"]


# -- DPoP at the resource server --------------------------------------------------------------------


def htu(client: OAuthClient, nsid: str) -> str:
    return f"{client.resource}/xrpc/{nsid}"


def assert_dpop_refused(r, error: str = "invalid_dpop_proof") -> None:
    assert r.status_code == 401, r.text
    assert f'error="{error}"' in r.headers["www-authenticate"]
    assert r.headers["dpop-nonce"]


def test_resource_proof_checks(session):
    nsid = "com.atproto.server.getSession"
    token = session.access_token
    assert session.xrpc("GET", nsid).status_code == 200
    bad_htm = session.proof("POST", htu(session, nsid), access_token=token)
    assert_dpop_refused(session.xrpc("GET", nsid, proof=bad_htm, retry=False))
    bad_htu = session.proof("GET", htu(session, "com.atproto.server.describeServer"), access_token=token)
    assert_dpop_refused(session.xrpc("GET", nsid, proof=bad_htu, retry=False))
    bad_ath = session.proof("GET", htu(session, nsid), access_token=token + "x")
    assert_dpop_refused(session.xrpc("GET", nsid, proof=bad_ath, retry=False))
    no_ath = session.proof("GET", htu(session, nsid), ath=None)
    assert_dpop_refused(session.xrpc("GET", nsid, proof=no_ath, retry=False))
    other_key = session.proof("GET", htu(session, nsid), access_token=token, key=ECKey.generate_key("P-256"))
    assert_dpop_refused(session.xrpc("GET", nsid, proof=other_key, retry=False))
    stale = session.proof("GET", htu(session, nsid), access_token=token, iat=int(time.time()) - 3600)
    assert_dpop_refused(session.xrpc("GET", nsid, proof=stale, retry=False))
    bad_nonce = session.proof("GET", htu(session, nsid), access_token=token, nonce="not-a-server-nonce")
    assert_dpop_refused(session.xrpc("GET", nsid, proof=bad_nonce, retry=False), "use_dpop_nonce")
    # A query string is not part of htu.
    proof = session.proof("GET", htu(session, "com.atproto.repo.describeRepo"), access_token=token)
    r = session.xrpc("GET", "com.atproto.repo.describeRepo", proof=proof, params={"repo": session.sub})
    assert r.status_code == 200, r.text


def test_replayed_proof_refused(session):
    nsid = "com.atproto.server.getSession"
    proof = session.proof("GET", htu(session, nsid), access_token=session.access_token)
    assert session.xrpc("GET", nsid, proof=proof, retry=False).status_code == 200
    r = session.xrpc("GET", nsid, proof=proof, retry=False)
    assert_dpop_refused(r)
    assert "already been used" in r.json()["message"]


def test_token_without_proof_or_as_bearer(c, session):
    r = c.get("/xrpc/com.atproto.server.getSession", headers={"Authorization": f"DPoP {session.access_token}"})
    assert_dpop_refused(r)
    r = c.get("/xrpc/com.atproto.server.getSession", headers={"Authorization": f"Bearer {session.access_token}"})
    assert r.status_code in (400, 401) and r.json()["error"] == "InvalidToken"


def test_expired_token_refused(pds, session):
    secret = (pds.data_dir / "secrets" / "jwt_secret").read_text().strip()
    past = AccessTokens(secret, issuer=session.resource, audience="did:web:localhost",
                        clock=lambda: time.time() - 3600)
    claims = session.xrpc("GET", "com.atproto.server.getSession")
    assert claims.status_code == 200
    token, _ = past.mint(did=session.sub, scope="atproto transition:generic", jkt=session.key.thumbprint(),
                         session_id="any", client_id=session.client_id)
    r = session.xrpc("GET", "com.atproto.server.getSession", token=token)
    assert_dpop_refused(r, "invalid_token")
    # Issue #17: the spec's code in the body too (it was the legacy "ExpiredToken").
    assert r.json()["error"] == "invalid_token"
    # The same forgery, unexpired but for a session that does not exist, is refused too.
    fresh = AccessTokens(secret, issuer=session.resource, audience="did:web:localhost")
    token, _ = fresh.mint(did=session.sub, scope="atproto transition:generic", jkt=session.key.thumbprint(),
                          session_id="no-such-session", client_id=session.client_id)
    assert_dpop_refused(session.xrpc("GET", "com.atproto.server.getSession", token=token), "invalid_token")


# -- scopes ---------------------------------------------------------------------------------------


def test_generic_scope_cannot_manage_the_account(session):
    r = session.xrpc("POST", "com.atproto.server.createAppPassword", json={"name": "sneaky"})
    assert r.status_code == 403, r.text
    r = session.xrpc("POST", "com.atproto.server.deactivateAccount", json={})
    assert r.status_code == 403, r.text


def test_atproto_only_scope_has_no_api_access(c, host, user):
    client = new_client(c, host, "atproto-only", scope="atproto")
    tokens = client.login(identifier=user["handle"], password=PASSWORD, scope="atproto")
    assert tokens["scope"] == "atproto"
    # Issue #17 (permission spec): atproto alone still tells who the user is (no e-mail address),
    # and nothing more; the refusal names the missing scope as the reference does.
    r = client.xrpc("GET", "com.atproto.server.getSession")
    assert r.status_code == 200 and r.json()["did"] == user["did"] and "email" not in r.json()
    r = client.xrpc("POST", "com.atproto.repo.createRecord",
                    json={"repo": user["did"], "collection": "app.bsky.feed.post",
                          "record": {"text": "no", "createdAt": "2024-01-01T00:00:00Z"}})
    assert r.status_code == 403 and r.json()["error"] == "ScopeMissingError", r.text


def test_scope_must_be_declared_by_the_client(c, host):
    client = new_client(c, host, "scope-decl", scope="atproto transition:generic")
    oauth_error(client.par(scope="atproto transition:chat.bsky"), 400, "invalid_scope")
    oauth_error(client.par(scope="transition:generic"), 400, "invalid_scope")


# -- clients and redirects ------------------------------------------------------------------------------


def test_unregistered_redirect_uri(c, host):
    client = new_client(c, host, "redirect")
    desc = oauth_error(client.par(redirect_uri="https://evil.example/cb"), 400, "invalid_request")
    assert "redirect_uri" in desc
    # A registered loopback redirect may change only its port.
    assert client.par(redirect_uri="http://127.0.0.1:4567/callback").status_code == 201
    oauth_error(client.par(redirect_uri="http://127.0.0.1:9/other"), 400, "invalid_request")


def test_client_metadata_unreachable_or_invalid(c, host):
    client = new_client(c, host, "gone")
    host.status = 404
    try:
        assert "404" in oauth_error(client.par(), 400, "invalid_client_metadata")
    finally:
        host.status = 200
    client = new_client(c, host, "nodpop", dpop_bound_access_tokens=False)
    assert "dpop_bound" in oauth_error(client.par(), 400, "invalid_client_metadata")
    client = new_client(c, host, "mismatch")
    host.document["client_id"] = "https://someone.else.example/meta.json"
    assert "client_id" in oauth_error(client.par(), 400, "invalid_client_metadata")
    client = new_client(c, host, "noatproto", scope="transition:generic")
    oauth_error(client.par(), 400, "invalid_client_metadata")
    client = new_client(c, host, "secret", token_endpoint_auth_method="client_secret_basic")
    oauth_error(client.par(), 400, "invalid_client_metadata")
    unreachable = OAuthClient(http=c, client_id="http://127.0.0.1:9/client-metadata.json", redirect_uri=REDIRECT)
    unreachable.discover()
    oauth_error(unreachable.par(), 400, "invalid_client_metadata")


def test_loopback_development_client(c, user):
    client_id = f"http://localhost?redirect_uri={quote(REDIRECT, safe='')}&scope={quote('atproto transition:generic')}"
    client = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    client.login(identifier=user["handle"], password=PASSWORD)
    assert client.xrpc("GET", "com.atproto.server.getSession").json()["did"] == user["did"]
    bad = OAuthClient(http=c, client_id="http://localhost:8080/?redirect_uri=x", redirect_uri=REDIRECT)
    bad.discover()
    oauth_error(bad.par(), 400, "invalid_client")


# -- the authorization page -----------------------------------------------------------------------------


def test_consent_post_needs_csrf_token(c, host, user):
    client = new_client(c, host, "csrf")
    request_uri = client.par().json()["request_uri"]
    r = client.submit(request_uri, identifier=user["handle"], password=PASSWORD, csrf=None)
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.submit(request_uri, identifier=user["handle"], password=PASSWORD, csrf="forged-value")
    assert r.status_code == 403
    # The request survives a forged POST: the real form still works.
    assert client.submit(request_uri, identifier=user["handle"], password=PASSWORD).status_code == 303


def test_wrong_password_does_not_reveal_accounts(c, host, user):
    client = new_client(c, host, "password")
    request_uri = client.par().json()["request_uri"]
    wrong = client.submit(request_uri, identifier=user["handle"], password="wrong password")
    unknown = client.submit(request_uri, identifier="nobody-here.localhost", password="wrong password")
    assert wrong.status_code == unknown.status_code == 401
    for r in (wrong, unknown):
        assert "Wrong handle, e-mail or password." in r.text and "location" not in r.headers
    # The page escapes what the user typed.
    r = client.submit(request_uri, identifier='"><b>x</b>', password="nope")
    assert "<b>x</b>" not in r.text and "&lt;b&gt;x&lt;/b&gt;" in r.text
    # Then the right password still works (fewer than the allowed failures).
    assert client.submit(request_uri, identifier=user["handle"], password=PASSWORD).status_code == 303


def test_too_many_wrong_passwords_end_the_request(c, host, user):
    client = new_client(c, host, "bruteforce")
    request_uri = client.par().json()["request_uri"]
    for _ in range(5):
        client.submit(request_uri, identifier=user["handle"], password="wrong password")
    assert client.authorize_page(request_uri).status_code == 400


# -- confidential clients ------------------------------------------------------------------------------


def test_private_key_jwt_client(c, host, user):
    signing = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    jwks = {"keys": [{**signing.as_dict(private=False), "kid": "k1", "alg": "ES256"}]}
    client = new_client(c, host, "confidential", token_endpoint_auth_method="private_key_jwt",
                        token_endpoint_auth_signing_alg="ES256", jwks=jwks)
    oauth_error(client.par(), 401, "invalid_client")
    stranger = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    oauth_error(client.par(**client.client_assertion(stranger)), 401, "invalid_client")
    r = client.par(**client.client_assertion(signing))
    assert r.status_code == 201, r.text
    code = client.callback_params(client.submit(r.json()["request_uri"], identifier=user["handle"],
                                                password=PASSWORD))["code"]
    oauth_error(client.exchange(code), 401, "invalid_client")  # the assertion is required here too
    assertion = client.client_assertion(signing)
    r = client.exchange(code, extra=assertion)
    assert r.status_code == 200, r.text
    assert client.xrpc("GET", "com.atproto.server.getSession").json()["did"] == user["did"]
    # An assertion is single-use.
    r = client.post_as(client.server["token_endpoint"], {"grant_type": "refresh_token", "client_id": client.client_id,
                                                         "refresh_token": client.refresh_token, **assertion})
    assert "already used" in oauth_error(r, 401, "invalid_client")
