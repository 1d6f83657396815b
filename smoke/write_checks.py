"""Write checks (``--write``): a disposable account goes through what a real client does, and the
result is checked from the outside the way relays see it (https://atproto.com/specs/repository,
https://atproto.com/specs/sync).

Order: the firehose is subscribed first (so the ``#commit`` of a write is seen live), then the
account is created, its identity checked, a profile, a post and an image post written, the last
write checked through getLatestCommit, getRepo (CAR parsed, commit signature verified against the
key in the DID document, records found in the MST) and its firehose frame. The account is
deactivated at the end by ``cleanup``, which the runner calls even when earlier checks failed.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from datetime import datetime, timezone
from typing import Any

from squall.atproto import dagcbor
from squall.atproto.blockstore import MemoryBlockStore
from squall.atproto.car import read_car
from squall.atproto.cid import CID
from squall.atproto.commit import decode_commit, verify_commit
from squall.atproto.crypto import PublicKey
from squall.atproto.errors import AtprotoError
from squall.atproto.mst import NodeStore, NodeWrangler

from . import firehose, identity
from .context import Smoke, bearer, json_body, seen, xrpc_error
from .read_checks import ADMIN_STATUS, DESCRIBE, blob_headers, well_known_for
from .runner import CheckFailed, Skipped

MAX_REPO_BYTES = 16 * 1024 * 1024  # a disposable account's repo is a few kilobytes
PROFILE = "app.bsky.actor.profile"
POST = "app.bsky.feed.post"


def tiny_png() -> bytes:
    """A valid 1×1 RGB PNG with a random colour, so every run uploads a new blob."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # width, height, depth 8, RGB
    row = b"\x00" + secrets.token_bytes(3)  # filter type 0, one pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row)) + chunk(b"IEND", b"")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _account(ctx: Smoke) -> dict[str, Any]:
    return ctx.need("account", "write.account")


def _auth(ctx: Smoke) -> dict[str, str]:
    return bearer(_account(ctx)["accessJwt"])


async def _invite_code(ctx: Smoke, describe: dict[str, Any]) -> str | None:
    if ctx.options.invite_code:
        return ctx.options.invite_code
    if not describe.get("inviteCodeRequired"):
        return None
    if not ctx.options.admin_password:
        raise Skipped("sign-up needs an invite code: give --invite-code, or --admin-password to create one")
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.server.createInviteCode", json={"useCount": 1},
                                 auth=("admin", ctx.options.admin_password))
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise CheckFailed("{code} from createInviteCode", repr(body)[:200])
    return body["code"]


async def account(ctx: Smoke) -> str:
    describe = ctx.state.get("describe") or json_body(await ctx.expect("GET", DESCRIBE), DESCRIBE)
    invite = await _invite_code(ctx, describe)
    domain = describe["availableUserDomains"][0]
    handle = f"smoke-{secrets.token_hex(4)}{domain if domain.startswith('.') else '.' + domain}".lower()
    # Subscribe before the first write, so the #commit frames are seen live (no cursor guessing).
    watch = firehose.Watch(firehose.stream_url(ctx.options.ws_url, None), ctx.ssl)
    ctx.doing("waiting for the firehose WebSocket upgrade (subscribing before the writes)")
    try:
        await watch.start()
        ctx.state["watch"] = watch
    except Exception as exc:  # reported by write.firehose-commit; the other write checks go on
        ctx.state["watch_error"] = f"{type(exc).__name__}: {exc}"
    password = secrets.token_urlsafe(18)
    payload: dict[str, Any] = {"handle": handle, "email": f"{handle.split('.')[0]}@example.com",
                               "password": password}
    if invite:
        payload["inviteCode"] = invite
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.server.createAccount", json=payload)
    for name in ("did", "handle", "accessJwt", "refreshJwt"):
        if not isinstance(body.get(name), str):
            raise CheckFailed(f"createAccount to return {name}", repr(sorted(body)) if isinstance(body, dict) else repr(body))
    ctx.state["account"] = {**body, "password": password}
    if watch is ctx.state.get("watch"):
        watch.did = body["did"]
    return f"{body['handle']} = {body['did']}"


async def account_identity(ctx: Smoke) -> str:
    acct = _account(ctx)
    did, key, where = await identity.check_handle(ctx, acct["handle"])
    if did != acct["did"]:
        raise CheckFailed(f"resolveHandle({acct['handle']}) = {acct['did']}", did)
    served = await well_known_for(ctx, acct["handle"])
    if served != did:
        raise CheckFailed(f"/.well-known/atproto-did for {acct['handle']} = {did}", served)
    ctx.state["key"] = key
    return f"document from {where}; #atproto key {key.algorithm}"


