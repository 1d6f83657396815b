"""Prometheus metrics: ``ctx.metrics``, served at ``/metrics`` when ``PDS_METRICS_ENABLED=true``.

One :class:`Metrics` per app, with its own ``CollectorRegistry`` (no module-global registry, so
two apps in one process — the tests — never share counters). The hot paths call one method each
(``observe_xrpc``, ``observe_write``, ``outbound`` …); when metrics are off those methods return at
once and ``prometheus_client`` is never imported.

Two kinds of values:
- counted as they happen: XRPC calls and durations, repo writes, commits, block bytes, SQLite
  transaction durations, rate-limit refusals, outbound requests;
- read at scrape time (``collect``): firehose subscribers and the counters the firehose and blob
  services keep themselves, accounts by status, database/WAL/blob sizes (store readers, cached for
  ``CACHE_SECONDS``), the relay monitor's stored status (``squall_relay_*``), the backup sidecar's
  ``status.json`` (snapshots, the last restore drill, replication), and the process collector (RSS,
  CPU, fds).

Label sets are bounded: an NSID label is a registered method's NSID or ``unknown``; statuses are
HTTP codes; actions, targets and outcomes are closed sets; a relay label is one of the configured
relays (``PDS_CRAWLERS``, ``PDS_RELAY_MONITOR_URLS``), relay and account states are the monitor's
``HOST_STATES`` / ``ACCOUNT_STATES``, replication states and drill checks the sidecar's closed sets.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from .context import AppContext

CACHE_SECONDS = 5.0
UNKNOWN = "unknown"
ACTIONS = ("create", "update", "delete")
OUTBOUND_TARGETS = ("identity", "proxy", "crawler")  # identity: PLC directory, did:web, handle lookups
# The backup sidecar's closed sets (squall_backup.replicate states, squall_backup.drill check names):
# anything else in status.json is not turned into a label.
REPLICATION_STATES = ("starting", "waiting", "running", "restarting", "failing", "stopped")
DRILL_CHECKS = ("restore", "integrity", "boot", "health", "describe_server", "repos", "blobs", "logins", "firehose")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def outcome_of_status(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


class Metrics:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._cache: tuple[float, dict[str, Any]] | None = None
        if not enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.xrpc_requests = Counter("squall_xrpc_requests", "XRPC calls by method and HTTP status",
                                     ("nsid", "status"), registry=r)
        self.xrpc_seconds = Histogram("squall_xrpc_request_duration_seconds", "XRPC call duration by method",
                                      ("nsid",), buckets=_LATENCY_BUCKETS, registry=r)
        self.repo_writes = Counter("squall_repo_writes", "Record writes applied, by action", ("action",), registry=r)
        self.repo_write_seconds = Histogram("squall_repo_write_duration_seconds",
                                            "Duration of one repo write transaction (build, sign, store a commit)",
                                            buckets=_LATENCY_BUCKETS, registry=r)
        self.commits = Counter("squall_repo_commits", "Repo commits stored", registry=r)
        self.block_bytes = Counter("squall_repo_block_bytes_written", "Bytes of new repo blocks stored",
                                   registry=r)
        self.db_seconds = Histogram("squall_db_transaction_duration_seconds",
                                    "SQLite transaction (write) and reader checkout (read) duration", ("kind",),
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.rate_limited = Counter("squall_rate_limited_requests", "Requests refused by a rate limit, by method",
                                    ("nsid",), registry=r)
        self.outbound_requests = Counter("squall_outbound_requests",
                                         "Outbound HTTP requests by target and outcome",
                                         ("target", "outcome"), registry=r)
        for action in ACTIONS:
            self.repo_writes.labels(action)
        self.db_seconds.labels("write")
        self.db_seconds.labels("read")
        self._ctx: AppContext | None = None
        self._snapshot: dict[str, Any] = {}

    # -- wiring ---------------------------------------------------------------------------------------

    def bind(self, ctx: "AppContext") -> None:
        """Attach the scrape-time collector (it reads the services and the database through ctx)."""
        if not self.enabled:
            return
        self._ctx = ctx
        ctx.db.on_transaction = self.db_seconds.labels("write").observe
        ctx.db.on_read = self.db_seconds.labels("read").observe
        self.registry.register(_ScrapeCollector(self))

    # -- counted as they happen -------------------------------------------------------------------------

    def observe_xrpc(self, ctx: "AppContext", nsid: str, status: int, seconds: float, *, rate_limited: bool) -> None:
        if not self.enabled:
            return
        label = nsid if ctx.registry.get(nsid) is not None else UNKNOWN
        self.xrpc_requests.labels(label, str(status)).inc()
        self.xrpc_seconds.labels(label).observe(seconds)
        if rate_limited:
            self.rate_limited.labels(label).inc()

    def observe_rate_limited(self, where: str) -> None:
        """A refusal outside the XRPC dispatcher (the OAuth form, the admin dashboard's sign-in)."""
        if self.enabled:
            self.rate_limited.labels(where).inc()

    def observe_write(self, writes: Iterable[Any], seconds: float, *, committed: bool, block_bytes: int) -> None:
        if not self.enabled:
            return
        self.repo_write_seconds.observe(seconds)
        if not committed:
            return
        self.commits.inc()
        self.block_bytes.inc(block_bytes)
        for write in writes:
            action = write.action if write.action in ACTIONS else "update"
            self.repo_writes.labels(action).inc()

    def outbound(self, target: str) -> Callable[[str], None] | None:
        """A hook for ``squall.net.make_client(observe=…)``: counts each request's outcome."""
        if not self.enabled:
            return None
        assert target in OUTBOUND_TARGETS
        counter = self.outbound_requests

        def observe(outcome: str) -> None:
            counter.labels(target, outcome).inc()

        return observe

    # -- scrape time ------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read what needs the database (cached a few seconds), before the registry is rendered."""
        ctx = self._ctx
        if ctx is None:
            return
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < CACHE_SECONDS:
            self._snapshot = self._cache[1]
            return
        from .store import accounts, blobs

        snap: dict[str, Any] = {
            "accounts": await accounts.obs_count_by_status(ctx.db),
            "blobs": await blobs.obs_totals(ctx.db),
            "sizes": file_sizes(ctx.settings.database_path),
            "backup": read_backup_status(ctx.settings.data_directory),
            "relays": await ctx.relays.status() if getattr(ctx, "relays", None) is not None else None,
        }
        self._cache = (now, snap)
        self._snapshot = snap

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def file_sizes(database: Path) -> dict[str, int]:
    out = {}
    for key, suffix in (("database", ""), ("wal", "-wal"), ("shm", "-shm")):
        try:
            out[key] = Path(str(database) + suffix).stat().st_size
        except OSError:
            out[key] = 0
    return out


def read_backup_status(data_dir: Path) -> dict[str, Any] | None:
    """The backup sidecar's ``<data>/backups/status.json`` (None when absent or unreadable)."""
    try:
        data = json.loads((data_dir / "backups" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _ScrapeCollector:
    """Families whose values are read when Prometheus scrapes (the snapshot ``refresh`` made)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list:
        return []  # values come from collect(); nothing to check at registration

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ctx = self.m._ctx
        snap = self.m._snapshot
        if ctx is None:
            return
        fh = getattr(ctx, "firehose", None)
        if fh is not None:
            yield GaugeMetricFamily("squall_firehose_subscribers", "Open subscribeRepos connections",
                                    value=len(fh.connections))
            yield GaugeMetricFamily("squall_firehose_seq", "Highest firehose seq offered to subscribers",
                                    value=fh.last_seq)
            yield CounterMetricFamily("squall_firehose_events_sent", "Firehose frames sent to subscribers",
                                      value=fh.events_sent)
            yield CounterMetricFamily("squall_firehose_replay_events", "Frames sent while replaying from a cursor",
                                      value=fh.events_replayed)
            yield CounterMetricFamily("squall_firehose_slow_consumer_drops",
                                      "Subscribers cut off with ConsumerTooSlow", value=fh.slow_drops)
        blobs = getattr(ctx, "blobs", None)
        if blobs is not None:
            yield CounterMetricFamily("squall_blob_uploads", "Blob uploads stored", value=blobs.uploads)
            yield CounterMetricFamily("squall_blob_upload_bytes", "Bytes of blob uploads stored",
                                      value=blobs.upload_bytes)
        yield GaugeMetricFamily("squall_db_writer_queue_depth", "Transactions waiting for or on the writer thread",
                                value=ctx.db.pending_writes)
        accounts = snap.get("accounts")
        if accounts is not None:
            g = GaugeMetricFamily("squall_accounts", "Accounts by hosting status", labels=("status",))
            for status, n in sorted(accounts.items()):
                g.add_metric((status,), n)
            yield g
        sizes = snap.get("sizes")
        if sizes is not None:
            yield GaugeMetricFamily("squall_database_bytes", "Size of pds.sqlite", value=sizes["database"])
            yield GaugeMetricFamily("squall_database_wal_bytes", "Size of pds.sqlite-wal", value=sizes["wal"])
        totals = snap.get("blobs")
        if totals is not None:
            yield GaugeMetricFamily("squall_blob_store_bytes", "Bytes of all stored blobs", value=totals["bytes"])
            yield GaugeMetricFamily("squall_blob_store_blobs", "Number of stored blobs", value=totals["count"])
        backup = snap.get("backup")
        if backup is not None:
            success = backup.get("last_success") or {}
            failure = backup.get("last_failure") or {}
            for name, doc, value in (
                ("squall_backup_last_success_timestamp_seconds", "When the last good backup finished",
                 parse_time(success.get("finished_at"))),
                ("squall_backup_last_failure_timestamp_seconds", "When the last backup failed",
                 parse_time(failure.get("at"))),
                ("squall_backup_last_duration_seconds", "Duration of the last good backup",
                 success.get("duration_seconds")),
                ("squall_backup_last_size_bytes", "Archive size of the last good backup",
                 success.get("archive_bytes")),
                ("squall_backup_consecutive_failures", "Failed backup runs since the last good one",
                 backup.get("consecutive_failures")),
            ):
                if isinstance(value, (int, float)):
                    yield GaugeMetricFamily(name, doc, value=value)
            yield from _backup_health_families(backup)
        relays = snap.get("relays")
        if relays is not None:
            yield from _relay_families(relays)


def _gauge(name: str, doc: str, labels: tuple[str, ...], rows: Iterable[tuple[tuple[str, ...], Any]]):
    from prometheus_client.core import GaugeMetricFamily

    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            g.add_metric(values, value)
        elif isinstance(value, bool):
            g.add_metric(values, int(value))
    return g


def _backup_health_families(backup: dict[str, Any]):
    """The last restore drill, health and replication from status.json (issue #16)."""
    from prometheus_client.core import GaugeMetricFamily

    if isinstance(backup.get("healthy"), bool):
        yield GaugeMetricFamily("squall_backup_healthy", "1 when backups are healthy (last run, last drill and "
                                "replication all fine), else 0", value=int(backup["healthy"]))
    drill = backup.get("last_drill")
    if isinstance(drill, dict) and isinstance(drill.get("ok"), bool):
        at = parse_time(drill.get("finished_at") or drill.get("at"))
        if at is not None:
            name, doc = (("squall_backup_drill_last_success_timestamp_seconds", "When the last restore drill passed")
                         if drill["ok"] else
                         ("squall_backup_drill_last_failure_timestamp_seconds", "When the last restore drill failed"))
            yield GaugeMetricFamily(name, doc, value=at)
        yield GaugeMetricFamily("squall_backup_drill_last_ok", "1 when the last restore drill passed, else 0",
                                value=int(drill["ok"]))
        if isinstance(drill.get("duration_seconds"), (int, float)):
            yield GaugeMetricFamily("squall_backup_drill_duration_seconds", "Duration of the last restore drill",
                                    value=drill["duration_seconds"])
        checks = [c for c in drill.get("checks") or [] if isinstance(c, dict) and c.get("name") in DRILL_CHECKS]
        doc = "of the last restore drill, per check"
        yield _gauge("squall_backup_drill_check_ok", f"1 when the check passed, {doc}", ("check",),
                     (((c["name"],), bool(c.get("ok"))) for c in checks))
        yield _gauge("squall_backup_drill_check_seconds", f"Seconds taken {doc}", ("check",),
                     (((c["name"],), c.get("seconds")) for c in checks))
        yield _gauge("squall_backup_drill_check_count", f"Items checked {doc}", ("check",),
                     (((c["name"],), c.get("count")) for c in checks))
        yield _gauge("squall_backup_drill_check_faults", f"Faults found {doc}", ("check",),
                     (((c["name"],), c.get("fault_count")) for c in checks))
    rep = backup.get("replication")
    if isinstance(rep, dict) and rep.get("enabled"):
        yield _gauge("squall_backup_replication_state", "Litestream replication state (1 for the current one)",
                     ("state",), (((s,), int(rep.get("state") == s)) for s in REPLICATION_STATES))
        if isinstance(rep.get("lag_seconds"), (int, float)):
            yield GaugeMetricFamily("squall_backup_replication_lag_seconds",
                                    "Age of the oldest transaction the replica lacks (0: it has everything)",
                                    value=rep["lag_seconds"])
        if isinstance(rep.get("restarts"), int):
            yield GaugeMetricFamily("squall_backup_replication_restarts", "Litestream restarts since the daemon started",
                                    value=rep["restarts"])
        yield GaugeMetricFamily("squall_backup_replication_encrypted", "1 when the replica is encrypted, else 0",
                                value=int(bool(rep.get("encrypted"))))


def _relay_families(status: Any):
    """The relay monitor's stored status (issue #15): one labelled row per configured relay."""
    from .relays.model import ACCOUNT_STATES, HOST_STATES

    relays = status.relays
    yield _gauge("squall_relay_status", "The relay monitor's status of this host on each relay (1 for the current one)",
                 ("relay", "status"), (((r.url, s), int(r.status == s)) for r in relays for s in HOST_STATES))
    yield _gauge("squall_relay_their_seq", "The seq of ours the relay reported at the last check", ("relay",),
                 (((r.url,), r.their_seq) for r in relays))
    yield _gauge("squall_relay_our_seq", "Our seq at the relay's last check", ("relay",),
                 (((r.url,), r.our_seq) for r in relays))
    yield _gauge("squall_relay_lag_events", "Our seq minus the relay's at the last check", ("relay",),
                 (((r.url,), r.lag) for r in relays))
    yield _gauge("squall_relay_account_count", "Accounts of this host the relay reports", ("relay",),
                 (((r.url,), r.account_count) for r in relays))
    yield _gauge("squall_relay_account_limit", "The relay's per-host account limit (PDS_RELAY_MONITOR_ACCOUNT_LIMIT)",
                 ("relay",), (((r.url,), r.account_limit) for r in relays))
    yield _gauge("squall_relay_clock_skew_seconds", "The relay's Date header minus our clock at the last check",
                 ("relay",), (((r.url,), None if r.clock_skew_ms is None else r.clock_skew_ms / 1000) for r in relays))
    yield _gauge("squall_relay_last_check_timestamp_seconds", "When the relay was last checked", ("relay",),
                 (((r.url,), r.last_checked) for r in relays))
    yield _gauge("squall_relay_accounts", "Local accounts by what the relay reports of them", ("relay", "status"),
                 (((r.url, s), r.accounts.get(s, 0)) for r in relays for s in ACCOUNT_STATES))
    yield _gauge("squall_relay_self_check_ok", "1 when the self-check (our public URL as a relay reaches it) passed",
                 ("check",), (((c.name,), c.ok) for c in status.self_checks if c.name in ("describeServer",
                                                                                          "subscribeRepos")))
