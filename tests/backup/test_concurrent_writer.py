"""Snapshots while another PROCESS commits: each snapshot is a prefix of the writes, no torn transaction,
and the writer is never held up for more than a moment."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from squall_backup.engine import Engine

from .helpers import make_data_dir, settings_for, wait_for

WRITER = Path(__file__).with_name("writer_process.py")


def _progress(result: Path) -> int:
    try:
        return int(Path(str(result) + ".progress").read_text())
    except (OSError, ValueError):
        return 0


def test_snapshots_are_consistent_while_a_process_writes(tmp_path):
    data = make_data_dir(tmp_path, rows=15000, payload=3000, blobs=1)  # ~45 MB: the copy takes a while
    stop, result = tmp_path / "stop", tmp_path / "writer.json"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(data / "pds.sqlite"), str(stop), str(result)])
    try:
        wait_for(lambda: _progress(result) >= 100, timeout=30)
        engine = Engine(settings_for(data, BACKUP_LOCAL_DIR=str(tmp_path / "t"), BACKUP_KEEP_HOURLY="100"))
        seen = []
        for i in range(4):
            before = _progress(result)
            engine.run_once()
            after = _progress(result)
            out = tmp_path / f"restored{i}"
            engine.restore("latest", out)
            con = sqlite3.connect(f"file:{out / 'pds.sqlite'}?mode=ro", uri=True)
            k = con.execute("SELECT n FROM counter").fetchone()[0]
            rows = [r[0] for r in con.execute("SELECT n FROM seq ORDER BY n")]
            records = con.execute("SELECT count(*) FROM record").fetchone()[0]
            con.close()
            assert rows == list(range(1, 2 * k + 1)), "snapshot is not a prefix of the committed transactions"
            assert records == 15000
            assert k >= before
            seen.append((before, k, after))
        # the writer kept committing while the snapshots ran
        assert seen[-1][2] > seen[0][0]
        assert [s[1] for s in seen] == sorted(s[1] for s in seen)
    finally:
        stop.write_text("stop")
        writer.wait(timeout=30)
    stats = json.loads(result.read_text())
    assert stats["commits"] > seen[-1][1]
    assert stats["max_commit_seconds"] < 2.0, stats
