"""Account migration between two real Squall servers on one PLC directory double
(https://atproto.com/guides/account-migration).

The identity update goes as with the reference PDS, with Squall's twist that no e-mail is sent:
the OLD server's operator issues a PLC token (``squall account plc-token``), the user has the OLD
server sign the operation (signPlcOperation, with the NEW server's getRecommendedDidCredentials)
and submits it on the NEW server (submitPlcOperation).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from squall.atproto import dagcbor
from squall.atproto.car import encode_car, read_car
from squall.atproto.cid import CID
from squall.atproto.commit import decode_commit, sign_commit
from squall.atproto.crypto import Secp256k1Keypair
from squall.auth.service_jwt import create_service_jwt
from squall.identity import plc as plc_ops
from squall.repo import importer
from squall.xrpc.errors import PayloadTooLarge
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble
from tests.helpers.verify import fetch_did_doc, signing_key, verify_repo_car

PASSWORD = "correct horse battery"
NEW_SERVICE_DID = "did:web:new-pds.localhost"
CAR = {"Content-Type": "application/vnd.ipld.car"}
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
_names = itertools.count()


def name(prefix: str) -> str:
    return f"{prefix}{next(_names)}{int(time.time() * 1000) % 100000}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, error: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and body["message"], body
    if error is not None:
        assert body["error"] == error, body
    return body


def db_rows(pds: PdsProcess, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(f"file:{pds.data_dir / 'pds.sqlite'}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plc():
    with PlcDirectoryDouble() as double:
        yield double


@pytest.fixture(scope="module")
def old(plc, tmp_path_factory):
    env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true"}
    with PdsProcess(tmp_path_factory.mktemp("old") / "data", env_extra=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def new(plc, tmp_path_factory):
    # Its own service DID, so a token minted for another audience is told apart.
    env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true",
           "PDS_SERVICE_DID": NEW_SERVICE_DID}
    with PdsProcess(tmp_path_factory.mktemp("new") / "data", env_extra=env) as proc:
        yield proc


def signup(pds: PdsProcess, prefix: str) -> dict:
    handle = f"{name(prefix)}.localhost"
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.server.createAccount",
                   json={"handle": handle, "email": f"{handle}@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def service_auth(pds: PdsProcess, user: dict, aud: str = NEW_SERVICE_DID,
                 lxm: str = "com.atproto.server.createAccount") -> str:
    with pds.client() as c:
        r = c.get("/xrpc/com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm},
                  headers=bearer(user["accessJwt"]))
    assert r.status_code == 200, r.text
    return r.json()["token"]


def migrate_create(new: PdsProcess, user: dict, token: str | None, *, handle: str | None = None) -> httpx.Response:
    body = {"handle": handle or user["handle"], "email": f"moved-{user['handle']}@example.com",
            "password": PASSWORD, "did": user["did"]}
    with new.client() as c:
        return c.post("/xrpc/com.atproto.server.createAccount", json=body,
                      headers=bearer(token) if token else {})


def export(pds: PdsProcess, did: str) -> bytes:
    with pds.client() as c:
        r = c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did})
    assert r.status_code == 200, r.text
    return r.content


def repo_root(pds: PdsProcess, did: str) -> tuple[str, str]:
    (row,) = db_rows(pds, "SELECT cid, rev FROM repo_root WHERE did = ?", (did,))
    return row["cid"], row["rev"]


def counts(pds: PdsProcess, did: str) -> tuple[int, int, int]:
    return (db_rows(pds, "SELECT COUNT(*) AS n FROM repo_block WHERE did = ?", (did,))[0]["n"],
            db_rows(pds, "SELECT COUNT(*) AS n FROM record WHERE did = ?", (did,))[0]["n"],
            db_rows(pds, "SELECT COUNT(*) AS n FROM record_blob WHERE did = ?", (did,))[0]["n"])


def events_of(pds: PdsProcess, did: str) -> list[tuple[str, dict]]:
    rows = db_rows(pds, "SELECT event_type, event FROM repo_seq WHERE did = ? ORDER BY seq", (did,))
    return [(r["event_type"], dagcbor.decode(bytes(r["event"]))) for r in rows]


# -- the whole move ------------------------------------------------------------------------------------


def test_full_migration_between_two_squall_servers(old, new, plc):
    user = signup(old, "mover")
    did, handle = user["did"], user["handle"]
    old_c, new_c = old.client(), new.client()
    auth_old = bearer(user["accessJwt"])

    # On the old server: posts and a post with an image.
    posts = []
    for i in range(5):
        r = old_c.post("/xrpc/com.atproto.repo.createRecord", headers=auth_old, json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"text": f"post {i}", "createdAt": "2024-05-01T12:00:00.000Z"}})
        assert r.status_code == 200, r.text
        posts.append(r.json()["uri"])
    r = old_c.post("/xrpc/com.atproto.repo.uploadBlob", content=PNG,
                   headers={**auth_old, "Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    blob = r.json()["blob"]
    r = old_c.post("/xrpc/com.atproto.repo.createRecord", headers=auth_old, json={
        "repo": did, "collection": "app.bsky.feed.post",
        "record": {"text": "with a picture", "createdAt": "2024-05-01T12:00:00.000Z",
                   "embed": {"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": "noise"}]}}})
    assert r.status_code == 200, r.text
    image_post = r.json()["uri"]
    old_key = signing_key(fetch_did_doc(did, plc_url=plc.url))

    # 1. createAccount on the new server with the DID and a token from the old one.
    r = migrate_create(new, user, service_auth(old, user))
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["did"] == did and created["handle"] == handle
    assert created["didDoc"]["id"] == did  # still the old document: nothing was published
    assert len(plc.log(did)) == 1
    auth_new = bearer(created["accessJwt"])
    r = new_c.get("/xrpc/com.atproto.server.getSession", headers=auth_new)
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["status"] == "deactivated"
    assert events_of(new, did) == []  # not announced before activation
    r = new_c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=auth_new)
    status = r.json()
    assert status["activated"] is False and status["validDid"] is False and status["indexedRecords"] == 0
    # a deactivated account cannot write yet
    r = new_c.post("/xrpc/com.atproto.repo.createRecord", headers=auth_new, json={
        "repo": did, "collection": "app.bsky.feed.post", "record": {"text": "x", "createdAt": "2024-05-01T12:00:00Z"}})
    assert_error(r, 401, "AccountDeactivated")

    # 2. importRepo: the old server's export.
    car = export(old, did)
    exported = verify_repo_car(car, did, old_key)
    r = new_c.post("/xrpc/com.atproto.repo.importRepo", content=car, headers={**auth_new, **CAR})
    assert r.status_code == 200, r.text
    assert repo_root(new, did) == (str(exported.commit_cid), exported.rev)
    imported = verify_repo_car(export_as_owner(new, did, created["accessJwt"]), did, old_key)
    assert imported.records == exported.records and imported.commit_cid == exported.commit_cid
    assert counts(new, did)[1:] == (6, 1)  # records indexed, the image's blob reference noted
    assert events_of(new, did) == []  # importing into a deactivated account announces nothing yet

    # 3. blobs: the new server knows which one is missing; fetch it from the old, upload it.
    r = new_c.get("/xrpc/com.atproto.repo.listMissingBlobs", headers=auth_new)
    assert r.json()["blobs"] == [{"cid": blob["ref"]["$link"], "recordUri": image_post}]
    status = new_c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=auth_new).json()
    assert (status["expectedBlobs"], status["importedBlobs"]) == (1, 0)
    data = old_c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": blob["ref"]["$link"]})
    assert data.status_code == 200 and data.content == PNG
    r = new_c.post("/xrpc/com.atproto.repo.uploadBlob", content=data.content,
                   headers={**auth_new, "Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["blob"]["ref"] == blob["ref"], r.text
    assert new_c.get("/xrpc/com.atproto.repo.listMissingBlobs", headers=auth_new).json()["blobs"] == []

    # 4. the identity: the old server's operator issues a PLC token (Squall mails none), the old
    # server signs the operation the new one recommends, the new one checks and publishes it.
    r = old_c.post("/xrpc/com.atproto.identity.requestPlcOperationSignature", headers=auth_old)
    assert "squall account plc-token" in assert_error(r, 400, "InvalidRequest")["message"]
    recommended = new_c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers=auth_new).json()
    new_key_did = recommended["verificationMethods"]["atproto"]
    assert new_key_did != old_key.did_key()
    last = plc.log(did)[-1]

    def signed_by_old(**changes) -> dict:
        return sign_on(old, auth_old, plc_token(old, did), **{**recommended, **changes})

    wrong_endpoint = signed_by_old(services={"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": old.url}})
    wrong_key = signed_by_old(verificationMethods={"atproto": old_key.did_key()})
    for bad, fragment in ((wrong_endpoint, "endpoint"), (wrong_key, "signing key")):
        r = new_c.post("/xrpc/com.atproto.identity.submitPlcOperation", headers=auth_new, json={"operation": bad})
        assert fragment in assert_error(r, 400, "InvalidRequest")["message"]
    assert len(plc.log(did)) == 1
    cli = squall(old, "account", "plc-token", handle)
    assert cli.returncode == 0, cli.stderr
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in cli.stdout.strip().splitlines())}
    assert fields["did"] == did
    operation = sign_on(old, auth_old, fields["token"], **recommended)
    assert operation["prev"] == str(plc_ops.op_cid(last)) and operation["rotationKeys"] == recommended["rotationKeys"]
    assert len(plc.log(did)) == 1  # signed, not published
    r = new_c.post("/xrpc/com.atproto.identity.submitPlcOperation", headers=auth_new,
                   json={"operation": operation})
    assert r.status_code == 200, r.text
    assert plc.log(did)[-1] == operation
    doc = fetch_did_doc(did, plc_url=plc.url)
    assert signing_key(doc).did_key() == new_key_did
    assert doc["service"][0]["serviceEndpoint"] == f"http://localhost:{new.port}"
    # the old server's rotation key is gone from the DID: it can sign nothing more for it
    r = sign_request(old, auth_old, {"token": plc_token(old, did)})
    assert "no longer a rotation key" in assert_error(r, 400, "InvalidRequest")["message"]

    # 5. activate on the new server, deactivate on the old.
    assert new_c.post("/xrpc/com.atproto.server.activateAccount", headers=auth_new).status_code == 200
    assert old_c.post("/xrpc/com.atproto.server.deactivateAccount", headers=auth_old, json={}).status_code == 200
    kinds = [kind for kind, _ in events_of(new, did)]
    assert kinds == ["identity", "account", "identity", "sync"]  # submitPlcOperation, then activation
    sync = events_of(new, did)[-1][1]
    sync_roots, sync_blocks = read_car(sync["blocks"])
    assert sync_roots == [exported.commit_cid] and sync["rev"] == exported.rev
    assert decode_commit(sync_blocks[exported.commit_cid])["did"] == did
    assert events_of(new, did)[1][1]["active"] is True
    r = new_c.get("/xrpc/com.atproto.repo.getRecord", params={
        "repo": did, "collection": "app.bsky.feed.post", "rkey": posts[2].rsplit("/", 1)[1]})
    assert r.status_code == 200 and r.json()["value"]["text"] == "post 2", r.text

    # 6. a new post on the new server is signed with the NEW key and the repo verifies against the
    # updated document, old records included.
    r = new_c.post("/xrpc/com.atproto.repo.createRecord", headers=auth_new, json={
        "repo": did, "collection": "app.bsky.feed.post",
        "record": {"text": "hello from my new home", "createdAt": "2024-06-01T12:00:00.000Z"}})
    assert r.status_code == 200, r.text
    new_post = r.json()["uri"]
    after = verify_repo_car(export(new, did), did, signing_key(doc))
    assert after.rev > exported.rev
    assert set(after.records) == set(exported.records) | {new_post.split("/", 3)[3]}
    assert after.record(image_post.split("/", 3)[3])["text"] == "with a picture"
    with pytest.raises(AssertionError):
        verify_repo_car(export(new, did), did, old_key)

    # 7. checkAccountStatus agrees with what is stored and served.
    # An upload that an imported record already references is permanent at once (no GC wait).
    status = new_c.get("/xrpc/com.atproto.server.checkAccountStatus", headers=auth_new).json()
    assert status == {
        "activated": True, "validDid": True, "repoCommit": str(after.commit_cid), "repoRev": after.rev,
        "repoBlocks": len(after.blocks), "indexedRecords": len(after.records), "privateStateValues": 0,
        "expectedBlobs": 1, "importedBlobs": 1,
    }
    r = new_c.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": blob["ref"]["$link"]})
    assert r.status_code == 200 and r.content == PNG
    old_c.close()
    new_c.close()


def squall(pds: PdsProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "squall.cli", *args], env=pds.env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def plc_token(pds: PdsProcess, did: str) -> str:
    """A PLC token, issued as the operator does (the admin route behind ``squall account plc-token``)."""
    with pds.client() as c:
        r = c.post("/xrpc/_admin/account-plc-token", json={"did": did}, auth=("admin", pds.admin_password()))
    assert r.status_code == 200, r.text
    assert r.json()["did"] == did and r.json()["expiresAt"].endswith("Z")
    return r.json()["token"]


def sign_request(pds: PdsProcess, headers: dict, body: dict) -> httpx.Response:
    with pds.client() as c:
        return c.post("/xrpc/com.atproto.identity.signPlcOperation", headers=headers, json=body)


def sign_on(pds: PdsProcess, headers: dict, token: str, **fields) -> dict:
    r = sign_request(pds, headers, {"token": token, **fields})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"operation"}
    return r.json()["operation"]


def export_as_owner(pds: PdsProcess, did: str, access: str) -> bytes:
    with pds.client() as c:
        r = c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}, headers=bearer(access))
    assert r.status_code == 200, r.text
    return r.content


# -- createAccount with a did: refusals ---------------------------------------------------------------


def test_create_with_did_refuses_bad_tokens_and_stores_nothing(old, new, plc):
    user = signup(old, "refused")
    before = db_rows(new, "SELECT COUNT(*) AS n FROM account")[0]["n"]
    forged = create_service_jwt(Secp256k1Keypair.generate(), iss=user["did"], aud=NEW_SERVICE_DID,
                                lxm="com.atproto.server.createAccount")
    assert_error(migrate_create(new, user, forged), 401, "BadJwtSignature")
    assert_error(migrate_create(new, user, service_auth(old, user, aud="did:web:elsewhere.localhost")),
                 401, "BadJwtAudience")
    assert_error(migrate_create(new, user, service_auth(old, user, lxm="com.atproto.repo.createRecord")),
                 401, "BadJwtLexiconMethod")
    other = signup(old, "other")
    assert "did" in assert_error(migrate_create(new, user, service_auth(old, other)), 401)["message"]
    assert "service-auth" in assert_error(migrate_create(new, user, None), 400, "InvalidRequest")["message"]
    web_user = {**user, "did": "did:web:someone.localhost"}
    assert_error(migrate_create(new, web_user, service_auth(old, user)), 400, "IncompatibleDidDoc")
    assert db_rows(new, "SELECT COUNT(*) AS n FROM account")[0]["n"] == before
    assert db_rows(new, "SELECT COUNT(*) AS n FROM account WHERE did = ?", (user["did"],))[0]["n"] == 0
    # the genuine token works, once
    assert migrate_create(new, user, service_auth(old, user)).status_code == 200
    r = migrate_create(new, user, service_auth(old, user), handle=f"{name('again')}.localhost")
    assert_error(r, 400, "AlreadyExists")


# -- importRepo: refusals ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mover(old, new):
    """An account with a few records on the old server, created (deactivated) on the new one."""
    user = signup(old, "carol")
    with old.client() as c:
        for i in range(3):
            r = c.post("/xrpc/com.atproto.repo.createRecord", headers=bearer(user["accessJwt"]), json={
                "repo": user["did"], "collection": "app.bsky.feed.post",
                "record": {"text": f"carol {i}", "createdAt": "2024-05-01T12:00:00.000Z"}})
            assert r.status_code == 200, r.text
    r = migrate_create(new, user, service_auth(old, user))
    assert r.status_code == 200, r.text
    return {**user, "new": r.json()}


def _import(new: PdsProcess, mover: dict, content: bytes, headers: dict | None = None) -> httpx.Response:
    with new.client() as c:
        return c.post("/xrpc/com.atproto.repo.importRepo", content=content,
                      headers={**bearer(mover["new"]["accessJwt"]), **(headers if headers is not None else CAR)})


def _resigned(car: bytes, keypair: Secp256k1Keypair) -> bytes:
    roots, blocks = read_car(car)
    commit = decode_commit(blocks[roots[0]])
    cid, block, _ = sign_commit(commit["did"], commit["data"], commit["rev"], keypair)
    rest = [(c, b) for c, b in blocks.items() if c != roots[0]]
    return encode_car([cid], [(cid, block), *rest])


def _tampered(car: bytes) -> bytes:
    roots, blocks = read_car(car)
    victim = next(c for c, b in blocks.items() if c != roots[0] and b"carol 1" in b)
    raw = bytearray(car)
    at = raw.find(b"carol 1", raw.find(victim.bytes))
    raw[at:at + 7] = b"carol X"
    return bytes(raw)


def test_bad_imports_get_a_4xx_envelope_and_store_nothing(old, new, mover):
    did = mover["did"]
    before = (repo_root(new, did), counts(new, did))
    car = export(old, did)
    someone = signup(old, "dave")
    bad = [
        (export(old, someone["did"]), 400, "not for this account"),        # another DID's repo
        (_tampered(car), 400, "does not hash"),                            # a block that lies
        (_resigned(car, Secp256k1Keypair.generate()), 400, "signature"),   # not signed by the DID's key
        (car[: len(car) // 2], 400, "CAR"),                                # cut short
        (b"not a car at all", 400, "CAR"),
        (encode_car([], []), 400, "exactly one root"),
    ]
    for content, status, fragment in bad:
        body = assert_error(_import(new, mover, content), status)
        assert fragment in body["message"], body
        assert (repo_root(new, did), counts(new, did)) == before
    assert "Content-Type" in assert_error(_import(new, mover, car, {"Content-Type": "application/json"}),
                                          400)["message"]
    # a declared size over the limit is refused before any byte is read
    status, body = _declare_huge_body(new, mover["new"]["accessJwt"], importer.MAX_IMPORT_BYTES + 1)
    assert status == 413 and json.loads(body)["error"] == "PayloadTooLarge", body
    assert (repo_root(new, did), counts(new, did)) == before
    assert not list((new.data_dir / "tmp").glob("import-*"))  # staging files are removed
    # and the genuine CAR imports
    assert _import(new, mover, car).status_code == 200
    assert repo_root(new, did)[0] == str(read_car(car)[0][0])
    assert counts(new, did)[1] == 3


def _declare_huge_body(pds: PdsProcess, access: str, length: int) -> tuple[int, bytes]:
    """POST headers that announce ``length`` bytes, send a few, and read the answer (httpx refuses
    to send a body shorter than its Content-Length)."""
    with socket.create_connection(("127.0.0.1", pds.port), timeout=10) as sock:
        sock.sendall((f"POST /xrpc/com.atproto.repo.importRepo HTTP/1.1\r\nHost: localhost\r\n"
                      f"Authorization: Bearer {access}\r\nContent-Type: application/vnd.ipld.car\r\n"
                      f"Content-Length: {length}\r\n\r\n").encode() + b"x" * 10)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += sock.recv(65536)
        head, _, rest = raw.partition(b"\r\n\r\n")
        size = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")))
        while len(rest) < size:
            rest += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), rest


def test_import_into_an_active_account_is_announced_with_a_sync_event(old, plc):
    user = signup(old, "erin")
    did = user["did"]
    with old.client() as c:
        r = c.post("/xrpc/com.atproto.repo.createRecord", headers=bearer(user["accessJwt"]), json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"text": "kept", "createdAt": "2024-05-01T12:00:00.000Z"}})
        assert r.status_code == 200, r.text
        car = export(old, did)
        r = c.post("/xrpc/com.atproto.repo.createRecord", headers=bearer(user["accessJwt"]), json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"text": "dropped by the import", "createdAt": "2024-05-01T12:00:00.000Z"}})
        assert r.status_code == 200, r.text
        # An older CAR into an active account is a rollback: only the operator may force it (issue #20).
        r = c.post("/xrpc/_admin/import-repo", content=car, params={"did": did}, auth=("admin", old.admin_password()),
                   headers=CAR)
        assert r.status_code == 200, r.text
    root = read_car(car)[0][0]
    assert repo_root(old, did)[0] == str(root)
    assert counts(old, did)[1] == 1
    kind, body = events_of(old, did)[-1]
    assert kind == "sync" and read_car(body["blocks"])[0] == [root]
    key = signing_key(fetch_did_doc(did, plc_url=plc.url))
    assert len(verify_repo_car(export(old, did), did, key).records) == 1


def test_import_is_for_signed_in_accounts_only(new, mover):
    with new.client() as c:
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=b"", headers=CAR)
    assert_error(r, 401)


async def test_a_streamed_car_over_the_limit_is_refused_before_anything_is_stored(tmp_path):
    chunks_sent = []
    blocks = [(CID.from_block(b), b) for b in (dagcbor.encode({"n": i, "pad": "x" * 900}) for i in range(100))]
    car = encode_car([blocks[0][0]], blocks)

    async def body():
        for i in range(0, len(car), 1000):
            chunks_sent.append(1)
            yield car[i:i + 1000]

    async def no_keys():
        raise AssertionError("keys are asked for only after the CAR was staged")

    ctx = SimpleNamespace(settings=SimpleNamespace(data_directory=tmp_path), db=None, services={},
                          log=logging.getLogger("test"))
    with pytest.raises(PayloadTooLarge):
        await importer.import_repo(ctx, "did:plc:abcdefghijklmnopqrstuvwx", body(), no_keys, max_bytes=5000)
    assert len(chunks_sent) <= 6
    assert list((Path(tmp_path) / "tmp").iterdir()) == []


# -- moving out: signPlcOperation on the old server ------------------------------------------------------


@pytest.fixture(scope="module")
def web_pds(tmp_path_factory):
    """A server whose accounts are did:web (the default for a localhost hostname)."""
    with PdsProcess(tmp_path_factory.mktemp("web") / "data") as proc:
        yield proc


def expire_tokens(pds: PdsProcess, did: str) -> None:
    # An hour-long token cannot be waited out in a test; move its expiry into the past instead.
    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", timeout=10)) as conn:
        conn.execute("UPDATE account_token SET expires_at = 1 WHERE did = ?", (did,))
        conn.commit()


def test_sign_plc_operation_wants_a_live_single_use_plc_token(old, plc):
    user = signup(old, "leaver")
    did, auth = user["did"], bearer(user["accessJwt"])
    body = assert_error(sign_request(old, auth, {}), 400, "InvalidRequest")
    assert "squall account plc-token" in body["message"]
    assert_error(sign_request(old, auth, {"token": "AAAAA-BBBBB"}), 400, "InvalidToken")
    assert_error(sign_request(old, auth, {"token": 12345}), 400, "InvalidRequest")
    assert_error(sign_request(old, auth, {"token": "A" * 65}), 400, "InvalidToken")
    # a deletion token, or another account's PLC token, is not this account's PLC token
    with old.client() as c:
        r = c.post("/xrpc/_admin/account-delete-token", json={"did": did}, auth=("admin", old.admin_password()))
    assert r.status_code == 200, r.text
    assert_error(sign_request(old, auth, {"token": r.json()["token"]}), 400, "InvalidToken")
    other = signup(old, "bystander")
    assert_error(sign_request(old, auth, {"token": plc_token(old, other["did"])}), 400, "InvalidToken")
    # expired
    token = plc_token(old, did)
    expire_tokens(old, did)
    assert_error(sign_request(old, auth, {"token": token}), 400, "ExpiredToken")
    # a refused operation does not use the token up; a signed one does
    token = plc_token(old, did)
    for bad, status in (({"rotationKeys": ["not a key"]}, "Invalid PLC operation"),
                        ({"rotationKeys": "did:key:z"}, "Input/rotationKeys"),
                        ({"alsoKnownAs": [1]}, "Input/alsoKnownAs"),
                        ({"services": []}, "Input/services")):
        assert status in assert_error(sign_request(old, auth, {"token": token, **bad}), 400, "InvalidRequest")["message"]
    sign_on(old, auth, token)
    assert_error(sign_request(old, auth, {"token": token}), 400, "InvalidToken")
    assert len(plc.log(did)) == 1  # nothing was ever published


def test_sign_plc_operation_needs_a_full_session(old):
    user = signup(old, "apppw")
    auth = bearer(user["accessJwt"])
    token = plc_token(old, user["did"])
    with old.client() as c:
        for privileged in (False, True):
            r = c.post("/xrpc/com.atproto.server.createAppPassword", headers=auth,
                       json={"name": f"app{privileged}", "privileged": privileged})
            assert r.status_code == 200, r.text
            r = c.post("/xrpc/com.atproto.server.createSession",
                       json={"identifier": user["handle"], "password": r.json()["password"]})
            assert r.status_code == 200, r.text
            app_auth = bearer(r.json()["accessJwt"])
            assert_error(sign_request(old, app_auth, {"token": token}), 403, "InvalidToken")
            r = c.post("/xrpc/com.atproto.identity.requestPlcOperationSignature", headers=app_auth)
            assert_error(r, 403, "InvalidToken")
        assert_error(sign_request(old, {}, {"token": token}), 401, "AuthenticationRequired")
    sign_on(old, auth, token)  # the token was not used up by the refusals


def test_sign_plc_operation_refuses_a_did_web_account(web_pds):
    user = signup(web_pds, "webby")
    assert user["did"].startswith("did:web:")
    auth = bearer(user["accessJwt"])
    token = plc_token(web_pds, user["did"])
    body = assert_error(sign_request(web_pds, auth, {"token": token}), 400, "InvalidRequest")
    assert "did:web" in body["message"]


def test_a_signed_operation_with_the_current_values_is_accepted_by_the_directory(old, plc):
    user = signup(old, "stayer")
    did, auth = user["did"], bearer(user["accessJwt"])
    for _ in range(2):  # the second one chains onto the first
        last = plc.log(did)[-1]
        operation = sign_on(old, auth, plc_token(old, did))
        assert operation["prev"] == str(plc_ops.op_cid(last))
        assert {k: v for k, v in operation.items() if k not in ("prev", "sig")} == {
            k: v for k, v in last.items() if k not in ("prev", "sig")}
        r = httpx.post(f"{plc.url}/{did}", json=operation, timeout=10)
        assert r.status_code == 200, r.text
    ops = plc.log(did)
    assert len(ops) == 3 and ops[-1] == operation
    plc_ops.verify_log(did, ops)
    # the same values: the document the directory serves is unchanged
    doc = fetch_did_doc(did, plc_url=plc.url)
    assert doc["alsoKnownAs"] == [f"at://{user['handle']}"]
    assert doc["service"][0]["serviceEndpoint"] == f"http://localhost:{old.port}"


# -- reserveSigningKey (issue #19) -------------------------------------------------------------------------


def test_reserved_signing_key_is_the_key_of_the_migrated_account(old, new, plc):
    user = signup(old, "reserver")
    with new.client() as c:
        r = c.post("/xrpc/com.atproto.server.reserveSigningKey", json={"did": user["did"]})
        assert r.status_code == 200, r.text
        reserved = r.json()["signingKey"]
        r = migrate_create(new, user, service_auth(old, user))
        assert r.status_code == 200, r.text
        access = bearer(r.json()["accessJwt"])
        r = c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers=access)
        assert r.status_code == 200, r.text
        assert r.json()["verificationMethods"]["atproto"] == reserved
        # the reservation was used up with the account
        assert db_rows(new, "SELECT key_did FROM reserved_signing_key WHERE did = ?", (user["did"],)) == []
    # an account migrating without a reservation gets a fresh key
    other = signup(old, "unreserved")
    r = migrate_create(new, other, service_auth(old, other))
    assert r.status_code == 200, r.text
    with new.client() as c:
        r = c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers=bearer(r.json()["accessJwt"]))
        assert r.json()["verificationMethods"]["atproto"] not in (reserved, None)


# -- importRepo may not roll an active repository back (issue #20, finding 1) -----------------------


def _post(pds: PdsProcess, did: str, token: str, text: str) -> None:
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.repo.createRecord", headers=bearer(token), json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"text": text, "createdAt": "2024-05-01T12:00:00.000Z"}})
    assert r.status_code == 200, r.text


def test_an_app_password_cannot_import(old):
    user = signup(old, "frank")
    with old.client() as c:
        r = c.post("/xrpc/com.atproto.server.createAppPassword", headers=bearer(user["accessJwt"]),
                   json={"name": "app", "privileged": True})
        assert r.status_code == 200, r.text
        r = c.post("/xrpc/com.atproto.server.createSession",
                   json={"identifier": user["handle"], "password": r.json()["password"]})
        assert r.status_code == 200, r.text
        app_token = r.json()["accessJwt"]
        car = export(old, user["did"])
        before = repo_root(old, user["did"])
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=car, headers={**bearer(app_token), **CAR})
    assert r.status_code in (400, 401, 403), r.text
    assert r.json()["error"] == "InvalidToken", r.text
    assert repo_root(old, user["did"]) == before


def test_an_older_car_does_not_roll_an_active_repository_back(old):
    user = signup(old, "gina")
    did = user["did"]
    _post(old, did, user["accessJwt"], "before the export")
    car = export(old, did)
    _post(old, did, user["accessJwt"], "after the export")
    before = (repo_root(old, did), counts(old, did))
    with old.client() as c:
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=car, headers={**bearer(user["accessJwt"]), **CAR})
    body = assert_error(r, 400, "RepoRollback")
    assert "not newer" in body["message"]
    assert (repo_root(old, did), counts(old, did)) == before
    # the same CAR again (equal rev) is refused too
    with old.client() as c:
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=export(old, did),
                   headers={**bearer(user["accessJwt"]), **CAR})
    assert_error(r, 400, "RepoRollback")


def test_the_operator_can_force_an_older_import(old, tmp_path):
    user = signup(old, "hank")
    did = user["did"]
    _post(old, did, user["accessJwt"], "kept")
    car = export(old, did)
    _post(old, did, user["accessJwt"], "rolled back")
    assert counts(old, did)[1] == 2
    # not with a user's token, nor without credentials
    with old.client() as c:
        for headers in ({**bearer(user["accessJwt"]), **CAR}, CAR):
            r = c.post("/xrpc/_admin/import-repo", content=car, params={"did": did}, headers=headers)
            assert r.status_code == 401, r.text
    path = tmp_path / "repo.car"
    path.write_bytes(car)
    cli = [sys.executable, "-m", "squall.cli", "account", "import", user["handle"], str(path)]
    refused = subprocess.run(cli, env=old.env(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert counts(old, did)[1] == 2
    done = subprocess.run([*cli, "--force"], env=old.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert repo_root(old, did)[0] == str(read_car(car)[0][0])
    assert counts(old, did)[1] == 1
