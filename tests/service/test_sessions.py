"""Sessions and app passwords against a real ``squall serve``: login, tokens, rotation, revocation."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from contextlib import closing

import jwt
import pytest

from squall.auth.tokens import TokenIssuer
from tests.helpers.accounts import PASSWORD, assert_error, bearer, db_rows, signup
from tests.helpers.pds import PdsProcess

SERVICE_DID = "did:web:localhost"
CREATE_SESSION = "/xrpc/com.atproto.server.createSession"
GET_SESSION = "/xrpc/com.atproto.server.getSession"
REFRESH = "/xrpc/com.atproto.server.refreshSession"


@pytest.fixture(scope="module")
def user(pds):
    with pds.client() as c:
        r = signup(c, "alice")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def c(pds):
    with pds.client() as client:
        yield client


def login(c, identifier: str, password: str = PASSWORD):
    return c.post(CREATE_SESSION, json={"identifier": identifier, "password": password})


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def jwt_secret(pds: PdsProcess) -> str:
    return (pds.data_dir / "secrets" / "jwt_secret").read_text().strip()


# -- createSession ------------------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["alice.localhost", "ALICE.Localhost", "alice@example.com",
                                        "Alice@Example.COM", "did:web:alice.localhost"])
def test_login_by_handle_email_or_did(c, user, identifier):
    r = login(c, identifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["did"] == user["did"] and body["handle"] == "alice.localhost"
    assert body["email"] == "alice@example.com" and body["emailConfirmed"] is False
    assert body["active"] is True and "status" not in body
    assert body["didDoc"]["id"] == user["did"]
    access, refresh = claims(body["accessJwt"]), claims(body["refreshJwt"])
    assert header(body["accessJwt"])["typ"] == "at+jwt" and header(body["refreshJwt"])["typ"] == "refresh+jwt"
    assert access["scope"] == "com.atproto.access" and access["sub"] == user["did"] and access["aud"] == SERVICE_DID
    assert access["exp"] - access["iat"] == 2 * 3600
    assert refresh["scope"] == "com.atproto.refresh" and refresh["exp"] - refresh["iat"] == 90 * 24 * 3600
    assert refresh["jti"]


@pytest.mark.parametrize("identifier, password", [
    ("alice.localhost", "wrong password"),
    ("alice@example.com", PASSWORD + "x"),
    ("nobody.localhost", PASSWORD),
    ("nobody@example.com", PASSWORD),
    ("did:web:nobody.localhost", PASSWORD),
    ("alice.localhost", "x" * 600),
    ("", PASSWORD),
    ("alice.localhost", ""),
])
def test_wrong_identifier_or_password(c, user, identifier, password):
    body = assert_error(login(c, identifier, password), 401, "AuthenticationRequired")
    assert body["message"] == "Invalid identifier or password"  # the same whether the account exists


@pytest.mark.parametrize("body", [
    {}, {"identifier": "alice.localhost"}, {"password": PASSWORD},
    {"identifier": 1, "password": PASSWORD}, {"identifier": "alice.localhost", "password": None},
    {"identifier": "alice.localhost", "password": ["x"]},
    {"identifier": "alice.localhost", "password": PASSWORD, "allowTakendown": "yes"},
])
def test_create_session_bad_input(c, user, body):
    assert_error(c.post(CREATE_SESSION, json=body), 400, "InvalidRequest")


# -- tokens -----------------------------------------------------------------------------------------------


def test_get_session(c, user):
    r = c.get(GET_SESSION, headers=bearer(user["accessJwt"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("handle", "did", "email", "emailConfirmed", "active")} == {
        "handle": "alice.localhost", "did": user["did"], "email": "alice@example.com",
        "emailConfirmed": False, "active": True}
    assert body["didDoc"]["verificationMethod"][0]["id"] == f"{user['did']}#atproto"


def test_bad_tokens(pds, c, user):
    assert_error(c.get(GET_SESSION), 401, "AuthenticationRequired")
    assert_error(c.get(GET_SESSION, headers={"Authorization": "Basic YWRtaW46eA=="}), 401, "AuthenticationRequired")
    assert_error(c.get(GET_SESSION, headers=bearer("not.a.jwt")), 400, "InvalidToken")
    assert_error(c.get(GET_SESSION, headers=bearer("garbage")), 400, "InvalidToken")
    # a refresh token is not an access token, and the reverse
    assert_error(c.get(GET_SESSION, headers=bearer(user["refreshJwt"])), 400, "InvalidToken")
    assert_error(c.post(REFRESH, headers=bearer(user["accessJwt"])), 400, "InvalidToken")

    # forged: right shape, wrong secret
    forger = TokenIssuer("an-entirely-different-secret-of-64-characters-0123456789abcdefgh", SERVICE_DID)
    assert_error(c.get(GET_SESSION, headers=bearer(forger.access_token(user["did"]))), 400, "InvalidToken")
    assert_error(c.post(REFRESH, headers=bearer(forger.refresh_token(user["did"])[0])), 400, "InvalidToken")
    # forged: unsigned ("alg": "none")
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(time.time())
    unsigned = b64({"alg": "none", "typ": "at+jwt"}) + "." + b64(
        {"scope": "com.atproto.access", "sub": user["did"], "aud": SERVICE_DID, "iat": now, "exp": now + 60}) + "."
    assert_error(c.get(GET_SESSION, headers=bearer(unsigned)), 400, "InvalidToken")
    # right secret, wrong audience
    other_aud = TokenIssuer(jwt_secret(pds), "did:web:elsewhere.example")
    assert_error(c.get(GET_SESSION, headers=bearer(other_aud.access_token(user["did"]))), 400, "InvalidToken")


def test_expired_tokens(pds, c, user):
    three_hours_ago = TokenIssuer(jwt_secret(pds), SERVICE_DID, clock=lambda: time.time() - 3 * 3600)
    assert_error(c.get(GET_SESSION, headers=bearer(three_hours_ago.access_token(user["did"]))), 400, "ExpiredToken")
    long_ago = TokenIssuer(jwt_secret(pds), SERVICE_DID, clock=lambda: time.time() - 91 * 24 * 3600)
    assert_error(c.post(REFRESH, headers=bearer(long_ago.refresh_token(user["did"])[0])), 400, "ExpiredToken")
    # a token signed with the right secret but never issued (no stored jti) is refused too
    unknown = TokenIssuer(jwt_secret(pds), SERVICE_DID).refresh_token(user["did"])[0]
    assert_error(c.post(REFRESH, headers=bearer(unknown)), 400, "ExpiredToken")


def test_refresh_rotates_and_refuses_reuse(c, user):
    first = login(c, "alice.localhost").json()
    r = c.post(REFRESH, headers=bearer(first["refreshJwt"]))
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["did"] == user["did"] and second["handle"] == "alice.localhost" and second["active"] is True
    assert claims(second["refreshJwt"])["jti"] != claims(first["refreshJwt"])["jti"]
    assert c.get(GET_SESSION, headers=bearer(second["accessJwt"])).status_code == 200
    # the old refresh token is spent
    assert_error(c.post(REFRESH, headers=bearer(first["refreshJwt"])), 400, "ExpiredToken")
    # the new one still works, once
    third = c.post(REFRESH, headers=bearer(second["refreshJwt"]))
    assert third.status_code == 200, third.text
    assert_error(c.post(REFRESH, headers=bearer(second["refreshJwt"])), 400, "ExpiredToken")
    assert c.post(REFRESH, headers=bearer(third.json()["refreshJwt"])).status_code == 200


def test_delete_session(c, user):
    session = login(c, "alice.localhost").json()
    assert_error(c.post("/xrpc/com.atproto.server.deleteSession", headers=bearer(session["accessJwt"])),
                 400, "InvalidToken")
    r = c.post("/xrpc/com.atproto.server.deleteSession", headers=bearer(session["refreshJwt"]))
    assert r.status_code == 200, r.text
    assert_error(c.post(REFRESH, headers=bearer(session["refreshJwt"])), 400, "ExpiredToken")


# -- app passwords ------------------------------------------------------------------------------------------


def test_app_passwords(pds, c, user):
    headers = bearer(user["accessJwt"])
    url = "/xrpc/com.atproto.server.createAppPassword"
    r = c.post(url, json={"name": "phone"}, headers=headers)
    assert r.status_code == 200, r.text
    plain = r.json()
    assert plain["name"] == "phone" and plain["privileged"] is False and plain["createdAt"].endswith("Z")
    assert re.fullmatch(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}", plain["password"])
    priv = c.post(url, json={"name": "desktop", "privileged": True}, headers=headers).json()
    assert priv["privileged"] is True
    assert_error(c.post(url, json={"name": "phone"}, headers=headers), 400, "InvalidRequest")  # name taken
    for bad in ({}, {"name": ""}, {"name": "   "}, {"name": 3}, {"name": "x", "privileged": "yes"}, {"name": "n" * 101}):
        assert_error(c.post(url, json=bad, headers=headers), 400, "InvalidRequest")

    listed = c.get("/xrpc/com.atproto.server.listAppPasswords", headers=headers).json()["passwords"]
    assert {p["name"]: p["privileged"] for p in listed} == {"phone": False, "desktop": True}
    assert all(set(p) == {"name", "createdAt", "privileged"} for p in listed)  # never the password again
    stored = db_rows(pds, "SELECT password_hash FROM app_password WHERE did = ?", (user["did"],))
    assert all(row["password_hash"].startswith("$argon2id$") for row in stored)

    # logging in with them gives app-password scopes
    app = login(c, "alice.localhost", plain["password"]).json()
    assert claims(app["accessJwt"])["scope"] == "com.atproto.appPass"
    app_priv = login(c, "alice@example.com", priv["password"]).json()
    assert claims(app_priv["accessJwt"])["scope"] == "com.atproto.appPassPrivileged"
    # the scope survives a refresh
    refreshed = c.post(REFRESH, headers=bearer(app["refreshJwt"])).json()
    assert claims(refreshed["accessJwt"])["scope"] == "com.atproto.appPass"

    # app-password sessions work for ordinary calls ...
    assert c.get(GET_SESSION, headers=bearer(app["accessJwt"])).status_code == 200
    # ... but not for actions that need the full account password
    for token in (refreshed["accessJwt"], app_priv["accessJwt"]):
        h = bearer(token)
        assert_error(c.post(url, json={"name": "sneaky"}, headers=h), 403, "InvalidToken")
        assert_error(c.post("/xrpc/com.atproto.server.deactivateAccount", json={}, headers=h), 403, "InvalidToken")
        assert_error(c.get("/xrpc/com.atproto.server.getAccountInviteCodes", headers=h), 403, "InvalidToken")
    assert c.get(GET_SESSION, headers=headers).json()["active"] is True
    assert "sneaky" not in {p["name"] for p in c.get("/xrpc/com.atproto.server.listAppPasswords",
                                                     headers=headers).json()["passwords"]}

    # revoking one ends its logins and its refresh tokens, not the others
    r = c.post("/xrpc/com.atproto.server.revokeAppPassword", json={"name": "phone"}, headers=headers)
    assert r.status_code == 200, r.text
    assert_error(login(c, "alice.localhost", plain["password"]), 401, "AuthenticationRequired")
    assert_error(c.post(REFRESH, headers=bearer(refreshed["refreshJwt"])), 400, "ExpiredToken")
    assert c.post(REFRESH, headers=bearer(app_priv["refreshJwt"])).status_code == 200
    assert login(c, "alice.localhost", priv["password"]).status_code == 200
    # an app password of one account is not a password of another
    other = signup(c, "bobby").json()
    assert_error(login(c, "bobby.localhost", priv["password"]), 401, "AuthenticationRequired")
    assert c.get("/xrpc/com.atproto.server.listAppPasswords",
                 headers=bearer(other["accessJwt"])).json()["passwords"] == []


@pytest.mark.parametrize("kind, nsid", [
    ("GET", "getSession"), ("GET", "listAppPasswords"), ("GET", "getAccountInviteCodes"),
    ("GET", "checkAccountStatus"), ("POST", "createAppPassword"), ("POST", "revokeAppPassword"),
    ("POST", "activateAccount"), ("POST", "deactivateAccount"), ("POST", "refreshSession"),
    ("POST", "deleteSession"),
])
def test_user_methods_need_a_session(c, kind, nsid):
    url = f"/xrpc/com.atproto.server.{nsid}"
    r = c.get(url) if kind == "GET" else c.post(url, json={})
    assert_error(r, 401, "AuthenticationRequired")


def test_revoke_app_password_bad_input(c, user):
    headers = bearer(user["accessJwt"])
    for body in ({}, {"name": 5}, {"name": ["x"]}, {"name": "n" * 101}):
        assert_error(c.post("/xrpc/com.atproto.server.revokeAppPassword", json=body, headers=headers),
                     400, "InvalidRequest")
    # revoking a name that does not exist is not an error (as the reference)
    r = c.post("/xrpc/com.atproto.server.revokeAppPassword", json={"name": "never-made"}, headers=headers)
    assert r.status_code == 200, r.text


def test_takendown_account(pds, c):
    user = signup(c, "carol").json()
    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", timeout=10)) as conn:
        conn.execute("UPDATE account SET takedown_ref = 'test-takedown' WHERE did = ?", (user["did"],))
        conn.commit()
    assert_error(login(c, "carol.localhost"), 401, "AccountTakedown")
    assert_error(c.post(REFRESH, headers=bearer(user["refreshJwt"])), 401, "AccountTakedown")
    r = c.post(CREATE_SESSION, json={"identifier": "carol.localhost", "password": PASSWORD, "allowTakendown": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["active"] is False and body["status"] == "takendown"
    assert claims(body["accessJwt"])["scope"] == "com.atproto.takendown"
    # that narrow token opens nothing else, and its refresh token was never stored
    assert_error(c.get(GET_SESSION, headers=bearer(body["accessJwt"])), 400, "InvalidToken")
    assert_error(c.post(REFRESH, headers=bearer(body["refreshJwt"])), 401, "AccountTakedown")


def test_no_secrets_in_logs(pds, c, user):
    session = login(c, "alice.localhost").json()
    c.get(GET_SESSION, headers=bearer(session["accessJwt"]))
    app = c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": "log-check"},
                 headers=bearer(session["accessJwt"])).json()
    app_session = login(c, "alice.localhost", app["password"]).json()
    logs = pds.logs()
    assert "createSession" in logs and "createAppPassword" in logs
    for secret in (PASSWORD, app["password"], session["accessJwt"], session["refreshJwt"], user["accessJwt"],
                   app_session["refreshJwt"], jwt_secret(pds)):
        assert secret not in logs
