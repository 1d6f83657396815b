"""Firehose consumers for tests: a subscriber that collects frames, a raw WebSocket client that
sees control frames and can stop reading, and a checker that verifies every event the way a
Sync 1.1 relay does (https://atproto.com/specs/sync, "Firehose" / "Validation").

``RelayChecker`` keeps, per repo, the last rev and data root it accepted, and for each ``#commit``
checks: the commit block is the CAR's root and is signed by the ``#atproto`` key of the DID
document; ``rev`` sorts after the previous rev and ``since`` equals it; ``prevData`` equals the
previous data root; each create/update's record block is present and hashes to the op's CID; and
undoing the ops on the partial tree carried in ``blocks`` (``squall.atproto.mst.invert_ops``
through ``repo.verify_commit_event``) gives ``prevData``. ``#sync`` resets a repo's state to the
signed commit it carries; ``#identity`` drops the cached key so it is fetched again.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from squall.atproto.car import read_car
from squall.atproto.cid import CID
from squall.atproto.commit import decode_commit, verify_commit
from squall.atproto.crypto import PublicKey
from squall.atproto.repo import verify_commit_event
from squall.firehose.frames import decode_frame

PATH = "/xrpc/com.atproto.sync.subscribeRepos"


def stream_url(base_url: str, **params: Any) -> str:
    url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + PATH
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return url


# -- collecting subscriber -------------------------------------------------------------------------


@dataclass
class Received:
    frames: list[tuple[dict, dict]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None

    @property
    def seqs(self) -> list[int]:
        return [b["seq"] for h, b in self.frames if h.get("op") == 1 and "seq" in b]

    @property
    def errors(self) -> list[dict]:
        return [b for h, b in self.frames if h.get("op") == -1]

    @property
    def infos(self) -> list[dict]:
        return [b for h, b in self.frames if h.get("t") == "#info"]


async def collect(url: str, *, count: int | None = None, until_seq: int | None = None, timeout: float = 10.0,
                  on_frame: Callable[[bytes], None] | None = None) -> Received:
    """Read frames until ``count`` events, an event with seq ≥ ``until_seq``, a close, or timeout."""
    out = Received()
    async with websockets.connect(url, max_size=None, open_timeout=timeout) as ws:
        try:
            async with asyncio.timeout(timeout):
                async for message in ws:
                    if on_frame is not None:
                        on_frame(message)
                    header, body = decode_frame(message)
                    out.frames.append((header, body))
                    seqs = out.seqs
                    if count is not None and len(seqs) >= count:
                        break
                    if until_seq is not None and seqs and seqs[-1] >= until_seq:
                        break
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            pass
        if ws.close_code is not None:
            out.close_code, out.close_reason = ws.close_code, ws.close_reason
    return out


async def expect_error(url: str, timeout: float = 10.0) -> tuple[dict, int | None, str | None]:
    """Connect, expect exactly one error frame and then the server's close."""
    async with websockets.connect(url, open_timeout=timeout) as ws:
        async with asyncio.timeout(timeout):
            header, body = decode_frame(await ws.recv())
            assert header == {"op": -1}, header
            try:
                extra = await ws.recv()
                raise AssertionError(f"frame after the error frame: {decode_frame(extra)}")
            except websockets.ConnectionClosed:
                pass
        return body, ws.close_code, ws.close_reason


# -- raw client --------------------------------------------------------------------------------------


