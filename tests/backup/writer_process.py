"""A stand-in for the PDS writer, run as a separate process by the concurrency test.

Each transaction inserts two numbered rows and sets a counter to the transaction number, so a consistent
snapshot holds rows 1..2k and counter k for some k. Records the slowest commit in the result file.
"""

import json
import os
import sqlite3
import sys
import time


def main(db: str, stop_file: str, result_file: str) -> None:
    con = sqlite3.connect(db, timeout=10, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE IF NOT EXISTS seq (n INTEGER PRIMARY KEY, pad BLOB)")
    con.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER)")
    con.execute("INSERT OR IGNORE INTO counter VALUES (1, 0)")
    n = 0
    max_latency = 0.0
    progress = result_file + ".progress"
    while not os.path.exists(stop_file):
        n += 1
        t = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO seq VALUES (?, randomblob(300))", (2 * n - 1,))
        con.execute("INSERT INTO seq VALUES (?, randomblob(300))", (2 * n,))
        con.execute("UPDATE counter SET n = ?", (n,))
        con.execute("COMMIT")
        max_latency = max(max_latency, time.perf_counter() - t)
        time.sleep(0.001)  # a busy PDS, not a benchmark: the WAL stays a realistic size
        if n % 50 == 0:
            with open(progress + ".tmp", "w") as f:
                f.write(str(n))
            os.replace(progress + ".tmp", progress)
    con.close()
    with open(result_file, "w") as f:
        json.dump({"commits": n, "max_commit_seconds": max_latency}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
