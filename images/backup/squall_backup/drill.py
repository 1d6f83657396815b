"""``squall-backup drill``: prove a backup by booting a PDS on it and checking it as a client would.

1. **restore** — download, decrypt and unpack the backup (the same code as ``restore``: every file
   against the manifest, every blob against its SHA-256) into a temporary directory;
2. **integrity** — ``PRAGMA integrity_check`` on the restored database;
3. **boot** — ``squall serve`` on a free loopback port over the copy, with outbound publishing
   disabled: no crawlers, no AppView/chat/report services, the PLC directory pointed at a closed
   loopback port, rate limits off, a one-off admin password;
4. **health** and **describeServer**;
5. **repos** — for EVERY account (``listRepos``, cross-checked against the database): ``getRepo``
   (with the admin credential, so deactivated and taken-down repos are checked too), the CAR parsed
   (each block against its CID), the commit signature verified against the account's signing key
   (the public half of the key in the restored account row; for ``did:web`` also the key of the DID
   document the restored PDS serves — a ``did:plc`` document lives in the PLC directory, which a
   drill must not contact), the MST walked with its structure checks, every record block present;
   the head and rev must match ``listRepos`` and the record count the database;
6. **blobs** — every blob a record references, fetched with ``getBlob``, its SHA-256 recomputed and
   compared with its CID;
7. **logins** — a sample of accounts: the stored password hash parses as argon2, and
   ``createSession`` with a wrong password answers 401 ``AuthenticationRequired`` (not a 5xx);
8. **firehose** — the stored event sequence has no gap, and ``subscribeRepos`` from the oldest
   event replays it in order up to the newest.

Every check is timed and counted; a failing check lists its faults, each naming the account. The
report is a plain dict (see ``README``: "Restore drill") that goes to stdout, the log and status.json.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

from . import logs
from .manifest import DATABASE_NAME, format_time

#: Faults kept per check in the report (the count is always exact).
MAX_FAULTS = 50
BOOT_TIMEOUT = 60.0
HTTP_TIMEOUT = 30.0
FIREHOSE_IDLE_TIMEOUT = 5.0


class DrillError(RuntimeError):
    pass


class Check:
    """One step of the drill: timing, a count and the faults found (each naming the account)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.faults: list[dict[str, str]] = []
        self.fault_count = 0
        self.detail: dict[str, Any] = {}
        self.skipped: str | None = None
        self.t0 = time.monotonic()
        self.seconds = 0.0

    def fault(self, account: str | None, fault: str) -> None:
        self.fault_count += 1
        if len(self.faults) < MAX_FAULTS:
            self.faults.append({"account": account or "-", "fault": fault})

    @property
    def ok(self) -> bool:
        return self.fault_count == 0

    def finish(self) -> None:
        self.seconds = round(time.monotonic() - self.t0, 3)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "ok": self.ok, "seconds": self.seconds, "count": self.count,
               "fault_count": self.fault_count, "faults": self.faults}
        if self.detail:
            out["detail"] = self.detail
        if self.skipped:
            out["skipped"] = self.skipped
        return out


