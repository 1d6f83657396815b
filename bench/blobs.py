"""Blob benchmark over HTTP against a real ``squall serve`` (disk store): prints one table.

    .venv/bin/python bench/blobs.py [--mb 50] [--small 200]

Rows: one big upload (``--mb`` MB, streamed) and reading it back whole and as 1 MB ranges, with the
server's peak RSS during each (it should not grow with the blob: bodies are streamed, never held);
then ``--small`` sequential 50 KB uploads (uploads/s with p50/p99).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import httpx
import psutil

from _server import bench_server


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> "PeakRss":
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--small", type=int, default=200)
    args = ap.parse_args()
    size = args.mb * 1024 * 1024
    env = {"PDS_BLOB_UPLOAD_LIMIT": str(size + 1)}
    with bench_server("squall-bench-blobs-", env=env) as pds, pds.client(timeout=120) as c:
        r = c.post("/xrpc/com.atproto.server.createAccount",
                   json={"handle": "bench.localhost", "email": "b@example.com", "password": "bench-password-1"})
        r.raise_for_status()
        did, headers = r.json()["did"], {"Authorization": f"Bearer {r.json()['accessJwt']}"}
        idle = psutil.Process(pds.proc.pid).memory_info().rss
        rows = []

        def chunks():
            block = os.urandom(1024 * 1024)
            for _ in range(args.mb):
                yield block

        with PeakRss(pds.proc.pid) as rss:
            t = time.perf_counter()
            blob = c.post("/xrpc/com.atproto.repo.uploadBlob", content=chunks(),
                          headers={**headers, "Content-Type": "application/octet-stream"}).json()["blob"]
            dt = time.perf_counter() - t
        rows.append((f"upload {args.mb} MB (streamed)", f"{args.mb / dt:8.1f} MB/s", f"peak RSS {rss.peak / 2**20:6.1f} MB"))
        r = c.post("/xrpc/com.atproto.repo.createRecord", headers=headers, json={
            "repo": did, "collection": "com.example.file", "record": {"file": blob}})
        r.raise_for_status()
        params = {"did": did, "cid": blob["ref"]["$link"]}
        with PeakRss(pds.proc.pid) as rss:
            t = time.perf_counter()
            n = 0
            with c.stream("GET", "/xrpc/com.atproto.sync.getBlob", params=params) as resp:
                for part in resp.iter_bytes():
                    n += len(part)
            dt = time.perf_counter() - t
        assert n == size
        rows.append((f"getBlob {args.mb} MB", f"{args.mb / dt:8.1f} MB/s", f"peak RSS {rss.peak / 2**20:6.1f} MB"))
        t = time.perf_counter()
        for i in range(args.mb):
            resp = c.get("/xrpc/com.atproto.sync.getBlob", params=params,
                         headers={"Range": f"bytes={i * 2**20}-{(i + 1) * 2**20 - 1}"})
            assert resp.status_code == 206 and len(resp.content) == 2**20
        dt = time.perf_counter() - t
        rows.append(("getBlob 1 MB ranges", f"{args.mb / dt:8.1f} req/s", ""))

        lat = []
        small = os.urandom(50_000)
        for i in range(args.small):
            body = small[:-8] + i.to_bytes(8, "big")
            t = time.perf_counter()
            c.post("/xrpc/com.atproto.repo.uploadBlob", content=body, headers=headers).raise_for_status()
            lat.append(time.perf_counter() - t)
        q = statistics.quantiles(lat, n=100)
        rows.append((f"upload 50 KB x{args.small}", f"{len(lat) / sum(lat):8.1f} req/s",
                     f"p50 {q[49] * 1000:.2f} ms  p99 {q[98] * 1000:.2f} ms"))

        print(f"server RSS at idle: {idle / 2**20:.1f} MB")
        for name, rate, extra in rows:
            print(f"{name:32} {rate:>16}   {extra}")


if __name__ == "__main__":
    main()
