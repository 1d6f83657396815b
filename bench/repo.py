"""Repository benchmark (issue #4): sequential record writes and reads over HTTP with one account.

    .venv/bin/python bench/repo.py [--records 10000] [--gets 5000] [--exports 5]

Starts ``squall serve`` as a subprocess (loopback, temporary data directory, log level warning),
signs up one account, then, one request at a time over a kept-alive connection:

* ``createRecord`` of ``--records`` posts (each its own signed commit, MST update, SQLite
  transaction and #commit event): requests/s, p50, p99;
* ``getRecord`` of random posts among them: requests/s, p50, p99;
* ``sync.getRepo`` of the whole repo (best and median of ``--exports``), with its size;
* the server's resident set size after the writes (psutil).

The timed loops use ``http.client`` (keep-alive): on a 2-core machine the client shares the CPU with
the server, and a heavier client would be measured as much as the server.

Targets on the 2-core reference machine: createRecord ≥ 300/s, getRecord ≥ 1,000/s, getRepo of
10k records ≤ 150 ms, RSS after 10k writes ≤ 90 MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import time

import httpx
import psutil

from _server import bench_server

PASSWORD = "bench-password-123"
TARGETS = {"create": 300.0, "get": 1000.0, "export_ms": 150.0, "rss_mb": 90.0}


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(name: str, samples: list[float], elapsed: float, target: float) -> None:
    rate = len(samples) / elapsed
    ok = "ok" if rate >= target else "MISSED"
    print(f"{name:<14} {rate:9.0f}/s   p50 {pct(samples, 50) * 1000:6.2f} ms   p99 {pct(samples, 99) * 1000:6.2f} ms"
          f"   (target ≥ {target:.0f}/s: {ok})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--gets", type=int, default=5_000)
    parser.add_argument("--exports", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()

    with bench_server("squall-bench-repo-", keep=args.keep) as pds:
        proc, port = pds.proc, pds.port
        server = psutil.Process(proc.pid)
        print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
              f"{args.records} records, {args.gets} gets")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = c.post("/xrpc/com.atproto.server.createAccount",
                       json={"handle": "bench.localhost", "email": "bench@example.com", "password": PASSWORD})
            r.raise_for_status()
            did = r.json()["did"]
            headers = {"Authorization": f"Bearer {r.json()['accessJwt']}"}
            rss_start = server.memory_info().rss / 2**20

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            post_headers = {**headers, "Content-Type": "application/json"}
            samples: list[float] = []
            rkeys: list[str] = []
            started = time.perf_counter()
            for i in range(args.records):
                body = json.dumps({"repo": did, "collection": "app.bsky.feed.post",
                                   "record": {"$type": "app.bsky.feed.post", "text": f"post number {i} of the benchmark",
                                              "createdAt": "2024-05-01T12:00:00.000Z", "langs": ["en"]}})
                t = time.perf_counter()
                conn.request("POST", "/xrpc/com.atproto.repo.createRecord", body=body, headers=post_headers)
                resp = conn.getresponse()
                data = resp.read()
                samples.append(time.perf_counter() - t)
                if resp.status != 200:
                    raise SystemExit(f"createRecord failed: {resp.status} {data[:300]!r}")
                rkeys.append(json.loads(data)["uri"].rsplit("/", 1)[1])
            report("createRecord", samples, time.perf_counter() - started, TARGETS["create"])
            rss_after = server.memory_info().rss / 2**20

            rng = random.Random(4)
            samples = []
            started = time.perf_counter()
            for _ in range(args.gets):
                path = (f"/xrpc/com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post"
                        f"&rkey={rng.choice(rkeys)}")
                t = time.perf_counter()
                conn.request("GET", path)
                resp = conn.getresponse()
                data = resp.read()
                samples.append(time.perf_counter() - t)
                if resp.status != 200:
                    raise SystemExit(f"getRecord failed: {resp.status} {data[:300]!r}")
            conn.close()
            report("getRecord", samples, time.perf_counter() - started, TARGETS["get"])

            times = []
            size = 0
            for _ in range(args.exports):
                t = time.perf_counter()
                with c.stream("GET", "/xrpc/com.atproto.sync.getRepo", params={"did": did}) as r:
                    size = sum(len(chunk) for chunk in r.iter_raw())
                times.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"getRepo failed: {r.status_code}")
            best, median = min(times) * 1000, statistics.median(times) * 1000
            ok = "ok" if median <= TARGETS["export_ms"] else "MISSED"
            print(f"getRepo        {best:6.1f} ms best, {median:6.1f} ms median, {size / 2**20:.1f} MiB "
                  f"for {args.records} records   (target ≤ {TARGETS['export_ms']:.0f} ms: {ok})")
            ok = "ok" if rss_after <= TARGETS["rss_mb"] else "MISSED"
            print(f"server RSS     {rss_start:6.1f} MB after signup, {rss_after:6.1f} MB after {args.records} writes, "
                  f"{server.memory_info().rss / 2**20:6.1f} MB after reads   (target ≤ {TARGETS['rss_mb']:.0f} MB: {ok})")


if __name__ == "__main__":
    main()
