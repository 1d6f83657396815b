"""Run a real ``squall serve`` (uvicorn) as a subprocess on a free loopback port.

Tests talk to it over HTTP exactly as a client would. Its stdout/stderr go to a log file the test
can read (e.g. to check that no secret was logged).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .net import free_port, wait_http


@dataclass
class PdsProcess:
    data_dir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    cwd: Path | None = None  # working directory of the server (relative paths in settings)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "BACKUP_")) and k != "PORT"}
        env.update({
            "PDS_HOSTNAME": "localhost",
            "PDS_PORT": str(self.port),
            "PDS_DATA_DIRECTORY": str(self.data_dir),
            "PDS_DEV_MODE": "true",
            "PDS_INVITE_REQUIRED": "false",
            "PDS_LOG_LEVEL": "info",
            # Tests and benchmarks make thousands of calls from one address; tests/service/
            # test_ratelimit.py turns the limits back on.
            "PDS_RATE_LIMITS_ENABLED": "false",
        })
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 20.0) -> "PdsProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"pds-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "squall.cli", "serve", "--host", "127.0.0.1"],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
        )
        log.close()
        try:
            wait_http(f"{self.url}/xrpc/_health", timeout=timeout, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"squall serve did not start:\n{self.logs()[-4000:]}")
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        code = self.proc.returncode
        self.proc = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def admin_password(self) -> str:
        return (self.data_dir / "secrets" / "admin_password").read_text().strip()

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 10.0), **kw)

    def __enter__(self) -> "PdsProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
