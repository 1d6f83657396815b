"""Container end-to-end harness: find an engine, build the images, run compose stacks.

Works with `docker compose` (a running Docker daemon) or, failing that, `podman-compose` (on test
machines prepared by ../shared/containers/setup). Every command has a time bound; every stack has
a unique project name and is torn down (containers, volumes, networks) even when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TAG = "test"
IMAGES = {
    "pds": ("images/pds/Dockerfile", f"squall-pds:{TAG}"),
    "backup": ("images/backup/Dockerfile", f"squall-backup:{TAG}"),
    "proxy": ("images/proxy/Dockerfile", f"squall-proxy:{TAG}"),
}
CADDY_ROOT_CERT = "/data/caddy/pki/authorities/local/root.crt"


class EngineUnavailable(Exception):
    pass


def _works(cmd: list[str], timeout: float = 30) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Engine:
    cli: str  # "docker" or "podman"
    compose_cmd: list[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self, args: list[str], *, timeout: float, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``<engine> args…``"""
        return self._execute([self.cli, *args], timeout=timeout, check=check, env=env)

    def compose(self, args: list[str], *, timeout: float, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``docker compose args…`` or ``podman-compose args…``"""
        return self._execute([*self.compose_cmd, *args], timeout=timeout, check=check, env=env)

    def _execute(self, cmd: list[str], *, timeout: float, check: bool,
                 env: dict[str, str] | None) -> subprocess.CompletedProcess:
        merged = dict(self.env)
        merged.update(env or {})
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=merged, cwd=ROOT)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n{exc.stdout}\n{exc.stderr}") from None
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}: {' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}"
                                 f"\n--- stderr\n{proc.stderr[-4000:]}")
        return proc

    def build(self, dockerfile: str, tag: str, *, context: Path = ROOT, timeout: float = 900) -> float:
        args = ["build", "-f", str(context / dockerfile) if not Path(dockerfile).is_absolute() else dockerfile,
                "-t", tag]
        if self.cli == "podman":
            # HEALTHCHECK survives only in the docker image format; PyPI needs the host's CA bundle.
            args += ["--format", "docker"]
            if CA_BUNDLE.exists():
                args += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        started = time.monotonic()
        self.run([*args, str(context)], timeout=timeout)
        return time.monotonic() - started

    def inspect(self, what: str, fmt: str, *, timeout: float = 30) -> str:
        return self.run(["inspect", "--format", fmt, what], timeout=timeout).stdout.strip()

    def image_healthcheck(self, image: str) -> dict:
        """The image's HEALTHCHECK as {"Test": [...], ...} (podman and docker place it differently)."""
        fmt = "{{json .HealthCheck}}" if self.cli == "podman" else "{{json .Config.Healthcheck}}"
        return json.loads(self.run(["image", "inspect", "--format", fmt, image], timeout=30).stdout) or {}


def detect_engine() -> Engine:
    reasons = []
    if shutil.which("docker"):
        if _works(["docker", "info"]) and _works(["docker", "compose", "version"]):
            return Engine("docker", ["docker", "compose"])
        reasons.append("`docker info`/`docker compose version` fail (no daemon or no compose plugin)")
    else:
        reasons.append("no docker CLI")
    if shutil.which("podman") and shutil.which("podman-compose"):
        if _works(["podman", "info"]):
            return Engine("podman", ["podman-compose"])
        reasons.append("`podman info` fails")
    else:
        reasons.append("no podman/podman-compose (run ../shared/containers/setup)")
    raise EngineUnavailable("no container engine: " + "; ".join(reasons))


def fix_podman_exec(engine: Engine, image: str, workdir: Path) -> str | None:
    """Make `podman exec` work in sandboxes that forbid setrlimit; return what was done, or None.

    ../shared/containers/setup wraps runc to drop process.rlimits from a new container's bundle, but
    `runc exec` reads a separate process.json that still carries them. When a probe exec fails that
    way, the harness points podman (CONTAINERS_CONF, for this test session only) at a wrapper that
    strips them from both. Containers created under it are also managed under it.
    """
    if engine.cli != "podman":
        return None
    name = f"squall-probe-{uuid.uuid4().hex[:8]}"
    engine.run(["run", "-d", "--name", name, "--entrypoint", "sleep", image, "60"], timeout=60)
    try:
        probe = engine.run(["exec", name, "true"], timeout=30, check=False)
    finally:
        engine.run(["rm", "-f", "-t", "0", name], timeout=60, check=False)
    if probe.returncode == 0:
        return None
    if "rlimit" not in probe.stderr:
        raise AssertionError(f"`podman exec` fails: {probe.stderr}")
    runc = shutil.which("runc", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
    if runc is None or runc.startswith("/usr/local/lib/ocwrap"):
        runc = "/usr/sbin/runc"
    wrapper = workdir / "runc-no-rlimits"
    wrapper.write_text(f"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
for flag, kind in (("--bundle", "bundle"), ("-b", "bundle"), ("--process", "process"), ("-p", "process")):
    if flag in args[:-1]:
        path = args[args.index(flag) + 1]
        path = os.path.join(path, "config.json") if kind == "bundle" else path
        if os.path.isfile(path):
            spec = json.load(open(path))
            (spec.get("process", {{}}) if kind == "bundle" else spec).pop("rlimits", None)
            json.dump(spec, open(path, "w"))
os.execv({runc!r}, [{runc!r}, *args])
""")
    wrapper.chmod(0o755)
    conf = workdir / "containers.conf"
    conf.write_text(f'[engine]\nruntime = "squall-test-runc"\n[engine.runtimes]\nsquall-test-runc = ["{wrapper}"]\n')
    engine.env["CONTAINERS_CONF"] = str(conf)
    return f"podman exec needed a runtime wrapper without rlimits ({conf})"


def ssl_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def wait_until(what: str, fn, *, timeout: float, interval: float = 0.5):
    """Call ``fn`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported when the time is up
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


class Stack:
    """One compose project: compose.yaml plus test overrides, its own volume, network and ports."""

    def __init__(self, engine: Engine, *, overrides: list[Path], env: dict[str, str], workdir: Path,
                 prefix: str = "squall-t") -> None:
        self.engine = engine
        self.project = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.files = [ROOT / "compose.yaml", *overrides]
        self.workdir = workdir
        # Interpolation only from what the test gives, never from a developer's ./.env.
        self.env_file = workdir / f"{self.project}.env"
        self.env_file.write_text("")
        self.env = {"SQUALL_TAG": TAG, **env}

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["--env-file", str(self.env_file), "-p", self.project]
        for f in self.files:
            cmd += ["-f", str(f)]
        return self.engine.compose([*cmd, *args], timeout=timeout, check=check, env=self.env)

    def up(self, *services: str, timeout: float = 240) -> None:
        self.compose("up", "-d", *services, timeout=timeout)

    def container(self, service: str) -> str:
        out = self.engine.run(["ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                               "--filter", f"label=com.docker.compose.service={service}"], timeout=30).stdout.split()
        if not out:
            raise AssertionError(f"no container for service {service} in {self.project}")
        return out[0]

    def logs(self, service: str) -> str:
        proc = self.engine.run(["logs", self.container(service)], timeout=30)
        return proc.stdout + proc.stderr

    def exec(self, service: str, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *cmd, timeout=timeout, check=check)

    def read_file(self, service: str, path: str) -> bytes:
        target = self.workdir / f"cp-{uuid.uuid4().hex[:8]}"
        self.engine.run(["cp", f"{self.container(service)}:{path}", str(target)], timeout=30)
        data = target.read_bytes()
        target.unlink()
        return data

    def down(self) -> None:
        self.compose("down", "-v", "-t", "5", timeout=180, check=False)
        # Whatever `down` missed (a failed start, an engine quirk): remove by the project's label.
        label = f"label=com.docker.compose.project={self.project}"
        ids = self.engine.run(["ps", "-a", "-q", "--filter", label], timeout=30, check=False).stdout.split()
        if ids:
            self.engine.run(["rm", "-f", "-v", *ids], timeout=120, check=False)
        for kind in ("volume", "network"):
            names = self.engine.run([kind, "ls", "-q", "--filter", label], timeout=30, check=False).stdout.split()
            if names:
                self.engine.run([kind, "rm", "-f", *names], timeout=60, check=False)


@dataclass
class RunningStack:
    stack: Stack
    https_port: int
    http_port: int
    ca_file: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=ssl_context(self.ca_file), timeout=15, trust_env=False)


def start_https_stack(stack: Stack, *, https_port: int, http_port: int, timeout: float = 180) -> RunningStack:
    """`up -d`, then wait for Caddy's internal CA and for /xrpc/_health through Caddy over HTTPS."""
    stack.up()
    ca_file = stack.workdir / f"{stack.project}-root.crt"
    pem = wait_until("Caddy's internal root certificate", lambda: stack.read_file("proxy", CADDY_ROOT_CERT),
                     timeout=timeout, interval=1)
    ca_file.write_bytes(pem)
    running = RunningStack(stack, https_port, http_port, ca_file)

    def healthy() -> bool:
        with running.client() as http:
            return http.get("/xrpc/_health").status_code == 200

    wait_until(f"https health of {stack.project}", healthy, timeout=timeout, interval=1)
    return running


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="squall-containers-"))
