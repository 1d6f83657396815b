"""The ``squall`` command: ``serve`` runs the PDS; operator subcommands talk to a running PDS."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_settings
from .version import __version__


def _serve(args: argparse.Namespace) -> int:
    try:
        settings, warnings = load_settings()
    except ConfigError as exc:
        print(f"squall: configuration error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import build_app
    from .logs import configure_logging

    log = configure_logging(settings.log_level)
    for warning in warnings:
        log.warning(warning)
    app = build_app(settings, log=log)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=settings.port,
        log_config=None,  # our JSON logging is already configured
        access_log=False,
        proxy_headers=settings.trust_proxy_headers,
        forwarded_allow_ips="*" if settings.trust_proxy_headers else None,
        timeout_graceful_shutdown=10,
        ws_ping_interval=None,  # the firehose sends its own pings
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally after a clean SIGTERM; a failed start (port in use, lifespan error)
    # leaves started False and must be a non-zero exit so supervisors notice.
    return 0 if server.started else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squall", description="Squall AT Protocol PDS")
    parser.add_argument("--version", action="version", version=f"squall {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the PDS (settings from PDS_* environment variables)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
