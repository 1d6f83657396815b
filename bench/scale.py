"""The curve to a million records (issue #21): latency, size, memory and start-up as a server fills.

    .venv/bin/python bench/scale.py [--accounts 1000] [--steps 10000,100000,1000000] [--big-share 0.05]
                                    [--writes 300] [--reads 1000] [--dir DIR] [--keep]

1. Starts ``squall serve`` (bench/_server.py) on an empty data directory and signs up ``--accounts``
   accounts through HTTP (createAccount), then stops it.
2. For each step, fills the repos up to that many records with the server stopped: a bulk writer
   in this process drives the PDS's own ``RepoService`` on the database (real signed commits built
   with the core, ``--batch`` records per commit, one account holding ``--big-share`` of all
   records and the rest spread evenly), then drops the firehose events of the fill (a long-running
   server would have pruned them; they are not traffic).
3. Starts the server again (cold start to a healthy ``/xrpc/_health``) and measures, through
   HTTP from one client: createRecord p50/p99 on random accounts, getRecord p50/p99 of random
   stored records, getRepo of the largest repo (median of 3), then the database's bytes per record,
   the server's resident set size, and the backup sidecar's SQLite snapshot of the database
   (``squall_backup.snapshot.snapshot_database``, as the sidecar takes it).

Targets from the issue: write and read latency flat within 25 % from the first to the last step;
RSS ≤ 150 MB at 1M records; cold start ≤ 2 s. The load average is printed next to every step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from _server import ROOT, START_TIMEOUT, Client, PdsProcess

sys.path.insert(0, str(ROOT / "images" / "backup"))

PASSWORD = "bench-password-123"
COLLECTION = "app.bsky.feed.post"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000


# -- the bulk writer (server stopped) --------------------------------------------------------------


async def bulk_fill(db_path: Path, plan: dict[str, int], batch: int, sample: list[tuple[str, str]],
                    sample_size: int, seen: list[int]) -> float:
    """Add plan[did] records to each repo through RepoService (real commits); keep a reservoir
    sample of (did, rkey) over every record written so far. Returns seconds."""
    from squall.atproto.tid import TidClock
    from squall.repo.service import RepoService
    from squall.store import repos as repos_store
    from squall.store import sequencer
    from squall.store.db import Database
    from squall.version import __version__
    from squall.xrpc.registry import Registry, method_lexicons

    started = time.perf_counter()
    db = Database(db_path, readers=1, pds_version=__version__)
    await db.open()
    try:
        clock = TidClock()
        newest = await repos_store.newest_rev(db)
        if newest:
            clock.observe(newest)
        lexicons = Registry(lexicons=method_lexicons()).lexicons  # as the app loads them
        service = RepoService(db, clock, logging.getLogger("bench"), firehose=None, blobs=None, lexicons=lexicons)
        total = sum(plan.values())
        done = 0
        last_print = time.monotonic()
        for did, count in plan.items():
            while count > 0:
                n = min(batch, count)
                writes = [service.preparer.record_write(
                    "create", COLLECTION, None,
                    {"$type": COLLECTION, "text": f"bulk post {seen[0] + i} of the scale benchmark",
                     "createdAt": "2026-01-01T00:00:00.000Z"}, validate=None) for i in range(n)]
                await service.apply(did, writes)
                for w in writes:
                    seen[0] += 1
                    if len(sample) < sample_size:
                        sample.append((did, w.rkey))
                    else:
                        j = random.randrange(seen[0])
                        if j < sample_size:
                            sample[j] = (did, w.rkey)
                count -= n
                done += n
                if time.monotonic() - last_print > 15:
                    rate = done / (time.perf_counter() - started)
                    print(f"    filled {done}/{total} ({rate:.0f} records/s, load {load()})", flush=True)
                    last_print = time.monotonic()
        # The fill's firehose events are not traffic: a server running this long would have pruned them.
        while await db.write(sequencer.prune_events, "9999-12-31T23:59:59.999Z", 5000):
            pass
    finally:
        await db.close()
    return time.perf_counter() - started


def db_bytes(data_dir: Path) -> tuple[int, int]:
    """(file bytes of pds.sqlite + WAL, bytes in use = pages not on the free list)."""
    import sqlite3

    path = data_dir / "pds.sqlite"
    files = sum(p.stat().st_size for p in data_dir.glob("pds.sqlite*") if p.is_file())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return files, (count - free) * page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--steps", default="10000,100000,1000000", help="record totals to measure at")
    parser.add_argument("--big-share", type=float, default=0.05, help="share of all records in the largest repo")
    parser.add_argument("--batch", type=int, default=200, help="records per commit while filling")
    parser.add_argument("--writes", type=int, default=300, help="createRecord calls measured per step")
    parser.add_argument("--reads", type=int, default=1000, help="getRecord calls measured per step")
    parser.add_argument("--sessions", type=int, default=20, help="accounts that write during the measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="squall-scale-", dir=args.dir))
    data = root / "data"
    env = {"PDS_LOG_LEVEL": "warning"}
    print(f"data in {data}; {args.accounts} accounts; steps {steps}; load {load()} ({os.cpu_count()} cores)",
          flush=True)
    rows = []
    try:
        pds = PdsProcess(data, env_extra=env)
        pds.start(timeout=START_TIMEOUT)
        accounts: list[tuple[str, str]] = []  # (did, handle)
        try:
            c = Client(pds.port, timeout=600)
            t0 = time.perf_counter()
            for i in range(args.accounts):
                out = json.loads(c.call("POST", "/xrpc/com.atproto.server.createAccount", {
                    "handle": f"scale{i}.localhost", "email": f"scale{i}@example.com", "password": PASSWORD}))
                accounts.append((out["did"], out["handle"]))
            print(f"  {args.accounts} accounts in {time.perf_counter() - t0:.1f} s", flush=True)
        finally:
            pds.stop(timeout=30)

        big = accounts[0][0]
        filled = 0
        sample: list[tuple[str, str]] = []
        seen = [0]
        for step in steps:
            add = step - filled
            if add <= 0:
                continue
            plan = {big: round(step * args.big_share) - round(filled * args.big_share)}
            rest = add - plan[big]
            others = accounts[1:]
            for k, (did, _) in enumerate(others):
                plan[did] = rest // len(others) + (1 if k < rest % len(others) else 0)
            print(f"  filling {filled} → {step} records (load {load()}) …", flush=True)
            secs = asyncio.run(bulk_fill(data / "pds.sqlite", plan, args.batch, sample, 20000, seen))
            filled = step
            print(f"    {add} records in {secs:.0f} s ({add / secs:.0f}/s)", flush=True)

            load_before = load()
            pds = PdsProcess(data, env_extra=env)
            t0 = time.perf_counter()
            pds.start(timeout=120)
            cold = time.perf_counter() - t0
            try:
                c = Client(pds.port, timeout=600)
                writers = random.sample(accounts, min(args.sessions, len(accounts)))
                tokens = []
                for did, handle in writers:
                    out = json.loads(c.call("POST", "/xrpc/com.atproto.server.createSession",
                                            {"identifier": handle, "password": PASSWORD}))
                    tokens.append((did, out["accessJwt"]))
                wl = []
                for i in range(args.writes):
                    did, tok = tokens[i % len(tokens)]
                    t = time.perf_counter()
                    c.call("POST", "/xrpc/com.atproto.repo.createRecord", {"repo": did, "collection": COLLECTION,
                           "record": {"$type": COLLECTION, "text": f"measured post {i}",
                                      "createdAt": "2026-01-01T00:00:00.000Z"}}, tok)
                    wl.append(time.perf_counter() - t)
                rl = []
                for i in range(args.reads):
                    did, rkey = random.choice(sample)
                    t = time.perf_counter()
                    c.call("GET", f"/xrpc/com.atproto.repo.getRecord?repo={did}&collection={COLLECTION}&rkey={rkey}")
                    rl.append(time.perf_counter() - t)
                repo_times, repo_bytes = [], 0
                for _ in range(3):
                    t = time.perf_counter()
                    repo_bytes = len(c.call("GET", f"/xrpc/com.atproto.sync.getRepo?did={big}"))
                    repo_times.append(time.perf_counter() - t)
                rss = psutil.Process(pds.proc.pid).memory_info().rss / 2**20
            finally:
                pds.stop(timeout=30)
            files, used = db_bytes(data)
            from squall_backup.snapshot import snapshot_database

            snap = root / "snapshot.sqlite"
            t = time.perf_counter()
            snapshot_database(data / "pds.sqlite", snap)
            snap_s = time.perf_counter() - t
            snap.unlink(missing_ok=True)
            total_records = step + args.writes * (steps.index(step) + 1)
            row = {
                "records": step, "load": load_before,
                "write_p50": statistics.median(wl) * 1000, "write_p99": pct(wl, 0.99),
                "read_p50": statistics.median(rl) * 1000, "read_p99": pct(rl, 0.99),
                "big_records": round(step * args.big_share), "getrepo_s": statistics.median(repo_times),
                "getrepo_mb": repo_bytes / 2**20, "bytes_per_record": used / total_records,
                "db_mb": files / 2**20, "rss_mb": rss, "cold_s": cold, "snapshot_s": snap_s,
            }
            rows.append(row)
            print(f"    {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})}",
                  flush=True)
    finally:
        if args.keep:
            print(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"{'records':>9} │ {'write p50/p99 ms':>16} │ {'getRecord p50/p99':>17} │ {'getRepo (largest)':>24} │"
          f" {'B/record':>8} │ {'DB MB':>7} │ {'RSS MB':>6} │ {'cold s':>6} │ {'snapshot s':>10} │ load")
    for r in rows:
        print(f"{r['records']:>9} │ {r['write_p50']:7.2f} / {r['write_p99']:6.2f} │ {r['read_p50']:7.2f} / {r['read_p99']:7.2f} │"
              f" {r['getrepo_s']:6.2f} s, {r['big_records']:>6} rec, {r['getrepo_mb']:5.1f} MB │ {r['bytes_per_record']:8.0f} │"
              f" {r['db_mb']:7.1f} │ {r['rss_mb']:6.1f} │ {r['cold_s']:6.2f} │ {r['snapshot_s']:10.2f} │ {r['load']}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"write p50 {b['write_p50'] / a['write_p50'] - 1:+.0%}, read p50 {b['read_p50'] / a['read_p50'] - 1:+.0%} "
              f"from {a['records']} to {b['records']} records (target: within ±25 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
