"""The ``squall`` command: ``serve`` runs the PDS; operator subcommands talk to a running PDS."""

from __future__ import annotations

import argparse
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
    from .httpguard import guarded_protocol, reject_ambiguous_length
    from .logs import configure_logging

    log = configure_logging(settings.log_level)
    for warning in warnings:
        log.warning(warning)
    app = build_app(settings, log=log)
    config = uvicorn.Config(
        # Bounded header and body read times, and no request with both Content-Length and
        # Transfer-Encoding (squall.httpguard): the bare port may face the internet (Railway).
        reject_ambiguous_length(app),
        http=guarded_protocol(settings.http_header_timeout, settings.http_body_timeout),
        host=args.host,
        port=settings.port,
        log_config=None,  # our JSON logging is already configured
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

    invite = sub.add_parser("invite", help="manage invite codes on the running PDS")
    invite.set_defaults(func=_help(invite))
    invite_sub = invite.add_subparsers(dest="invite_command", metavar="COMMAND")
    invite_create = invite_sub.add_parser("create", help="create an invite code and print it")
    invite_create.add_argument("--uses", type=int, default=1, help="how many accounts it may create (default 1)")
    invite_create.set_defaults(func=_operator(_invite_create))

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
