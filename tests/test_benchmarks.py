"""The benchmarks in bench/ still run (issue #21): each at a tiny size, end to end against a real
server, checked for completing and printing its results — not for its numbers (timings are not
test material here). bench/scale.py once broke unnoticed when RepoService gained a parameter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 240) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_scale_bench_fills_and_measures_each_step(tmp_path):
    out = run_bench("bench/scale.py", "--accounts", "3", "--steps", "40,120", "--batch", "20", "--writes", "5",
                    "--reads", "10", "--sessions", "2", "--dir", str(tmp_path / "scale"))
    assert "records │" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("40 │", "120 │"))]
    assert len(rows) == 2, out[-1500:]
    assert "from 40 to 120 records" in out


def test_firehose_bench_delivers_every_commit_to_every_subscriber():
    out = run_bench("bench/firehose.py", "--subscribers", "6", "--rate", "20", "--seconds", "1.5",
                    "--accounts", "2", "--target-ms", "1000")
    assert "received every commit: 6/6" in out and "in order without duplicates: 6/6" in out, out[-1500:]


def test_profile_summary_groups_samples_by_layer(tmp_path):
    # The sampling itself needs py-spy and ptrace rights (an opt-in tool); the summary is plain
    # Python over folded stacks, checked here on a known input.
    folded = tmp_path / "getRecord.folded"
    folded.write_text(
        "process 1;main (squall/cli.py:10);run (uvicorn/protocols/http/httptools_impl.py:400) 30\n"
        "process 1;main (squall/cli.py:10);get_record (/x/images/pds/squall/store/repos.py:90) 50\n"
        "process 1;main (squall/cli.py:10);dispatch (/x/images/pds/squall/xrpc/dispatch.py:120) 20\n")
    out = run_bench("bench/profile.py", "--summarise", str(tmp_path), "--top", "3")
    assert "100 samples of busy time" in out
    assert " 50.0 %  SQLite and the store" in out
    assert " 30.0 %  HTTP parsing and writing" in out
    assert " 20.0 %  XRPC dispatch, lexicon checks, JSON" in out


@pytest.mark.parametrize("script", ["vs_reference.py", "profile.py", "scale.py", "firehose.py"])
def test_bench_help(script):
    assert "usage:" in run_bench(f"bench/{script}", "--help", timeout=60)