async def session(ctx: Smoke) -> str:
    acct = _account(ctx)
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.server.createSession",
                                 json={"identifier": acct["handle"], "password": acct["password"]})
    if not isinstance(body, dict) or body.get("did") != acct["did"] or not isinstance(body.get("refreshJwt"), str):
        raise CheckFailed(f"a session for {acct['did']} from createSession", repr(body)[:200])
    refreshed = await ctx.expect_json("POST", "/xrpc/com.atproto.server.refreshSession",
                                      headers=bearer(body["refreshJwt"]))
    token = refreshed.get("accessJwt") if isinstance(refreshed, dict) else None
    if not isinstance(token, str):
        raise CheckFailed("a new accessJwt from refreshSession", repr(refreshed)[:200])
    me = await ctx.expect_json("GET", "/xrpc/com.atproto.server.getSession", headers=bearer(token))
    if not isinstance(me, dict) or me.get("did") != acct["did"]:
        raise CheckFailed(f"getSession to name {acct['did']}", repr(me)[:200])
    return "logged in, refreshed, getSession ok"


def _record_result(ctx: Smoke, body: Any, what: str) -> tuple[str, str]:
    """(path, cid) of a write, remembering its commit; checks the answer's shape."""
    commit = body.get("commit") if isinstance(body, dict) else None
    uri = body.get("uri") if isinstance(body, dict) else None
    if not isinstance(uri, str) or not isinstance(body.get("cid"), str) or not isinstance(commit, dict):
        raise CheckFailed(f"{{uri, cid, commit}} from {what}", repr(body)[:200])
    did = _account(ctx)["did"]
    prefix = f"at://{did}/"
    if not uri.startswith(prefix):
        raise CheckFailed(f"a record URI under {prefix}", uri)
    path = uri[len(prefix):]
    ctx.state.setdefault("records", {})[path] = body["cid"]
    ctx.state["last_commit"] = {"cid": commit.get("cid"), "rev": commit.get("rev"), "path": path,
                                "record": body["cid"]}
    return path, body["cid"]


async def _read_back(ctx: Smoke, path: str, cid: str) -> dict[str, Any]:
    collection, rkey = path.split("/")
    body = await ctx.expect_json("GET", "/xrpc/com.atproto.repo.getRecord", params={
        "repo": _account(ctx)["did"], "collection": collection, "rkey": rkey})
    if not isinstance(body, dict) or body.get("cid") != cid or not isinstance(body.get("value"), dict):
        raise CheckFailed(f"getRecord({path}) with cid {cid}", repr(body)[:200])
    return body["value"]


async def profile(ctx: Smoke) -> str:
    did = _account(ctx)["did"]
    name = f"Smoke {secrets.token_hex(3)}"
    record = {"$type": PROFILE, "displayName": name, "description": "Disposable account of a smoke run."}
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.repo.putRecord", headers=_auth(ctx), json={
        "repo": did, "collection": PROFILE, "rkey": "self", "record": record})
    path, cid = _record_result(ctx, body, "putRecord")
    value = await _read_back(ctx, path, cid)
    if value.get("displayName") != name:
        raise CheckFailed(f"displayName {name!r} read back", repr(value.get("displayName")))
    return f"{path} rev {ctx.state['last_commit']['rev']}"


async def post(ctx: Smoke) -> str:
    did = _account(ctx)["did"]
    text = f"smoke check {secrets.token_hex(4)}"
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.repo.createRecord", headers=_auth(ctx), json={
        "repo": did, "collection": POST, "record": {"$type": POST, "text": text, "createdAt": now_iso()}})
    path, cid = _record_result(ctx, body, "createRecord")
    value = await _read_back(ctx, path, cid)
    if value.get("text") != text:
        raise CheckFailed(f"text {text!r} read back", repr(value.get("text")))
    return path


