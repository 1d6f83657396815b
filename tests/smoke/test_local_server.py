"""The suite against a real ``squall serve`` on loopback: read-only, with --write (did:web and
did:plc through the PLC double, open and invite-only sign-up), and the cleanup after a failure."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

from .run import run_smoke

WRITE_CHECKS = {"write.account", "write.identity", "write.session", "write.profile", "write.post",
                "write.image-post", "write.latest-commit", "write.repo-car", "write.firehose-commit",
                "write.admin-refuses-token", "blob.security-headers", "write.cleanup"}


def smoke_args(pds: PdsProcess, *extra: str, admin: bool = True) -> list[str]:
    # The server's hostname is "localhost" and its public URL http://localhost:<port>; the suite
    # reaches it by 127.0.0.1 (tests talk to nothing else) and is told the names it should see.
    args = ["--base-url", pds.url, "--hostname", "localhost", "--public-url", f"http://localhost:{pds.port}",
            "--timeout", "10"]
    if admin:
        args += [f"--admin-password={pds.admin_password()}"]
    return args + list(extra)


def active_accounts(pds: PdsProcess) -> int:
    status = httpx.get(f"{pds.url}/xrpc/_admin/status", auth=("admin", pds.admin_password()), timeout=10).json()
    return status["accounts"]["active"]


def disposable_did(run) -> str:
    # write.account's note is "<handle> = <did>"
    return run.by_name()["write.account"]["detail"].split(" = ")[1]


@pytest.fixture(scope="module")
def pds(tmp_path_factory):
    with PdsProcess(tmp_path_factory.mktemp("smoke-web") / "data", env_extra={"PDS_INVITE_REQUIRED": "false"}) as proc:
        yield proc


def test_read_only_checks_pass(pds):
    run = run_smoke(*smoke_args(pds))
    assert run.code == 0, run.stdout + run.stderr
    assert run.names("fail") == set()
    assert run.names("skip") == {"handle.identity", "handle.well-known", "handle.tls-check", "write",
                                 "blob.security-headers", "crawler.request-crawl"}
    assert {"health", "describe-server", "service-did-document", "admin.status", "admin.refuses-anonymous",
            "tls-check", "cors", "firehose.upgrade"} <= run.names("pass")
    assert run.report["passed"] == len(run.names("pass")) and run.report["ok"] is True


def test_without_admin_password_the_admin_check_is_skipped_not_failed(pds):
    run = run_smoke(*smoke_args(pds, admin=False), json_report=False)
    assert run.code == 0, run.stdout
    assert any(line.startswith("SKIP  admin.status") and "no --admin-password given" in line
               for line in run.stdout.splitlines())
    assert any(line.startswith("PASS  admin.refuses-anonymous") for line in run.stdout.splitlines())


def test_write_checks_pass_and_leave_the_account_deactivated(pds):
    before = active_accounts(pds)
    run = run_smoke(*smoke_args(pds, "--write"))
    assert run.code == 0, run.stdout + run.stderr
    assert WRITE_CHECKS <= run.names("pass")
    assert "signature valid" in run.by_name()["write.repo-car"]["detail"]
    assert active_accounts(pds) == before
    did = disposable_did(run)
    status = httpx.get(f"{pds.url}/xrpc/com.atproto.sync.getRepoStatus", params={"did": did}, timeout=10).json()
    assert status["active"] is False

    # The account's handle then passes the --handle checks of a later read-only run.
    handle = run.by_name()["write.account"]["detail"].split(" = ")[0]
    again = run_smoke(*smoke_args(pds, "--handle", handle))
    assert again.code == 0, again.stdout
    assert {"handle.identity", "handle.well-known", "handle.tls-check"} <= again.names("pass")


def test_cleanup_runs_after_a_failed_check(pds):
    # A wrong public URL makes the identity checks fail; the account must still be deactivated.
    before = active_accounts(pds)
    args = smoke_args(pds, "--write")
    args[args.index("--public-url") + 1] = "https://wrong.example"
    run = run_smoke(*args)
    assert run.code == 1
    assert {"service-did-document", "write.identity"} <= run.names("fail")
    detail = run.by_name()["write.identity"]["detail"]
    assert "expected #atproto_pds serviceEndpoint https://wrong.example" in detail
    assert f"saw http://localhost:{pds.port}" in detail
    # Checks that need the DID document's key skip instead of failing a second time.
    assert run.by_name()["write.repo-car"]["status"] == "skip"
    assert "needs write.identity" in run.by_name()["write.repo-car"]["detail"]
    assert run.by_name()["write.cleanup"]["status"] == "pass"
    assert active_accounts(pds) == before


def test_write_checks_with_did_plc_and_invite_only_sign_up(tmp_path):
    with PlcDirectoryDouble() as plc:
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_INVITE_REQUIRED": "true"}
        with PdsProcess(tmp_path / "data", env_extra=env) as proc:
            # Invite-only without a way to get an invite: the write checks skip with the reason.
            blocked = run_smoke(*smoke_args(proc, "--write", admin=False))
            assert blocked.code == 0, blocked.stdout
            assert "needs an invite code" in blocked.by_name()["write.account"]["detail"]
            assert blocked.by_name()["write.cleanup"]["status"] == "skip"

            # With the admin password the suite makes its own one-use invite.
            run = run_smoke(*smoke_args(proc, "--write", "--plc-url", plc.url))
            assert run.code == 0, run.stdout + run.stderr
            assert WRITE_CHECKS <= run.names("pass")
            did = disposable_did(run)
            assert did.startswith("did:plc:")
            assert did in plc.dids()
            assert plc.url in run.by_name()["write.identity"]["detail"]


async def test_cleanup_runs_when_the_run_is_cancelled(pds, monkeypatch):
    # Ctrl-C cancels the run mid-way (here: while a check waits after the account exists); the
    # disposable account must still be deactivated on the way out.
    import asyncio

    from smoke import cli, write_checks
    from smoke.context import Options

    reached = asyncio.Event()

    async def stalls(ctx):
        reached.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(write_checks, "WRITE_CHECKS", write_checks.WRITE_CHECKS[:2] + [("write.stalls", stalls)])
    options = Options(base_url=pds.url, hostname="localhost", public_url=f"http://localhost:{pds.port}",
                      admin_password=pds.admin_password(), write=True, timeout=10)
    before = active_accounts(pds)
    task = asyncio.create_task(cli.run(options))
    async with asyncio.timeout(30):
        await reached.wait()
        assert active_accounts(pds) == before + 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert active_accounts(pds) == before
