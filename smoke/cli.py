"""``python -m smoke --base-url URL …``: run the checks, print the report, exit 1 on any failure
(2 on a usage error)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Sequence

import httpx

from . import read_checks, write_checks
from .context import USER_AGENT, Options, Smoke, ssl_context
from .runner import Outcome, counts, json_report, run_check, text_report, FAIL, SKIP


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m smoke", description=(
        "Black-box checks for a running Squall PDS: local, LAN or deployed. Read-only unless --write."))
    p.add_argument("--base-url", required=True, help="where to reach the PDS, e.g. https://pds.example.com")
    p.add_argument("--admin-password", help="the PDS admin password (HTTP Basic admin:<password>)")
    p.add_argument("--ca-cert", help="extra CA certificate (PEM) to trust for https and wss")
    p.add_argument("--write", action="store_true",
                   help="also create a disposable account and write to it (deactivated at the end)")
    p.add_argument("--invite-code", help="invite code for the disposable account (else: open sign-up, "
                                         "or one created with --admin-password)")
    p.add_argument("--handle", help="check this handle's identity (DID document, resolution)")
    p.add_argument("--hostname", help="the PDS hostname (PDS_HOSTNAME); default: the base URL's host")
    p.add_argument("--public-url", help="the URL DID documents must name; default: the base URL")
    p.add_argument("--plc-url", default="https://plc.directory", help="PLC directory for did:plc documents")
    p.add_argument("--blob", help="<did>/<cid> of a blob to check getBlob's security headers on")
    p.add_argument("--crawler-hostname",
                   help="a relay (host, or URL) to send requestCrawl for this PDS's hostname to")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds each check may take (default 10)")
    return p.parse_args(argv)


async def run(options: Options) -> list[Outcome]:
    context = ssl_context(options.ca_cert)
    timeout = httpx.Timeout(options.timeout)
    async with httpx.AsyncClient(verify=context, timeout=timeout, trust_env=False, follow_redirects=False,
                                 headers={"User-Agent": USER_AGENT}) as http:
        ctx = Smoke(options=options, http=http, ssl=context)
        outcomes: list[Outcome] = []

        async def check(name: str, fn) -> None:
            outcomes.append(await run_check(name, fn, ctx, options.timeout))

        try:
            for name, fn in read_checks.READ_CHECKS:
                await check(name, fn)
            if options.write:
                for name, fn in write_checks.WRITE_CHECKS:
                    await check(name, fn)
            else:
                outcomes.append(Outcome("write", SKIP, 0.0, "read-only run: give --write for the write checks"))
            await check("blob.security-headers", write_checks.blob_security)
        finally:
            # Even when a check failed or the run was interrupted: no disposable account stays active.
            watch = ctx.state.pop("watch", None)
            if watch is not None:
                await watch.close()
            if options.write:
                await check("write.cleanup", write_checks.cleanup)
        await check("crawler.request-crawl", read_checks.request_crawl)
        return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = Options(
            base_url=args.base_url, admin_password=args.admin_password, ca_cert=args.ca_cert, write=args.write,
            handle=args.handle, hostname=args.hostname, public_url=args.public_url, plc_url=args.plc_url,
            invite_code=args.invite_code, blob=args.blob, crawler_hostname=args.crawler_hostname,
            timeout=args.timeout,
        )
        if options.ca_cert:
            ssl_context(options.ca_cert)
    except (ValueError, OSError) as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 2
    outcomes = asyncio.run(run(options))
    report = json_report if args.json else text_report
    print(report(outcomes, options.base_url))
    return 1 if counts(outcomes)[FAIL] else 0