async def image_post(ctx: Smoke) -> str:
    did = _account(ctx)["did"]
    png = tiny_png()
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.repo.uploadBlob", content=png,
                                 headers={**_auth(ctx), "Content-Type": "image/png"})
    blob = body.get("blob") if isinstance(body, dict) else None
    ref = blob.get("ref") if isinstance(blob, dict) else None
    if not isinstance(ref, dict) or not isinstance(ref.get("$link"), str):
        raise CheckFailed("{blob: {$type: blob, ref: {$link}, mimeType, size}} from uploadBlob", repr(body)[:200])
    if blob.get("mimeType") != "image/png" or blob.get("size") != len(png):
        raise CheckFailed(f"mimeType image/png and size {len(png)}", f"{blob.get('mimeType')!r}, {blob.get('size')!r}")
    expected = str(CID.from_block(png, 0x55))  # raw-codec CIDv1 over sha-256, as the spec requires
    if ref["$link"] != expected:
        raise CheckFailed(f"blob CID {expected}", ref["$link"])
    record = {"$type": POST, "text": "smoke check: an image", "createdAt": now_iso(),
              "embed": {"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": "one pixel"}]}}
    body = await ctx.expect_json("POST", "/xrpc/com.atproto.repo.createRecord", headers=_auth(ctx), json={
        "repo": did, "collection": POST, "record": record})
    path, cid = _record_result(ctx, body, "createRecord with an image")
    ctx.state["blob"] = {"did": did, "cid": ref["$link"], "mimeType": "image/png", "data": png}
    ctx.state["image_commit"] = dict(ctx.state["last_commit"])
    return f"{path} with blob {ref['$link']}"


async def latest_commit(ctx: Smoke) -> str:
    did = _account(ctx)["did"]
    last = ctx.need("image_commit", "write.image-post")
    body = await ctx.expect_json("GET", "/xrpc/com.atproto.sync.getLatestCommit", params={"did": did})
    if not isinstance(body, dict) or (body.get("cid"), body.get("rev")) != (last["cid"], last["rev"]):
        raise CheckFailed(f"cid {last['cid']} rev {last['rev']} (the last write)", repr(body)[:200])
    return f"rev {last['rev']}"


def _verify_signed(blocks: dict[CID, bytes], root: CID, did: str, key: PublicKey) -> dict[str, Any]:
    if root not in blocks:
        raise CheckFailed(f"the commit block {root} in the CAR", f"{len(blocks)} blocks without it")
    try:
        commit = decode_commit(blocks[root])
    except AtprotoError as exc:
        raise CheckFailed("a well-formed v3 commit", str(exc)) from None
    if commit["did"] != did:
        raise CheckFailed(f"commit.did {did}", commit["did"])
    if not verify_commit(commit, key):
        raise CheckFailed(f"a commit signature valid for the DID document's #atproto key {key.did_key()}",
                          "a signature that does not verify")
    return commit


async def repo_car(ctx: Smoke) -> str:
    did = _account(ctx)["did"]
    last = ctx.need("image_commit", "write.image-post")
    key = ctx.need("key", "write.identity")
    path = "/xrpc/com.atproto.sync.getRepo"
    ctx.doing(f"downloading {path}")
    async with ctx.http.stream("GET", ctx.url(path), params={"did": did}) as response:
        if response.status_code != 200:
            await response.aread()
            raise CheckFailed(f"HTTP 200 from GET {path}", seen(response))
        kind = response.headers.get("content-type", "")
        if not kind.startswith("application/vnd.ipld.car"):
            raise CheckFailed("content-type application/vnd.ipld.car", kind or "(none)")
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > MAX_REPO_BYTES:
                raise CheckFailed(f"a disposable repo under {MAX_REPO_BYTES} bytes", f"more than {len(data)} bytes")
    try:
        roots, blocks = read_car(bytes(data))
    except AtprotoError as exc:
        raise CheckFailed("a valid CAR (every block hashing to its CID)", str(exc)) from None
    if [str(r) for r in roots] != [last["cid"]]:
        raise CheckFailed(f"CAR roots [{last['cid']}] (the latest commit)", repr([str(r) for r in roots]))
    commit = _verify_signed(blocks, roots[0], did, key)
    if commit["rev"] != last["rev"]:
        raise CheckFailed(f"commit rev {last['rev']}", commit["rev"])
    tree = NodeWrangler(NodeStore(MemoryBlockStore(blocks)))
    records = ctx.state.get("records", {})
    for record_path, cid in records.items():
        try:
            found = tree.get(commit["data"], record_path)
        except AtprotoError as exc:
            raise CheckFailed(f"a complete MST holding {record_path}", str(exc)) from None
        if found is None or str(found) != cid:
            raise CheckFailed(f"{record_path} → {cid} in the repo's MST", repr(str(found) if found else None))
        if found not in blocks:
            raise CheckFailed(f"the record block {cid} in the CAR", "no such block")
    entries = sum(1 for _ in tree.list(commit["data"]))
    return f"{len(data)} bytes, {len(blocks)} blocks, {entries} records, signature valid"


