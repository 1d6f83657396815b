"""The operator's dashboard at ``/admin``: server-rendered pages, no JavaScript, strict CSP.

Sign-in with the admin password (verified against an argon2 hash made at start, so each guess
costs a hash; attempts are rate-limited per address). A session is a random id in a cookie
(``Secure`` unless dev mode over plain http, ``HttpOnly``, ``SameSite=Strict``, path ``/admin``);
the database keeps only its SHA-256 with the session's CSRF token (``store/admin_sessions.py``), so
sessions survive restarts and sign-out really ends one. Every form carries the CSRF token, and a
POST whose ``Origin`` is not this server is refused. The admin credentials of the XRPC API (Basic,
Bearer) and user tokens open nothing here: only the cookie does.

Every action calls the handler of the admin XRPC method that does the same thing
(``com.atproto.admin.updateSubjectStatus``, ``updateAccountPassword``, ``disableInviteCodes``,
``com.atproto.server.createInviteCode``), as the admin, so the rules live in one place; the relay
page's buttons call the relay monitor (``ctx.relays``) as ``/xrpc/_admin/relays/*`` and ``squall
relay`` do.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from starlette.requests import Request

from .. import ratelimit
from ..auth.passwords import verify_password
from ..auth.verifier import AuthResult
from ..metrics import file_sizes, parse_time, read_backup_status
from ..store import accounts as accounts_store
from ..store import admin_sessions
from ..store import blobs as blobs_store
from ..store import repos as repos_store
from ..version import __version__

if TYPE_CHECKING:
    from ..context import AppContext

COOKIE = "squall_admin"
PRE_COOKIE = "squall_admin_signin"  # the sign-in form's CSRF token (double submit; no session yet)
SESSION_SECONDS = 12 * 3600
MAX_FORM = 16_384
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SIGN_IN_LIMITS = (ratelimit.RateLimit("admin-web-sign-in-5m", 10, 5 * ratelimit.MINUTE),
                  ratelimit.RateLimit("admin-web-sign-in-day", 100, ratelimit.DAY))
_STATIC = Path(__file__).parent / "static"


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class AdminWeb:
    def __init__(self, ctx: "AppContext") -> None:
        self.ctx = ctx
        self._password_hash: str | None = None
        self._templates: Any = None

    # Both made on first use, so an idle server pays neither Jinja2's import nor an argon2 hash.
    @property
    def templates(self) -> Any:
        if self._templates is None:
            from jinja2 import Environment, PackageLoader

            self._templates = Environment(loader=PackageLoader("squall.admin_web", "templates"), autoescape=True)
            self._templates.filters["size"] = human_size
            self._templates.filters["when"] = when
            self._templates.filters["tone"] = tone
        return self._templates

    async def password_hash(self) -> str | None:
        password = self.ctx.secrets.admin_password
        if password and self._password_hash is None:
            self._password_hash = await asyncio.to_thread(self.ctx.hasher.hash, password)
        return self._password_hash

    @property
    def secure_cookie(self) -> bool:
        # Browsers drop Secure cookies set over plain http; only dev mode serves the admin over it.
        return self.ctx.settings.public_url.startswith("https://")

    # -- sessions ---------------------------------------------------------------------------------

    async def session(self, request: Request) -> Any:
        sid = request.cookies.get(COOKIE)
        if not sid or len(sid) > 128:
            return None
        return await admin_sessions.get(self.ctx.db, _digest(sid), int(time.time()))

    async def sign_in(self, request: Request, password: str) -> str:
        limiter = self.ctx.ratelimit
        if limiter is not None:
            ip = ratelimit.client_ip(request, self.ctx.settings.trust_proxy_headers)
            if not limiter.bypassed(ip):
                for limit in SIGN_IN_LIMITS:
                    if limiter.consume(limit, ip).exceeded:
                        self.ctx.metrics.observe_rate_limited("_admin/signin")
                        raise Refused(429, "Too many sign-in attempts; try again later.")
        expected = await self.password_hash()
        if (expected is None or len(password) > 4096
                or not await verify_password(self.ctx.hasher, expected, password)):
            self.ctx.log.warning("admin dashboard: failed sign-in")
            raise Refused(401, "Wrong password.")
        sid = secrets.token_urlsafe(32)
        now = int(time.time())
        await self.ctx.db.write(admin_sessions.create, _digest(sid), secrets.token_urlsafe(24), now,
                                now + SESSION_SECONDS)
        self.ctx.log.info("admin dashboard: signed in")
        return sid

    async def sign_out(self, request: Request) -> None:
        sid = request.cookies.get(COOKIE)
        if sid:
            await self.ctx.db.write(admin_sessions.delete, _digest(sid))

    # -- actions: the admin XRPC methods' own handlers ----------------------------------------------

    async def call(self, request: Request, nsid: str, body: dict[str, Any]) -> Any:
        from ..xrpc.dispatch import call_handler

        method = self.ctx.registry.get(nsid)
        assert method is not None, nsid
        return await call_handler(self.ctx, method, request, AuthResult(is_admin=True), body)

    # -- pages ------------------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        ctx = self.ctx
        try:
            await ctx.db.check()
            health = "ok"
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            health = f"database unavailable: {exc}"
        backup = read_backup_status(ctx.settings.data_directory)
        relays = await ctx.relays.status() if ctx.relays is not None else None
        fh = ctx.firehose
        return {
            "version": __version__, "uptime": human_duration(time.time() - ctx.started_at), "health": health,
            "hostname": ctx.settings.hostname,
            "accounts": await accounts_store.obs_count_by_status(ctx.db),
            "seq": await fh.current_seq(), "subscribers": len(fh.connections),
            "commits": await repos_store.obs_recent_commits(ctx.db, 10),
            "backup": backup_view(backup),
            "crawlers": list(ctx.settings.crawlers),
            "relays": relays.relays if relays is not None else None,
            "warnings": warnings(ctx, backup, relays),
        }

    async def storage(self) -> dict[str, Any]:
        ctx = self.ctx
        return {"files": file_sizes(ctx.settings.database_path), "blobs": await blobs_store.obs_totals(ctx.db),
                "per_account": await blobs_store.obs_per_account(ctx.db, 20),
                "repos": await repos_store.obs_largest(ctx.db, 20),
                "grace": human_duration(ctx.settings.blob_gc_grace_seconds)}

    async def backups(self) -> dict[str, Any]:
        status = read_backup_status(self.ctx.settings.data_directory)
        listing, why = await asyncio.to_thread(list_target_backups)
        trigger = self.ctx.settings.data_directory / "backups" / TRIGGER_NAME
        return {"backup": backup_view(status), "raw": status, "listing": listing, "listing_error": why,
                "requested": trigger.exists()}

    async def relays(self) -> dict[str, Any]:
        """The relay page: a row per relay, the self-checks, recent actions and the accounts × relays
        matrix (one row per account, one cell per relay)."""
        from ..relays.model import ACCOUNT_STATES, HOST_STATES

        monitor = self.ctx.relays
        if monitor is None:
            return {"running": False}
        status = await monitor.status(include_accounts=True)
        urls = [r.url for r in status.relays]
        matrix: dict[str, dict[str, Any]] = {}
        for cell in status.accounts or []:
            row = matrix.setdefault(cell.did, {"did": cell.did, "handle": cell.handle, "cells": {}})
            row["handle"] = row["handle"] or cell.handle
            row["cells"][cell.relay] = cell
        rows = sorted(matrix.values(), key=lambda r: (r["handle"] or r["did"]))
        return {"running": True, "status": status, "urls": urls, "matrix": rows,
                "host_states": HOST_STATES, "account_states": ACCOUNT_STATES,
                "interval": human_duration(status.interval_seconds)}

    def request_backup(self) -> None:
        directory = self.ctx.settings.data_directory / "backups"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TRIGGER_NAME).write_text(f"requested from the admin dashboard at {int(time.time())}\n")


TRIGGER_NAME = "run-now"  # squall_backup.daemon watches <data>/backups/run-now


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def human_size(n: Any) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def when(unix: Any) -> str:
    """A stored unix time as "2026-01-01 12:00:00Z (3 min ago)"; "—" when never."""
    if not isinstance(unix, (int, float)):
        return "—"
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))
    age = time.time() - unix
    return f"{stamp}, {human_duration(age)} ago" if age >= 0 else stamp


def tone(status: Any) -> str:
    """A CSS class for a relay, account or backup state: ok, warn or bad."""
    if status in ("ok", "running", "not_hosted", True):
        return "ok"
    if status in ("pending", "behind", "idle", "throttled", "starting", "waiting", "restarting", None):
        return "warn"
    return "bad"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def backup_view(status: dict | None) -> dict[str, Any] | None:
    if status is None:
        return None
    success = status.get("last_success") or {}
    finished = parse_time(success.get("finished_at"))
    drill = status.get("last_drill") if isinstance(status.get("last_drill"), dict) else None
    drill_at = parse_time((drill or {}).get("finished_at") or (drill or {}).get("at"))
    rep = status.get("replication") if isinstance(status.get("replication"), dict) else None
    reasons = status.get("unhealthy_reasons")
    return {"state": status.get("state"), "last_success": success or None,
            "age": human_duration(time.time() - finished) if finished else None,
            "last_failure": status.get("last_failure"), "failures": status.get("consecutive_failures"),
            "targets": status.get("targets") or [], "next_run_at": status.get("next_run_at"),
            "warnings": status.get("warnings") or [], "current_run": status.get("current_run"),
            # The restore drill, health and replication (issue #16); None/absent from older sidecars.
            "healthy": status.get("healthy") if isinstance(status.get("healthy"), bool) else None,
            "unhealthy_reasons": [str(r) for r in reasons] if isinstance(reasons, list) else [],
            "drill": drill, "drill_age": human_duration(time.time() - drill_at) if drill_at else None,
            "drill_checks": [c for c in (drill or {}).get("checks") or [] if isinstance(c, dict)],
            "drill_running": status.get("drill_running"), "next_drill_at": status.get("next_drill_at"),
            "drill_schedule": status.get("drill_schedule"),
            "replication": rep if rep and rep.get("enabled") else None,
            "replication_lag": _lag_text(rep.get("lag_seconds")) if rep else None}


def _lag_text(lag: Any) -> str | None:
    if not isinstance(lag, (int, float)) or isinstance(lag, bool):
        return None
    return f"{lag:.1f} s" if lag < 120 else human_duration(lag)


def warnings(ctx: "AppContext", backup: dict | None, relays: Any = None) -> list[str]:
    out = []
    for relay in relays.relays if relays is not None else []:
        if relay.status not in ("ok", "pending"):
            out.append(f"Relay {relay.url}: {relay.message or relay.status} (see Relays).")
    if backup is None:
        out.append("No backup has reported yet (no backups/status.json): is the backup container running?")
    else:
        targets = backup.get("targets") or []
        if not any(t.get("remote") for t in targets if isinstance(t, dict)):
            out.append("Backups are not off-site: no remote (S3/R2) backup target.")
        success = parse_time((backup.get("last_success") or {}).get("finished_at"))
        if success is None:
            out.append("No backup has succeeded yet.")
        elif time.time() - success > 2 * 86400:
            out.append(f"The last good backup is {human_duration(time.time() - success)} old.")
        out.extend(str(w) for w in backup.get("warnings") or [])
        if backup.get("healthy") is False:
            out.extend(f"Backups unhealthy: {r}" for r in backup.get("unhealthy_reasons") or [])
    out.append("No SMTP: Squall sends no e-mail (no e-mail confirmation or password-reset mails).")
    if not ctx.settings.invite_required:
        out.append("Sign-up is open (PDS_INVITE_REQUIRED=false).")
    if ctx.ratelimit is None:
        out.append("Rate limits are off (PDS_RATE_LIMITS_ENABLED=false).")
    return out


def list_target_backups() -> tuple[list[dict[str, Any]], str | None]:
    """Good backups on the sidecar's target, through the backup package (when installed here and
    configured with the same BACKUP_* settings); else why not."""
    try:
        from squall_backup.engine import Engine
        from squall_backup.settings import load_settings
    except ImportError:
        return [], ("the backup package is not installed in this container; run `squall-backup list` in "
                    "the backup container")
    try:
        settings = load_settings()
        markers = Engine(settings).target().list_markers()
    except Exception as exc:  # noqa: BLE001 - shown to the operator, one line
        return [], f"cannot list the backup target from here: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return [{"id": m.id, "created_at": m.created_at, "archive_bytes": m.archive.get("size"),
             "database_bytes": m.database_size, "blobs": m.blob_count, "encrypted": m.encrypted}
            for m in markers], None


# -- feature module ----------------------------------------------------------------------------------


async def start(ctx: "AppContext") -> None:
    ctx.admin_web = AdminWeb(ctx)


def routes(app: Any, get_ctx: Callable[[], "AppContext"]) -> None:
    from .views import add_routes

    add_routes(app, get_ctx)
