"""The pds image in its all-in-one mode, as Railway runs it.

Railway mounts a fresh, root-owned volume, sets PORT and RAILWAY_* variables, and restarts the
container only when it exits non-zero. The image must then take ownership of the volume, serve on
PORT, back up from the same container (supervisord), log to stdout, and exit non-zero when a
program has died for good.
"""

from __future__ import annotations

import json
import shutil
import uuid

import httpx
import pytest

from tests.helpers.net import free_port

from .harness import IMAGES, Engine, wait_until

pytestmark = pytest.mark.container

PORT_INSIDE = "8080"


@pytest.fixture(scope="module")
def railway(engine: Engine, images, container_workdir):
    image = images["pds"]
    data = container_workdir / f"railway-{uuid.uuid4().hex[:8]}"
    data.mkdir()
    # Railway's volume is root-owned; make ours so whatever user runs the tests.
    engine.run(["run", "--rm", "--user", "0", "--entrypoint", "chown", "-v", f"{data}:/vol", image, "0:0", "/vol"],
               timeout=60)
    assert data.stat().st_uid == 0
    port = free_port()
    name = f"squall-railway-{uuid.uuid4().hex[:8]}"
    engine.run(["run", "-d", "--name", name,
                "-e", f"PORT={PORT_INSIDE}", "-e", "RAILWAY_SERVICE_ID=test-service", "-e", "RAILWAY_PROJECT_ID=test",
                "-e", "BACKUP_RUN_ON_START=true",
                "-v", f"{data}:/data", "-p", f"127.0.0.1:{port}:{PORT_INSIDE}", image], timeout=60)
    try:
        yield engine, name, port, data
    finally:
        engine.run(["rm", "-f", "-t", "5", name], timeout=60, check=False)
        engine.run(["run", "--rm", "--user", "0", "--entrypoint", "sh", "-v", f"{data}:/vol", image, "-c",
                    "rm -rf /vol/* /vol/.[!.]*"], timeout=60, check=False)
        shutil.rmtree(data, ignore_errors=True)


def _health(port: int) -> bool:
    with httpx.Client(trust_env=False, timeout=3) as http:
        return http.get(f"http://127.0.0.1:{port}/xrpc/_health").status_code == 200


def test_takes_the_root_owned_volume_and_serves_on_port(railway):
    engine, name, port, data = railway
    wait_until("health on $PORT", lambda: _health(port), timeout=90, interval=1)
    assert data.stat().st_uid == 1000 and data.stat().st_gid == 1000
    assert (data / "secrets").stat().st_uid == 1000
    assert (data / "pds.sqlite").exists()


def test_runs_both_programs_unprivileged_and_logs_to_stdout(railway):
    engine, name, port, data = railway
    wait_until("health on $PORT", lambda: _health(port), timeout=90, interval=1)
    def processes() -> list[tuple[str, str]]:
        if engine.cli == "podman":
            rows = engine.run(["top", name, "user", "args"], timeout=30).stdout.splitlines()[1:]
        else:
            rows = engine.run(["top", name, "-eo", "user,args"], timeout=30).stdout.splitlines()[1:]
        return [(row.split()[0], " ".join(row.split()[1:])) for row in rows]

    # The backup program waits for the PDS to answer, then execs `squall-backup run`.
    rows = wait_until("squall-backup run", lambda: (lambda ps: ps if any(
        c.endswith("/opt/venv/bin/squall-backup run") for _, c in ps) else None)(processes()), timeout=30)
    for user, command in rows:
        if command == "/bin/sh /usr/local/bin/squall-entrypoint squall serve":
            assert user == "root"  # PID 1 only waits for supervisord, to report its verdict
        else:
            assert user not in ("root", "0"), (user, command)
    commands = " | ".join(command for _, command in rows)
    for program in ("supervisord -c /etc/squall/supervisord.conf", "supervisor_watchdog.py", "squall serve"):
        assert program in commands
    logs = engine.run(["logs", name], timeout=30)
    text = logs.stdout + logs.stderr
    assert "spawned: 'pds'" in text and "spawned: 'backup'" in text
    assert "Uvicorn running" in text
    environ = engine.run(["exec", "--user", "1000", name, "sh", "-c",
                          "tr '\\0' '\\n' < /proc/$(supervisorctl pid pds)/environ"], timeout=30).stdout
    assert "PDS_TRUST_PROXY_HEADERS=true" in environ.splitlines()
    assert f"PORT={PORT_INSIDE}" in environ.splitlines()


def test_backs_up_from_the_same_container(railway):
    engine, name, port, data = railway
    status_file = data / "backups" / "status.json"

    def succeeded():
        if not status_file.exists():
            return None
        status = json.loads(status_file.read_text())
        return status if status.get("last_success") else None

    status = wait_until("a successful backup in status.json", succeeded, timeout=120, interval=1)
    assert status["state"] in ("idle", "running")
    assert status["consecutive_failures"] == 0
    assert status_file.stat().st_uid == 1000


def test_exits_non_zero_when_the_pds_dies_for_good(railway):
    engine, name, port, data = railway
    wait_until("health on $PORT", lambda: _health(port), timeout=90, interval=1)
    # Kill the server every time supervisord restarts it, until it gives up (FATAL). The exec ends
    # with the container, so its own status does not matter.
    engine.run(["exec", name, "sh", "-c",
                "for i in $(seq 1 120); do p=$(supervisorctl pid pds 2>/dev/null); "
                "case \"$p\" in ''|0|*[!0-9]*) ;; *) kill -9 \"$p\" ;; esac; sleep 0.25; done"],
               timeout=90, check=False)

    def exited():
        state = engine.inspect(name, "{{.State.Status}} {{.State.ExitCode}}")
        return state if state.split()[0] in ("exited", "stopped") else None

    state = wait_until("the container to exit", exited, timeout=60, interval=1)
    assert state.split()[1] == "1", state
    logs = engine.run(["logs", name], timeout=30)
    assert "program 'pds' failed for good" in logs.stdout + logs.stderr
