"""The ``run`` command: back up on the schedule until SIGTERM/SIGINT.

Runs never overlap (one loop, plus the engine's file lock against a concurrent ``now``). On SIGTERM the
current run stops at its next checkpoint — between files, chunks, blobs and upload parts — removes its
staging files and keeps any finished snapshot in ``pending/`` for the next start; then the daemon exits 0
with ``state: stopped`` in status.json.
"""

from __future__ import annotations

import signal
import threading
from datetime import timedelta

from . import logs
from .archive import Aborted
from .engine import BackupFailed, Busy, Engine, utcnow
from .manifest import DATABASE_NAME, format_time, parse_time
from .schedule import parse_schedule

POLL_SECONDS = 30.0
# The PDS's admin dashboard asks for a run now by creating <data>/backups/run-now; the daemon looks
# for it this often, removes it and runs.
TRIGGER_NAME = "run-now"
TRIGGER_POLL_SECONDS = 5.0
# Before the PDS's first boot there is no database yet: look again soon rather than a whole
# schedule period later (a fresh install with BACKUP_RUN_ON_START would otherwise wait an hour).
DATABASE_WAIT_SECONDS = 10.0


class DrillClock:
    """When the daemon drills: ``BACKUP_DRILL_SCHEDULE`` counted from the last drill in status.json (so
    a restart does not postpone it), the first one right after the first good backup."""

    def __init__(self, engine: Engine, settings) -> None:
        self.engine = engine
        self.settings = settings
        self.schedule = None if settings.drill_schedule == "off" else parse_schedule(settings.drill_schedule)

    def _next(self, now):
        if self.schedule is None:
            return None
        data = self.engine.status.read()
        if not data.get("last_success"):
            return None  # nothing to drill yet; looked at again after every backup
        last = data.get("last_drill") or {}
        at = last.get("started_at") or last.get("at")
        if not at:
            return now
        prev = parse_time(at)
        if self.schedule.interval is not None:
            return prev + self.schedule.interval
        return self.schedule.next_after(prev, prev)

    def next_at(self, now):
        n = self._next(now)
        return format_time(max(n, now)) if n is not None else None

    def due(self, now) -> bool:
        n = self._next(now)
        return n is not None and n <= now

    def run(self) -> None:
        engine = self.engine
        if engine.recipients and engine.settings.age_identity_file is None:
            engine.drill_skipped("archives are encrypted and BACKUP_AGE_IDENTITY_FILE is not set on this server: "
                                 "run `squall-backup drill --identity FILE` where the key is")
            return
        try:
            engine.drill("latest")
        except Exception as exc:  # noqa: BLE001 - the daemon must outlive a crashed drill
            logs.error("drill.crashed", error=f"{type(exc).__name__}: {exc}")
            engine.status.update(last_drill={"ok": False, "at": format_time(engine.clock()),
                                             "summary": f"the drill crashed: {type(exc).__name__}: {exc}",
                                             "checks": []})


def run_daemon(settings, *, clock=utcnow, stop: threading.Event | None = None, install_signals: bool = True,
               max_runs: int | None = None) -> int:
    stop = stop or threading.Event()
    engine = Engine(settings, clock=clock, stop=stop)
    schedule = parse_schedule(settings.schedule)

    if install_signals:
        def on_signal(signum, _frame) -> None:
            logs.info("daemon.stopping", signal=signal.Signals(signum).name)
            stop.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    engine.announce()
    now = clock()
    next_run = now if settings.run_on_start else schedule.next_after(None, now)
    drills = DrillClock(engine, settings)
    replicator = None
    if settings.replicate:
        from .replicate import Replicator
        replicator = Replicator(settings, engine.status, stop=threading.Event(), targets=engine.targets)
        replicator.start()
    else:
        engine.status.update(replication=None)
    engine.status.update(state="idle", current_run=None, next_run_at=format_time(next_run),
                         drill_schedule=settings.drill_schedule, next_drill_at=drills.next_at(clock()),
                         drill_running=None, **engine._base_status())
    logs.info("daemon.start", schedule=settings.schedule, next_run_at=format_time(next_run),
              targets=[t.describe() for t in engine.targets], encrypted=bool(engine.recipients))
    runs = 0
    while not stop.is_set():
        if drills.due(clock()):
            drills.run()
            engine.status.update(next_drill_at=drills.next_at(clock()))
            continue
        delay = (next_run - clock()).total_seconds()
        trigger = settings.backups_dir / TRIGGER_NAME
        if delay > 0 and trigger.exists():
            trigger.unlink(missing_ok=True)
            logs.info("daemon.run_requested", source=str(trigger))
            delay = 0
        if delay > 0:
            # Wake up regularly: the wall clock may jump (suspend, NTP) and the wait is monotonic.
            stop.wait(min(delay, POLL_SECONDS, TRIGGER_POLL_SECONDS))
            continue
        database = settings.data_directory / DATABASE_NAME
        if not database.exists():
            logs.info("daemon.waiting_for_database", path=str(database))
            next_run = clock() + timedelta(seconds=DATABASE_WAIT_SECONDS)
            engine.status.update(state="waiting", next_run_at=format_time(next_run))
            continue
        started = clock()
        try:
            engine.run_once()
        except Busy as exc:
            logs.warning("daemon.skipped", reason=str(exc))
        except Aborted:
            break
        except BackupFailed:
            pass  # recorded in status.json and logged; the next run retries the upload
        except Exception as exc:  # noqa: BLE001 - the daemon must outlive one bad run
            logs.error("daemon.run_crashed", error=f"{type(exc).__name__}: {exc}")
        runs += 1
        next_run = schedule.next_after(started, clock())
        engine.status.update(state="idle", next_run_at=format_time(next_run))
        if not stop.is_set() and drills.due(clock()):  # e.g. the first drill, right after the first backup
            drills.run()
            engine.status.update(next_drill_at=drills.next_at(clock()))
        if max_runs is not None and runs >= max_runs:
            break
    if replicator is not None:
        replicator.stop()
    engine.status.update(state="stopped", current_run=None, next_run_at=None, next_drill_at=None)
    logs.info("daemon.stopped")
    return 0
