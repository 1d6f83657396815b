"""The relay monitor: does the network see this PDS? (issue #15)

For every relay in ``PDS_CRAWLERS`` and ``PDS_RELAY_MONITOR_URLS`` a background task checks, at
start and then every ``PDS_RELAY_MONITOR_INTERVAL`` seconds:

* the host (``com.atproto.sync.getHostStatus?hostname=<ours>``): unknown → requestCrawl (at
  most hourly); the relay's seq ahead of ours → "our sequence went backwards" (the operator's
  :meth:`RelayMonitor.advance_sequence` fixes it); idle/offline → requestCrawl; lag growing over
  three checks → "relay is behind", with our event rate beside the relay's published limits;
  accountCount near the relay's account limit → warning; banned → shown;
* a rolling, bounded pass over the local accounts (``getRepoStatus``), plus each account a
  short while after it changed (creation, activation, handle change, import: the ``#identity``,
  ``#account`` and ``#sync`` events the monitor is poked about): unknown → re-announce
  (``#identity``, ``#sync``, ``#account``); relay inactive but active here (or the reverse) →
  ``#account``; relay rev behind ours for ``desync_seconds`` while the host lag is ~0 →
  "commits dropped", re-announce; relay rev ahead of ours → alarm (our repo was rolled back);
* and, once per interval, the self-checks: ``describeServer`` and ``subscribeRepos`` reachable at
  our public URL; the clock skew against each relay's ``Date`` header comes with the host check.

Results go to the database (``squall.store.relays``), so a restart keeps the history. All of it runs
off the request path; a relay's errors and timeouts only change its row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import httpx

from ..accounts import events
from ..accounts.repo_init import current_commit
from ..config import parse_event_limits
from ..errors import InvalidRequest, NotFound, UpstreamFailure
from ..store import accounts as accounts_store
from ..store import relays as store
from ..store import repos as repos_store
from ..store import sequencer
from ..store.accounts import get_by_did_sync
from ..store.db import Database
from .client import RelayClient, RelayUnreachable
from .model import (AccountView, ActionView, LagPoint, RateWindow, RelaysStatus, RelayView, SelfCheck)
from .options import RelayMonitorOptions

LAG_GROWTH_CHECKS = 3  # "lag growing over 3 checks"
NEAR_LIMIT = 0.9  # accountCount at this share of the relay's limit is worth a warning
LAG_HISTORY_SHOWN = 20
_CRAWL_AGAIN = ("unknown", "idle", "offline")
_ACCOUNTS_CHECKED = ("ok", "behind", "throttled", "idle", "offline")


class RelayMonitor:
    def __init__(self, db: Database, settings: Any, log: logging.Logger, *, options: RelayMonitorOptions,
                 client: httpx.AsyncClient, notify_firehose: Callable[[], Any],
                 ws_probe: Callable[[str, float], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.log = log
        self.options = options
        self.hostname: str = settings.hostname
        self.public_url: str = settings.public_url.rstrip("/")
        self.interval: float = float(settings.relay_monitor_interval)
        self.account_limit: int = int(settings.relay_monitor_account_limit)
        self.event_limits = parse_event_limits(settings.relay_monitor_event_limits)
        relays: list[str] = []
        for url in [*settings.crawlers, *settings.relay_monitor_urls]:
            url = url.rstrip("/")
            if url not in relays:
                relays.append(url)
        self.relays = relays
        self._http = client
        self._clients = {url: RelayClient(url, client, min_gap=options.min_request_gap,
                                          timeout=options.request_timeout) for url in relays}
        self._notify_firehose = notify_firehose
        self._ws_probe = ws_probe or _websocket_probe
        self._due: dict[str, dict[str, float]] = {url: {} for url in relays}  # relay → did → monotonic due
        self._wake: dict[str, asyncio.Event] = {url: asyncio.Event() for url in relays}
        self._cursor: dict[str, tuple[str, str] | None] = {url: None for url in relays}  # rolling pass
        self._poked = asyncio.Event()
        self._event_cursor = 0
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.db.write(store.forget_relays_except, self.relays)
        if not self.relays:
            return
        self._event_cursor = await sequencer.current_seq(self.db)
        self._tasks = [asyncio.create_task(self._relay_loop(url), name=f"relay-monitor {url}")
                       for url in self.relays]
        self._tasks.append(asyncio.create_task(self._events_loop(), name="relay-monitor-events"))
        self._tasks.append(asyncio.create_task(self._self_check_loop(), name="relay-monitor-self-checks"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._http.aclose()

    def poke(self) -> None:
        """An account event was sequenced (creation, activation, handle change, import…): the
        accounts it concerns are checked on every relay after ``recheck_delay``. Never blocks."""
        self._poked.set()

    def schedule_account(self, did: str, delay: float | None = None) -> None:
        due = time.monotonic() + (self.options.recheck_delay if delay is None else delay)
        for url in self.relays:
            pending = self._due[url]
            pending[did] = min(pending.get(did, due), due)
            self._wake[url].set()

    # -- loops -------------------------------------------------------------------------------------

    async def _relay_loop(self, relay: str) -> None:
        next_cycle = 0.0
        wake = self._wake[relay]
        while True:
            wake.clear()
            if time.monotonic() >= next_cycle:
                await self._guard(self.check_relay(relay), relay)
                next_cycle = time.monotonic() + self.interval
            now = time.monotonic()
            pending = self._due[relay]
            for did in [d for d, at in pending.items() if at <= now]:
                pending.pop(did, None)
                await self._guard(self.check_account(relay, did), relay)
            next_due = min(pending.values(), default=next_cycle)
            timeout = max(0.05, min(next_cycle, next_due) - time.monotonic())
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _events_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._poked.wait(), 30.0)  # a poll too: events from elsewhere
            except TimeoutError:
                pass
            self._poked.clear()
            try:
                while True:
                    rows = await sequencer.account_events_after(self.db, self._event_cursor, 500)
                    for did in dict.fromkeys(row["did"] for row in rows):
                        self.schedule_account(did)
                    if rows:
                        self._event_cursor = rows[-1]["seq"]
                    if len(rows) < 500:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("relay monitor: reading account events failed", extra={"error": _text(exc)})

    async def _self_check_loop(self) -> None:
        # start() runs before the server listens: the first look at our public URL waits a little.
        await asyncio.sleep(min(self.interval, 5.0))
        while True:
            await self._guard(self.run_self_checks(), None)
            await asyncio.sleep(self.interval)

    async def _guard(self, work: Awaitable[Any], relay: str | None) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error("relay monitor: check failed", extra={"relay": relay, "error": _text(exc)})

    # -- the host check ----------------------------------------------------------------------------

    async def check_relay(self, relay: str, *, accounts: bool = True) -> RelayView:
        """Check the host on ``relay`` (and, when ``accounts``, the next accounts of the rolling
        pass); store the result; take the automatic actions. Returns the relay's row."""
        client = self._client(relay)
        now = time.time()
        previous = await store.get_host(self.db, relay)
        try:
            answer = await client.get_host_status(self.hostname)
        except RelayUnreachable as exc:
            error = str(exc)  # bound here: the writer runs the lambda on its own thread
            await self.db.write(lambda c: store.save_host(
                c, relay, checked_at=now, status="unreachable", message=f"relay unreachable: {error}", host_status=None,
                their_seq=None, our_seq=None, account_count=None, clock_skew_ms=None, last_error=error,
                warnings=[]))
            self.log.warning("relay monitor: relay unreachable", extra={"relay": relay, "error": error})
            return await self.relay_view(relay)
        our_seq = await sequencer.current_seq(self.db)  # read after the answer: never behind theirs by a race
        warnings: list[str] = []
        if answer.clock_skew_ms is not None and abs(answer.clock_skew_ms) > self.options.skew_warn_seconds * 1000:
            warnings.append(f"clock skew: the relay's clock is {answer.clock_skew_ms / 1000:+.1f}s from ours; "
                            "check NTP on this host")
        their_seq = answer.seq if answer.found else None
        if not answer.found:
            status, message = "unknown", "relay doesn't know us"
        elif their_seq is not None and their_seq > our_seq:
            status = "seq_ahead"
            message = (f"our sequence went backwards: the relay has seen seq {their_seq}, ours is {our_seq}; "
                       "advance our sequence past it (operator action) so new events are not ignored")
        elif answer.status == "banned":
            status, message = "banned", "the relay has banned this host"
        elif answer.status in ("idle", "offline"):
            status, message = answer.status, f"the relay marks this host {answer.status}"
        elif answer.status == "throttled":
            status, message = "throttled", f"the relay throttles this host; {await self._rate_text()}"
        elif their_seq is not None and await self._lag_growing(relay, our_seq - their_seq):
            status = "behind"
            message = f"relay is behind: lag {our_seq - their_seq} events and growing; {await self._rate_text()}"
        else:
            status, message = "ok", None
            if answer.status not in (None, "active"):
                warnings.append(f"the relay reports the unknown host status {answer.status!r}")
        if answer.found and answer.account_count is not None:
            if answer.account_count >= self.account_limit:
                warnings.append(f"the relay counts {answer.account_count} accounts on this host, at its limit of "
                                f"{self.account_limit}: new accounts will not be relayed")
            elif answer.account_count >= NEAR_LIMIT * self.account_limit:
                warnings.append(f"the relay counts {answer.account_count} accounts on this host, near its limit "
                                f"of {self.account_limit}")
        await self.db.write(lambda c: store.save_host(
            c, relay, checked_at=now, status=status, message=message, host_status=answer.status if answer.found else None,
            their_seq=their_seq, our_seq=our_seq if answer.found else None,
            account_count=answer.account_count if answer.found else None, clock_skew_ms=answer.clock_skew_ms,
            last_error=None, warnings=warnings))
        if status != (previous["status"] if previous is not None else None):
            log = self.log.info if status == "ok" else self.log.warning
            log("relay monitor: host status", extra={"relay": relay, "status": status, "detail": message})
        if status in _CRAWL_AGAIN:
            last = previous["last_crawl_at"] if previous is not None else None
            if last is None or now - last >= self.options.crawl_min_seconds:
                await self._crawl(relay, reason=message or status)
        if accounts and status in _ACCOUNTS_CHECKED:
            await self._account_pass(relay)
        return await self.relay_view(relay)

    async def _lag_growing(self, relay: str, lag: int) -> bool:
        history = await store.lag_history(self.db, relay, LAG_GROWTH_CHECKS - 1)
        lags = [max(0, r["our_seq"] - r["their_seq"]) for r in history] + [lag]
        if len(lags) < LAG_GROWTH_CHECKS or lag <= self.options.caught_up_lag:
            return False
        return all(a < b for a, b in zip(lags, lags[1:]))

    async def event_rate(self) -> list[RateWindow]:
        """Our events in each window the relays publish a per-host limit for."""
        now = datetime.now(timezone.utc)
        out = []
        for window, limit in sorted(self.event_limits.items()):
            since = (now - timedelta(seconds=window)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            out.append(RateWindow(window, await sequencer.count_events_since(self.db, since), limit))
        return out

    async def _rate_text(self) -> str:
        parts = [f"{r.events}/{r.limit} in {_window(r.window_seconds)}" for r in await self.event_rate()]
        return "our events vs the relay's per-host limits: " + ", ".join(parts)

    async def _crawl(self, relay: str, *, reason: str) -> tuple[bool, str]:
        answer = await self._client(relay).request_crawl(self.hostname)
        at = time.time()

        def record(conn: Any) -> None:
            store.set_crawl_requested(conn, relay, at)
            store.record_action(conn, at=at, relay=relay, did=None, action="requestCrawl", reason=reason,
                                result="ok" if answer.ok else f"failed: {answer.detail}")

        await self.db.write(record)
        self.log.info("relay monitor: crawl requested", extra={"relay": relay, "ok": answer.ok, "detail": answer.detail})
        return answer.ok, answer.detail

    # -- the account check -------------------------------------------------------------------------

    async def _account_pass(self, relay: str) -> None:
        rows = await repos_store.list_repos(self.db, self.options.accounts_per_cycle, self._cursor[relay])
        self._cursor[relay] = (rows[-1]["created_at"], rows[-1]["did"]) if len(rows) == self.options.accounts_per_cycle \
            else None  # wrap around
        for row in rows:
            await self.check_account(relay, row["did"])

    async def check_account(self, relay: str, did: str) -> AccountView | None:
        """Compare ``relay``'s view of a local account with ours; store it; take the automatic
        action. None when the account is not (or no longer) here."""
        account = await accounts_store.get_by_did(self.db, did)
        if account is None:
            return None
        root = await repos_store.get_root(self.db, did)
        our_rev = root.rev if root is not None else None
        now = time.time()
        prev = await store.get_account_view(self.db, relay, did)
        try:
            answer = await self._client(relay).get_repo_status(did)
        except RelayUnreachable as exc:
            error = str(exc)
            await self.db.write(lambda c: store.save_account_view(
                c, relay, did, status="unreachable", message=error, their_active=None, their_status=None,
                their_rev=None, our_rev=our_rev, checked_at=now, behind_since=prev["behind_since"] if prev else None))
            return await self._account_view(relay, did)
        behind_since = None
        action: str | None = None
        if not answer.found:
            if account.active:
                status, message, action = "unknown", "relay doesn't know this account", "reannounce"
            else:
                status, message = "not_hosted", None
        elif answer.rev is not None and our_rev is not None and answer.rev > our_rev:
            status = "rolled_back"
            message = f"the relay has rev {answer.rev}, newer than ours ({our_rev}): our repo was rolled back"
        elif answer.status == "throttled":
            status, message = "throttled", "the relay throttles this account"
        elif answer.active != account.active:
            status = "status_mismatch"
            message = (f"the relay says {'active' if answer.active else 'inactive'}"
                       f"{' (' + answer.status + ')' if answer.status else ''}, "
                       f"here it is {'active' if account.active else account.status}")
            action = "emitAccount"
        elif account.active and our_rev is not None and (answer.rev is None or answer.rev < our_rev):
            behind_since = prev["behind_since"] if prev is not None and prev["behind_since"] is not None else now
            if now - behind_since >= self.options.desync_seconds and await self._host_caught_up(relay):
                status, action = "commits_dropped", "reannounce"
                message = (f"commits dropped: the relay has rev {answer.rev}, ours is {our_rev}, for "
                           f"{now - behind_since:.0f}s while it is caught up on the host")
            else:
                status, message = "behind", f"the relay has rev {answer.rev}, ours is {our_rev}"
        else:
            status, message = "ok", None
        await self.db.write(lambda c: store.save_account_view(
            c, relay, did, status=status, message=message, their_active=answer.active, their_status=answer.status,
            their_rev=answer.rev, our_rev=our_rev, checked_at=now, behind_since=behind_since))
        if action is not None:
            last = await store.last_account_action_at(self.db, did, action)
            if last is None or now - last >= self.options.reannounce_min_seconds:
                if action == "reannounce":
                    await self.reannounce_account(did, reason=f"{relay}: {message}", relay=relay)
                else:
                    await self.emit_account(did, reason=f"{relay}: {message}", relay=relay)
        if (prev["status"] if prev is not None else None) != status and status != "ok":
            self.log.warning("relay monitor: account status", extra={"relay": relay, "did": did, "status": status,
                                                                       "detail": message})
        return await self._account_view(relay, did)

    async def _host_caught_up(self, relay: str) -> bool:
        host = await store.get_host(self.db, relay)
        if host is None or host["their_seq"] is None or host["our_seq"] is None:
            return False
        return host["our_seq"] - host["their_seq"] <= self.options.caught_up_lag

    # -- operator actions (also taken automatically, rate-limited) ---------------------------------

    async def request_crawl(self, relay: str | None = None) -> list[dict[str, Any]]:
        """Ask ``relay`` (every relay when None) to crawl us now; one result per relay."""
        out = []
        for url in self._targets(relay):
            ok, detail = await self._crawl(url, reason="operator request")
            out.append({"relay": url, "ok": ok, "detail": detail})
        return out

    async def reannounce_account(self, did: str, *, reason: str = "operator request",
                                 relay: str | None = None) -> dict[str, Any]:
        """Sequence ``#identity``, ``#sync`` (the current commit) and ``#account`` for a local
        account, so relays re-learn it; the account is re-checked after ``recheck_delay``."""
        at = time.time()

        def write(conn: Any) -> list[int]:
            account = get_by_did_sync(conn, did)
            if account is None:
                raise NotFound(f"no account {did} on this PDS", "AccountNotFound")
            stamp = sequencer.now_iso()
            seqs = [events.identity(conn, did, account.handle, stamp)]
            commit = current_commit(conn, did)
            if commit is not None:
                cid, block, rev = commit
                seqs.append(events.sync(conn, did, cid, block, rev, stamp))
            seqs.append(events.account(conn, did, account.status, stamp))
            store.record_action(conn, at=at, relay=relay, did=did, action="reannounce", reason=reason,
                                result=f"sequenced {', '.join(map(str, seqs))}")
            return seqs

        seqs = await self.db.write(write)
        self._wake_firehose()
        self.log.info("relay monitor: account re-announced", extra={"did": did, "reason": reason, "seqs": seqs})
        self.schedule_account(did)
        return {"did": did, "seqs": seqs}

    async def emit_account(self, did: str, *, reason: str = "operator request",
                           relay: str | None = None) -> dict[str, Any]:
        """Sequence ``#account`` with the account's status here."""
        at = time.time()

        def write(conn: Any) -> int:
            account = get_by_did_sync(conn, did)
            if account is None:
                raise NotFound(f"no account {did} on this PDS", "AccountNotFound")
            seq = events.account(conn, did, account.status, sequencer.now_iso())
            store.record_action(conn, at=at, relay=relay, did=did, action="emitAccount", reason=reason,
                                result=f"sequenced {seq}")
            return seq

        seq = await self.db.write(write)
        self._wake_firehose()
        self.schedule_account(did)
        return {"did": did, "seqs": [seq]}

    async def advance_sequence(self, relay: str, *, confirm: bool) -> dict[str, Any]:
        """Move our next seq past ``relay``'s (asked again now), then re-announce every active
        account and ask every relay to crawl. Without ``confirm`` only says what it would do."""
        url = self._target(relay)
        try:
            answer = await self._client(url).get_host_status(self.hostname)
        except RelayUnreachable as exc:
            raise UpstreamFailure(f"cannot ask {url} for its seq: {exc}") from None
        if not answer.found or answer.seq is None:
            raise InvalidRequest(f"{url} reports no seq for {self.hostname}: nothing to advance past")
        our_seq = await sequencer.current_seq(self.db)
        plan: dict[str, Any] = {"relay": url, "theirSeq": answer.seq, "ourSeq": our_seq,
                                "nextSeq": max(answer.seq, our_seq) + 1, "applied": False}
        if answer.seq <= our_seq:
            plan["message"] = f"our seq {our_seq} is not behind {url}'s ({answer.seq}): nothing to do"
            return plan
        if not confirm:
            plan["message"] = (f"would make our next seq {answer.seq + 1} (past {url}'s {answer.seq}), re-announce "
                               "every active account and request a crawl; repeat with confirm to apply")
            return plan
        dids = await self._active_dids()
        at = time.time()

        def write(conn: Any) -> tuple[int, list[int]]:
            floor = sequencer.advance_next_seq(conn, answer.seq)
            stamp = sequencer.now_iso()
            seqs = []
            for did in dids:
                account = get_by_did_sync(conn, did)
                if account is None or not account.active:
                    continue
                seqs.append(events.identity(conn, did, account.handle, stamp))
                commit = current_commit(conn, did)
                if commit is not None:
                    cid, block, rev = commit
                    seqs.append(events.sync(conn, did, cid, block, rev, stamp))
            store.record_action(conn, at=at, relay=url, did=None, action="advanceSequence",
                                reason=f"the relay had seq {answer.seq}, ours was {our_seq}",
                                result=f"next seq past {floor}; {len(seqs)} events re-announce {len(dids)} accounts")
            return floor, seqs

        floor, seqs = await self.db.write(write)
        self._wake_firehose()
        self.log.warning("relay monitor: sequence advanced", extra={"relay": url, "their_seq": answer.seq,
                                                                     "our_seq": our_seq, "floor": floor})
        crawls = await self.request_crawl(None)
        self._wake[url].set()
        plan.update({"applied": True, "firstSeq": seqs[0] if seqs else None, "events": len(seqs),
                     "accounts": len(dids), "crawls": crawls,
                     "message": f"our next seq is past {answer.seq}; {len(seqs)} events re-announce the accounts"})
        return plan

    async def check_now(self, relay: str | None = None, did: str | None = None) -> RelaysStatus:
        """Run the checks now (the host check and an account pass, or just ``did``) and return the status."""
        if did is not None and not await accounts_store.account_exists(self.db, did):
            raise NotFound(f"no account {did} on this PDS", "AccountNotFound")
        for url in self._targets(relay):
            if did is None:
                await self.check_relay(url)
            else:
                await self.check_account(url, did)
        return await self.status(include_accounts=True)

    async def run_self_checks(self) -> list[SelfCheck]:
        """describeServer and subscribeRepos at our public URL, as a relay reaches them."""
        timeout = self.options.request_timeout
        now = time.time()
        checks: list[tuple[str, bool, str]] = []
        url = f"{self.public_url}/xrpc/com.atproto.server.describeServer"
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.get(url, timeout=timeout)
            data = response.json() if response.status_code == 200 else None
            if isinstance(data, dict) and data.get("did") == self.settings.service_did:
                checks.append(("describeServer", True, f"{url} answers"))
            else:
                checks.append(("describeServer", False, f"{url}: HTTP {response.status_code}, not this server's "
                                                        "description"))
        except TimeoutError:
            checks.append(("describeServer", False, f"{url}: no answer within {timeout:g}s"))
        except (httpx.HTTPError, ValueError) as exc:
            checks.append(("describeServer", False, f"{url}: {_text(exc)}"))
        ws_url = self.public_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) \
            + "/xrpc/com.atproto.sync.subscribeRepos"
        if checks[0][1]:
            try:
                await self._ws_probe(ws_url, timeout)
                checks.append(("subscribeRepos", True, f"{ws_url} accepts WebSocket subscriptions"))
            except Exception as exc:
                checks.append(("subscribeRepos", False, f"{ws_url}: {_text(exc)}"))
        else:
            # Only our own host, and only once the guarded client has judged its address.
            checks.append(("subscribeRepos", False, "not tried: describeServer is not reachable at our public URL"))

        def save(conn: Any) -> None:
            for name, ok, detail in checks:
                store.save_self_check(conn, name, ok, detail, now)

        await self.db.write(save)
        for name, ok, detail in checks:
            if not ok:
                self.log.warning("relay monitor: self-check failed", extra={"check": name, "detail": detail})
        return [SelfCheck(name, ok, detail, now) for name, ok, detail in checks]

    # -- the status model ---------------------------------------------------------------------------

    async def status(self, *, include_accounts: bool = False, relay: str | None = None) -> RelaysStatus:
        """What the admin status, the CLI, the dashboard and the metrics show (see ``model``)."""
        relays = [await self.relay_view(url) for url in self._targets(relay)]
        accounts = None
        if include_accounts:
            accounts = [_account_from_row(r) for r in await store.list_account_views(self.db, relay=relay)]
        checks = [SelfCheck(r["name"], bool(r["ok"]), r["detail"], r["checked_at"])
                  for r in await store.list_self_checks(self.db)]
        actions = [_action_from_row(r) for r in await store.recent_actions(self.db, relay, 20)]
        return RelaysStatus(self.hostname, self.public_url, self.interval, relays, accounts, checks, actions)

    async def relay_view(self, relay: str) -> RelayView:
        row = await store.get_host(self.db, relay)
        history = [LagPoint(r["checked_at"], r["our_seq"], r["their_seq"])
                   for r in await store.lag_history(self.db, relay, LAG_HISTORY_SHOWN)]
        actions = [_action_from_row(r) for r in await store.recent_actions(self.db, relay, 10)]
        counts: dict[str, int] = {}
        for r in await store.list_account_views(self.db, relay=relay):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        rate = await self.event_rate()
        if row is None:
            return RelayView(relay, "pending", None, None, None, None, None, self.account_limit, None, None, None,
                             None, [], history, rate, actions, counts)
        return RelayView(relay, row["status"] if row["checked_at"] is not None else "pending", row["message"],
                         row["host_status"], row["their_seq"], row["our_seq"], row["account_count"],
                         self.account_limit, row["clock_skew_ms"], row["checked_at"], row["last_error"],
                         row["last_crawl_at"], json.loads(row["warnings"] or "[]"), history, rate, actions, counts)

    async def _account_view(self, relay: str, did: str) -> AccountView | None:
        rows = await store.list_account_views(self.db, relay=relay, did=did, limit=1)
        return _account_from_row(rows[0]) if rows else None

    # -- helpers -------------------------------------------------------------------------------------

    def _client(self, relay: str) -> RelayClient:
        return self._clients[self._target(relay)]

    def _target(self, relay: str) -> str:
        url = relay.rstrip("/")
        if url not in self._clients:
            raise InvalidRequest(f"{relay!r} is not a monitored relay (PDS_CRAWLERS, PDS_RELAY_MONITOR_URLS): "
                                 f"{', '.join(self.relays) or 'none configured'}")
        return url

    def _targets(self, relay: str | None) -> list[str]:
        return list(self.relays) if relay is None else [self._target(relay)]

    def _wake_firehose(self) -> None:
        try:
            self._notify_firehose()
        except Exception as exc:  # the events are stored; the fan-out's poll picks them up
            self.log.warning("relay monitor: firehose wake-up failed", extra={"error": _text(exc)})

    async def _active_dids(self) -> list[str]:
        dids: list[str] = []
        after = None
        while True:
            rows = await repos_store.list_repos(self.db, 500, after)
            dids += [r["did"] for r in rows if r["deactivated_at"] is None and r["takedown_ref"] is None]
            if len(rows) < 500:
                return dids
            after = (rows[-1]["created_at"], rows[-1]["did"])


def _account_from_row(r: Any) -> AccountView:
    return AccountView(r["relay"], r["did"], r["handle"], r["status"], r["message"],
                       None if r["their_active"] is None else bool(r["their_active"]), r["their_status"],
                       r["their_rev"], r["our_rev"], r["checked_at"], r["behind_since"], r["action"], r["action_at"])


def _action_from_row(r: Any) -> ActionView:
    return ActionView(r["at"], r["relay"], r["did"], r["action"], r["reason"], r["result"])


def _window(seconds: int) -> str:
    return {1: "1s", 60: "1m", 3600: "1h", 86400: "1d"}.get(seconds, f"{seconds}s")


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _websocket_probe(url: str, timeout: float) -> None:
    """Open a subscribeRepos WebSocket (live tail, no cursor) and close it: the handshake is the test."""
    import websockets

    async with asyncio.timeout(timeout):
        async with websockets.connect(url, open_timeout=timeout, close_timeout=1.0, max_size=1 << 20,
                                      proxy=None):
            pass
