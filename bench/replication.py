"""Replication benchmark: the RPO of continuous replication (Litestream) measured over several rounds.

    .venv/bin/python bench/replication.py [--rounds 5] [--load-seconds 4]

Each round runs a real `squall serve` (BACKUP_REPLICATE=true: checkpoints left to Litestream) and a real
`squall-backup run` daemon replicating to moto's S3 server on loopback; a client writes posts as fast as
the server acknowledges them; then the PDS, the daemon and Litestream get SIGKILL at one instant and
the data directory is deleted. `squall-backup restore --at latest` restores it, and the round reports
the writes acknowledged, those lost, and the RPO: the time from the kill back to the oldest
acknowledged write missing from the restored database (0 when none is missing). Target: RPO <= 1 s.
The procedure is tests/backup/replication.py, shared with tests/backup/test_replication.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _server  # noqa: F401 - puts the repository root on sys.path

from tests.backup.replication import run_round
from tests.helpers.s3 import S3Server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--load-seconds", type=float, default=4.0)
    args = ap.parse_args()
    if not 1 <= args.rounds <= 50 or not 0.5 <= args.load_seconds <= 120:
        ap.error("--rounds 1..50, --load-seconds 0.5..120")
    server = S3Server()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="squall-bench-replication-") as tmp:
            for n in range(args.rounds):
                root = Path(tmp) / f"round{n}"
                root.mkdir()
                r = run_round(root, server.endpoint, server.new_bucket("bench-rep"), load_seconds=args.load_seconds)
                rows.append(r)
                print(f"round {n + 1}: {r['writes']:5d} writes acknowledged, {r['lost']:4d} lost "
                      f"({r['lost_older_than_1s']} older than 1 s), RPO {r['rpo_seconds']:.3f} s", flush=True)
    finally:
        server.stop()
    rpos = sorted(r["rpo_seconds"] for r in rows)
    print(f"\n| rounds | writes/s | RPO min | RPO median | RPO max | lost writes older than 1 s |")
    print("|---|---|---|---|---|---|")
    rate = sum(r["writes"] for r in rows) / (len(rows) * args.load_seconds)
    print(f"| {len(rows)} | {rate:.0f} | {rpos[0]:.3f} s | {rpos[len(rpos) // 2]:.3f} s | {rpos[-1]:.3f} s | "
          f"{sum(r['lost_older_than_1s'] for r in rows)} |")
    return 0 if all(r["lost_older_than_1s"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
