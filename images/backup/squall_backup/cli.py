"""``squall-backup``: the backup sidecar's commands.

    squall-backup run                     back up on BACKUP_SCHEDULE until SIGTERM
    squall-backup now                     one backup now (uploads earlier pending snapshots first)
    squall-backup list [--json]           good backups on a target, oldest first
    squall-backup verify ID|latest        download and check every byte (and blob sizes; --deep: hashes)
    squall-backup restore ID|latest --target DIR [--force]
    squall-backup restore --at TIMESTAMP|latest --target DIR   point in time, from the Litestream replica
    squall-backup drill [ID|latest]       restore into a temporary dir, boot a PDS on it, check it as a client
    squall-backup prune [--dry-run]       apply BACKUP_KEEP_HOURLY/DAILY/WEEKLY
    squall-backup keygen                  print a new age identity and its recipient
    squall-backup settings                print the table of every setting

Exit codes: 0 done, 1 the operation failed (the reason is logged), 2 bad settings or usage, 3 busy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, logs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="squall-backup", description="Squall backup sidecar: verified, encrypted "
                                "snapshots of the PDS volume to S3/R2 or a directory. Settings come from "
                                "BACKUP_* environment variables (see `squall-backup settings`).")
    p.add_argument("--version", action="version", version=f"squall-backup {__version__}")
    p.add_argument("--data-dir", type=Path, help="the PDS data directory (default: $PDS_DATA_DIRECTORY or /data)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="back up on the schedule until SIGTERM")
    sub.add_parser("now", help="take one backup now")
    ls = sub.add_parser("list", help="list good backups")
    ls.add_argument("--from", dest="source", help="target name (s3 or local; default: the first)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    v = sub.add_parser("verify", help="download and check a backup end to end")
    v.add_argument("id", help="backup id or 'latest'")
    v.add_argument("--identity", type=Path, help="age identity file (default: $BACKUP_AGE_IDENTITY_FILE)")
    v.add_argument("--from", dest="source", help="target name (s3 or local; default: the first)")
    v.add_argument("--deep", action="store_true", help="also download and hash every blob")
    v.add_argument("--workdir", type=Path, help="scratch directory for the check")
    r = sub.add_parser("restore", help="restore a backup into an empty directory")
    r.add_argument("id", nargs="?", help="backup id or 'latest' (not with --at)")
    r.add_argument("--at", metavar="TIMESTAMP", help="point-in-time restore from the Litestream replica: an ISO "
                   "8601 UTC time (2026-01-05T12:00:00Z) or 'latest'; secrets from the newest snapshot, blobs "
                   "from the blob backup")
    r.add_argument("--target", type=Path, required=True, help="directory to restore into (a data volume)")
    r.add_argument("--force", action="store_true", help="restore into a non-empty directory, replacing the "
                   "database and secrets there (stop the PDS first)")
    r.add_argument("--identity", type=Path, help="age identity file (default: $BACKUP_AGE_IDENTITY_FILE)")
    r.add_argument("--from", dest="source", help="target name (s3 or local; default: the first)")
    d = sub.add_parser("drill", help="restore a backup into a temporary directory, boot a PDS on it on loopback "
                       "and check it as a client would (repos, signatures, blobs, logins, firehose)")
    d.add_argument("id", nargs="?", default="latest", help="backup id or 'latest' (default)")
    d.add_argument("--identity", type=Path, help="age identity file (default: $BACKUP_AGE_IDENTITY_FILE)")
    d.add_argument("--from", dest="source", help="target name (s3 or local; default: the first)")
    d.add_argument("--workdir", type=Path, help="scratch directory (default: <data>/backups)")
    d.add_argument("--quiet", action="store_true", help="no progress on stderr")
    pr = sub.add_parser("prune", help="apply the retention policy now")
    pr.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    sub.add_parser("keygen", help="print a new age identity (keep it secret) and its recipient")
    sub.add_parser("settings", help="print every setting as a markdown table")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: the full help rather than a bare usage line
        parser.print_help()
        return 2
    if args.command == "keygen":
        from .crypto import generate_identity
        secret, public = generate_identity()
        print(f"# public key (BACKUP_AGE_RECIPIENTS): {public}\n{secret}")
        return 0
    if args.command == "settings":
        from .settings import markdown_table
        print(markdown_table())
        return 0

    from .settings import SettingsError, load_settings
    overrides = {"data_directory": args.data_dir} if args.data_dir else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        logs.setup_logging("INFO")
        logs.error("settings.invalid", error=str(exc))
        print(f"squall-backup: {exc}", file=sys.stderr)
        return 2
    secrets = [settings.s3_secret_access_key.get_secret_value()] if settings.s3_secret_access_key else []
    logs.setup_logging(settings.log_level, secrets)
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130


def _dispatch(args, settings) -> int:
    from .archive import Aborted, ArchiveError
    from .crypto import DecryptionFailed, IdentityError
    from .daemon import run_daemon
    from .engine import BackupFailed, Busy, Engine, RestoreError
    from .manifest import ManifestError
    from .replicate import ReplicationError
    from .targets import TargetError

    if args.command == "run":
        return run_daemon(settings)
    engine = Engine(settings)
    try:
        if args.command == "now":
            engine.run_once()
        elif args.command == "list":
            markers = engine.target(args.source).list_markers()
            if args.json:
                print(json.dumps([json.loads(m.to_bytes()) for m in markers], indent=1))
            else:
                print(f"{'id':<20} {'created':<21} {'archive':>12} {'database':>12} {'blobs':>7} {'schema':>6} enc")
                for m in markers:
                    print(f"{m.id:<20} {m.created_at:<21} {m.archive['size']:>12} {m.database_size:>12} "
                          f"{m.blob_count:>7} {m.schema_version:>6} {'yes' if m.encrypted else 'NO'}")
        elif args.command == "verify":
            report = engine.verify(args.id, target_name=args.source, identity=args.identity, deep=args.deep,
                                   workdir=args.workdir)
            print(json.dumps(report))
        elif args.command == "restore":
            if (args.id is None) == (args.at is None):
                print("squall-backup: restore needs a backup id (or 'latest') or --at TIMESTAMP, not both",
                      file=sys.stderr)
                return 2
            if args.at is not None:
                from .replicate import restore_at
                report = restore_at(engine, args.at, args.target, force=args.force, identity=args.identity,
                                    target_name=args.source)
            else:
                report = engine.restore(args.id, args.target, force=args.force, identity=args.identity,
                                        target_name=args.source)
            print(json.dumps(report))
        elif args.command == "drill":
            from .drill import Progress
            report = engine.drill(args.id, identity=args.identity, target_name=args.source,
                                  progress=Progress(enabled=not args.quiet), workdir=args.workdir)
            print(json.dumps(report))
            if not args.quiet:
                verdict = "PASSED" if report["ok"] else "FAILED"
                print(f"drill {verdict} on backup {report['id']} in {report['duration_seconds']:.1f} s: "
                      f"{report['summary']}", file=sys.stderr)
            return 0 if report["ok"] else 1
        elif args.command == "prune":
            with engine.lock():
                print(json.dumps(engine.prune(dry_run=args.dry_run)))
    except Busy as exc:
        logs.error("backup.busy", error=str(exc))
        return 3
    except (BackupFailed, Aborted) as exc:
        print(f"squall-backup: {exc}", file=sys.stderr)
        return 1
    except (ArchiveError, DecryptionFailed, IdentityError, ManifestError, ReplicationError, RestoreError,
            TargetError) as exc:
        logs.error(f"{args.command}.failed", error=str(exc))
        print(f"squall-backup: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
