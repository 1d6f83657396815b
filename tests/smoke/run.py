"""Run the smoke suite the way an operator does — ``python -m smoke …`` in a subprocess — and read
its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SmokeRun:
    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict:
        return json.loads(self.stdout)

    def by_name(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.report["checks"]}

    def names(self, status: str) -> set[str]:
        return {c["name"] for c in self.report["checks"] if c["status"] == status}


def run_smoke(*args: str, json_report: bool = True, timeout: float = 120.0) -> SmokeRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    cmd = [sys.executable, "-m", "smoke", *args] + (["--json"] if json_report else [])
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return SmokeRun(done.returncode, done.stdout, done.stderr)