async def firehose_commit(ctx: Smoke) -> str:
    acct = _account(ctx)
    last = ctx.need("image_commit", "write.image-post")
    key = ctx.need("key", "write.identity")
    if "watch_error" in ctx.state:
        raise CheckFailed("a live firehose subscription opened before the writes", ctx.state["watch_error"])
    watch: firehose.Watch = ctx.state["watch"]
    ctx.doing(f"waiting for the #commit frame of {last['path']} (commit {last['cid']}) on the firehose")
    try:
        header, body = await watch.wait_for(
            lambda h, b: h.get("t") == "#commit" and b.get("repo") == acct["did"] and str(b.get("commit")) == last["cid"])
    except ConnectionError as exc:
        raise CheckFailed(f"a #commit frame for commit {last['cid']}", str(exc)) from None
    if body.get("rev") != last["rev"]:
        raise CheckFailed(f"rev {last['rev']} in the #commit frame", repr(body.get("rev")))
    ops = body.get("ops") if isinstance(body.get("ops"), list) else []
    if not any(isinstance(op, dict) and op.get("action") == "create" and op.get("path") == last["path"]
               and str(op.get("cid")) == last["record"] for op in ops):
        raise CheckFailed(f"a create op for {last['path']} → {last['record']}", repr(ops)[:200])
    try:
        roots, blocks = read_car(body.get("blocks") or b"")
    except AtprotoError as exc:
        raise CheckFailed("a valid CAR in the frame's blocks", str(exc)) from None
    if [str(r) for r in roots] != [last["cid"]]:
        raise CheckFailed(f"blocks rooted at the commit {last['cid']}", repr([str(r) for r in roots]))
    _verify_signed(blocks, roots[0], acct["did"], key)
    if CID.decode(last["record"]) not in blocks:
        raise CheckFailed(f"the record block {last['record']} in the frame", "no such block")
    record = dagcbor.decode(blocks[CID.decode(last["record"])])
    if record.get("$type") != POST:
        raise CheckFailed(f"a {POST} record in the frame", repr(record.get("$type")))
    return f"seq {body.get('seq')}, signature valid"


async def admin_refuses_token(ctx: Smoke) -> str:
    auth = _auth(ctx)
    seen_statuses = []
    for method, path, kw in (("GET", ADMIN_STATUS, {}),
                             ("POST", "/xrpc/com.atproto.server.createInviteCode", {"json": {"useCount": 1}})):
        response = await ctx.request(method, path, headers=auth, **kw)
        if response.status_code not in (401, 403) or xrpc_error(response) is None:
            raise CheckFailed(f"HTTP 401/403 with an XRPC error from {method} {path} with an account's token",
                              seen(response))
        seen_statuses.append(f"{method} {path} {response.status_code}")
    return "refused: " + ", ".join(seen_statuses)


async def blob_security(ctx: Smoke) -> str:
    blob = ctx.state.get("blob")
    if blob is not None:
        return await blob_headers(ctx, blob["did"], blob["cid"], blob["mimeType"], blob["data"])
    if ctx.options.blob:
        did, cid = ctx.options.blob.split("/")
        return await blob_headers(ctx, did, cid)
    raise Skipped("no blob known: give --blob did/cid, or --write")


async def cleanup(ctx: Smoke) -> str:
    """Deactivate the disposable account (com.atproto.server.deactivateAccount): the PDS stops
    serving its repo and the firehose says so; an operator can delete it later."""
    acct = ctx.state.get("account")
    if acct is None:
        raise Skipped("no account was created")
    await ctx.expect("POST", "/xrpc/com.atproto.server.deactivateAccount", headers=bearer(acct["accessJwt"]), json={})
    body = await ctx.expect_json("GET", "/xrpc/com.atproto.sync.getRepoStatus", params={"did": acct["did"]})
    if not isinstance(body, dict) or body.get("active") is not False:
        raise CheckFailed(f"getRepoStatus({acct['did']}) active false after deactivation", repr(body)[:200])
    return f"{acct['handle']} deactivated ({body.get('status')})"


WRITE_CHECKS = [
    ("write.account", account),
    ("write.identity", account_identity),
    ("write.session", session),
    ("write.profile", profile),
    ("write.post", post),
    ("write.image-post", image_post),
    ("write.latest-commit", latest_commit),
    ("write.repo-car", repo_car),
    ("write.firehose-commit", firehose_commit),
    ("write.admin-refuses-token", admin_refuses_token),
]
