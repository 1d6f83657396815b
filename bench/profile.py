"""Where a request's time goes: py-spy samples of ``squall serve`` under one workload per hot path.

    .venv/bin/python bench/profile.py [--calls 2000] [--rate 1000] [--top 25] [--out DIR]

Starts a server (bench/_server.py), makes one account, then runs three sequential phases from one
kept-alive ``http.client`` connection — ``createRecord``, ``getRecord`` of those records,
``getRepo`` of the result — each under its own ``py-spy record`` of the server process (py-spy is
a sampling profiler from PyPI: it reads the interpreter's stacks from outside, so the server runs
unmodified). For each phase it writes the collapsed stacks (``<phase>.folded``, the input of any
flame-graph tool) and prints the functions holding the most samples: *inclusive* (the function or
anything it called was running) and *self* (the function itself was on top of the stack). Idle
time (the event loop waiting in epoll) is not sampled, so percentages are of the server's busy
time.

This is how issue #21's before/after profiles were taken: run it on two checkouts and compare.
py-spy needs ptrace rights over the server (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _server import Client, bench_server

PASSWORD = "bench-password-123"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench/profile.py: py-spy is not installed (.venv/bin/python -m pip install py-spy)")
    return found


def frame_name(frame: str) -> str:
    """``handler (squall/xrpc/dispatch.py:120)`` → ``squall/xrpc/dispatch.py:handler``: lines
    dropped so samples of one function add up."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", "images/pds/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


# Where a sample's time is spent, by the module of the frame on top of the stack (its self time),
# first match wins. "event loop (C)" is uvloop's own work in C — socket reads and writes, epoll —
# which py-spy shows as time in the frame that runs the loop.
LAYERS = (
    ("HTTP parsing and writing", ("uvicorn/protocols/http", "h11/", "httptools", "squall/httpguard.py")),
    ("ASGI layers (FastAPI, Starlette, middleware)", ("fastapi/", "starlette/", "anyio/", "squall/app.py",
                                                      "squall/oauth/resource.py", "squall/firehose/wsctl.py")),
    ("XRPC dispatch, lexicon checks, JSON", ("squall/xrpc/dispatch.py", "squall/xrpc/registry.py",
                                             "squall/atproto/lexicon/", "squall/jsonin.py", "json/", "orjson")),
    ("auth (token checks)", ("squall/auth/", "jwt/")),
    ("repo core (MST, CBOR, CIDs, signing)", ("squall/atproto/", "coincurve/", "cbor2/", "multiformats/",
                                              "base64.py")),
    ("SQLite and the store", ("squall/store/", "sqlite3/", "aiosqlite/")),
    ("thread hand-offs and waits", ("concurrent/futures/", "threading.py", "queue.py")),
    ("event loop (C) and asyncio", ("asyncio/", "uvloop/", "<frozen runpy>", "squall/cli.py")),
    ("handlers and services", ("squall/",)),
)


def layer_of(frame: str) -> str:
    for name, prefixes in LAYERS:
        if frame.startswith(prefixes):
            return name
    return "other"


def summarise(folded: Path, top: int, calls: int | None = None, rate: int = 1000) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        for name in set(frames):
            inclusive[name] += n
        self_time[frames[-1]] += n
        layers[layer_of(frames[-1])] += n
    per_call = (lambda n: f"  {n * 1000 / rate / calls:6.3f} ms/call") if calls else (lambda n: "")
    lines = [f"{total} samples of busy time{per_call(total)}", "  by layer (self time):"]
    for name, n in layers.most_common():
        lines.append(f"    {100 * n / max(total, 1):5.1f} %{per_call(n)}  {name}")
    for title, counter in (("inclusive", inclusive), ("self", self_time)):
        lines.append(f"  top {top} {title}:")
        for name, n in counter.most_common(top):
            lines.append(f"    {100 * n / max(total, 1):5.1f} %  {name}")
    return "\n".join(lines)


def profiled(pid: int, out: Path, rate: int, run) -> float:
    """Run ``run()`` under ``py-spy record`` of ``pid``; the folded stacks go to ``out``."""
    spy = subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                            "--output", str(out), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached before the first call
    started = time.perf_counter()
    try:
        run()
    finally:
        elapsed = time.perf_counter() - started
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            raise SystemExit("bench/profile.py: py-spy did not stop")
    if not out.exists():
        raise SystemExit(f"bench/profile.py: py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="createRecord and getRecord calls")
    parser.add_argument("--repos", type=int, default=100, help="getRepo calls")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("bench/profiles"))
    parser.add_argument("--summarise", type=Path, metavar="DIR",
                        help="only print the summaries of the .folded files in DIR (no server, no py-spy)")
    args = parser.parse_args()
    if args.summarise:
        for folded in sorted(args.summarise.glob("*.folded")):
            print(f"== {folded.stem}\n{summarise(folded, args.top)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    py_spy()

    with bench_server("squall-profile-") as pds:
        assert pds.proc is not None
        c = Client(pds.port)
        account = json.loads(c.call("POST", "/xrpc/com.atproto.server.createAccount", {
            "handle": "profile.localhost", "email": "profile@example.com", "password": PASSWORD}))
        did, token = account["did"], account["accessJwt"]
        rkeys: list[str] = []

        def creates() -> None:
            for i in range(args.calls):
                out = json.loads(c.call("POST", "/xrpc/com.atproto.repo.createRecord", {
                    "repo": did, "collection": "app.bsky.feed.post",
                    "record": {"$type": "app.bsky.feed.post", "text": f"post {i}",
                               "createdAt": "2026-01-01T00:00:00.000Z"}}, token))
                rkeys.append(out["uri"].rsplit("/", 1)[1])

        def gets() -> None:
            for i in range(args.calls):
                c.call("GET", f"/xrpc/com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post"
                              f"&rkey={rkeys[i % len(rkeys)]}")

        def repos() -> None:
            for _ in range(args.repos):
                c.call("GET", f"/xrpc/com.atproto.sync.getRepo?did={did}")

        for name, run, n in (("createRecord", creates, args.calls), ("getRecord", gets, args.calls),
                             ("getRepo", repos, args.repos)):
            folded = args.out / f"{name}.folded"
            elapsed = profiled(pds.proc.pid, folded, args.rate, run)
            print(f"== {name}: {n} calls in {elapsed:.2f} s ({n / elapsed:.0f}/s, with the profiler attached)")
            summary = summarise(folded, args.top, calls=n, rate=args.rate)
            (args.out / f"{name}.txt").write_text(summary + "\n")
            print(summary, flush=True)
    print(f"folded stacks and summaries in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
