"""Service benchmark (issue #3): sequential sessions over HTTP and the idle memory of ``squall serve``.

    .venv/bin/python bench/service.py [--sessions 200] [--gets 2000]

Starts ``squall serve`` as a subprocess on a free loopback port with a temporary data directory,
signs up one account, then measures, one request at a time over a kept-alive connection:
``createSession`` (dominated by the argon2id check of the password) and ``getSession`` (JWT check
and one account read). It reports requests per second, p50 and p99 latency, and the resident set
size of the server process when idle after start and again after the benchmark (target: idle RSS
≤ 70 MB).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import httpx
import psutil

from _server import bench_server

PASSWORD = "bench-password-123"
RSS_TARGET_MB = 70.0


def idle_rss_mb(pid: int, settle: float) -> float:
    time.sleep(settle)  # let start-up (or the last request) finish before sampling
    return psutil.Process(pid).memory_info().rss / 2**20


def measure(n: int, call) -> dict[str, float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "n": n,
        "rps": n / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="createSession requests (default 200)")
    parser.add_argument("--gets", type=int, default=2000, help="getSession requests (default 2000)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before sampling RSS")
    args = parser.parse_args()

    with bench_server("squall-bench-") as pds:
        proc, port = pds.proc, pds.port
        rss_start = idle_rss_mb(proc.pid, args.settle)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = c.post("/xrpc/com.atproto.server.createAccount",
                       json={"handle": "bench.localhost", "email": "bench@example.com", "password": PASSWORD})
            r.raise_for_status()

            def create_session() -> None:
                resp = c.post("/xrpc/com.atproto.server.createSession",
                              json={"identifier": "bench.localhost", "password": PASSWORD})
                if resp.status_code != 200:
                    raise SystemExit(f"createSession failed: {resp.text}")

            access = c.post("/xrpc/com.atproto.server.createSession",
                            json={"identifier": "bench.localhost", "password": PASSWORD}).json()["accessJwt"]
            headers = {"Authorization": f"Bearer {access}"}

            def get_session() -> None:
                resp = c.get("/xrpc/com.atproto.server.getSession", headers=headers)
                if resp.status_code != 200:
                    raise SystemExit(f"getSession failed: {resp.text}")

            for _ in range(20):  # warm-up: imports, caches, the connection
                get_session()
            sessions = measure(args.sessions, create_session)
            gets = measure(args.gets, get_session)
        rss_after = idle_rss_mb(proc.pid, args.settle)

    print(f"squall serve benchmark — Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; sequential requests over one kept-alive HTTP/1.1 connection")
    print()
    print(f"| {'measure':<34} | {'n':>6} | {'req/s':>8} | {'p50 ms':>8} | {'p99 ms':>8} |")
    print(f"|{'-' * 36}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for name, row in (("createSession (argon2id verify)", sessions), ("getSession", gets)):
        print(f"| {name:<34} | {row['n']:>6} | {row['rps']:>8.1f} | {row['p50']:>8.2f} | {row['p99']:>8.2f} |")
    print()
    print(f"| {'idle RSS':<34} | {'MB':>8} | {'target':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|")
    for name, value in (("after start", rss_start), ("after the benchmark", rss_after)):
        verdict = "ok" if value <= RSS_TARGET_MB else "OVER"
        print(f"| {name:<34} | {value:>8.1f} | {f'≤{RSS_TARGET_MB:.0f} {verdict}':>8} |")
    return 0 if max(rss_start, rss_after) <= RSS_TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
