"""Account deletion against a real ``squall serve``: com.atproto.admin.deleteAccount, the
self-service com.atproto.server.deleteAccount with an operator-issued token (Squall sends no
mail), the ``squall account delete / delete-token / takedown`` commands, and what a deletion
leaves behind (nothing but the #account tombstone event)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from squall.accounts import operator_tokens
from squall.atproto import dagcbor
from squall.store.migrations import MIGRATIONS, _split_sql, apply_migrations
from squall.xrpc.errors import InvalidRequest
from tests.helpers.accounts import PASSWORD, assert_error, bearer, create_account, db_rows, signup
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble
from tests.helpers.relay import collect, stream_url

POST = "app.bsky.feed.post"
# A long grace period and a sweep every second: a deleted account's blobs must go at the next
# sweep, not after the grace period that protects live uploads.
GRACE = 3600
# Every table that holds rows of an account; after a deletion none may name its DID.
PER_DID_TABLES = ("account", "refresh_token", "app_password", "account_pref", "repo_root", "repo_block",
                  "record", "record_blob", "blob", "account_token")

_names = itertools.count()


@pytest.fixture(scope="module")
def pds_env():
    return {"PDS_BLOB_GC_GRACE_SECONDS": str(GRACE), "SQUALL_BLOBS_GC_INTERVAL_SECONDS": "1"}


def post(c, user: dict, text: str = "hello", **extra) -> dict:
    record = {"$type": POST, "text": text, "createdAt": "2024-05-01T12:00:00.000Z", **extra}
    r = c.post("/xrpc/com.atproto.repo.createRecord",
               json={"repo": user["did"], "collection": POST, "record": record}, headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()


def upload(c, user: dict, data: bytes) -> dict:
    r = c.post("/xrpc/com.atproto.repo.uploadBlob", content=data,
               headers={**user["headers"], "Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    return r.json()["blob"]


def rows_left(pds: PdsProcess, did: str) -> dict[str, int]:
    counts = {t: db_rows(pds, f"SELECT COUNT(*) AS n FROM {t} WHERE did = ?", (did,))[0]["n"] for t in PER_DID_TABLES}
    return {t: n for t, n in counts.items() if n}


def seq_events(pds: PdsProcess, did: str) -> list[tuple[str, dict]]:
    rows = db_rows(pds, "SELECT event_type, event FROM repo_seq WHERE did = ? ORDER BY seq", (did,))
    return [(r["event_type"], dagcbor.decode(bytes(r["event"]))) for r in rows]


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def squall(pds: PdsProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "squall.cli", *args], env=pds.env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def png(n: int = 400) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(n)


# -- the admin path ----------------------------------------------------------------------------------


async def test_admin_delete_removes_everything_and_leaves_the_tombstone(pds, c, admin):
    user = create_account(c, "del")
    did, handle = user["did"], user["handle"]
    blob = upload(c, user, png())
    post(c, user, "with image", embed={"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": ""}]})
    rec = post(c, user, "plain")
    upload(c, user, png())  # never referenced: still a temp upload
    assert c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": "app"},
                  headers=user["headers"]).status_code == 200
    prefs = [{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False}]
    assert c.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": prefs},
                  headers=user["headers"]).status_code == 200
    codes = c.post("/xrpc/com.atproto.server.createInviteCodes", auth=admin,
                   json={"useCount": 1, "forAccounts": [did]}).json()["codes"][0]["codes"]
    blob_file = pds.data_dir / "blobs" / did / blob["ref"]["$link"]
    (temp,) = db_rows(pds, "SELECT temp_key FROM blob WHERE did = ? AND temp_key IS NOT NULL", (did,))
    temp_file = pds.data_dir / "tmp" / temp["temp_key"]
    assert blob_file.exists() and temp_file.exists()
    assert set(rows_left(pds, did)) == set(PER_DID_TABLES) - {"account_token"}

    subscriber = asyncio.create_task(collect(stream_url(pds.url), count=1, timeout=15))
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=pds.url) as ac:
        r = await ac.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": did}, auth=admin)
    assert r.status_code == 200, r.text
    got = await subscriber
    header, body = got.frames[0]
    assert header["t"] == "#account"
    assert body["did"] == did and body["active"] is False and body["status"] == "deleted"

    # only the tombstone is left of the account's events, and of its rows only blobs awaiting the GC
    events = seq_events(pds, did)
    assert events == [("account", {"did": did, "active": False, "status": "deleted", "time": events[0][1]["time"]})]
    assert set(rows_left(pds, did)) <= {"blob"}
    assert db_rows(pds, "SELECT disabled FROM invite_code WHERE code = ?", (codes[0],))[0]["disabled"] == 1

    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}), 400, "RepoNotFound")
    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}, auth=admin), 400, "RepoNotFound")
    assert_error(c.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": did}), 400, "RepoNotFound")
    assert_error(c.get("/xrpc/com.atproto.sync.getRepoStatus", params={"did": did}), 400, "RepoNotFound")
    assert_error(c.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": did}), 400, "RepoNotFound")
    assert_error(c.get("/xrpc/com.atproto.repo.getRecord",
                       params={"repo": did, "collection": POST, "rkey": rec["uri"].rsplit("/", 1)[1]}),
                 400, "RecordNotFound")
    assert_error(c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": blob["ref"]["$link"]}),
                 400, "RepoNotFound")
    listed = c.get("/xrpc/com.atproto.sync.listRepos", params={"limit": 1000}).json()["repos"]
    assert did not in {r["did"] for r in listed}
    assert_error(c.get("/xrpc/com.atproto.admin.getAccountInfo", params={"did": did}, auth=admin), 400, "NotFound")

    # identity: the handle resolves to nothing, the did:web document is no longer served
    assert_error(c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": handle}), 400, "HandleNotFound")
    assert c.get("/.well-known/did.json", headers={"Host": handle}).status_code == 404
    assert c.get("/.well-known/atproto-did", headers={"Host": handle}).status_code == 404

    # sessions and passwords are gone
    assert c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).status_code == 400
    assert c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(user["refreshJwt"])).status_code == 400
    r = c.post("/xrpc/com.atproto.server.createSession", json={"identifier": handle, "password": PASSWORD})
    assert_error(r, 401, "AuthenticationRequired")

    # the blob collector removes the bytes and rows at its next sweep (no grace period here)
    wait_until(lambda: not rows_left(pds, did) and not blob_file.exists() and not temp_file.exists())


def test_handle_is_free_again_after_deletion(pds, c, admin):
    user = create_account(c, "again")
    old_record = post(c, user, "from the first account")
    assert c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": user["did"]}, auth=admin).status_code == 200
    r = signup(c, user["name"], email=f"second-{user['name']}@example.com")
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["handle"] == user["handle"]
    # did:web: the same name gives the same DID, but nothing of the first account comes back
    assert second["did"] == user["did"]
    r = c.get("/xrpc/com.atproto.repo.listRecords", params={"repo": second["did"], "collection": POST})
    assert r.status_code == 200 and r.json()["records"] == []
    assert_error(c.get("/xrpc/com.atproto.repo.getRecord",
                       params={"repo": second["did"], "collection": POST,
                               "rkey": old_record["uri"].rsplit("/", 1)[1]}), 400, "RecordNotFound")
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": second["did"]}).status_code == 200
    # the first account's token is no good for the second one
    assert c.get("/xrpc/com.atproto.server.getSession", headers=bearer(second["accessJwt"])).status_code == 200
    types = [t for t, _ in seq_events(pds, user["did"])]
    assert types == ["account", "identity", "account", "sync"]


def test_deleting_taken_down_and_deactivated_accounts(pds, c, admin):
    down, off = create_account(c, "gone"), create_account(c, "gone")
    r = c.post("/xrpc/com.atproto.admin.updateSubjectStatus", auth=admin,
               json={"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": down["did"]},
                     "takedown": {"applied": True}})
    assert r.status_code == 200
    assert c.post("/xrpc/com.atproto.server.deactivateAccount", json={}, headers=off["headers"]).status_code == 200
    for user in (down, off):
        assert c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": user["did"]}, auth=admin).status_code == 200
        assert set(rows_left(pds, user["did"])) <= {"blob"}
        assert [t for t, _ in seq_events(pds, user["did"])] == ["account"]


def test_admin_delete_errors(c, admin):
    user = create_account(c, "err")
    unknown = "did:web:nobody-here.localhost"
    assert_error(c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": unknown}, auth=admin),
                 400, "AccountNotFound")
    assert_error(c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": "not a did"}, auth=admin),
                 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.admin.deleteAccount", json={}, auth=admin), 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": 7}, auth=admin), 400, "InvalidRequest")
    for headers in ({}, user["headers"]):
        r = c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": user["did"]}, headers=headers)
        assert_error(r, 401, "AuthenticationRequired")
    # a user's own token never deletes anything, not even its own account
    assert c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).status_code == 200


# -- the self-service path -----------------------------------------------------------------------------


def issue_token(c, admin, did: str) -> str:
    r = c.post("/xrpc/_admin/account-delete-token", json={"did": did}, auth=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["did"] == did and body["expiresAt"].endswith("Z")
    return body["token"]


def test_request_account_delete_explains_how_instead_of_mailing(c):
    user = create_account(c, "req")
    r = c.post("/xrpc/com.atproto.server.requestAccountDelete", headers=user["headers"])
    body = assert_error(r, 400, "InvalidRequest")
    assert "e-mail" in body["message"] and "squall account delete-token" in body["message"]
    assert_error(c.post("/xrpc/com.atproto.server.requestAccountDelete"), 401, "AuthenticationRequired")


def test_self_service_delete_with_operator_token(pds, c, admin):
    user = create_account(c, "self")
    did = user["did"]
    first = issue_token(c, admin, did)
    token = issue_token(c, admin, did)  # a new token replaces the earlier one
    assert first != token
    url = "/xrpc/com.atproto.server.deleteAccount"
    assert_error(c.post(url, json={"did": did, "password": PASSWORD, "token": first}), 400, "InvalidToken")
    assert_error(c.post(url, json={"did": did, "password": PASSWORD, "token": "AAAAA-BBBBB"}), 400, "InvalidToken")
    assert_error(c.post(url, json={"did": did, "password": "not the password", "token": token}),
                 401, "AuthenticationRequired")
    assert_error(c.post(url, json={"did": did, "password": "x" * 600, "token": token}), 401, "AuthenticationRequired")
    assert_error(c.post(url, json={"did": "did:web:nobody-here.localhost", "password": PASSWORD, "token": token}),
                 400, "AccountNotFound")
    for body in ({"did": did, "password": PASSWORD}, {"did": did, "token": token}, {"password": PASSWORD, "token": token},
                 {"did": did, "password": PASSWORD, "token": 5}, {"did": "bad", "password": PASSWORD, "token": token}):
        assert_error(c.post(url, json=body), 400, "InvalidRequest")
    # an app password is not the account password
    app = c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": "a"}, headers=user["headers"]).json()
    assert_error(c.post(url, json={"did": did, "password": app["password"], "token": token}),
                 401, "AuthenticationRequired")
    assert rows_left(pds, did)  # nothing happened so far

    r = c.post(url, json={"did": did, "password": PASSWORD, "token": token.lower()})
    assert r.status_code == 200, r.text
    assert set(rows_left(pds, did)) <= {"blob"}
    assert [e["status"] for t, e in seq_events(pds, did)] == ["deleted"]
    assert_error(c.post(url, json={"did": did, "password": PASSWORD, "token": token}), 400, "AccountNotFound")


def test_delete_token_route_errors(c, admin):
    r = c.post("/xrpc/_admin/account-delete-token", json={"did": "did:web:nobody-here.localhost"}, auth=admin)
    assert_error(r, 400, "AccountNotFound")
    assert_error(c.post("/xrpc/_admin/account-delete-token", json={}, auth=admin), 400, "InvalidRequest")
    r = c.post("/xrpc/_admin/account-delete-token", content=b"[1]", auth=admin)
    assert_error(r, 400, "InvalidRequest")
    r = c.post("/xrpc/_admin/account-delete-token", content=b"x" * 10_000, auth=admin)
    assert_error(r, 413, "PayloadTooLarge")


def test_tokens_expire_and_compare_loosely(tmp_path):
    # The token rules on a database of the current schema, without a server: expiry is the one
    # thing the HTTP tests cannot reach without waiting an hour.
    conn = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    conn.row_factory = sqlite3.Row  # as the PDS's writer connection
    apply_migrations(conn, "test")
    conn.execute("INSERT INTO account (did, handle, signing_key_alg, signing_key, created_at) "
                 "VALUES ('did:web:t.localhost', 't.localhost', 'ES256K', x'01', '2024-01-01T00:00:00.000Z')")
    did, delete = "did:web:t.localhost", operator_tokens.PURPOSE_DELETE
    token, expires = operator_tokens.issue(conn, did, delete, now=1_000)
    assert expires == 1_000 + operator_tokens.TOKEN_TTL
    operator_tokens.check(conn, did, delete, token, now=expires - 1)
    operator_tokens.check(conn, did, delete, f"  {token.lower()} ", now=expires - 1)
    with pytest.raises(InvalidRequest) as err:
        operator_tokens.check(conn, did, delete, token, now=expires)
    assert err.value.name == "ExpiredToken"
    with pytest.raises(InvalidRequest) as err:
        operator_tokens.check(conn, did, delete, "ZZZZZ-ZZZZZ", now=1_000)
    assert err.value.name == "InvalidToken"
    with pytest.raises(InvalidRequest) as err:
        operator_tokens.issue(conn, "did:web:other.localhost", delete)
    assert err.value.name == "AccountNotFound"
    # the token is stored only as a digest
    (stored,) = conn.execute("SELECT token_hash FROM account_token").fetchone()
    assert token not in stored and len(stored) == 64
    # a token of the other purpose lives beside it and does not stand in for it
    plc_token, _ = operator_tokens.issue(conn, did, operator_tokens.PURPOSE_PLC, now=1_000)
    with pytest.raises(InvalidRequest) as err:
        operator_tokens.check(conn, did, delete, plc_token, now=1_000)
    assert err.value.name == "InvalidToken"
    operator_tokens.check(conn, did, delete, token, now=1_000)
    # consuming uses it up
    operator_tokens.consume(conn, did, operator_tokens.PURPOSE_PLC, plc_token, now=1_000)
    with pytest.raises(InvalidRequest) as err:
        operator_tokens.consume(conn, did, operator_tokens.PURPOSE_PLC, plc_token, now=1_000)
    assert err.value.name == "InvalidToken"


def test_v4_deletion_tokens_survive_the_upgrade(tmp_path):
    # v5 moved the deletion tokens into the general account_token table.
    conn = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    conn.row_factory = sqlite3.Row
    for version, sql in MIGRATIONS:
        if version <= 4:
            for statement in _split_sql(sql):
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO account (did, handle, signing_key_alg, signing_key, created_at) "
                 "VALUES ('did:web:u.localhost', 'u.localhost', 'ES256K', x'01', '2024-01-01T00:00:00.000Z')")
    digest = hashlib.sha256(b"ABCDE-FGHIJ").hexdigest()
    conn.execute("INSERT INTO account_delete_token (did, token_hash, expires_at) VALUES (?, ?, ?)",
                 ("did:web:u.localhost", digest, 5_000))
    assert apply_migrations(conn, "test") >= 5
    assert [tuple(r) for r in conn.execute("SELECT did, purpose, token_hash, expires_at FROM account_token")] == [
        ("did:web:u.localhost", "delete", digest, 5_000)]
    operator_tokens.check(conn, "did:web:u.localhost", operator_tokens.PURPOSE_DELETE, "abcde-fghij", now=4_999)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'account_delete_token'").fetchone() is None


# -- operator commands ------------------------------------------------------------------------------------


def test_cli_takedown_and_reverse(pds, c):
    user = create_account(c, "clitd")
    r = squall(pds, "account", "takedown", user["handle"], "--ref", "ticket-9")
    assert r.returncode == 0, r.stderr
    assert "ticket-9" in r.stdout and user["did"] in r.stdout
    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user["did"]}), 400, "RepoTakendown")
    r = squall(pds, "account", "takedown", user["did"], "--reverse")
    assert r.returncode == 0, r.stderr
    assert "takedown: none" in r.stdout
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user["did"]}).status_code == 200
    r = squall(pds, "account", "takedown", user["did"], "--reverse", "--ref", "x")
    assert r.returncode == 1 and "--ref" in r.stderr


def test_cli_delete_needs_confirmation(pds, c):
    user = create_account(c, "clidel")
    r = squall(pds, "account", "delete", user["handle"])
    assert r.returncode == 1 and "--yes" in r.stderr
    assert c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user["did"]}).status_code == 200
    r = squall(pds, "account", "delete", user["handle"], "--yes")
    assert r.returncode == 0, r.stderr
    assert user["did"] in r.stdout
    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user["did"]}), 400, "RepoNotFound")
    r = squall(pds, "account", "delete", user["handle"], "--yes")
    assert r.returncode == 1 and "no account with handle" in r.stderr
    r = squall(pds, "account", "delete", "did:web:nobody-here.localhost", "--yes")
    assert r.returncode == 1 and "AccountNotFound" in r.stderr


def test_cli_delete_token_lets_the_user_delete(pds, c):
    user = create_account(c, "clitok")
    r = squall(pds, "account", "delete-token", user["handle"])
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(":", 1) for line in r.stdout.strip().splitlines())
    assert fields["did"].strip() == user["did"]
    token = fields["token"].strip()
    r = c.post("/xrpc/com.atproto.server.deleteAccount", json={"did": user["did"], "password": PASSWORD,
                                                               "token": token})
    assert r.status_code == 200, r.text
    assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": user["did"]}), 400, "RepoNotFound")


# -- did:plc --------------------------------------------------------------------------------------------


def test_did_plc_document_is_left_as_is(tmp_path):
    with PlcDirectoryDouble() as plc:
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url}
        with PdsProcess(tmp_path / "data", env_extra=env) as proc, proc.client() as c:
            user = create_account(c, "plc")
            did = user["did"]
            ops = len(plc.log(did))
            r = c.post("/xrpc/com.atproto.admin.deleteAccount", json={"did": did}, auth=("admin", proc.admin_password()))
            assert r.status_code == 200, r.text
            assert len(plc.log(did)) == ops
            assert httpx.get(f"{plc.url}/{did}").status_code == 200
            assert_error(c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}), 400, "RepoNotFound")
            # the handle is free: a new account takes it (with a new DID)
            r = signup(c, user["name"], email=f"again-{user['name']}@example.com")
            assert r.status_code == 200 and r.json()["did"] != did
            assert "Traceback" not in proc.logs()


def test_server_log_has_no_tracebacks(pds):
    assert "Traceback" not in pds.logs()