class Progress:
    """A line per step on stderr; on a terminal, a live counter for the long per-account steps."""

    def __init__(self, stream=None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.step_no = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        if self.enabled:
            print(f"drill [{self.step_no}] {text} …", file=self.stream, flush=True)

    def tick(self, done: int, total: int, what: str) -> None:
        if self.tty and total:
            width = 30
            fill = int(width * done / total)
            self.stream.write(f"\r    [{'#' * fill}{'.' * (width - fill)}] {done}/{total} {what}")
            if done == total:
                self.stream.write("\n")
            self.stream.flush()

    def result(self, check: Check) -> None:
        if not self.enabled:
            return
        verdict = "ok" if check.ok else f"FAILED ({check.fault_count} fault(s))"
        if check.skipped:
            verdict = f"skipped: {check.skipped}"
        print(f"    {check.name}: {verdict}, {check.count} checked in {check.seconds:.2f} s", file=self.stream,
              flush=True)
        for f in check.faults[:10]:
            print(f"      {f['account']}: {f['fault']}", file=self.stream, flush=True)


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drill_environment(data_dir: Path, port: int, admin_password: str, hostname: str | None) -> dict[str, str]:
    """The drill PDS's environment: the restored volume, loopback, nothing published anywhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PDS_", "BACKUP_", "RAILWAY_", "SQUALL_")) and k != "PORT"}
    env.update({
        "PDS_HOSTNAME": hostname or "localhost",
        "PDS_PORT": str(port),
        "PDS_DATA_DIRECTORY": str(data_dir),
        "PDS_BLOBSTORE_DISK_LOCATION": str(data_dir / "blobs"),
        # Dev mode lets the PLC URL below be a plain-http loopback address: nothing listens on
        # port 9, so any attempt to publish fails at once without leaving the machine.
        "PDS_DEV_MODE": "true",
        "PDS_DID_PLC_URL": "http://127.0.0.1:9",
        "PDS_CRAWLERS": "",
        "PDS_ADMIN_PASSWORD": admin_password,
        "PDS_RATE_LIMITS_ENABLED": "false",
        "PDS_INVITE_REQUIRED": "true",
        "PDS_LOG_LEVEL": "warning",
        # Litestream is not watching this copy: SQLite checkpoints as usual.
        "PDS_SQLITE_WAL_AUTOCHECKPOINT": "1000",
    })
    return env


class DrillPds:
    def __init__(self, data_dir: Path, hostname: str | None) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.admin_password = secrets.token_urlsafe(24)
        self.hostname = hostname
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / "drill-pds.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import httpx
        env = drill_environment(self.data_dir, self.port, self.admin_password, self.hostname)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "squall.cli", "serve", "--host", "127.0.0.1"],
                                         env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DrillError(f"squall serve exited with status {self.proc.returncode} on the restored copy: "
                                 + self.log_tail())
            try:
                if httpx.get(f"{self.url}/xrpc/_health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DrillError(f"squall serve did not answer within {BOOT_TIMEOUT:.0f} s: " + self.log_tail())

    def log_tail(self, n: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text[-n:].splitlines()[-5:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def _blob_links(value: Any, out: set[str]) -> None:
    """CIDs of every ``{"$type": "blob", "ref": <link>}`` in a decoded record (any depth)."""
    from squall.atproto.cid import CID
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if v.get("$type") == "blob" and isinstance(v.get("ref"), CID):
                out.add(str(v["ref"]))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


class Drill:
    def __init__(self, data_dir: Path, *, hostname: str | None = None, login_sample: int = 3,
                 progress: Progress | None = None) -> None:
        self.data_dir = data_dir
        self.hostname = hostname
        self.login_sample = login_sample
        self.progress = progress or Progress(enabled=False)
        self.checks: list[Check] = []
        self.pds: DrillPds | None = None
        self.blob_refs: dict[str, set[str]] = {}

    # -- plumbing ----------------------------------------------------------------------------------
    def _run(self, name: str, title: str, fn: Callable[[Check], None]) -> Check:
        self.progress.step(title)
        check = Check(name)
        self.checks.append(check)
        try:
            fn(check)
        except Exception as exc:  # noqa: BLE001 - a crashed check is a failed check, with its reason
            check.fault(None, f"{type(exc).__name__}: {exc}")
        check.finish()
        self.progress.result(check)
        logs.info("drill.check", name=check.name, ok=check.ok, seconds=check.seconds, count=check.count,
                  faults=check.faults[:5])
        return check

    def _db(self) -> sqlite3.Connection:
        con = sqlite3.connect(f"file:{self.data_dir / DATABASE_NAME}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        return con

    def _client(self):
        import httpx
        assert self.pds is not None
        return httpx.Client(base_url=self.pds.url, timeout=HTTP_TIMEOUT)

    def _admin(self) -> tuple[str, str]:
        assert self.pds is not None
        return ("admin", self.pds.admin_password)

    # -- the checks --------------------------------------------------------------------------------
    def check_integrity(self, check: Check) -> None:
        with closing(self._db()) as con:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
            check.count = con.execute("PRAGMA page_count").fetchone()[0]
        if rows != ["ok"]:
            check.fault(None, "integrity_check: " + "; ".join(rows[:5]))

    def boot(self, check: Check) -> None:
        self.pds = DrillPds(self.data_dir, self.hostname)
        self.pds.start()
        check.count = 1
        check.detail = {"port": self.pds.port}

    def check_health(self, check: Check) -> None:
        with self._client() as c:
            r = c.get("/xrpc/_health")
            check.count = 1
            if r.status_code != 200 or "version" not in r.json():
                check.fault(None, f"_health answered {r.status_code}: {r.text[:200]}")
            else:
                check.detail = {"version": r.json()["version"]}

    def check_describe(self, check: Check) -> None:
        with self._client() as c:
            r = c.get("/xrpc/com.atproto.server.describeServer")
            check.count = 1
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code != 200 or not str(body.get("did", "")).startswith("did:"):
                check.fault(None, f"describeServer answered {r.status_code}: {r.text[:200]}")
            else:
                check.detail = {"did": body["did"], "availableUserDomains": body.get("availableUserDomains")}

    def _list_repos(self, c) -> list[dict]:
        repos: list[dict] = []
        cursor = None
        for _ in range(100_000):  # bounded: 1000 per page
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            r = c.get("/xrpc/com.atproto.sync.listRepos", params=params)
            if r.status_code != 200:
                raise DrillError(f"listRepos answered {r.status_code}: {r.text[:200]}")
            body = r.json()
            repos += body["repos"]
            cursor = body.get("cursor")
            if not cursor or not body["repos"]:
                break
        return repos

    def check_repos(self, check: Check) -> None:
        from squall.atproto import dagcbor
        from squall.atproto.blockstore import MemoryBlockStore
        from squall.atproto.car import read_car
        from squall.atproto.commit import decode_commit, verify_commit
        from squall.atproto.crypto import PublicKey, load_keypair
        from squall.atproto.mst import NodeStore, NodeWrangler

        with closing(self._db()) as con:
            accounts = {r["did"]: r for r in con.execute(
                "SELECT a.did, a.handle, a.signing_key_alg, a.signing_key, "
                "(SELECT count(*) FROM record rc WHERE rc.did = a.did) AS records "
                "FROM account a JOIN repo_root r ON r.did = a.did")}
        records_total = 0
        with self._client() as c:
            listed = self._list_repos(c)
            listed_dids = {r["did"] for r in listed}
            for did in sorted(set(accounts) - listed_dids):
                check.fault(did, "account with a repository is missing from listRepos")
            for did in sorted(listed_dids - set(accounts)):
                check.fault(did, "listRepos shows a repository the database has no account for")
            for n, entry in enumerate(listed, 1):
                self.progress.tick(n, len(listed), "repositories")
                did = entry["did"]
                row = accounts.get(did)
                if row is None:
                    continue
                check.count += 1
                try:
                    key = load_keypair(row["signing_key_alg"], row["signing_key"]).public_key
                except Exception as exc:  # noqa: BLE001
                    check.fault(did, f"the stored signing key does not load: {exc}")
                    continue
                if did.startswith("did:web:"):
                    r = c.get("/.well-known/did.json", headers={"host": did.removeprefix("did:web:")})
                    doc_key = None
                    if r.status_code == 200:
                        for vm in r.json().get("verificationMethod") or []:
                            if str(vm.get("id", "")).endswith("#atproto"):
                                doc_key = PublicKey.from_multibase(vm["publicKeyMultibase"])
                    if doc_key is None:
                        check.fault(did, f"the PDS serves no DID document with an #atproto key ({r.status_code})")
                        continue
                    if doc_key != key:
                        check.fault(did, "the DID document's #atproto key is not the account's signing key")
                        continue
                r = c.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}, auth=self._admin())
                if r.status_code != 200:
                    check.fault(did, f"getRepo answered {r.status_code}: {r.text[:200]}")
                    continue
                try:
                    roots, blocks = read_car(r.content)  # every block is checked against its CID
                except Exception as exc:  # noqa: BLE001
                    check.fault(did, f"the repo CAR does not parse: {exc}")
                    continue
                if len(roots) != 1 or roots[0] not in blocks:
                    check.fault(did, f"the repo CAR has roots {roots} and no commit block")
                    continue
                try:
                    commit = decode_commit(blocks[roots[0]])
                except Exception as exc:  # noqa: BLE001
                    check.fault(did, f"the commit does not decode: {exc}")
                    continue
                if commit["did"] != did:
                    check.fault(did, f"the commit is for {commit['did']}")
                    continue
                if not verify_commit(commit, key):
                    check.fault(did, f"commit {roots[0]} (rev {commit['rev']}): the signature does not verify "
                                     "with the account's signing key")
                    continue
                if str(roots[0]) != entry.get("head") or commit["rev"] != entry.get("rev"):
                    check.fault(did, f"commit {roots[0]} rev {commit['rev']} is not listRepos' head "
                                     f"{entry.get('head')} rev {entry.get('rev')}")
                store = MemoryBlockStore()
                for cid, data in blocks.items():
                    store.put(cid, data)
                wrangler = NodeWrangler(NodeStore(store))
                count = 0
                refs: set[str] = set()
                try:
                    for path, value in wrangler.list(commit["data"]):
                        block = blocks.get(value)
                        if block is None:
                            raise DrillError(f"record block {value} of {path} is missing")
                        _blob_links(dagcbor.decode(block), refs)
                        count += 1
                except Exception as exc:  # noqa: BLE001
                    check.fault(did, f"MST walk failed: {exc}")
                    continue
                if count != row["records"]:
                    check.fault(did, f"the MST holds {count} records, the database {row['records']}")
                records_total += count
                self.blob_refs[did] = refs
        check.detail = {"accounts": len(accounts), "records": records_total}

    def check_blobs(self, check: Check) -> None:
        from squall.atproto.cid import CID, RAW
        with closing(self._db()) as con:
            stored = {(r[0], r[1]) for r in con.execute("SELECT did, blob_cid FROM record_blob")}
        wanted = {(did, cid) for did, refs in self.blob_refs.items() for cid in refs} | stored
        total_bytes = 0
        with self._client() as c:
            for n, (did, cid) in enumerate(sorted(wanted), 1):
                self.progress.tick(n, len(wanted), "blobs")
                check.count += 1
                sha = hashlib.sha256()
                size = 0
                with c.stream("GET", "/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid},
                              auth=self._admin()) as r:
                    if r.status_code != 200:
                        r.read()
                        check.fault(did, f"blob {cid} is missing: getBlob answered {r.status_code} "
                                         f"{r.text[:120]}")
                        continue
                    for chunk in r.iter_bytes(1024 * 1024):
                        sha.update(chunk)
                        size += len(chunk)
                total_bytes += size
                try:
                    expected = CID.decode(cid)
                except Exception as exc:  # noqa: BLE001
                    check.fault(did, f"blob reference {cid!r} is not a CID: {exc}")
                    continue
                if CID.from_digest(sha.digest(), RAW).digest != expected.digest:
                    check.fault(did, f"blob {cid}: its bytes hash to sha256 {sha.hexdigest()}, not to its CID")
        check.detail = {"bytes": total_bytes}

    def check_logins(self, check: Check) -> None:
        import argon2
        with closing(self._db()) as con:
            rows = con.execute("SELECT did, handle, password_hash FROM account WHERE password_hash IS NOT NULL "
                               "AND deactivated_at IS NULL AND takedown_ref IS NULL ORDER BY random() LIMIT ?",
                               (self.login_sample,)).fetchall()
        with self._client() as c:
            for row in rows:
                check.count += 1
                did = row["did"]
                try:
                    argon2.extract_parameters(row["password_hash"])
                except Exception as exc:  # noqa: BLE001
                    check.fault(did, f"the stored password hash does not parse as argon2: {exc}")
                    continue
                wrong = "drill-" + secrets.token_urlsafe(16)
                r = c.post("/xrpc/com.atproto.server.createSession",
                           json={"identifier": row["handle"] or did, "password": wrong})
                try:
                    error = r.json().get("error")
                except ValueError:
                    error = None
                if r.status_code != 401 or error != "AuthenticationRequired":
                    check.fault(did, f"createSession with a wrong password answered {r.status_code} {error} "
                                     "(expected 401 AuthenticationRequired)")
        if not rows:
            check.skipped = "no active account with a password"

    def check_firehose(self, check: Check) -> None:
        from squall.firehose.frames import decode_frame
        from websockets.sync.client import connect
        with closing(self._db()) as con:
            seqs = [r[0] for r in con.execute("SELECT seq FROM repo_seq ORDER BY seq")]
        check.count = len(seqs)
        if not seqs:
            check.skipped = "no firehose events"
            return
        gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
        for a, b in gaps[:MAX_FAULTS]:
            check.fault(None, f"firehose seq jumps from {a} to {b}")
        first, last = seqs[0], seqs[-1]
        check.detail = {"first_seq": first, "last_seq": last}
        assert self.pds is not None
        url = f"ws://127.0.0.1:{self.pds.port}/xrpc/com.atproto.sync.subscribeRepos?cursor={first - 1}"
        received: list[int] = []
        with connect(url, open_timeout=10, max_size=None) as ws:
            deadline = time.monotonic() + max(30.0, len(seqs) / 200)
            while time.monotonic() < deadline and (not received or received[-1] < last):
                try:
                    frame = ws.recv(timeout=FIREHOSE_IDLE_TIMEOUT)
                except TimeoutError:
                    break
                header, body = decode_frame(frame if isinstance(frame, bytes) else frame.encode())
                if header.get("op") == -1:
                    check.fault(None, f"subscribeRepos sent an error frame: {body}")
                    break
                if "seq" in body:
                    received.append(body["seq"])
        if not received:
            check.fault(None, "subscribeRepos replayed no event")
            return
        replay_gaps = [(a, b) for a, b in zip(received, received[1:]) if b != a + 1]
        for a, b in replay_gaps[:MAX_FAULTS]:
            check.fault(None, f"subscribeRepos replay jumps from seq {a} to {b}")
        if received[-1] != last:
            check.fault(None, f"subscribeRepos replay stopped at seq {received[-1]}, the database holds {last}")
        check.detail.update({"replayed": len(received), "replay_first_seq": received[0]})

    # -- the whole drill ---------------------------------------------------------------------------
    def run(self) -> list[Check]:
        integrity = self._run("integrity", "integrity_check of the restored database", self.check_integrity)
        if not integrity.ok:
            return self.checks
        try:
            boot = self._run("boot", "booting squall serve on the restored copy (loopback, nothing published)",
                             self.boot)
            if not boot.ok:
                return self.checks
            self._run("health", "GET /xrpc/_health", self.check_health)
            self._run("describe_server", "describeServer", self.check_describe)
            self._run("repos", "getRepo for every account: CAR, commit signature, MST", self.check_repos)
            self._run("blobs", "every referenced blob: getBlob and SHA-256 against its CID", self.check_blobs)
            self._run("logins", f"a sample of {self.login_sample} logins", self.check_logins)
            self._run("firehose", "firehose seq contiguous, replayed with subscribeRepos", self.check_firehose)
        finally:
            if self.pds is not None:
                self.pds.stop()
        return self.checks


def run_drill(engine, backup_id: str, *, identity: Path | None = None, target_name: str | None = None,
              progress: Progress | None = None, workdir: Path | None = None, hostname: str | None = None,
              login_sample: int = 3) -> dict[str, Any]:
    """Restore ``backup_id`` into a temporary directory, boot a PDS on it, check it; return the report."""
    progress = progress or Progress(enabled=False)
    started = engine.clock()
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".squall-drill-", dir=workdir or engine._workdir()))
    checks: list[Check] = []
    resolved_id = backup_id
    try:
        progress.step(f"download, decrypt and unpack backup {backup_id}")
        restore = Check("restore")
        checks.append(restore)
        try:
            report = engine.restore(backup_id, tmp / "data", identity=identity, target_name=target_name)
            resolved_id = report["id"]
            restore.count = report["files"] + report["blobs"]
            restore.detail = {"id": report["id"], "files": report["files"], "blobs": report["blobs"],
                              "schema_version": report["schema_version"], "pds_version": report["pds_version"]}
        except Exception as exc:  # noqa: BLE001 - reported as the failed first step
            restore.fault(None, f"{type(exc).__name__}: {exc}")
        restore.finish()
        progress.result(restore)
        if restore.ok:
            checks += Drill(tmp / "data", hostname=hostname, login_sample=login_sample, progress=progress).run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finished = engine.clock()
    ok = all(c.ok for c in checks) and any(c.name == "firehose" for c in checks)
    faults = [f"{c.name}: {f['account']}: {f['fault']}" for c in checks for f in c.faults]
    out = {"id": resolved_id, "ok": ok, "started_at": format_time(started), "finished_at": format_time(finished),
           "duration_seconds": round(time.monotonic() - t0, 3), "checks": [c.to_dict() for c in checks],
           "summary": faults[0] if faults else "all checks passed"}
    for c in checks:
        if c.name == "repos":
            out["accounts"] = c.detail.get("accounts")
            out["records"] = c.detail.get("records")
        if c.name == "blobs":
            out["blobs"] = c.count
    (logs.info if ok else logs.error)("drill.done", id=resolved_id, ok=ok, duration_seconds=out["duration_seconds"],
                                       summary=out["summary"])
    return out
