"""Issue #17: the account page (/account) in real headless Chromium (Debian's chromium and
chromium-driver, Selenium): sign in (also with the e-mailed code, through a real SMTP server on
loopback), revoke an OAuth grant (the app's next call fails), create and revoke an app password,
download the repository CAR and parse it, list and end sessions (the ended one's refresh fails),
change the password (the old one is refused after, other sessions end) and the handle, deactivate,
reactivate and delete the account (mailed deletion code; the operator's token works too); signing
out ends the server-side session; cross-site POSTs and a missing CSRF token are refused on every
form. Screenshots: tests/artifacts/account-*.png."""

from __future__ import annotations

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

from squall.atproto.car import read_car
from tests.helpers.accounts import PASSWORD, assert_error, bearer, create_account, db_rows
from tests.helpers.browser import chromium, screenshot
from tests.helpers.oauth_client import OAuthClient, client_metadata, metadata_host
from tests.helpers.smtp import SmtpCapture, token_in

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def smtp():
    with SmtpCapture("plain") as server:
        yield server


@pytest.fixture(scope="module")
def pds_env(smtp, plc):
    # did:plc accounts (their handle can change) and e-mail through the loopback SMTP server.
    return {**plc.pds_env(), "PDS_EMAIL_SMTP_URL": smtp.url(), "PDS_EMAIL_FROM_ADDRESS": "pds@example.test"}


def click(b, element) -> None:
    """Submit a form (or follow a link) and wait until the browser shows the next page."""
    b.execute_script("window.squallOldPage = true")  # gone once the next document has loaded
    element.click()
    WebDriverWait(b, 20, ignored_exceptions=(WebDriverException,)).until(lambda d: d.execute_script(
        "return window.squallOldPage === undefined && document.readyState === 'complete'"))


@pytest.fixture(scope="module")
def host():
    with metadata_host() as h:
        yield h


@pytest.fixture(scope="module")
def origin(pds) -> str:
    return f"http://localhost:{pds.port}"  # the server's own name


