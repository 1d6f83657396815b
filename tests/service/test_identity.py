"""Identity against a real server and the PLC double: did:plc and did:web accounts, handle updates,
well-known routes, tls-check, publication retries and the pending-operation loop; plus the
IdentityService in-process for resolution and its cache."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from squall.atproto import dagcbor
from squall.atproto.crypto import PublicKey, Secp256k1Keypair, load_keypair
from squall.config import load_settings
from squall.identity import (
    HandleChangeRefused,
    IdentityRejected,
    IdentityService,
    IdentityUnpublished,
    pending_op_blob,
)
from squall.identity import plc as plc_ops
from squall.identity.resolver import HandleResolver
from squall.net import OutboundPolicy, make_client
from squall.store.db import Database
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess

_names = itertools.count()


def new_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_names)}{int(time.time() * 1000) % 100000}"


@pytest.fixture(autouse=True)
def _reset_plc(plc):
    plc.clear_failures()
    yield
    plc.clear_failures()


@pytest.fixture(scope="module")
def pds_env(plc):
    return {**plc.pds_env(), "PDS_DEV_MODE": "true"}


@pytest.fixture(scope="module")
def web_pds(plc, tmp_path_factory):
    env = {"PDS_DID_METHOD": "web", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true"}
    with PdsProcess(tmp_path_factory.mktemp("pds-web") / "data", env_extra=env) as proc:
        yield proc


def create_account(proc: PdsProcess, name: str | None = None) -> dict:
    name = name or new_name()
    with proc.client() as c:
        r = c.post("/xrpc/com.atproto.server.createAccount",
                   json={"handle": f"{name}.localhost", "email": f"{name}@example.com", "password": "hunter2-hunter2"})
    assert r.status_code == 200, r.text
    return r.json()


def db_row(proc: PdsProcess, sql: str, params: tuple = ()) -> sqlite3.Row | None:
    conn = sqlite3.connect(f"file:{proc.data_dir / 'pds.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchone()
    finally:
        conn.close()


def rotation_did_key(proc: PdsProcess) -> str:
    hexkey = (proc.data_dir / "secrets" / "plc_rotation_key.k256.hex").read_text().strip()
    return Secp256k1Keypair.from_private_hex(hexkey).did_key()


def auth(account: dict) -> dict:
    return {"Authorization": f"Bearer {account['accessJwt']}"}


# -- did:plc accounts ------------------------------------------------------------------------------


def test_new_account_gets_a_published_did_plc(pds, plc):
    account = create_account(pds)
    did = account["did"]
    assert plc_ops.is_plc_did(did)
    log = plc.log(did)
    assert len(log) == 1
    genesis = log[0]
    assert genesis["prev"] is None and genesis["type"] == "plc_operation"
    assert genesis["rotationKeys"] == [rotation_did_key(pds)]
    assert genesis["alsoKnownAs"] == [f"at://{account['handle']}"]
    assert genesis["services"] == {"atproto_pds": {"type": "AtprotoPersonalDataServer",
                                                   "endpoint": f"http://localhost:{pds.port}"}}
    # the repo signing key of the account, not the rotation key
    row = db_row(pds, "SELECT signing_key_alg, signing_key, plc_pending_op FROM account WHERE did = ?", (did,))
    signing = load_keypair(row["signing_key_alg"], row["signing_key"]).public_key
    assert genesis["verificationMethods"] == {"atproto": signing.did_key()}
    assert row["plc_pending_op"] is None
    assert plc_ops.did_for_genesis(genesis) == did


def test_well_known_atproto_did_by_host(pds):
    account = create_account(pds)
    with pds.client() as c:
        r = c.get("/.well-known/atproto-did", headers={"Host": account["handle"]})
        assert r.status_code == 200 and r.text == account["did"]
        r = c.get("/.well-known/atproto-did", headers={"Host": f"{account['handle']}:443"})
        assert r.text == account["did"]
        assert c.get("/.well-known/atproto-did", headers={"Host": "nobody-here.localhost"}).status_code == 404
        assert c.get("/.well-known/atproto-did", headers={"Host": "localhost"}).status_code == 404


def test_tls_check(pds):
    with pds.client() as c:
        assert c.get("/tls-check", params={"domain": "localhost"}).status_code == 200
        assert c.get("/tls-check", params={"domain": "evil.example.com"}).status_code == 404
        assert c.get("/tls-check", params={"domain": "later.localhost"}).status_code == 404
        assert c.get("/tls-check").status_code == 400
        name = new_name("tls")
        assert c.get("/tls-check", params={"domain": f"{name}.localhost"}).status_code == 404
        create_account(pds, name)
        assert c.get("/tls-check", params={"domain": f"{name}.localhost"}).status_code == 200
        assert c.get("/tls-check", params={"domain": f"{name.upper()}.LOCALHOST"}).status_code == 200


def test_resolve_handle(pds):
    account = create_account(pds)
    with pds.client() as c:
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": account["handle"].upper()})
        assert r.status_code == 200 and r.json() == {"did": account["did"]}
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": "unknown-user.localhost"})
        assert r.status_code == 400 and r.json()["error"] == "HandleNotFound"
        # an external name that resolves nowhere (no DNS here, nothing at its well-known)
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": "no-such-name.invalid-tld-xyz"})
        assert r.status_code == 400 and r.json()["error"] == "HandleNotFound"
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": "not a handle"})
        assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"
        r = c.get("/xrpc/com.atproto.identity.resolveHandle")
        assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"


def test_update_handle_publishes_a_plc_op(pds, plc):
    account = create_account(pds)
    did, old = account["did"], account["handle"]
    new = f"{new_name('renamed')}.localhost"
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": new.upper()}, headers=auth(account))
        assert r.status_code == 200, r.text
        log = plc.log(did)
        assert len(log) == 2
        assert log[1]["prev"] == str(plc_ops.op_cid(log[0]))
        assert log[1]["alsoKnownAs"] == [f"at://{new}"]
        assert log[1]["rotationKeys"] == log[0]["rotationKeys"]
        assert log[1]["verificationMethods"] == log[0]["verificationMethods"]
        doc = c.get(f"{plc.url}/{did}").json()
        assert doc["alsoKnownAs"] == [f"at://{new}"]
        # the new handle resolves, the old one no longer does
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": new})
        assert r.json() == {"did": did}
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": old})
        assert r.status_code == 400 and r.json()["error"] == "HandleNotFound"
        assert c.get("/.well-known/atproto-did", headers={"Host": old}).status_code == 404
        assert c.get("/.well-known/atproto-did", headers={"Host": new}).text == did
        session = c.get("/xrpc/com.atproto.server.getSession", headers=auth(account))
        if session.status_code == 200:
            assert session.json()["handle"] == new
    event = db_row(pds, "SELECT event FROM repo_seq WHERE did = ? AND event_type = 'identity' ORDER BY seq DESC",
                   (did,))
    body = dagcbor.decode(event["event"])
    assert body["did"] == did and body["handle"] == new


def test_update_handle_to_same_handle_emits_event_without_plc_op(pds, plc):
    account = create_account(pds)
    did = account["did"]
    before = db_row(pds, "SELECT COUNT(*) AS n FROM repo_seq WHERE did = ? AND event_type = 'identity'", (did,))["n"]
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": account["handle"]},
                   headers=auth(account))
        assert r.status_code == 200, r.text
    assert len(plc.log(did)) == 1
    after = db_row(pds, "SELECT COUNT(*) AS n FROM repo_seq WHERE did = ? AND event_type = 'identity'", (did,))["n"]
    assert after == before + 1


@pytest.mark.parametrize("handle, error", [
    ("not a handle", "InvalidHandle"),
    ("ab.localhost", "InvalidHandle"),
    ("a.b.c.localhost", "InvalidHandle"),
    ("admin.localhost", "HandleNotAvailable"),
    ("someone.onion", "InvalidHandle"),
])
def test_update_handle_refuses_bad_handles(pds, plc, handle, error):
    account = create_account(pds)
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": handle}, headers=auth(account))
    assert r.status_code == 400 and r.json()["error"] == error, r.text
    assert len(plc.log(account["did"])) == 1


def test_update_handle_refuses_taken_and_unverified_handles(pds, plc):
    first, second = create_account(pds), create_account(pds)
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": first["handle"]},
                   headers=auth(second))
        assert r.status_code == 400 and r.json()["error"] == "HandleNotAvailable"
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": "someone-else.example.com"},
                   headers=auth(second))
        assert r.status_code == 400 and "did not resolve" in r.json()["message"]
        assert c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": "x.localhost"}).status_code == 401
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={}, headers=auth(second))
        assert r.status_code == 400
    assert len(plc.log(second["did"])) == 1


def test_update_handle_when_directory_is_down(pds, plc):
    account = create_account(pds)
    plc.fail_next(5, status=503)
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": f"{new_name('down')}.localhost"},
                   headers=auth(account))
    plc.clear_failures()
    assert r.status_code == 502 and r.json()["error"] == "UpstreamFailure"
    # nothing changed locally
    assert db_row(pds, "SELECT handle FROM account WHERE did = ?", (account["did"],))["handle"] == account["handle"]


def test_recommended_did_credentials(pds):
    account = create_account(pds)
    with pds.client() as c:
        r = c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers=auth(account))
        assert c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials").status_code == 401
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rotationKeys"] == [rotation_did_key(pds)]
    assert body["alsoKnownAs"] == [f"at://{account['handle']}"]
    assert body["services"]["atproto_pds"]["endpoint"] == f"http://localhost:{pds.port}"
    assert body["verificationMethods"]["atproto"].startswith("did:key:zQ3s")


# -- publication retries ---------------------------------------------------------------------------


def test_publish_retries_once_after_5xx(pds, plc):
    plc.fail_next(1, status=500)
    account = create_account(pds)
    posts = [p for p in plc.posts() if p.path == f"/{account['did']}"]
    assert [p.status for p in posts] == [500, 200]
    assert db_row(pds, "SELECT plc_pending_op FROM account WHERE did = ?", (account["did"],))["plc_pending_op"] is None


def test_publish_409_counts_as_success(pds, plc):
    plc.fail_next(1, status=409)
    account = create_account(pds)
    assert db_row(pds, "SELECT plc_pending_op FROM account WHERE did = ?", (account["did"],))["plc_pending_op"] is None
    assert [p.status for p in plc.posts() if p.path == f"/{account['did']}"] == [409]


def test_publish_400_means_no_account(pds, plc):
    plc.fail_next(1, status=400)
    name = new_name("refused")
    with pds.client() as c:
        r = c.post("/xrpc/com.atproto.server.createAccount",
                   json={"handle": f"{name}.localhost", "email": f"{name}@example.com", "password": "hunter2-hunter2"})
    assert r.status_code >= 400 and r.status_code != 500
    assert db_row(pds, "SELECT did FROM account WHERE handle = ?", (f"{name}.localhost",)) is None


def test_unpublished_op_is_kept_and_published_at_next_boot(plc, tmp_path):
    env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true"}
    data = tmp_path / "data"
    with PdsProcess(data, env_extra=env) as proc:
        plc.fail_next(2, status=502)
        account = create_account(proc)
        did = account["did"]
        assert plc.log(did) == []
        pending = db_row(proc, "SELECT plc_pending_op FROM account WHERE did = ?", (did,))["plc_pending_op"]
        assert pending is not None
        assert plc_ops.did_for_genesis(dagcbor.decode(pending)) == did
    # The loop runs at boot: a restarted server publishes the stored operation and clears it.
    with PdsProcess(data, env_extra=env) as proc:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not plc.log(did):
            time.sleep(0.05)
        assert len(plc.log(did)) == 1
        while time.monotonic() < deadline and db_row(proc, "SELECT plc_pending_op FROM account WHERE did = ?",
                                                     (did,))["plc_pending_op"] is not None:
            time.sleep(0.05)
        assert db_row(proc, "SELECT plc_pending_op FROM account WHERE did = ?", (did,))["plc_pending_op"] is None
        # and the handle can now be changed through the directory
        with proc.client() as c:
            r = c.post("/xrpc/com.atproto.identity.updateHandle",
                       json={"handle": f"{new_name('after')}.localhost"}, headers=auth(account))
            assert r.status_code == 200, r.text
        assert len(plc.log(did)) == 2


# -- did:web accounts ------------------------------------------------------------------------------


def test_did_web_account_documents(web_pds, plc):
    posts_before = len(plc.posts())
    account = create_account(web_pds)
    handle, did = account["handle"], account["did"]
    assert did == f"did:web:{handle}"
    assert len(plc.posts()) == posts_before  # nothing published anywhere
    with web_pds.client() as c:
        r = c.get("/.well-known/did.json", headers={"Host": handle})
        assert r.status_code == 200
        doc = r.json()
        assert doc["id"] == did
        assert doc["alsoKnownAs"] == [f"at://{handle}"]
        [method] = doc["verificationMethod"]
        assert method["id"] == f"{did}#atproto" and method["type"] == "Multikey" and method["controller"] == did
        key = PublicKey.from_multibase(method["publicKeyMultibase"])
        row = db_row(web_pds, "SELECT signing_key_alg, signing_key FROM account WHERE did = ?", (did,))
        assert key == load_keypair(row["signing_key_alg"], row["signing_key"]).public_key
        assert doc["service"] == [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                   "serviceEndpoint": f"http://localhost:{web_pds.port}"}]
        assert "https://www.w3.org/ns/did/v1" in doc["@context"]
        # the service's own did:web document on the hostname; nothing for unknown names
        svc = c.get("/.well-known/did.json", headers={"Host": "localhost"}).json()
        assert svc["id"] == "did:web:localhost"
        assert svc["service"][0]["serviceEndpoint"] == f"http://localhost:{web_pds.port}"
        assert c.get("/.well-known/did.json", headers={"Host": "stranger.localhost"}).status_code == 404
        assert c.get("/.well-known/atproto-did", headers={"Host": handle}).text == did
        r = c.get("/xrpc/com.atproto.identity.resolveHandle", params={"handle": handle})
        assert r.json() == {"did": did}


def test_did_web_handle_cannot_change(web_pds):
    account = create_account(web_pds)
    with web_pds.client() as c:
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": f"{new_name('moved')}.localhost"},
                   headers=auth(account))
        assert r.status_code == 400 and "did:web" in r.json()["message"]
        r = c.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": account["handle"]},
                   headers=auth(account))
        assert r.status_code == 200
    assert db_row(web_pds, "SELECT handle FROM account WHERE did = ?", (account["did"],))["handle"] == account["handle"]


def test_plc_server_serves_no_account_did_json(pds):
    account = create_account(pds)  # a did:plc account: its document lives in the directory
    with pds.client() as c:
        assert c.get("/.well-known/did.json", headers={"Host": account["handle"]}).status_code == 404


# -- the service in-process ------------------------------------------------------------------------


class ThreadedApp:
    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
async def service(plc, tmp_path):
    settings, _ = load_settings({"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true",
                                 "PDS_DATA_DIRECTORY": str(tmp_path), "PDS_HOSTNAME": "localhost"})
    db = Database(tmp_path / "pds.sqlite")
    await db.open()
    svc = IdentityService(settings, db, Secp256k1Keypair.generate(), plc_retry_delay=0.01)
    yield svc
    await svc.close()
    await db.close()


async def insert_account(svc: IdentityService, did: str, handle: str, key: Secp256k1Keypair,
                         pending: bytes | None = None) -> None:
    def write(conn):
        conn.execute(
            "INSERT INTO account (did, handle, email, signing_key_alg, signing_key, created_at, plc_pending_op) "
            "VALUES (?, ?, ?, 'ES256K', ?, '2024-01-01T00:00:00Z', ?)",
            (did, handle, f"{handle}@example.com", key.private_bytes(), pending),
        )

    await svc.db.write(write)


async def test_create_identity_errors(service, plc):
    key = Secp256k1Keypair.generate().public_key
    plc.fail_next(2, status=500)
    with pytest.raises(IdentityUnpublished) as info:
        await service.create_identity("down.localhost", key)
    assert plc_ops.did_for_genesis(info.value.op) == info.value.did
    assert dagcbor.decode(info.value.pending_op_blob) == info.value.op
    plc.fail_next(1, status=400)
    with pytest.raises(IdentityRejected):
        await service.create_identity("refused.localhost", key)
    created = await service.create_identity("fine.localhost", key)
    assert plc.log(created.did) == [created.plc_op]


async def test_pending_op_loop_publishes_and_clears(service, plc):
    signing = Secp256k1Keypair.generate()
    did, op = plc_ops.create_genesis(rotation_key=service.rotation_key, rotation_keys=service.rotation_keys,
                                     signing_key=signing.public_key, handle="pending.localhost",
                                     pds_endpoint=service.settings.public_url)
    await insert_account(service, did, "pending.localhost", signing, pending_op_blob(op))
    plc.fail_next(2, status=503)
    assert await service.publish_pending_ops() == {"published": 0, "failed": 1, "refused": 0}
    assert (await service.db.fetchone("SELECT plc_pending_op FROM account WHERE did = ?", (did,)))[0] is not None
    # the background loop (started here, as at boot) publishes it
    service.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not plc.log(did):
        await _sleep()
    assert plc.log(did) == [op]
    while time.monotonic() < deadline and (await service.db.fetchone(
            "SELECT plc_pending_op FROM account WHERE did = ?", (did,)))[0] is not None:
        await _sleep()
    assert (await service.db.fetchone("SELECT plc_pending_op FROM account WHERE did = ?", (did,)))[0] is None


async def test_pending_op_that_is_refused_is_not_resent(service, plc):
    signing = Secp256k1Keypair.generate()
    did, op = plc_ops.create_genesis(rotation_key=service.rotation_key, rotation_keys=service.rotation_keys,
                                     signing_key=signing.public_key, handle="bad.localhost",
                                     pds_endpoint=service.settings.public_url)
    wrong_did = "did:plc:" + "a" * 24  # the stored op does not hash to this DID
    await insert_account(service, wrong_did, "bad.localhost", signing, pending_op_blob(op))
    posts = len(plc.posts())
    assert (await service.publish_pending_ops())["refused"] == 1
    assert (await service.publish_pending_ops())["refused"] == 1
    assert len(plc.posts()) == posts


async def _sleep():
    await asyncio.sleep(0.05)


async def test_resolve_did_cache(service, plc):
    signing = Secp256k1Keypair.generate()
    created = await service.create_identity("cached.localhost", signing.public_key)
    doc = await service.resolve_did(created.did)
    assert doc["alsoKnownAs"] == ["at://cached.localhost"]
    assert service.signing_key_from_doc(doc) == signing.public_key
    assert service.pds_endpoint_from_doc(doc) == service.settings.public_url
    assert service.handle_from_doc(doc) == "cached.localhost"
    # change the handle behind the cache's back (as another PDS would)
    await insert_account(service, created.did, "cached.localhost", signing)
    await service.update_handle(created.did, "moved.localhost")  # forgets the cached document
    assert (await service.resolve_did(created.did))["alsoKnownAs"] == ["at://moved.localhost"]
    last = plc.log(created.did)[-1]
    op = plc_ops.update_handle_op(last, handle="third.localhost", signer=service.rotation_key)
    await service.publish_op(created.did, op)
    assert (await service.resolve_did(created.did))["alsoKnownAs"] == ["at://moved.localhost"]  # cached
    assert (await service.resolve_did(created.did, fresh=True))["alsoKnownAs"] == ["at://third.localhost"]
    # past the staleness bound the cache refreshes by itself; an unknown DID is None
    service.dids.clock = lambda: time.time() + 2 * 3600
    op = plc_ops.update_handle_op(plc.log(created.did)[-1], handle="fourth.localhost", signer=service.rotation_key)
    await service.publish_op(created.did, op)
    assert (await service.resolve_did(created.did))["alsoKnownAs"] == ["at://fourth.localhost"]
    # stale but within max age, with the directory down: the cached document is still served
    service.dids.clock = lambda: time.time() + 4 * 3600
    plc.fail_next(3, status=500)
    assert (await service.resolve_did(created.did))["alsoKnownAs"] == ["at://fourth.localhost"]
    plc.clear_failures()
    # beyond the maximum age the row is ignored and pruned
    service.dids.clock = lambda: time.time() + 48 * 3600
    assert await service.dids.prune() >= 1
    assert await service.resolve_did("did:plc:" + "b" * 24) is None
    assert await service.resolve_did("not-a-did") is None


async def test_external_handle_is_verified_both_ways(service, plc):
    signing = Secp256k1Keypair.generate()
    created = await service.create_identity("ext.example.com", signing.public_key)
    answers = {"ext.example.com": created.did, "liar.example.com": created.did}

    async def atproto_did(request: Request) -> Response:
        name = request.path_params["name"]
        if name in answers:
            return PlainTextResponse(answers[name] + "\n")
        return PlainTextResponse("no", status_code=404)

    app = Starlette(routes=[Route("/{name}/.well-known/atproto-did", atproto_did)])
    with ThreadedApp(app) as server:
        http = make_client(OutboundPolicy(allow_http=True, allow_private=True))
        service.handles = HandleResolver(http, nameservers=["127.0.0.1"], dns_port=free_port(), dns_timeout=0.5,
                                         well_known_url=lambda h: f"http://127.0.0.1:{server.port}/{h}/.well-known/atproto-did")
        try:
            assert await service.resolve_handle("ext.example.com") == created.did
            # liar.example.com points at a DID whose document names another handle
            assert await service.resolve_handle("liar.example.com", verify=False) == created.did
            assert await service.resolve_handle("liar.example.com") is None
            assert await service.resolve_handle("nothing.example.com") is None
            # a name under the service's own domain is never looked up outside
            answers["ghost.localhost"] = created.did
            assert await service.resolve_handle("ghost.localhost") is None
        finally:
            await http.aclose()


async def test_did_document_and_update_refusals(service):
    key = Secp256k1Keypair.generate().public_key
    doc = service.did_document("did:web:alice.localhost", "alice.localhost", key)
    assert service.signing_key_from_doc(doc) == key
    assert service.handle_from_doc(doc) == "alice.localhost"
    assert service.pds_endpoint_from_doc(doc) == service.settings.public_url
    with pytest.raises(HandleChangeRefused):
        await service.update_handle("did:web:alice.localhost", "bob.localhost")
    await service.update_handle("did:web:alice.localhost", "alice.localhost")  # unchanged: nothing to do
    with pytest.raises(IdentityRejected):
        await service.update_handle("did:plc:" + "c" * 24, "who.localhost")  # unknown to the directory


class FakeDns:
    """A loopback UDP DNS server answering TXT queries from a dict (name -> list of strings)."""

    def __init__(self, records: dict[str, list[str]]):
        import socket

        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            name = query.question[0].name.to_text().rstrip(".")
            texts = self.records.get(name)
            if texts is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                quoted = [f'"{t}"' for t in texts]
                response.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "TXT", *quoted))
            self.sock.sendto(response.to_wire(), addr)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


async def test_dns_txt_handle_resolution(service, plc):
    signing = Secp256k1Keypair.generate()
    created = await service.create_identity("dns.example.org", signing.public_key)
    records = {
        "_atproto.dns.example.org": [f"did={created.did}"],
        "_atproto.two.example.org": [f"did={created.did}", "did=did:plc:" + "d" * 24],  # ambiguous
        "_atproto.junk.example.org": ["hello world", "did=not-a-did"],
    }
    with FakeDns(records) as fake:
        http = make_client(OutboundPolicy(allow_http=True, allow_private=True))
        resolver = HandleResolver(http, nameservers=["127.0.0.1"], dns_port=fake.port, dns_timeout=2.0,
                                  well_known_url=lambda h: f"http://127.0.0.1:{free_port()}/nothing")
        service.handles = resolver
        try:
            assert await resolver.resolve_dns("dns.example.org") == created.did
            assert await resolver.resolve_dns("two.example.org") is None
            assert await resolver.resolve_dns("junk.example.org") is None
            assert await resolver.resolve_dns("absent.example.org") is None
            assert await service.resolve_handle("DNS.example.org") == created.did  # verified against the doc
        finally:
            await http.aclose()


def test_plc_log_verification_with_a_real_log():
    from tests.service.test_plc_double import REAL_DID, REAL_LOG

    data = plc_ops.verify_log(REAL_DID, REAL_LOG)
    assert data["alsoKnownAs"] == ["at://bnewbold.robocracy.org"]
    doc = plc_ops.document_from_op(REAL_DID, REAL_LOG[-1])
    assert doc["verificationMethod"][0]["id"] == f"{REAL_DID}#atproto"
    assert doc["service"][0] == {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                 "serviceEndpoint": "https://pds.robocracy.org"}
    with pytest.raises(plc_ops.PlcOpError, match="hash to the DID"):
        plc_ops.verify_log("did:plc:" + "a" * 24, REAL_LOG)
    tampered = [REAL_LOG[0], {**REAL_LOG[1], "alsoKnownAs": ["at://mallory.example.com"]}]
    with pytest.raises(plc_ops.PlcOpError, match="not signed by a current rotation key"):
        plc_ops.verify_log(REAL_DID, tampered)
    with pytest.raises(plc_ops.PlcOpError, match="does not point"):
        plc_ops.verify_log(REAL_DID, [REAL_LOG[0], REAL_LOG[0]])
    with pytest.raises(plc_ops.PlcOpError, match="canonical"):
        plc_ops.decode_sig(REAL_LOG[0]["sig"][:-1] + "x")
