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
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.helpers.accounts import create_account, db_rows
from tests.helpers.fake_relays import FakeRelay
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess

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
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_driver) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Debian's chromedriver reports an element of a page that has just been replaced as
            # "Node with given id does not belong to the document" instead of a stale reference.
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, 15).until(replaced)


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def shot_full(driver, name: str) -> None:
    """A screenshot of the whole page (the window grown to the document's height, then restored)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(1000, height + 120), 6000))
    try:
        shot(driver, name)
    finally:
        driver.set_window_size(1280, 1000)


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


# -- the relay monitor's page (issue #15) -------------------------------------------------------------

RELAY_KNOBS = {  # short intervals so the checks happen within the test (bounded waits below)
    "PDS_RELAY_MONITOR_INTERVAL": "2", "SQUALL_RELAY_MONITOR_MIN_REQUEST_GAP": "0.2",
    "SQUALL_RELAY_MONITOR_REQUEST_TIMEOUT": "1.5", "SQUALL_RELAY_MONITOR_RECHECK_DELAY": "0.5",
    "SQUALL_RELAY_MONITOR_DESYNC_SECONDS": "1", "SQUALL_RELAY_MONITOR_REANNOUNCE_MIN_SECONDS": "0.5",
}


def wait(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


@pytest.fixture
def relay_world(tmp_path):
    """A second server watching three relays: one that follows it, one whose seq is ahead of ours
    (a restored backup), and a closed port."""
    with ExitStack() as stack:
        pds = PdsProcess(tmp_path / "data")
        follower = FakeRelay("localhost", pds.url, name="relay-follower").start()
        stack.callback(follower.stop)
        ahead = FakeRelay("localhost", pds.url, name="relay-ahead").start()
        stack.callback(ahead.stop)
        follower.know_host()
        ahead.know_host()
        closed = f"http://127.0.0.1:{free_port()}"
        pds.env_extra = {**RELAY_KNOBS, "PDS_RELAY_MONITOR_URLS": f"{follower.url},{ahead.url},{closed}"}
        pds.start()
        stack.callback(pds.stop)
        client = stack.enter_context(pds.client())
        yield pds, client, follower, ahead, closed


def _relay_status(c, admin) -> dict:
    r = c.get("/xrpc/_admin/relays", params={"accounts": "true"}, auth=admin)
    assert r.status_code == 200, r.text
    return r.json()


def _row(status: dict, url: str) -> dict:
    return next(r for r in status["relays"] if r["url"] == url)


def _sign_in_browser(d, pds, password: str) -> None:
    from selenium.webdriver.common.by import By

    d.delete_all_cookies()
    d.get(pds.url + "/admin/signin")
    d.find_element(By.ID, "password").send_keys(password)
    navigate(d, d.find_element(By.ID, "signin"))
    assert d.current_url.endswith("/admin"), d.current_url


def test_relays_page_in_chromium(relay_world, browser):
    from selenium.webdriver.common.by import By

    pds, c, follower, ahead, closed = relay_world
    admin = ("admin", pds.admin_password())
    d = browser
    find = d.find_element
    alice = create_account(c, "alice")
    bob = create_account(c, "bob")
    for relay in (follower, ahead):
        relay.wait_for(lambda: all(relay.repo(a["did"]) and relay.repo(a["did"]).rev for a in (alice, bob)),
                       what="the relay to see both accounts")
    ours = db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0]
    ahead.seq_override = ours + 500  # as after a restore from an old backup
    follower.forget(bob["did"])  # the follower lost bob: the monitor re-announces him

    def settled():
        s = _relay_status(c, admin)
        cells = {(a["relay"], a["did"]): a["status"] for a in s["accounts"]}
        return (_row(s, follower.url)["status"] == "ok" and _row(s, ahead.url)["status"] == "seq_ahead"
                and _row(s, closed)["status"] == "unreachable"
                and cells.get((follower.url, alice["did"])) == "ok"
                and any(a["action"] == "reannounce" and a["did"] == bob["did"] for a in s["actions"]) and s)

    status = wait(settled, "the monitor to settle: follower ok, the other seq_ahead, the closed port unreachable")

    _sign_in_browser(d, pds, admin[1])
    # Overview: one line per relay instead of the PDS_CRAWLERS list.
    summary = find(By.ID, "relay-summary").text
    for url, state in ((follower.url, "ok"), (ahead.url, "seq_ahead"), (closed, "unreachable")):
        assert url in summary and state in summary
    warnings = find(By.ID, "warnings").text
    assert f"Relay {ahead.url}: our sequence went backwards" in warnings
    assert f"Relay {closed}: relay unreachable" in warnings
    shot(d, "10-overview-relays")

    d.get(pds.url + "/admin/relays")
    rows = {r.find_element(By.TAG_NAME, "code").text: r for r in d.find_elements(By.CSS_SELECTOR, "#relays tr.relay")}
    assert list(rows) == [follower.url, ahead.url, closed]
    assert rows[follower.url].find_element(By.CLASS_NAME, "status").text == "ok"
    assert rows[ahead.url].find_element(By.CLASS_NAME, "status").text == "seq_ahead"
    assert "our sequence went backwards" in rows[ahead.url].text
    assert rows[ahead.url].find_element(By.CLASS_NAME, "seqs").text.startswith(f"{ours + 500} / ")
    assert rows[closed].find_element(By.CLASS_NAME, "status").text == "unreachable"
    # The monitor keeps checking while the page loads: the page shows the relay's account count as
    # of the status read just before or just after it (the fake relay learns accounts over time).
    shown = rows[follower.url].find_element(By.CLASS_NAME, "account-count").text
    after = _row(c.get("/xrpc/_admin/relays", auth=admin).json(), follower.url)
    assert shown in {f"{row['accountCount']} / {row['accountLimit']}" for row in (_row(status, follower.url), after)}
    # The matrix: a row per account, a cell per relay; bob was re-announced to the follower.
    matrix = find(By.ID, "matrix")
    headers = [th.text for th in matrix.find_elements(By.TAG_NAME, "th")]
    assert headers[1:4] == [follower.url, ahead.url, closed]
    alice_row = matrix.find_element(By.CSS_SELECTOR, f'tr[data-did="{alice["did"]}"]')
    cells = [td.text for td in alice_row.find_elements(By.TAG_NAME, "td")]
    assert cells[1].startswith("ok") and cells[3].startswith(("unreachable", "not checked yet"))
    assert bob["did"] in find(By.ID, "actions").text and "reannounce" in find(By.ID, "actions").text
    checks = find(By.ID, "self-checks").text
    assert "describeServer" in checks
    shot_full(d, "11-relays")

    # Request a crawl from the follower.
    crawls = len(follower.crawl_requests)
    navigate(d, rows[follower.url].find_element(By.CLASS_NAME, "crawl"))
    assert find(By.ID, "note").text.startswith(f"Crawl requested. {follower.url}: asked")
    assert len(follower.crawl_requests) == crawls + 1 and follower.crawl_requests[-1] == "localhost"

    # Re-announce alice from her matrix row: #identity, #sync, #account are sequenced.
    before = db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0]
    row = find(By.ID, "matrix").find_element(By.CSS_SELECTOR, f'tr[data-did="{alice["did"]}"]')
    navigate(d, row.find_element(By.CLASS_NAME, "reannounce"))
    assert find(By.ID, "note").text.startswith(f"Re-announced {alice['did']}: events ")
    kinds = [k for (k,) in db_rows(pds, "SELECT event_type FROM repo_seq WHERE seq > ? AND did = ? ORDER BY seq",
                                  (before, alice["did"]))]
    assert kinds == ["identity", "sync", "account"], kinds
    # A DID that is no account here is refused in words.
    find(By.ID, "announce-did").send_keys("did:plc:nobodyhereatall2345")
    navigate(d, find(By.ID, "announce"))
    assert find(By.ID, "note").text.startswith("Refused: no account did:plc:nobodyhereatall2345")

    # Advance the sequence: first the plan (nothing changes), then the confirmation applies it.
    rows = {r.find_element(By.TAG_NAME, "code").text: r for r in d.find_elements(By.CSS_SELECTOR, "#relays tr.relay")}
    navigate(d, rows[ahead.url].find_element(By.CLASS_NAME, "advance"))
    assert find(By.ID, "plan-their-seq").text == str(ours + 500)
    assert find(By.ID, "plan-next-seq").text == str(ours + 501)
    assert "would make our next seq" in find(By.ID, "plan-message").text
    top = db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0]
    assert top < ours + 500
    shot(d, "12-advance-sequence-plan")
    navigate(d, find(By.ID, "confirm-advance"))
    assert find(By.ID, "note").text.startswith("Sequence advanced: our next seq is past")
    assert db_rows(pds, "SELECT MIN(seq) FROM repo_seq WHERE seq > ?", (top,))[0][0] > ours + 500
    ahead.wait_for(lambda: any(t == "#identity" and b["seq"] > ours + 500 for t, b in ahead.events),
                   what="the relay to see an #identity past its seq")
    assert "advanceSequence" in find(By.ID, "actions").text
    # The monitor re-checks the relay at once: our seq is past its own now, so it follows us again.
    wait(lambda: _row(_relay_status(c, admin), ahead.url)["status"] == "ok", "the relay to be ok again")
    d.get(pds.url + "/admin/relays")
    rows = {r.find_element(By.TAG_NAME, "code").text: r for r in d.find_elements(By.CSS_SELECTOR, "#relays tr.relay")}
    assert rows[ahead.url].find_element(By.CLASS_NAME, "status").text == "ok"
    shot_full(d, "13-relays-after-actions")
    # The closed relay: advancing against it is refused in words (it cannot be asked for its seq).
    rows = {r.find_element(By.TAG_NAME, "code").text: r for r in d.find_elements(By.CSS_SELECTOR, "#relays tr.relay")}
    navigate(d, rows[closed].find_element(By.CLASS_NAME, "advance"))
    assert find(By.ID, "note").text.startswith(f"Refused: cannot ask {closed} for its seq")


def test_relay_forms_refuse_cross_site_and_tokenless_posts(relay_world):
    pds, c, follower, ahead, closed = relay_world
    admin = ("admin", pds.admin_password())
    row = wait(lambda: (r := _row(_relay_status(c, admin), ahead.url))["ourSeq"] is not None and r,
               "a first check", timeout=10)
    ahead.seq_override = row["ourSeq"] + 100
    client, csrf = _signed_in(pds, admin)
    user = create_account(c, "csrf")
    crawls = len(follower.crawl_requests)
    top = db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0]
    forms = (("/admin/relays/crawl", {"relay": follower.url}),
             ("/admin/relays/announce", {"did": user["did"]}),
             ("/admin/relays/advance-sequence", {"relay": ahead.url, "confirm": "1"}))
    try:
        for path, fields in forms:
            # No cookie; the XRPC admin credential; the session without a token, a wrong one, another site.
            assert httpx.post(pds.url + path, data={**fields, "csrf": csrf}).status_code == 401
            assert httpx.post(pds.url + path, data={**fields, "csrf": csrf}, auth=admin).status_code == 401
            assert client.post(path, data=fields).status_code == 403
            assert client.post(path, data={**fields, "csrf": csrf[:-2] + "xx"}).status_code == 403
            r = client.post(path, data={**fields, "csrf": csrf}, headers={"Origin": "https://evil.example"})
            assert r.status_code == 403 and "Cross-site" in r.text
        # Nothing happened: no crawl request, no event, the sequence untouched.
        assert len(follower.crawl_requests) == crawls
        assert db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0] == top
        # The page itself (same Origin, right token) goes through; a relay not monitored is refused in words.
        r = client.post("/admin/relays/crawl", data={"relay": follower.url, "csrf": csrf},
                        headers={"Origin": pds.url})
        assert r.status_code == 303 and len(follower.crawl_requests) == crawls + 1
        r = client.post("/admin/relays/crawl", data={"relay": "https://other.example", "csrf": csrf},
                        headers={"Origin": pds.url})
        assert r.status_code == 303 and "not%20a%20monitored%20relay" in r.headers["location"]
        assert r.headers["location"].startswith("/admin/relays?note=Refused")
    finally:
        client.close()


# -- the backups page: drill, health and replication (issue #16) ------------------------------------------

DRILL_REPORT = {
    "id": "20260105T120000Z", "ok": False, "started_at": "2026-01-05T12:00:00Z",
    "finished_at": "2026-01-05T12:00:02Z", "duration_seconds": 2.25, "accounts": 4, "records": 20, "blobs": 7,
    "summary": "blobs: did:plc:tamperedaccount234567: blob bafkreiaaaa is missing: getBlob answered 404",
    "checks": [
        {"name": "restore", "ok": True, "seconds": 0.31, "count": 15, "fault_count": 0, "faults": []},
        {"name": "integrity", "ok": True, "seconds": 0.02, "count": 1, "fault_count": 0, "faults": []},
        {"name": "boot", "ok": True, "seconds": 0.9, "count": 1, "fault_count": 0, "faults": []},
        {"name": "repos", "ok": False, "seconds": 0.4, "count": 4, "fault_count": 1, "faults": [
            {"account": "did:plc:brokensignature23456", "fault": "commit bafyx (rev 3l): the signature does not "
                                                             "verify with the account's signing key"}]},
        {"name": "blobs", "ok": False, "seconds": 0.2, "count": 7, "fault_count": 1, "faults": [
            {"account": "did:plc:tamperedaccount234567", "fault": "blob bafkreiaaaa is missing: getBlob answered 404"}]},
        {"name": "logins", "ok": True, "seconds": 0.1, "count": 3, "fault_count": 0, "faults": []},
        {"name": "firehose", "ok": True, "seconds": 0.05, "count": 42, "fault_count": 0, "faults": []},
    ],
}
REPLICATION = {"enabled": True, "state": "running", "encrypted": False, "replica": "s3://bucket/litestream/pds.sqlite",
               "sync_interval_ms": 250, "restarts": 1, "last_exit": 1, "last_error": None, "lag_seconds": 0.4,
               "replica_updated_at": "2026-01-05T12:00:01Z", "checked_at": "2026-01-05T12:00:01Z"}


def test_backups_page_shows_drill_health_and_replication(pds, c, browser, admin):
    from selenium.webdriver.common.by import By

    path = pds.data_dir / "backups" / "status.json"
    path.parent.mkdir(exist_ok=True)
    status = json.loads(path.read_text()) if path.exists() else {}
    reason = f"the last restore drill ({DRILL_REPORT['id']}) failed: {DRILL_REPORT['summary']}"
    status.update(last_drill=DRILL_REPORT, replication=REPLICATION, healthy=False, unhealthy_reasons=[reason],
                  drill_schedule="1w", next_drill_at="2026-01-12T12:00:02Z", drill_running=None)
    path.write_text(json.dumps(status))
    d = browser
    find = d.find_element
    _sign_in_browser(d, pds, admin[1])
    assert find(By.ID, "backup-health").text == "UNHEALTHY"
    assert find(By.ID, "backup-drill").text.startswith("FAILED")
    assert find(By.ID, "backup-replication").text == "running, lag 0.4 s"
    assert f"Backups unhealthy: {reason}" in find(By.ID, "warnings").text

    d.get(pds.url + "/admin/backups")
    assert find(By.ID, "health").text == "UNHEALTHY"
    assert find(By.ID, "unhealthy-reasons").text == reason
    replication = find(By.ID, "replication").text
    assert "running" in replication and "0.4 s" in replication and REPLICATION["replica"] in replication
    assert "Litestream cannot encrypt" in replication
    assert find(By.ID, "drill-result").text == "FAILED"
    assert find(By.ID, "drill-summary").text == DRILL_REPORT["summary"]
    assert "4 accounts, 20 records, 7 blobs" in find(By.ID, "drill").text
    table = find(By.ID, "drill-checks")
    rows = table.find_elements(By.TAG_NAME, "tr")[1:]
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [c["name"] for c in DRILL_REPORT["checks"]]
    for row, check in zip(rows, DRILL_REPORT["checks"]):
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == ("ok" if check["ok"] else "FAILED")
        assert float(cells[2]) == check["seconds"] and int(cells[3]) == check["count"]
        assert cells[4].startswith(str(check["fault_count"]))
        for fault in check["faults"]:
            assert f"{fault['account']}: {fault['fault']}" in cells[4]
    shot_full(d, "14-backups-drill-replication")
    # A passing drill with replication off.
    status.update(last_drill={**DRILL_REPORT, "ok": True, "summary": "all checks passed",
                              "checks": [{**ch, "ok": True, "fault_count": 0, "faults": []} for ch in DRILL_REPORT["checks"]]},
                  replication=None, healthy=True, unhealthy_reasons=[])
    path.write_text(json.dumps(status))
    d.get(pds.url + "/admin/backups")
    assert find(By.ID, "health").text.startswith("Healthy")
    assert find(By.ID, "drill-result").text == "passed"
    assert find(By.ID, "replication").text.startswith("Off")
    assert not d.find_elements(By.ID, "unhealthy-reasons")
    shot_full(d, "15-backups-drill-passed")
    navigate(d, find(By.ID, "signout"))


def test_sign_in_attempts_are_rate_limited(pds):
    with httpx.Client(base_url=pds.url) as client:
        statuses = []
        for _ in range(11):
            page = client.get("/admin/signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            statuses.append(client.post("/admin/signin", data={"csrf": csrf, "password": "guess guess"}).status_code)
    # Earlier tests in this module tried four sign-ins on this server (each counts); 10 per 5 minutes.
    assert 429 in statuses
    assert statuses.index(429) <= 8
    assert all(s == 429 for s in statuses[statuses.index(429):])
