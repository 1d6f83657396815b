"""The admin dashboard driven in a real headless Chromium (Debian's chromium + chromium-driver,
through Selenium; nothing is downloaded: the driver path is given and Selenium Manager is offline).

Screenshots of every page go to tests/artifacts/admin_web/. The refusals (a user's access token, no
cookie, a forged cookie, cross-site POSTs) are checked over plain HTTP against the same server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.helpers.accounts import create_account, db_rows

CHROMIUM = shutil.which("chromium")
DRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "admin_web"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not os.path.exists(DRIVER),
    reason="Debian's chromium and chromium-driver are not installed (tests/run installs them when apt-get is usable)")


@pytest.fixture(scope="module")
def backup_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backup-target")


@pytest.fixture(scope="module")
def pds_env(backup_dir):
    # Rate limits on: the sign-in limit is part of what is shown. The backup settings let the
    # backups page list the target through the backup package, as in the all-in-one image.
    return {"PDS_RATE_LIMITS_ENABLED": "true", "BACKUP_LOCAL_DIR": str(backup_dir)}


def backup_now(pds) -> None:
    """One real backup of the running server with the sidecar's own command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "PDS_"))}
    env.update({"PDS_DATA_DIRECTORY": str(pds.data_dir), "BACKUP_LOCAL_DIR": pds.env()["BACKUP_LOCAL_DIR"]})
    r = subprocess.run([sys.executable, "-m", "squall_backup.cli", "now"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout


@pytest.fixture(scope="module")
def browser():
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="squall-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def navigate(driver, element) -> None:
    """Click something that loads a new page and wait until the new page has replaced the old one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_dashboard_in_chromium(pds, c, browser, admin):
    from selenium.webdriver.common.by import By

    d = browser
    find = d.find_element
    user = create_account(c, "web")
    for i in range(3):
        r = c.post("/xrpc/com.atproto.repo.createRecord", headers=user["headers"], json={
            "repo": user["did"], "collection": "app.bsky.feed.post",
            "record": {"$type": "app.bsky.feed.post", "text": f"hello {i}", "createdAt": "2026-01-01T00:00:00Z"}})
        assert r.status_code == 200, r.text
    r = c.post("/xrpc/com.atproto.repo.uploadBlob", headers={**user["headers"], "content-type": "image/png"},
               content=b"\x89PNG\r\n\x1a\n" + b"x" * 4000)
    assert r.status_code == 200
    backup_now(pds)
    status = json.loads((pds.data_dir / "backups" / "status.json").read_text())
    backup_id = status["last_success"]["id"]

    # Not signed in: every page sends the browser to the sign-in form.
    d.get(pds.url + "/admin")
    assert d.current_url.endswith("/admin/signin")
    find(By.ID, "password").send_keys("not the password")
    navigate(d, find(By.ID, "signin"))
    shot(d, "01-signin-refused")
    assert "Wrong password" in find(By.ID, "error").text
    shot(d, "01-signin-refused")
    find(By.ID, "password").send_keys(admin[1])
    navigate(d, find(By.ID, "signin"))

    # Overview.
    assert d.current_url.endswith("/admin")
    assert find(By.ID, "health").text == "ok"
    counts = find(By.ID, "account-counts").text
    assert "active" in counts and "1" in counts
    seq = db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0]
    assert find(By.ID, "seq").text == str(seq)
    assert user["name"] in find(By.ID, "commits").text
    warnings = find(By.ID, "warnings").text
    assert "not off-site" in warnings and "No SMTP" in warnings
    assert find(By.ID, "backup-age").text.endswith(" s ago")
    cookie = d.get_cookie("squall_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert not cookie["secure"]  # dev mode over plain http only; https deployments get Secure
    shot(d, "02-overview")

    # Find the account by part of its e-mail, open it, take it down, restore it.
    d.get(pds.url + "/admin/accounts")
    find(By.ID, "q").send_keys(user["name"] + "@exam")
    navigate(d, find(By.ID, "search"))
    table = find(By.ID, "accounts").text
    assert user["did"] in table
    shot(d, "03-accounts-search")
    navigate(d, find(By.LINK_TEXT, user["handle"]))
    assert find(By.ID, "did").text == user["did"]
    navigate(d, find(By.ID, "takedown"))
    assert find(By.ID, "note").text == "Taken down."
    assert "taken down" in find(By.ID, "status").text
    shot(d, "04-account-taken-down")
    r = c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": user["did"]})
    assert r.status_code == 400 and r.json()["error"] == "RepoTakendown"
    assert db_rows(pds, "SELECT takedown_ref FROM account WHERE did = ?", (user["did"],))[0][0]
    navigate(d, find(By.ID, "restore"))
    assert find(By.ID, "note").text == "Takedown reversed."
    assert find(By.ID, "status").text == "active"
    assert c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": user["did"]}).status_code == 200
    shot(d, "05-account-restored")

    # Reset the password: the new one is shown once and works; the old one does not.
    navigate(d, find(By.ID, "reset-password"))
    new_password = re.search(r"\): (\S+)$", find(By.ID, "new-password").text).group(1)
    assert c.post("/xrpc/com.atproto.server.createSession",
                  json={"identifier": user["handle"], "password": new_password}).status_code == 200
    assert c.post("/xrpc/com.atproto.server.createSession",
                  json={"identifier": user["handle"], "password": "correct horse battery"}).status_code == 401

    # Invites: create one, disable it.
    d.get(pds.url + "/admin/invites")
    navigate(d, find(By.ID, "create-invite"))
    code = find(By.ID, "created").text.split(": ", 1)[1]
    assert code in find(By.ID, "invites").text
    shot(d, "06-invites")
    rows = [row for row in find(By.ID, "invites").find_elements(By.TAG_NAME, "tr") if code in row.text]
    navigate(d, rows[0].find_element(By.TAG_NAME, "button"))
    assert db_rows(pds, "SELECT disabled FROM invite_code WHERE code = ?", (code,))[0][0] == 1

    # Storage.
    d.get(pds.url + "/admin/storage")
    assert "1" in find(By.ID, "blob-totals").text
    assert user["handle"] in find(By.ID, "largest-repos").text
    assert user["handle"] in find(By.ID, "blobs-per-account").text
    assert "1 (" in find(By.ID, "unreferenced").text  # the uploaded blob no record references
    shot(d, "07-storage")

    # Backups: last runs from status.json, the target's list (a local directory target here), run now.
    d.get(pds.url + "/admin/backups")
    assert backup_id in find(By.ID, "last-runs").text
    assert backup_id in find(By.ID, "listing").text  # listed from the target by the backup package
    assert not d.find_elements(By.ID, "listing-error")
    navigate(d, find(By.ID, "backup-now"))
    assert "Backup requested" in find(By.ID, "note").text
    assert (pds.data_dir / "backups" / "run-now").exists()
    shot(d, "08-backups")

    # Sign out: the old cookie is dead server-side too.
    old = d.get_cookie("squall_admin")["value"]
    navigate(d, find(By.ID, "signout"))
    assert d.current_url.endswith("/admin/signin")
    shot(d, "09-signed-out")
    r = httpx.get(pds.url + "/admin", cookies={"squall_admin": old})
    assert r.status_code == 303 and r.headers["location"] == "/admin/signin"


def _signed_in(pds, admin) -> tuple[httpx.Client, str]:
    """An HTTP client signed in as a browser would be, and the session's CSRF token."""
    client = httpx.Client(base_url=pds.url, follow_redirects=False)
    page = client.get("/admin/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/admin/signin", data={"csrf": csrf, "password": admin[1]})
    assert r.status_code == 303 and r.headers["location"] == "/admin", r.text
    overview = client.get("/admin")
    assert overview.status_code == 200
    return client, re.search(r'name="csrf" value="([^"]+)"', overview.text).group(1)


def test_refusals(pds, c, admin):
    user = create_account(c, "ref")
    target = f"/admin/accounts/{user['did']}/takedown"

    # Pages: no cookie, a user's access token, the XRPC admin credential, a forged cookie.
    for kw in ({}, {"headers": user["headers"]}, {"auth": admin}, {"cookies": {"squall_admin": "forged" * 7}}):
        r = httpx.get(pds.url + "/admin", **kw)
        assert r.status_code == 303 and r.headers["location"] == "/admin/signin", kw
        r = httpx.post(pds.url + target, data={"apply": "1", "csrf": "x"}, **kw)
        assert r.status_code == 401 and "Not signed in" in r.text, kw
    # Every page carries the strict CSP.
    r = httpx.get(pds.url + "/admin/signin")
    assert r.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'")
    assert "<script" not in r.text

    client, csrf = _signed_in(pds, admin)
    try:
        # Cross-site POSTs with the real session cookie: no token, a wrong token, another Origin.
        assert client.post(target, data={"apply": "1"}).status_code == 403
        assert client.post(target, data={"apply": "1", "csrf": csrf[:-2] + "xx"}).status_code == 403
        r = client.post(target, data={"apply": "1", "csrf": csrf}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "Cross-site" in r.text
        assert db_rows(pds, "SELECT takedown_ref FROM account WHERE did = ?", (user["did"],))[0][0] is None
        # The same POST from the page itself goes through.
        r = client.post(target, data={"apply": "1", "csrf": csrf}, headers={"Origin": pds.url})
        assert r.status_code == 303
        assert db_rows(pds, "SELECT takedown_ref FROM account WHERE did = ?", (user["did"],))[0][0] is not None
        # Sign-in form without its own CSRF cookie/token is refused too.
        assert httpx.post(pds.url + "/admin/signin", data={"password": admin[1]}).status_code == 403
    finally:
        client.close()


def test_sign_in_attempts_are_rate_limited(pds):
    with httpx.Client(base_url=pds.url) as client:
        statuses = []
        for _ in range(11):
            page = client.get("/admin/signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            statuses.append(client.post("/admin/signin", data={"csrf": csrf, "password": "guess guess"}).status_code)
    # Earlier tests in this module signed in twice (both count); 10 attempts per 5 minutes.
    assert 429 in statuses
    assert statuses.index(429) <= 8
    assert all(s == 429 for s in statuses[statuses.index(429):])
