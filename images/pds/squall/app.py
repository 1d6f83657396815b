"""Assembly: settings → secrets → database → services → registry → ASGI app.

Feature modules plug in through a small protocol, so this file is the only place that knows them
all. A feature module may define:
  METHODS            a tuple of ``squall.xrpc.registry.Method``
  routes(app, get_ctx)  add non-XRPC routes (well-known files, WebSockets, …)
  async start(ctx)   set its service on its typed ``AppContext`` field / start background tasks
  async stop(ctx)    stop them (called in reverse order)
  fallback           ``dispatch.Fallback`` for NSIDs nobody serves (only one module)
"""

from __future__ import annotations

import gc
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette._utils import get_route_path
from starlette.routing import Match, Route

from .auth.passwords import make_hasher
from .auth.revocation import TokenCutoffs
from .auth.tokens import TokenIssuer
from .auth.verifier import AuthVerifier
from .config import Settings
from .context import AppContext
from .metrics import Metrics
from .secrets import load_or_create_secrets
from .store import accounts as accounts_store
from .store import blobs as blobs_store
from .store import repos as repos_store
from .store import sequencer as sequencer_store
from .store.db import Database
from .version import __version__
from .xrpc.dispatch import dispatch, error_response
from .xrpc.errors import InternalServerError, InvalidRequest, RateLimitExceeded, XRPCError
from .xrpc.registry import Auth, Registry, method_lexicons


def feature_modules() -> list[ModuleType]:
    """The feature modules in start order (stopped in reverse). Imported here, not at module level,
    so importing squall.app stays light."""
    from . import account_web, admin_web, firehose, identity, mail, oauth, ratelimit, relays, repo
    from .xrpc import mail as mail_xrpc
    from .xrpc import admin, blobs, migration, preferences, proxy, server, sync, temp
    from .xrpc import relays as relays_xrpc
    from .xrpc import identity as identity_xrpc
    from .xrpc import repo as repo_xrpc

    return [
        ratelimit,  # first: every XRPC call is counted
        firehose,  # before any writer, which wakes ctx.firehose; stops last
        identity,  # DID creation and resolution, used by accounts, repos and the proxy
        identity_xrpc,  # com.atproto.identity and the well-known routes
        blobs,
        mail,  # e-mail: the outbox sender and the mailed-token flows (used by server, admin, migration, oauth)
        mail_xrpc,  # com.atproto.server e-mail methods (confirmEmail, resetPassword, updateEmail, …)
        server,  # com.atproto.server: accounts, sessions, app passwords, invites
        temp,  # com.atproto.temp.checkSignupQueue
        repo,  # the repo service (writer, reader)
        repo_xrpc,  # com.atproto.repo
        sync,  # com.atproto.sync reads
        proxy,  # service proxying (the fallback for unserved NSIDs) and getServiceAuth
        preferences,
        admin,  # com.atproto.admin, takedowns, account deletion
        migration,  # account migration in and out (importRepo, PLC operations)
        oauth,  # atproto OAuth: authorization server and DPoP resource server
        relays,  # the relay monitor (background checks; poked by account events)
        relays_xrpc,  # its admin routes
        admin_web,  # the operator's dashboard at /admin (calls the admin methods' handlers)
        account_web,  # the account page (/account): grants, app passwords, data
    ]


