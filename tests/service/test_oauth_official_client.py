"""Issue #17 with the official client: @atproto/oauth-client-node (tests/node, installed from the
npm registry with its package-lock) signs in as a loopback client; the test answers the PDS's
consent page as the user would; the script then makes real calls with its DPoP session."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.accounts import PASSWORD, create_account
from tests.helpers.lexicon_host import LexiconHost

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SET_NSID = "com.example.squallnode.authNotes"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def node_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the official OAuth client test"
    if not (NODE_DIR / "node_modules" / "@atproto" / "oauth-client-node").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "oauth_flow.mjs"


@pytest.fixture(scope="module")
def lexicon_host():
    with LexiconHost() as host:
        host.permission_set(SET_NSID, [{"type": "permission", "resource": "repo",
                                        "collection": ["com.example.squallnode.note"], "action": ["create"]}],
                            title="Write notes")
        yield host


@pytest.fixture(scope="module")
def pds_env(lexicon_host, plc):
    # did:plc accounts on the PLC double: the client resolves the session's DID to find its PDS.
    return {**plc.pds_env(), "PDS_DEV_LEXICON_AUTHORITIES": f"com.example.squallnode={lexicon_host.did}"}


@pytest.fixture(scope="module")
def user(c):
    return create_account(c, "official")


def post(text: str) -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-05-01T00:00:00.000Z"}


def run_official(script: Path, pds, plc, user, scope: str, calls: list[dict]) -> tuple[dict, str]:
    issuer = f"http://localhost:{pds.port}"  # the server's own name (its issuer and resource)
    env = {**os.environ, "PDS_URL": issuer, "SCOPE": scope, "CALLS": json.dumps(calls),
           "PLC_URL": plc.url}
    proc = subprocess.Popen(["node", str(script)], cwd=NODE_DIR, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first, proc.stderr.read()
        authorize = json.loads(first)["authorize"]
        with httpx.Client(timeout=10) as browser:  # the user's browser: its own cookie jar
            page = browser.get(authorize)
            assert page.status_code == 200, page.text
            fields = {k: html.unescape(v) for k, v in
                      re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page.text)}
            r = browser.post(f"{issuer}/oauth/authorize", data={
                **fields, "identifier": user["handle"], "password": PASSWORD, "decision": "allow"},
                headers={"Origin": issuer})
            assert r.status_code == 303, r.text
            location = r.headers["location"]
        proc.stdin.write(urlsplit(location).query + "\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1]), page.text
    finally:
        if proc.poll() is None:
            proc.kill()


def status(result: dict, name: str) -> int:
    return result["results"][name]["status"]


def error(result: dict, name: str) -> str:
    return result["results"][name]["body"].get("error")


def test_granular_scopes_with_the_official_client(node_client, pds, plc, user):
    scope = "atproto repo:app.bsky.feed.post?action=create blob:image/*"
    calls = [
        {"name": "post", "method": "POST", "nsid": "com.atproto.repo.createRecord",
         "json": {"repo": "{did}", "collection": "app.bsky.feed.post", "rkey": "3kaaaaaaaaaa2", "record": post("hi")}},
        {"name": "png", "method": "POST", "nsid": "com.atproto.repo.uploadBlob",
         "base64": base64.b64encode(PNG).decode(), "contentType": "image/png"},
        {"name": "profile", "method": "POST", "nsid": "com.atproto.repo.putRecord",
         "json": {"repo": "{did}", "collection": "app.bsky.actor.profile", "rkey": "self",
                  "record": {"$type": "app.bsky.actor.profile", "displayName": "nope"}}},
        {"name": "delete", "method": "POST", "nsid": "com.atproto.repo.deleteRecord",
         "json": {"repo": "{did}", "collection": "app.bsky.feed.post", "rkey": "3kaaaaaaaaaa2"}},
        {"name": "text", "method": "POST", "nsid": "com.atproto.repo.uploadBlob",
         "base64": base64.b64encode(b"just text").decode(), "contentType": "text/plain"},
        {"name": "app_password", "method": "POST", "nsid": "com.atproto.server.createAppPassword",
         "json": {"name": "sneaky"}},
    ]
    result, consent = run_official(node_client, pds, plc, user, scope, calls)
    assert "Create records of type app.bsky.feed.post in your repository" in consent
    assert "Upload image files" in consent
    assert result["did"] == user["did"] and result["scope"] == scope
    assert status(result, "post") == 200, result
    assert status(result, "png") == 200 and result["results"]["png"]["body"]["blob"]["mimeType"] == "image/png"
    for name in ("profile", "delete", "text"):
        assert status(result, name) == 403 and error(result, name) == "ScopeMissingError", result
    assert status(result, "app_password") == 403, result
    # The refused delete really did nothing.
    r = httpx.get(f"{pds.url}/xrpc/com.atproto.repo.getRecord",
                  params={"repo": user["did"], "collection": "app.bsky.feed.post", "rkey": "3kaaaaaaaaaa2"})
    assert r.status_code == 200


def test_permission_set_with_the_official_client(node_client, pds, plc, user, lexicon_host):
    scope = f"atproto include:{SET_NSID}"
    calls = [
        {"name": "note", "method": "POST", "nsid": "com.atproto.repo.createRecord",
         "json": {"repo": "{did}", "collection": "com.example.squallnode.note",
                  "record": {"$type": "com.example.squallnode.note", "text": "set"}}},
        {"name": "post", "method": "POST", "nsid": "com.atproto.repo.createRecord",
         "json": {"repo": "{did}", "collection": "app.bsky.feed.post", "record": post("no")}},
    ]
    result, consent = run_official(node_client, pds, plc, user, scope, calls)
    assert "Write notes" in consent
    assert result["scope"] == "atproto repo:com.example.squallnode.note?action=create"
    assert status(result, "note") == 200, result
    assert status(result, "post") == 403 and error(result, "post") == "ScopeMissingError", result


def test_transition_generic_as_before(node_client, pds, plc, user):
    calls = [
        {"name": "post", "method": "POST", "nsid": "com.atproto.repo.createRecord",
         "json": {"repo": "{did}", "collection": "app.bsky.feed.post", "record": post("generic")}},
        {"name": "profile", "method": "POST", "nsid": "com.atproto.repo.putRecord",
         "json": {"repo": "{did}", "collection": "app.bsky.actor.profile", "rkey": "self",
                  "record": {"$type": "app.bsky.actor.profile", "displayName": "Generic"}}},
        {"name": "text", "method": "POST", "nsid": "com.atproto.repo.uploadBlob",
         "base64": base64.b64encode(b"text is fine").decode(), "contentType": "text/plain"},
        {"name": "app_password", "method": "POST", "nsid": "com.atproto.server.createAppPassword",
         "json": {"name": "sneaky"}},
    ]
    result, _ = run_official(node_client, pds, plc, user, "atproto transition:generic", calls)
    assert result["scope"] == "atproto transition:generic"
    for name in ("post", "profile", "text"):
        assert status(result, name) == 200, result
    assert status(result, "app_password") == 403 and error(result, "app_password") == "InvalidToken", result
