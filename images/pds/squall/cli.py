"""The ``squall`` command: ``serve`` runs the PDS; operator subcommands talk to a running PDS."""

from __future__ import annotations

import argparse
import gc
import sys

from .config import ConfigError, check_directories, load_settings
from .version import __version__


def _serve(args: argparse.Namespace) -> int:
    try:
        settings, warnings = load_settings()
        check_directories(settings)
    except ConfigError as exc:
        print(f"squall: configuration error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import build_app
    from .httpguard import guarded_protocol
    from .logs import configure_logging

    # A busy firehose makes ~100k short-lived objects a second per 1,000 subscribers (a wait's
    # future, a queued frame) that live ~10 ms, across a commit. With the young generation
    # collected every 700 allocations they survived into the old one, and full collections of
    # ~200k objects (~130 ms with the event loop stopped) ran every ~0.3 s: p99 delivery
    # 135 ms. Collected every 10,000 they die young: p99 40–55 ms, ~1 full collection in 30 s
    # (bench/firehose.py, issue #21). The young generation stays small (~1 MB).
    gc.set_threshold(10_000, 10, 10)
    log = configure_logging(settings.log_level)
    for warning in warnings:
        log.warning(warning)
    app = build_app(settings, log=log)
    config = uvicorn.Config(
        app,
        # Bounded header and body read times, and a clear 400 for what the parser refuses
        # (squall.httpguard): the bare port may face the internet (Railway).
        http=guarded_protocol(settings.http_header_timeout, settings.http_body_timeout),
        host=args.host,
        port=settings.port,
        log_config=None,  # our JSON logging is already configured
        # uvloop and httptools (llhttp) rather than asyncio's loop and h11 (issue #21): a small call
        # costs the server ~0.1 ms less CPU.
        loop="uvloop",
        access_log=False,
        proxy_headers=settings.trust_proxy_headers,
        forwarded_allow_ips="*" if settings.trust_proxy_headers else None,
        timeout_graceful_shutdown=10,
        ws_ping_interval=None,  # the firehose sends its own pings
        # permessage-deflate would compress every firehose frame once per subscriber (p99 delivery
        # 14 ms → 145 ms with 100 subscribers); the reference PDS does not compress either.
        ws_per_message_deflate=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally after a clean SIGTERM; a failed start (port in use, lifespan error)
    # leaves started False and must be a non-zero exit so supervisors notice.
    return 0 if server.started else 1


# -- operator commands: HTTP to the running PDS with the admin credential -------------------------


class CliError(Exception):
    """A failed operator command; the message is printed as is."""


def _admin_target() -> tuple[str, str]:
    """(base URL of the local PDS, admin password) from the same settings ``serve`` reads."""
    try:
        settings, _ = load_settings()
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}") from None
    password = settings.admin_password
    if not password:
        path = settings.secrets_directory / "admin_password"
        try:
            password = path.read_text().strip()
        except OSError:
            raise CliError(f"no admin password: set PDS_ADMIN_PASSWORD or start the PDS once to create {path}") from None
    return f"http://127.0.0.1:{settings.port}", password


def _xrpc(base: str, nsid: str, *, body: dict | None = None, auth: tuple[str, str] | None = None,
          method: str = "POST", params: dict | None = None) -> dict:
    import httpx

    try:
        response = httpx.request(method, f"{base}/xrpc/{nsid}", json=body, auth=auth, params=params,
                                 timeout=30.0)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the PDS at {base}: {exc}") from None
    try:
        data = response.json() if response.content else {}
    except ValueError:
        data = {}
    if response.status_code >= 400:
        name = data.get("error", f"HTTP {response.status_code}") if isinstance(data, dict) else response.status_code
        message = data.get("message", response.text[:200]) if isinstance(data, dict) else response.text[:200]
        raise CliError(f"{nsid} failed: {name}: {message}")
    return data


def _invite_create(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    if args.uses < 1:
        raise CliError("--uses must be at least 1")
    data = _xrpc(base, "com.atproto.server.createInviteCode", body={"useCount": args.uses},
                 auth=("admin", password))
    print(data["code"])
    return 0


def _account_create(args: argparse.Namespace) -> int:
    import secrets as random

    base, admin_password = _admin_target()
    handle = args.handle.strip().lower()
    if "." not in handle:
        # A bare name gets the server's first handle domain, as the sign-up form of an app would.
        domains = _xrpc(base, "com.atproto.server.describeServer", method="GET").get("availableUserDomains") or []
        if not domains:
            raise CliError("the PDS lists no handle domains; give a full handle")
        handle += domains[0]
    password = args.password or random.token_urlsafe(18)
    invite = _xrpc(base, "com.atproto.server.createInviteCode", body={"useCount": 1}, auth=("admin", admin_password))
    created = _xrpc(base, "com.atproto.server.createAccount",
                    body={"email": args.email, "handle": handle, "password": password, "inviteCode": invite["code"]})
    print(f"did:      {created['did']}")
    print(f"handle:   {created['handle']}")
    if not args.password:
        print(f"password: {password}   (shown once; keep it safe)")
    return 0


def _resolve_account(base: str, identifier: str) -> str:
    """The DID of a local account named by DID or handle."""
    ident = identifier.strip()
    if ident.startswith("did:"):
        return ident
    try:
        data = _xrpc(base, "com.atproto.identity.resolveHandle", method="GET", params={"handle": ident.lower()})
    except CliError as exc:
        raise CliError(f"no account with handle {ident!r} on this PDS ({exc})") from None
    return data["did"]


def _account_delete(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    did = _resolve_account(base, args.account)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("deleting an account cannot be undone: add --yes to confirm")
        answer = input(f"Delete {did} ({args.account}) and all its data for good? Type the DID to confirm: ")
        if answer.strip() != did:
            raise CliError("not confirmed; nothing was deleted")
    _xrpc(base, "com.atproto.admin.deleteAccount", body={"did": did}, auth=("admin", password))
    print(f"deleted:  {did}")
    return 0


def _account_token(route: str):
    """An operator command that issues the account holder a token through ``_admin/<route>``."""

    def issue(args: argparse.Namespace) -> int:
        base, password = _admin_target()
        did = _resolve_account(base, args.account)
        data = _xrpc(base, f"_admin/{route}", body={"did": did}, auth=("admin", password))
        print(f"did:      {data['did']}")
        print(f"token:    {data['token']}")
        print(f"expires:  {data['expiresAt']}")
        return 0

    return issue


def _account_takedown(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    did = _resolve_account(base, args.account)
    takedown: dict = {"applied": not args.reverse}
    if args.ref and not args.reverse:
        takedown["ref"] = args.ref
    elif args.ref:
        raise CliError("--ref goes with a takedown, not with --reverse")
    _xrpc(base, "com.atproto.admin.updateSubjectStatus", auth=("admin", password),
          body={"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did}, "takedown": takedown})
    state = _xrpc(base, "com.atproto.admin.getSubjectStatus", method="GET", params={"did": did},
                  auth=("admin", password))
    ref = state.get("takedown", {}).get("ref")
    print(f"did:      {did}")
    print(f"takedown: {'applied (ref ' + ref + ')' if ref else 'none'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """``squall status``: the running PDS's admin status (version, uptime, accounts, sizes, backups)."""
    import json

    base, password = _admin_target()
    data = _xrpc(base, "_admin/status", method="GET", auth=("admin", password))
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    backup = data.get("backup") or {}
    success = backup.get("last_success") or {}
    failure = backup.get("last_failure") or {}
    rows = [
        ("version", data.get("version")),
        ("hostname", data.get("hostname")),
        ("service DID", data.get("serviceDid")),
        ("uptime", f"{data.get('uptimeSeconds')} s"),
        ("accounts", f"{data['accounts']['total']} ({data['accounts']['active']} active)"),
        ("database", f"{data['database']['bytes']} bytes, schema {data['database']['schemaVersion']}"),
        ("blobs", f"{data['blobs']['count']} ({data['blobs']['bytes']} bytes)"),
        ("firehose seq", data["firehose"]["seq"]),
        ("backup", backup.get("state", "no status yet") if "error" not in backup else backup["error"]),
        ("last backup", f"{success.get('id')} at {success.get('finished_at')}" if success else "never"),
        ("last failure", f"{failure.get('at')}: {failure.get('error')}" if failure else "none"),
    ]
    for key, value in rows:
        print(f"{key + ':':<14}{value}")
    return 0


def _account_list(args: argparse.Namespace) -> int:
    """Every account: com.atproto.sync.listRepos (status) and admin.getAccountInfos (handle, e-mail)."""
    base, password = _admin_target()
    repos, cursor = [], None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = _xrpc(base, "com.atproto.sync.listRepos", method="GET", params=params)
        repos.extend(page.get("repos", []))
        cursor = page.get("cursor")
        if not cursor or not page.get("repos"):
            break
    infos: dict[str, dict] = {}
    for i in range(0, len(repos), 100):
        dids = [r["did"] for r in repos[i:i + 100]]
        data = _xrpc(base, "com.atproto.admin.getAccountInfos", method="GET", params={"dids": dids},
                     auth=("admin", password))
        infos.update({info["did"]: info for info in data.get("infos", [])})
    print(f"{'handle':<32} {'did':<48} {'status':<12} email")
    for repo in repos:
        info = infos.get(repo["did"], {})
        status = "active" if repo.get("active") else repo.get("status", "inactive")
        print(f"{info.get('handle', ''):<32} {repo['did']:<48} {status:<12} {info.get('email', '')}")
    print(f"{len(repos)} accounts")
    return 0


def _invite_list(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    data = _xrpc(base, "com.atproto.admin.getInviteCodes", method="GET", params={"limit": str(args.limit)},
                 auth=("admin", password))
    print(f"{'code':<28} {'left':>5} {'used':>5} {'state':<9} {'for':<20} created")
    for code in data.get("codes", []):
        used = len(code.get("uses", []))
        state = "disabled" if code.get("disabled") else "active"
        print(f"{code['code']:<28} {max(0, code['available'] - used):>5} {used:>5} {state:<9} "
              f"{code.get('forAccount', ''):<20} {code.get('createdAt', '')}")
    return 0


def _account_reset_password(args: argparse.Namespace) -> int:
    import secrets as random

    base, admin_password = _admin_target()
    did = _resolve_account(base, args.account)
    password = args.password or random.token_urlsafe(18)
    _xrpc(base, "com.atproto.admin.updateAccountPassword", body={"did": did, "password": password},
          auth=("admin", admin_password))
    print(f"did:      {did}")
    if not args.password:
        print(f"password: {password}   (shown once; every session of the account has ended)")
    return 0


def _crawl_request(args: argparse.Namespace) -> int:
    """Ask relays to crawl this PDS (com.atproto.sync.requestCrawl), as the PDS does after writes."""
    import httpx

    try:
        settings, _ = load_settings()
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}") from None
    relays = args.relay or list(settings.crawlers)
    if not relays:
        raise CliError("no relay: give one (squall crawl request https://bsky.network) or set PDS_CRAWLERS")
    failed = 0
    for relay in relays:
        url = relay.rstrip("/") + "/xrpc/com.atproto.sync.requestCrawl"
        try:
            r = httpx.post(url, json={"hostname": settings.hostname}, timeout=15.0)
            ok, detail = r.status_code < 300, f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, str(exc) or type(exc).__name__
        failed += not ok
        print(f"{relay}: {'ok' if ok else 'failed'} ({detail})")
    return 1 if failed else 0


def _admin_json(base: str, path: str, password: str, *, body: dict | None = None, params: dict | None = None,
                method: str = "POST") -> dict:
    """Call an admin route under /xrpc/_admin/ (the relay monitor's)."""
    return _xrpc(base, path, body=body, auth=("admin", password), method=method, params=params)


def _print_relays(status: dict, *, accounts: bool) -> None:
    relays = status.get("relays") or []
    if not relays:
        print("no relays watched (set PDS_CRAWLERS or PDS_RELAY_MONITOR_URLS)")
    for relay in relays:
        lag = relay.get("lag")
        print(f"{relay['url']}")
        print(f"  status:    {relay['status']}{' - ' + relay['message'] if relay.get('message') else ''}")
        print(f"  host:      {relay.get('hostStatus') or '-'}; their seq {relay.get('theirSeq')}, ours "
              f"{relay.get('ourSeq')}, lag {lag if lag is not None else '-'}; accounts "
              f"{relay.get('accountCount')}/{relay.get('accountLimit')}")
        rates = ", ".join(f"{r['events']}/{r['limit']} per {r['windowSeconds']}s" for r in relay.get("eventRate") or [])
        print(f"  our rate:  {rates or '-'}")
        print(f"  checked:   {relay.get('lastChecked') or 'never'}; clock skew {relay.get('clockSkewMs')} ms")
        for warning in relay.get("warnings") or []:
            print(f"  warning:   {warning}")
        if relay.get("accounts"):
            print("  accounts:  " + ", ".join(f"{n} {state}" for state, n in sorted(relay["accounts"].items())))
        for action in (relay.get("actions") or [])[:5]:
            print(f"  action:    {action['at']} {action['action']} {action.get('did') or ''} ({action['reason']}): "
                  f"{action['result']}")
    for check in status.get("selfChecks") or []:
        print(f"self-check {check['name']}: {'ok' if check['ok'] else 'FAILED'} - {check['detail']}")
    if accounts:
        for row in status.get("accounts") or []:
            print(f"{row['relay']}  {row.get('handle') or row['did']}: {row['status']}"
                  f"{' - ' + row['message'] if row.get('message') else ''}"
                  f"{'; action ' + row['action'] if row.get('action') else ''}")


def _relay_status(args: argparse.Namespace) -> int:
    import json

    base, password = _admin_target()
    params = {"accounts": "true" if args.accounts else "false"}
    if args.relay:
        params["relay"] = args.relay
    status = _admin_json(base, "_admin/relays", password, method="GET", params=params)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_relays(status, accounts=args.accounts)
    return 0


def _relay_check(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    body: dict = {}
    if args.relay:
        body["relay"] = args.relay
    _print_relays(_admin_json(base, "_admin/relays/check", password, body=body), accounts=True)
    return 0


def _relay_announce(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    did = _resolve_account(base, args.account)
    data = _admin_json(base, "_admin/relays/announce", password, body={"did": did})
    print(f"re-announced {did}: events {', '.join(map(str, data['seqs']))} (#identity, #sync, #account)")
    return 0


def _relay_crawl(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    body = {"relay": args.relay} if args.relay else {}
    failed = 0
    for result in _admin_json(base, "_admin/relays/request-crawl", password, body=body)["results"]:
        print(f"{result['relay']}: {'requested' if result['ok'] else 'FAILED'} ({result['detail']})")
        failed += not result["ok"]
    return 1 if failed else 0


def _relay_advance(args: argparse.Namespace) -> int:
    base, password = _admin_target()
    plan = _admin_json(base, "_admin/relays/advance-sequence", password, body={"relay": args.relay, "confirm": False})
    print(plan["message"])
    if plan["theirSeq"] <= plan["ourSeq"]:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("advancing the sequence cannot be undone: add --yes to confirm")
        if input("Advance our sequence? Type yes to confirm: ").strip() != "yes":
            raise CliError("not confirmed; nothing was changed")
    done = _admin_json(base, "_admin/relays/advance-sequence", password, body={"relay": args.relay, "confirm": True})
    print(done["message"])


def _account_import(args: argparse.Namespace) -> int:
    """The operator's override of importRepo's no-rollback rule: import a CAR into an account even
    when its commit is not newer than the repo's (restoring an export after a bad import, say)."""
    import httpx

    if not args.force:
        raise CliError("this replaces the account's whole repository, possibly with an older state: "
                       "add --force to confirm (account holders import with com.atproto.repo.importRepo)")
    base, password = _admin_target()
    did = _resolve_account(base, args.account)
    try:
        with open(args.car, "rb") as f:
            response = httpx.post(f"{base}/xrpc/_admin/import-repo", params={"did": did}, content=f,
                                  auth=("admin", password), timeout=600.0,
                                  headers={"Content-Type": "application/vnd.ipld.car"})
    except OSError as exc:
        raise CliError(f"cannot read {args.car}: {exc}") from None
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the PDS at {base}: {exc}") from None
    if response.status_code != 200:
        try:
            data = response.json()
            detail = f"{data['error']}: {data['message']}"
        except (ValueError, KeyError, TypeError):
            detail = f"HTTP {response.status_code}"
        raise CliError(f"import failed: {detail}")
    print(f"imported: {did} (forced)")
    return 0


def _operator(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CliError as exc:
            print(f"squall: {exc}", file=sys.stderr)
            return 1

    return run


def _admin_hash_token(args: argparse.Namespace) -> int:
    """Make an admin Bearer token and its argon2 hash, for operators who keep only the hash."""
    import secrets as _random

    from .auth.passwords import make_hasher

    token = sys.stdin.readline().strip() if args.stdin else _random.token_urlsafe(32)
    if len(token) < 16:
        print("squall: an admin token must be at least 16 characters", file=sys.stderr)
        return 1
    digest = make_hasher().hash(token)
    if not args.stdin:
        print(f"token (shown once, give it to your admin tools): {token}")
    print(f"PDS_ADMIN_TOKEN_HASH={digest}")
    return 0


def _help(parser: argparse.ArgumentParser):
    """The action of a command group given without its subcommand: its full help, exit 2."""
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2
    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squall", description="Squall AT Protocol PDS. Settings come from "
                                     "PDS_* environment variables (see config/pds.env.example).")
    parser.add_argument("--version", action="version", version=f"squall {__version__}")
    parser.set_defaults(func=_help(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the PDS (settings from PDS_* environment variables)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.set_defaults(func=_serve)

    account = sub.add_parser("account", help="manage accounts on the running PDS")
    account.set_defaults(func=_help(account))
    account_sub = account.add_subparsers(dest="account_command", metavar="COMMAND")
    create = account_sub.add_parser("create", help="create an account (no invite needed)")
    create.add_argument("email")
    create.add_argument("handle", help="full handle, or a bare name to use the first handle domain")
    create.add_argument("--password", help="the account password (default: generate and print one)")
    create.set_defaults(func=_operator(_account_create))
    delete = account_sub.add_parser("delete", help="delete an account and all its data (cannot be undone)")
    delete.add_argument("account", help="DID or handle")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=_operator(_account_delete))
    delete_token = account_sub.add_parser(
        "delete-token", help="issue a token the account holder can delete their own account with "
                             "(com.atproto.server.deleteAccount; Squall sends no e-mail)")
    delete_token.add_argument("account", help="DID or handle")
    delete_token.set_defaults(func=_operator(_account_token("account-delete-token")))
    plc_token = account_sub.add_parser(
        "plc-token", help="issue a token with which the account holder has this PDS sign a PLC operation "
                          "(com.atproto.identity.signPlcOperation, to move the account away; Squall sends no e-mail)")
    plc_token.add_argument("account", help="DID or handle")
    plc_token.set_defaults(func=_operator(_account_token("account-plc-token")))
    imp = account_sub.add_parser(
        "import", help="replace an account's repository with a CAR even if it is older than the current one "
                       "(the operator's override of importRepo's no-rollback rule; needs --force)")
    imp.add_argument("account", help="DID or handle")
    imp.add_argument("car", help="the repository CAR file (e.g. from com.atproto.sync.getRepo)")
    imp.add_argument("--force", action="store_true", help="confirm: the current repository is replaced")
    imp.set_defaults(func=_operator(_account_import))
    takedown = account_sub.add_parser("takedown", help="take an account down (or --reverse it)")
    takedown.add_argument("account", help="DID or handle")
    takedown.add_argument("--ref", help="your reference for the takedown (default: the current time)")
    takedown.add_argument("--reverse", action="store_true", help="reverse the takedown")
    takedown.set_defaults(func=_operator(_account_takedown))
    account_list = account_sub.add_parser("list", help="list every account with its status")
    account_list.set_defaults(func=_operator(_account_list))
    reset = account_sub.add_parser("reset-password", help="set a new password (generated unless given); "
                                                          "every session of the account ends")
    reset.add_argument("account", help="DID or handle")
    reset.add_argument("--password", help="the new password (default: generate and print one)")
    reset.set_defaults(func=_operator(_account_reset_password))

    status = sub.add_parser("status", help="the running PDS's status: version, accounts, sizes, firehose, backups")
    status.add_argument("--json", action="store_true", help="print the JSON of /xrpc/_admin/status")
    status.set_defaults(func=_operator(_status))

    crawl = sub.add_parser("crawl", help="relays")
    crawl_sub = crawl.add_subparsers(dest="crawl_command", required=True)
    crawl_request = crawl_sub.add_parser("request", help="ask relays to crawl this PDS (default: PDS_CRAWLERS)")
    crawl_request.add_argument("relay", nargs="*", help="relay URL(s), e.g. https://bsky.network")
    crawl_request.set_defaults(func=_operator(_crawl_request))

    invite = sub.add_parser("invite", help="manage invite codes on the running PDS")
    invite.set_defaults(func=_help(invite))
    invite_sub = invite.add_subparsers(dest="invite_command", metavar="COMMAND")
    invite_create = invite_sub.add_parser("create", help="create an invite code and print it")
    invite_create.add_argument("--uses", type=int, default=1, help="how many accounts it may create (default 1)")
    invite_create.set_defaults(func=_operator(_invite_create))
    invite_list = invite_sub.add_parser("list", help="list invite codes, newest first")
    invite_list.add_argument("--limit", type=int, default=100, help="how many (1-500, default 100)")
    invite_list.set_defaults(func=_operator(_invite_list))

    relay = sub.add_parser("relay", help="what the relays see of this PDS, and fixing it (the relay monitor)")
    relay.set_defaults(func=_help(relay))
    relay_sub = relay.add_subparsers(dest="relay_command", metavar="COMMAND")
    relay_status = relay_sub.add_parser("status", help="each relay's view of this host (and, with --accounts, "
                                                       "of each account)")
    relay_status.add_argument("--accounts", action="store_true", help="show every account on every relay")
    relay_status.add_argument("--relay", help="only this relay (its URL)")
    relay_status.add_argument("--json", action="store_true", help="print the status as JSON")
    relay_status.set_defaults(func=_operator(_relay_status))
    relay_check = relay_sub.add_parser("check", help="run the relay checks now and show the result")
    relay_check.add_argument("--relay", help="only this relay (its URL)")
    relay_check.set_defaults(func=_operator(_relay_check))
    relay_announce = relay_sub.add_parser("announce", help="re-announce an account to the relays "
                                                           "(#identity, #sync, #account)")
    relay_announce.add_argument("account", help="DID or handle")
    relay_announce.set_defaults(func=_operator(_relay_announce))
    relay_crawl = relay_sub.add_parser("crawl", help="ask the relays to crawl this PDS now (requestCrawl)")
    relay_crawl.add_argument("--relay", help="only this relay (its URL)")
    relay_crawl.set_defaults(func=_operator(_relay_crawl))
    relay_advance = relay_sub.add_parser("advance-seq", help="move our event sequence past a relay's "
                                                             "(when our sequence went backwards) and re-announce")
    relay_advance.add_argument("relay", help="the relay's URL")
    relay_advance.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    relay_advance.set_defaults(func=_operator(_relay_advance))

    admin = sub.add_parser("admin", help="admin credential tools")
    admin.set_defaults(func=_help(admin))
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND")
    hash_token = admin_sub.add_parser("hash-token", help="generate an admin Bearer token and print its argon2 hash")
    hash_token.add_argument("--stdin", action="store_true", help="hash a token read from standard input instead")
    hash_token.set_defaults(func=_admin_hash_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