def build_app(settings: Settings, *, log: logging.Logger | None = None,
              features: list[ModuleType] | None = None) -> FastAPI:
    log = log or logging.getLogger("squall")
    modules = feature_modules() if features is None else features
    state: dict[str, AppContext] = {}

    def get_ctx() -> AppContext:
        return state["ctx"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_directory.mkdir(parents=True, exist_ok=True)
        secrets = load_or_create_secrets(settings)
        if secrets.generated_admin_password:
            # Shown exactly once, on the boot that generated it; it is also in <data>/secrets.
            log.warning(
                "generated admin password (shown once; also stored in %s/admin_password): %s",
                settings.secrets_directory,
                secrets.generated_admin_password,
            )
        db = Database(settings.database_path, readers=settings.db_readers, pds_version=__version__,
                      wal_autocheckpoint=settings.sqlite_wal_autocheckpoint)
        await db.open()
        hasher = make_hasher()
        issuer = TokenIssuer(secrets.jwt_secret, settings.service_did)
        verifier = AuthVerifier(issuer, hasher, admin_password=secrets.admin_password,
                                admin_token_hash=settings.admin_token_hash, revocations=TokenCutoffs(db))
        # The bundled Lexicons, loaded once per app: the registry checks method inputs against
        # them, the repo service (ctx.registry.lexicons) checks records.
        registry = Registry(lexicons=method_lexicons())
        ctx = AppContext(settings=settings, secrets=secrets, db=db, registry=registry, issuer=issuer,
                         verifier=verifier, hasher=hasher, log=log, metrics=Metrics(settings.metrics_enabled))
        ctx.metrics.bind(ctx)
        # Revs and record keys must never go backwards, even across restarts with a slow clock.
        newest = await repos_store.newest_rev(db)
        if newest:
            ctx.tid_clock.observe(newest)
        for module in modules:
            registry.extend(getattr(module, "METHODS", ()))
        started: list[ModuleType] = []
        try:
            for module in modules:
                start = getattr(module, "start", None)
                if start is not None:
                    await start(ctx)
                started.append(module)
            state["ctx"] = ctx
            # What lives as long as the process (modules, the lexicons and their compiled checks)
            # leaves the cyclic collector's view, so full collections walk only what came later;
            # see also the thresholds in squall.cli (issue #21).
            gc.collect()
            gc.freeze()
            log.info("squall started", extra={"version": __version__, "hostname": settings.hostname,
                                               "did_method": settings.did_method, "methods": len(registry.nsids())})
            yield
        finally:
            log.info("squall stopping")
            for module in reversed(started):
                stop = getattr(module, "stop", None)
                if stop is not None:
                    try:
                        await stop(ctx)
                    except Exception:
                        log.exception("error while stopping %s", module.__name__)
            await db.close()

    app = SquallApp(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    # XRPC is called cross-origin by web clients; the reference opens CORS for every origin.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                       expose_headers=["*"], max_age=86400)

    fallback = None
    for module in modules:
        if getattr(module, "fallback", None) is not None:
            fallback = module.fallback

    app.add_middleware(RequestLog, log=log)

    @app.get("/xrpc/_health")
    async def health() -> Response:
        try:
            await get_ctx().db.check()
        except Exception as exc:
            log.error("health check failed: %s", exc)
            return JSONResponse({"version": __version__, "error": "Database unavailable"}, status_code=503)
        return JSONResponse({"version": __version__})

    @app.get("/xrpc/_admin/status")
    async def admin_status(request: Request) -> Response:
        ctx = get_ctx()
        try:
            await ctx.verifier.verify(Auth.ADMIN, request.headers.get("authorization"))
            return JSONResponse(await _admin_status(ctx))
        except XRPCError as err:
            return error_response(err)

    @app.get("/metrics")
    async def metrics() -> Response:
        ctx = get_ctx()
        if not ctx.metrics.enabled:
            return JSONResponse({"error": "NotFound", "message": "Metrics are off (PDS_METRICS_ENABLED=false)"},
                                status_code=404)
        await ctx.metrics.refresh()
        body, content_type = ctx.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def root() -> Response:
        body = (f"Squall {__version__}: an AT Protocol Personal Data Server.\n"
                "Most API routes are under /xrpc/\n")
        return Response(body, media_type="text/plain")

    @app.get("/robots.txt")
    async def robots() -> Response:
        return Response("User-agent: *\nAllow: /\n", media_type="text/plain")

    for module in modules:
        add_routes = getattr(module, "routes", None)
        if add_routes is not None:
            add_routes(app, get_ctx)

    # A plain ASGI endpoint, not a FastAPI route: FastAPI's parameter and dependency machinery
    # cost more than the dispatcher itself on a small call (issue #21); the registry decides.
    # It is tried first (a linear scan of ~50 routes cost ~10 % of a small call) but yields the
    # paths and methods another route serves (/xrpc/_health, the _admin routes, …), so what answers
    # a request is what answered before.
    claimed: set[tuple[str, str]] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.path.startswith("/xrpc/"):
            for verb in route.methods or XrpcRoute.METHODS:
                claimed.add((route.path, verb))
    app.xrpc_route = XrpcRoute(XrpcEndpoint(get_ctx, fallback, log), frozenset(claimed))
    app.router.routes.insert(0, app.xrpc_route)
    return app


class SquallApp(FastAPI):
    """FastAPI, with ``/xrpc/{nsid}`` calls taken straight to their endpoint through the app's own
    middleware (DPoP facts, request log, CORS — the same classes, in the same order) but not through
    FastAPI's outer layers (error page, telemetry, body limit, exception handlers, exit stack,
    router): ten ASGI layers cost a small call ~15 % of its time (issue #21). What they add does
    not apply to XRPC: ``RequestLog`` answers an unhandled error with the XRPC 500 envelope, the
    dispatcher caps bodies itself, and no XRPC handler raises Starlette's HTTPException. Whether a
    request is an XRPC call is ``XrpcRoute.matches`` — the router's own answer."""

    xrpc_route: "XrpcRoute | None" = None
    _xrpc_stack: Any = None

    async def __call__(self, scope, receive, send) -> None:
        route = self.xrpc_route
        if route is not None and scope["type"] == "http":
            match, child = route.matches(scope)
            if match is Match.FULL:
                stack = self._xrpc_stack
                if stack is None:  # built on first use, like Starlette's stack: middleware is final
                    stack = route.endpoint
                    for middleware in reversed(self.user_middleware):
                        cls, args, kwargs = middleware
                        stack = cls(stack, *args, **kwargs)
                    self._xrpc_stack = stack
                scope["app"] = self
                scope.update(child)
                await stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class XrpcRoute(Route):
    """``/xrpc/{nsid}`` (HTTP only) with a matcher that is a prefix test and a set lookup."""

    METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")

    def __init__(self, endpoint: "XrpcEndpoint", claimed: frozenset[tuple[str, str]]):
        super().__init__("/xrpc/{nsid}", endpoint, methods=list(self.METHODS))
        self.claimed = claimed

    def matches(self, scope) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path = get_route_path(scope) if scope.get("root_path") else scope["path"]
        if not path.startswith("/xrpc/") or (path, scope["method"]) in self.claimed:
            return Match.NONE, {}
        nsid = path[6:]
        if not nsid or "/" in nsid:
            return Match.NONE, {}
        child = {"endpoint": self.endpoint, "path_params": {**scope.get("path_params", {}), "nsid": nsid}}
        if scope["method"] not in self.methods:
            return Match.PARTIAL, child
        return Match.FULL, child


class XrpcEndpoint:
    """ASGI app for ``/xrpc/{nsid}``: the dispatcher, the error envelope and the metrics."""

    def __init__(self, get_ctx, fallback, log: logging.Logger):
        self.get_ctx = get_ctx
        self.fallback = fallback
        self.log = log

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive, send)
        nsid = scope["path_params"]["nsid"]
        ctx = self.get_ctx()
        started = time.perf_counter()
        err: XRPCError | None = None
        try:
            response = await dispatch(ctx, request, nsid, self.fallback)
        except XRPCError as exc:
            err, response = exc, error_response(exc)
        except ClientDisconnect:
            raise  # RequestLog logs it as one line: the client went away, nothing failed here
        except RecursionError:  # hostile nesting that some decoder let through: the input's fault
            self.log.info("input nested too deeply", extra={"nsid": nsid})
            response = error_response(InvalidRequest("Input is nested too deeply"))
        except Exception:
            self.log.exception("unhandled error in XRPC method", extra={"nsid": nsid})
            response = error_response(InternalServerError())
        ctx.metrics.observe_xrpc(ctx, nsid, response.status_code, time.perf_counter() - started,
                                 rate_limited=isinstance(err, RateLimitExceeded))
        await response(scope, receive, send)


class RequestLog:
    """Plain ASGI middleware: one log line per HTTP request (method, path, status, duration).

    Not Starlette's ``@app.middleware("http")``: that wrapper ends a streamed response normally
    even when its body fails halfway, so a client would take a truncated CAR or blob for a whole
    one. Here an error before the response starts becomes a 500 envelope; an error after it has
    started propagates, and the server aborts the connection.
    """

    def __init__(self, app, log: logging.Logger):
        self.app = app
        self.log = log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, int] = {}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        path = scope.get("path", "")
        disconnected = False
        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            # The client closed the connection before its request body had arrived: nothing to
            # answer and nothing wrong here, so no traceback (anyone could fill the log with them).
            disconnected = True
        except Exception:
            self.log.exception("unhandled error", extra={"path": path})
            if "code" in status:
                raise
            status["code"] = 500
            await error_response(InternalServerError())(scope, receive, send)
        finally:
            if path != "/xrpc/_health":
                extra = {"client_disconnected": True} if disconnected else {}
                self.log.info("request", extra={"method": scope.get("method"), "path": path,
                                                "status": status.get("code"), **extra,
                                                "ms": round((time.perf_counter() - started) * 1000, 2)})


async def _admin_status(ctx: AppContext) -> dict[str, Any]:
    db = ctx.db
    total, active = await accounts_store.count_accounts(db)
    blob_count, blob_bytes = await blobs_store.blob_totals(db)
    seq = await sequencer_store.max_seq(db)
    status: dict[str, Any] = {
        "version": __version__,
        "uptimeSeconds": round(time.time() - ctx.started_at, 1),
        "hostname": ctx.settings.hostname,
        "serviceDid": ctx.settings.service_did,
        "didMethod": ctx.settings.did_method,
        "accounts": {"total": total, "active": active},
        "database": {"bytes": db.size_bytes(), "schemaVersion": db.schema_version},
        "blobs": {"count": blob_count, "bytes": blob_bytes},
        "firehose": {"seq": seq},
        "backup": _backup_status(ctx.settings.data_directory),
        "mail": await ctx.mail.status(),
        "relays": (await ctx.relays.status()).to_json() if ctx.relays is not None else None,
    }
    return status


def _backup_status(data_dir: Path) -> Any:
    path = data_dir / "backups" / "status.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable backup status: {exc}"}