class RawSubscriber:
    """A WebSocket client on a plain socket: it sees pings, and when told to, stops reading so
    the server's buffers fill (``rcvbuf`` shrinks the kernel's share of that)."""

    def __init__(self, url: str, *, rcvbuf: int | None = None) -> None:
        self.url = url
        self.rcvbuf = rcvbuf
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.sock: socket.socket | None = None
        self.pings = 0
        self.messages: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.eof = False

    def connect(self, timeout: float = 10.0) -> None:
        parts = urlsplit(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(timeout)
        sock.connect((parts.hostname, parts.port))
        self.sock = sock
        request = self.protocol.connect()
        self.protocol.send_request(request)
        self._flush()
        deadline = _now() + timeout
        while self.protocol.handshake_exc is None and self.protocol.state.name == "CONNECTING":
            if _now() > deadline or self.eof:
                raise TimeoutError(f"no WebSocket handshake from {self.url}")
            self._read_once()
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    def _flush(self) -> None:
        assert self.sock is not None
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _read_once(self) -> bool:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                continue
            if isinstance(event, Frame):
                if event.opcode == Opcode.PING:
                    self.pings += 1
                elif event.opcode in (Opcode.BINARY, Opcode.TEXT):
                    self.messages.append(bytes(event.data))
                elif event.opcode == Opcode.CLOSE and self.protocol.close_rcvd is not None:
                    self.close_code = self.protocol.close_rcvd.code
                    self.close_reason = self.protocol.close_rcvd.reason
        self._flush()  # pongs and the close reply
        return bool(data)

    def read_for(self, seconds: float) -> None:
        """Process everything the server sends for ``seconds`` (or until it closes)."""
        assert self.sock is not None
        loop_end = _now() + seconds
        while _now() < loop_end and not self.eof:
            self.sock.settimeout(max(0.01, min(0.2, loop_end - _now())))
            self._read_once()

    def send_raw(self, *, text: str | None = None, data: bytes | None = None) -> None:
        if text is not None:
            self.protocol.send_text(text.encode())
        else:
            self.protocol.send_binary(data or b"")
        self._flush()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _now() -> float:
    import time

    return time.monotonic()


# -- the relay-style checker -------------------------------------------------------------------------


class SyncCheckFailed(AssertionError):
    pass


def did_key_from_document(doc: dict, did: str) -> PublicKey:
    if doc.get("id") != did:
        raise SyncCheckFailed(f"DID document is for {doc.get('id')!r}, not {did}")
    for method in doc.get("verificationMethod") or []:
        ident = method.get("id", "")
        if ident in ("#atproto", f"{did}#atproto"):
            return PublicKey.from_multibase(method["publicKeyMultibase"])
    raise SyncCheckFailed(f"DID document of {did} has no #atproto key")


def http_key_resolver(pds_url: str, plc_url: str | None = None) -> Callable[[str], PublicKey]:
    """did:web from the PDS's ``/.well-known/did.json`` chosen by Host; did:plc from the directory."""

    def resolve(did: str) -> PublicKey:
        if did.startswith("did:web:"):
            host = did[len("did:web:"):]
            r = httpx.get(f"{pds_url}/.well-known/did.json", headers={"Host": host}, timeout=10)
        elif did.startswith("did:plc:") and plc_url is not None:
            r = httpx.get(f"{plc_url}/{did}", timeout=10)
        else:
            raise SyncCheckFailed(f"cannot resolve {did}")
        if r.status_code != 200:
            raise SyncCheckFailed(f"DID document of {did}: HTTP {r.status_code}")
        return did_key_from_document(r.json(), did)

    return resolve


@dataclass
class RepoState:
    rev: str
    data: CID


class RelayChecker:
    def __init__(self, resolve_key: Callable[[str], PublicKey]) -> None:
        self.resolve_key = resolve_key
        self.keys: dict[str, PublicKey] = {}
        self.repos: dict[str, RepoState] = {}
        self.last_seq = 0
        self.counts: dict[str, int] = {}
        self.ops_checked = 0

    def key(self, did: str) -> PublicKey:
        if did not in self.keys:
            self.keys[did] = self.resolve_key(did)
        return self.keys[did]

    def feed(self, message: bytes) -> tuple[dict, dict]:
        header, body = decode_frame(message)
        if header.get("op") != 1:
            raise SyncCheckFailed(f"error frame: {body}")
        t = header.get("t")
        if t == "#info":
            return header, body
        seq = body.get("seq")
        if type(seq) is not int or seq <= self.last_seq:
            raise SyncCheckFailed(f"seq {seq!r} does not increase (last {self.last_seq})")
        self.last_seq = seq
        if type(body.get("time")) is not str:
            raise SyncCheckFailed(f"event {seq} has no time")
        self.counts[t] = self.counts.get(t, 0) + 1
        if t == "#commit":
            self._commit(seq, body)
        elif t == "#sync":
            self._sync(seq, body)
        elif t == "#identity":
            self.keys.pop(body["did"], None)
        elif t == "#account":
            if type(body.get("active")) is not bool:
                raise SyncCheckFailed(f"#account {seq} without active flag")
        else:
            raise SyncCheckFailed(f"unknown message type {t!r}")
        return header, body

    def _sync(self, seq: int, body: dict) -> None:
        did = body["did"]
        roots, blocks = read_car(body["blocks"])
        if len(roots) != 1 or roots[0] not in blocks:
            raise SyncCheckFailed(f"#sync {seq}: CAR must have the commit as its only root")
        commit = decode_commit(blocks[roots[0]])
        if commit["did"] != did or commit["rev"] != body["rev"]:
            raise SyncCheckFailed(f"#sync {seq}: commit does not match did/rev")
        if not verify_commit(commit, self.key(did)):
            raise SyncCheckFailed(f"#sync {seq}: bad signature")
        self.repos[did] = RepoState(commit["rev"], commit["data"])

    def _commit(self, seq: int, body: dict) -> None:
        did = body["repo"]
        for name, want in (("tooBig", False), ("rebase", False)):
            if body.get(name) is not want:
                raise SyncCheckFailed(f"#commit {seq}: {name} must be {want}")
        if type(body.get("blobs")) is not list:
            raise SyncCheckFailed(f"#commit {seq}: blobs must be a list")
        roots, blocks = read_car(body["blocks"])
        if roots != [body["commit"]]:
            raise SyncCheckFailed(f"#commit {seq}: CAR root {roots} is not the commit {body['commit']}")
        state = self.repos.get(did)
        if state is not None:
            if not body["rev"] > state.rev:
                raise SyncCheckFailed(f"#commit {seq}: rev {body['rev']} does not follow {state.rev}")
            if body.get("since") != state.rev:
                raise SyncCheckFailed(f"#commit {seq}: since {body.get('since')} is not the previous rev {state.rev}")
            if body.get("prevData") != state.data:
                raise SyncCheckFailed(f"#commit {seq}: prevData {body.get('prevData')} is not the previous data {state.data}")
        try:
            commit = verify_commit_event(blocks, body["commit"], body["ops"], body.get("prevData"), self.key(did),
                                         did=did, rev=body["rev"])
        except Exception as exc:
            raise SyncCheckFailed(f"#commit {seq} of {did} fails relay checks: {exc}") from exc
        self.ops_checked += len(body["ops"])
        self.repos[did] = RepoState(commit["rev"], commit["data"])