def test_account_page_in_chromium(c, pds, host, origin):
    user = create_account(c, "page")
    c.post("/xrpc/com.atproto.repo.createRecord", headers=user["headers"], json={
        "repo": user["did"], "collection": "app.bsky.feed.post",
        "record": {"$type": "app.bsky.feed.post", "text": "in my CAR", "createdAt": "2024-05-01T00:00:00.000Z"}})
    client_id = host.client_id("page")
    host.document = client_metadata(client_id, redirect_uri=REDIRECT, client_name="Notes for Squall",
                                    scope="atproto repo:app.bsky.feed.post?action=create blob:image/*")
    app = OAuthClient(http=c, client_id=client_id, redirect_uri=REDIRECT)
    app.discover()
    app.login(identifier=user["handle"], password=PASSWORD, scope="atproto repo:app.bsky.feed.post?action=create blob:image/*")
    assert app.xrpc("GET", "com.atproto.server.getSession").status_code == 200

    with chromium() as b:
        b.get(f"{origin}/.well-known/change-password")
        assert b.current_url.startswith(f"{origin}/account")
        screenshot(b, "account-1-sign-in")
        b.find_element(By.ID, "identifier").send_keys(user["handle"])
        b.find_element(By.ID, "password").send_keys("wrong password")
        click(b, b.find_element(By.ID, "sign-in"))
        assert "Wrong handle, e-mail or password." in b.page_source
        b.find_element(By.ID, "password").send_keys(PASSWORD)
        click(b, b.find_element(By.ID, "sign-in"))
        b.get(f"{origin}/account")  # sign-in led to the password form (/.well-known/change-password)
        assert user["handle"] in b.find_element(By.TAG_NAME, "h1").text
        grant = b.find_element(By.CSS_SELECTOR, ".grant")
        assert "Notes for Squall" in grant.text
        assert "Create records of type app.bsky.feed.post in your repository" in grant.text
        assert "Upload image files" in grant.text and "last used" in grant.text
        screenshot(b, "account-2-signed-in")
        cookie = {k["name"]: k["value"] for k in b.get_cookies()}
        session_cookie = next(k for k in b.get_cookies() if k["name"] == "squall_account")
        assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Strict"

        # Revoke the grant: the app's very next call fails.
        click(b, grant.find_element(By.TAG_NAME, "button"))
        assert b.find_element(By.ID, "notice").text == "Access revoked."
        assert not b.find_elements(By.CSS_SELECTOR, ".grant")
        r = app.xrpc("GET", "com.atproto.server.getSession")
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
        screenshot(b, "account-3-revoked")

        # App passwords: create, use, revoke.
        b.find_element(By.ID, "app-password-name").send_keys("cli tool")
        click(b, b.find_element(By.ID, "create-app-password"))
        secret = b.find_element(By.ID, "new-app-password").text
        screenshot(b, "account-4-app-password")
        r = c.post("/xrpc/com.atproto.server.createSession", json={"identifier": user["handle"], "password": secret})
        assert r.status_code == 200, r.text
        card = b.find_element(By.CSS_SELECTOR, ".app-password")
        assert "cli tool" in card.text
        click(b, card.find_element(By.TAG_NAME, "button"))
        assert b.find_element(By.ID, "notice").text == "App password revoked."
        r = c.post("/xrpc/com.atproto.server.createSession", json={"identifier": user["handle"], "password": secret})
        assert r.status_code == 401, r.text
        screenshot(b, "account-5-app-password-revoked")
        csrf = b.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")
        link = b.find_element(By.ID, "download-car").get_attribute("href")

    # The CAR, with the browser's session cookie: it parses and holds the post.
    with httpx.Client(cookies=cookie, timeout=10) as http:
        r = http.get(link)
        assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.car"
        roots, blocks = read_car(r.content)
        assert len(roots) == 1 and roots[0] in blocks
        assert any(b"in my CAR" in block for block in blocks.values())
        # Cross-site and token-less POSTs are refused, even with the session cookie.
        r = http.post(f"{origin}/account/app-passwords/create", data={"csrf_token": csrf, "name": "evil"},
                      headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "another site" in r.text
        r = http.post(f"{origin}/account/app-passwords/create", data={"csrf_token": csrf, "name": "evil"},
                      headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = http.post(f"{origin}/account/app-passwords/create", data={"name": "evil"}, headers={"Origin": origin})
        assert r.status_code == 403 and "CSRF" in r.text
        r = http.post(f"{origin}/account/app-passwords/create", data={"csrf_token": "forged", "name": "evil"})
        assert r.status_code == 403
    r = c.get("/xrpc/com.atproto.server.listAppPasswords", headers=user["headers"])
    assert [p["name"] for p in r.json()["passwords"]] == []
    # The page's headers: strict CSP, no framing.
    page = c.get("/account")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp


def test_jwks_and_metadata(c, origin):
    r = c.get("/oauth/jwks")
    assert r.status_code == 200 and r.json() == {"keys": []}
    meta = c.get("/.well-known/oauth-authorization-server").json()
    assert meta["jwks_uri"] == f"{origin}/oauth/jwks"
    assert {"repo", "rpc", "blob", "account", "identity", "include"} <= set(meta["scopes_supported"])


def sign_in(b, origin: str, identifier: str, password: str = PASSWORD) -> None:
    b.get(f"{origin}/account")
    b.find_element(By.ID, "identifier").send_keys(identifier)
    b.find_element(By.ID, "password").send_keys(password)
    click(b, b.find_element(By.ID, "sign-in"))


def refresh(c, token: str):
    return c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(token))


def login(c, identifier: str, password: str = PASSWORD):
    return c.post("/xrpc/com.atproto.server.createSession", json={"identifier": identifier, "password": password})


def http_sign_in(origin: str, identifier: str, password: str = PASSWORD) -> httpx.Client:
    """A second browser, as plain HTTP: the sign-in form with its double-submit CSRF cookie."""
    http = httpx.Client(base_url=origin, timeout=10)
    page = http.get("/account")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = http.post("/account/sign-in", data={"csrf_token": csrf, "identifier": identifier, "password": password})
    assert r.status_code == 303, r.text
    return http


def page_csrf(http: httpx.Client) -> str:
    page = http.get("/account")
    assert "Sign out" in page.text, page.text[:500]
    return page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def notice(b) -> str:
    return b.find_element(By.ID, "notice").text


def form_error(b) -> str:
    return b.find_element(By.ID, "form-error").text


def test_sessions_password_and_handle_in_chromium(c, pds, origin):
    user = create_account(c, "pwd")
    other = login(c, user["handle"]).json()  # a second password session, as another app
    r = c.post("/xrpc/com.atproto.server.createAppPassword", headers=user["headers"], json={"name": "reader app"})
    assert r.status_code == 200, r.text
    by_app = login(c, user["handle"], r.json()["password"]).json()
    second_browser = http_sign_in(origin, user["handle"])

    with chromium() as b:
        b.get(f"{origin}/.well-known/change-password")
        assert b.current_url == f"{origin}/account/password"  # sign in first, then the form
        b.find_element(By.ID, "identifier").send_keys(user["handle"])
        b.find_element(By.ID, "password").send_keys(PASSWORD)
        click(b, b.find_element(By.ID, "sign-in"))
        assert b.current_url == f"{origin}/account/password"
        assert b.find_element(By.ID, "password-form") and b.find_element(By.ID, "current-password")
        screenshot(b, "account-6-change-password-form")

        # Sessions: the two password sessions (signup's and ``other``), the app-password one, and this
        # page in two browsers.
        b.get(f"{origin}/account")
        cards = b.find_elements(By.CSS_SELECTOR, ".session")
        assert len(cards) == 3, [c_.text for c_ in cards]
        assert sum("App password “reader app”" in c_.text for c_ in cards) == 1
        pages = b.find_elements(By.CSS_SELECTOR, ".page-session")
        assert len(pages) == 2 and sum("this browser" in p.text for p in pages) == 1
        screenshot(b, "account-7-sessions")
        app_card = next(c_ for c_ in cards if "reader app" in c_.text)
        click(b, app_card.find_element(By.TAG_NAME, "button"))
        assert notice(b) == "Session ended."
        assert len(b.find_elements(By.CSS_SELECTOR, ".session")) == 2
        r = refresh(c, by_app["refreshJwt"])
        assert r.status_code in (400, 401) and r.json()["error"] in ("ExpiredToken", "InvalidToken"), r.text
        r = refresh(c, other["refreshJwt"])  # the others live on
        assert r.status_code == 200, r.text
        other = r.json()

        # Handle: the rules and words of com.atproto.identity.updateHandle.
        taken = create_account(c, "taken")
        for bad, name in (("ab.localhost", "InvalidHandle"), ("admin.localhost", "HandleNotAvailable"),
                          (taken["handle"], "HandleNotAvailable")):
            field = b.find_element(By.ID, "new-handle")
            field.clear()
            field.send_keys(bad)
            click(b, b.find_element(By.ID, "change-handle"))
            xrpc = c.post("/xrpc/com.atproto.identity.updateHandle", headers=user["headers"], json={"handle": bad})
            assert xrpc.status_code == 400 and xrpc.json()["error"] == name, xrpc.text
            assert form_error(b) == xrpc.json()["message"]
        new_handle = f"new{user['name']}.localhost"
        field = b.find_element(By.ID, "new-handle")
        field.clear()
        field.send_keys(new_handle.upper())
        click(b, b.find_element(By.ID, "change-handle"))
        assert notice(b) == f"Your handle is now @{new_handle}."
        assert b.find_element(By.TAG_NAME, "h1").text == new_handle
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": new_handle})
        assert r.status_code == 200 and r.json()["did"] == user["did"]
        assert c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": user["handle"]}).status_code == 400
        screenshot(b, "account-8-handle-changed")

        # Password: the current one is required; the new one follows createAccount's rules.
        def change(current: str, new: str, again: str | None = None) -> None:
            for element_id, value in (("current-password", current), ("new-password", new),
                                      ("new-password-again", new if again is None else again)):
                b.find_element(By.ID, element_id).send_keys(value)
            click(b, b.find_element(By.ID, "change-password"))

        change("not my password", "a brand new password")
        assert form_error(b) == "Your current password is not right."
        change(PASSWORD, "a brand new password", "something else entirely")
        assert form_error(b) == "The two new passwords differ."
        change(PASSWORD, "short")
        assert form_error(b).startswith("Password too short")
        assert login(c, new_handle).status_code == 200  # nothing changed yet
        other = login(c, new_handle).json()
        change(PASSWORD, "a brand new password")
        screenshot(b, "account-9-password-changed")
        assert not b.find_elements(By.ID, "form-error"), form_error(b)
        assert notice(b) == "Password changed. Every other session has been signed out."
        screenshot(b, "account-9-password-changed")
        assert_error(login(c, new_handle), 401, "AuthenticationRequired")  # the old one is refused
        assert login(c, new_handle, "a brand new password").status_code == 200
        r = refresh(c, other["refreshJwt"])
        assert r.status_code in (400, 401), r.text
        # This browser stays signed in; the other browser's page session is over.
        b.get(f"{origin}/account")
        assert b.find_element(By.TAG_NAME, "h1").text == new_handle
        assert len(b.find_elements(By.CSS_SELECTOR, ".page-session")) == 1
        assert "Sign in" in second_browser.get("/account").text and "Sign out" not in second_browser.get("/account").text
        second_browser.close()

        # Forms posted from elsewhere, or without the session's CSRF token, change nothing.
        cookies = {k["name"]: k["value"] for k in b.get_cookies()}
        csrf = b.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")
        forms = {"/account/password": {"current_password": "a brand new password", "new_password": "evil evil evil",
                                       "new_password_again": "evil evil evil"},
                 "/account/handle": {"handle": f"ev{user['name']}.localhost"},
                 "/account/sessions/revoke": {"kind": "app", "session": "x"},
                 "/account/deactivate": {"password": "a brand new password"},
                 "/account/activate": {},
                 "/account/delete/request": {},
                 "/account/delete": {"token": "ABCDE-FGHIJ", "password": "a brand new password", "confirm": "on"}}
        with httpx.Client(base_url=origin, cookies=cookies, timeout=10) as http:
            for path, data in forms.items():
                r = http.post(path, data={**data, "csrf_token": csrf}, headers={"Origin": "http://evil.example"})
                assert r.status_code == 403 and "another site" in r.text, (path, r.text)
                r = http.post(path, data={**data, "csrf_token": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
                assert r.status_code == 403, path
                r = http.post(path, data=data, headers={"Origin": origin})
                assert r.status_code == 403 and "CSRF" in r.text, (path, r.text)
                r = http.post(path, data={**data, "csrf_token": "forged"})
                assert r.status_code == 403, path
        assert login(c, new_handle, "a brand new password").status_code == 200
        assert c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": user["did"]}).json()["active"] is True
        assert c.get("/xrpc/com.atproto.identity.resolveHandle",
                     params={"handle": f"ev{user['name']}.localhost"}).status_code == 400

        # Signing out deletes the server-side session: the copied cookie opens nothing afterwards.
        assert len(db_rows(pds, "SELECT 1 FROM account_session WHERE did = ?", (user["did"],))) == 1
        stored = db_rows(pds, "SELECT id_hash FROM account_session WHERE did = ?", (user["did"],))[0]["id_hash"]
        assert cookies["squall_account"] not in stored  # only a hash of the cookie is kept
        click(b, b.find_element(By.XPATH, "//button[text()='Sign out' and ancestor::form[@action='/account/sign-out']]"))
        assert b.find_element(By.ID, "sign-in")
        assert db_rows(pds, "SELECT 1 FROM account_session WHERE did = ?", (user["did"],)) == []
        with httpx.Client(base_url=origin, cookies=cookies, timeout=10) as http:
            assert "Sign out" not in http.get("/account").text
            r = http.post("/account/handle", data={"csrf_token": csrf, "handle": f"lt{user['name']}.localhost"})
            assert r.status_code == 303 and r.headers["location"] == "/account"
            assert http.get("/account/repo.car").status_code == 303


def _with_sign_in_codes(c, smtp) -> dict:
    user = create_account(c, "code")
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


def test_mailed_code_deactivate_and_delete_in_chromium(c, pds, smtp, origin):
    user = _with_sign_in_codes(c, smtp)
    with chromium() as b:
        sign_in(b, origin, user["handle"])
        assert "We sent a sign-in code to your e-mail address." in form_error(b)
        assert not b.find_elements(By.ID, "download-car")  # not signed in yet
        cookies = {k["name"]: k["value"] for k in b.get_cookies()}
        with httpx.Client(base_url=origin, cookies=cookies, timeout=10) as http:  # the half session opens nothing
            assert http.get("/account/repo.car").status_code == 303
        mails = smtp.wait_for(user["address"], 3)
        code = token_in(mails[-1])
        screenshot(b, "account-10-sign-in-code")
        b.find_element(By.ID, "code").send_keys("ZZZZZ-ZZZZZ")
        click(b, b.find_element(By.ID, "submit-code"))
        assert form_error(b) == "That sign-in code is not right. Check the latest mail."
        b.find_element(By.ID, "code").send_keys(code.lower())
        click(b, b.find_element(By.ID, "submit-code"))
        assert b.find_element(By.TAG_NAME, "h1").text == user["handle"]
        new_cookie = next(k for k in b.get_cookies() if k["name"] == "squall_account")
        assert new_cookie["value"] != cookies["squall_account"]  # a new session id once signed in
        assert new_cookie["httpOnly"] and new_cookie["sameSite"] == "Strict"
        screenshot(b, "account-11-signed-in-with-code")

        # Deactivate (with the password), then reactivate.
        b.find_element(By.ID, "deactivate-password").send_keys("wrong password")
        click(b, b.find_element(By.ID, "deactivate-account"))
        assert form_error(b) == "Your current password is not right."
        b.find_element(By.ID, "deactivate-password").send_keys(PASSWORD)
        click(b, b.find_element(By.ID, "deactivate-account"))
        assert notice(b) == "Your account is deactivated." and b.find_element(By.ID, "deactivated")
        status = c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": user["did"]}).json()
        assert status["active"] is False and status["status"] == "deactivated"
        screenshot(b, "account-12-deactivated")
        click(b, b.find_element(By.ID, "activate"))
        assert notice(b) == "Your account is active again." and not b.find_elements(By.ID, "deactivated")
        assert c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": user["did"]}).json()["active"] is True

        # Delete: the code mailed by requestAccountDelete's service, then the password.
        click(b, b.find_element(By.ID, "request-delete"))
        assert notice(b) == "We sent a deletion code to your e-mail address."
        token = token_in(smtp.wait_for(user["address"], 4)[-1])
        b.find_element(By.ID, "delete-token").send_keys(token)
        b.find_element(By.ID, "delete-password").send_keys(PASSWORD)
        click(b, b.find_element(By.ID, "delete-account"))
        assert form_error(b) == "Tick the box to confirm the deletion."
        b.find_element(By.ID, "delete-token").send_keys("ZZZZZ-ZZZZZ")
        b.find_element(By.ID, "delete-password").send_keys(PASSWORD)
        b.find_element(By.ID, "delete-confirm").click()
        click(b, b.find_element(By.ID, "delete-account"))
        assert form_error(b) == "Token is invalid"
        b.find_element(By.ID, "delete-token").send_keys(token)
        b.find_element(By.ID, "delete-password").send_keys("wrong password")
        b.find_element(By.ID, "delete-confirm").click()
        click(b, b.find_element(By.ID, "delete-account"))
        assert form_error(b) == "Your current password is not right."
        screenshot(b, "account-13-delete-form")
        b.find_element(By.ID, "delete-token").send_keys(token)
        b.find_element(By.ID, "delete-password").send_keys(PASSWORD)
        b.find_element(By.ID, "delete-confirm").click()
        click(b, b.find_element(By.ID, "delete-account"))
        assert b.find_element(By.ID, "message").text == "Your account has been deleted."
        screenshot(b, "account-14-deleted")
        assert_error(c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": user["did"]}), 400, "RepoNotFound")
        assert_error(login(c, user["handle"]), 401, "AuthenticationRequired")
        assert db_rows(pds, "SELECT 1 FROM account_session WHERE did = ?", (user["did"],)) == []
        b.get(f"{origin}/account")
        assert b.find_element(By.ID, "sign-in")


def test_delete_with_the_operators_token(c, admin, origin):
    user = create_account(c, "optoken")
    http = http_sign_in(origin, user["handle"])
    r = c.post("/xrpc/_admin/account-delete-token", json={"did": user["did"]}, auth=admin)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    r = http.post("/account/delete", data={"csrf_token": page_csrf(http), "token": token, "password": PASSWORD,
                                           "confirm": "on"})
    assert r.status_code == 200 and "Your account has been deleted." in r.text, r.text
    assert_error(c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": user["did"]}), 400, "RepoNotFound")
    http.close()
