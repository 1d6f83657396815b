"""When backups run: a fixed interval (``30m``, ``1h``, ``2h30m``, ``1d``) or a 5-field cron expression.

Cron expressions are evaluated in UTC with croniter. Intervals count from the start of the previous run,
so a run that takes longer than the interval is followed by the next one right away, never overlapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_INTERVAL = re.compile(r"^(?:\d+[smhdw])+$")


@dataclass(frozen=True)
class Schedule:
    text: str
    interval: timedelta | None = None
    cron: str | None = None

    def next_after(self, last_start: datetime | None, now: datetime) -> datetime:
        """The next run time: the first one after ``now`` (cron) or ``last_start + interval``."""
        if self.interval is not None:
            if last_start is None:
                return now + self.interval
            return max(now, last_start + self.interval)
        return croniter(self.cron, now).get_next(datetime)


def parse_schedule(text: str) -> Schedule:
    t = text.strip().lower()
    if not t:
        raise ValueError("empty schedule: use an interval like 1h or a cron expression like '0 * * * *'")
    if _INTERVAL.match(t):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", t))
        if seconds < 60:
            raise ValueError(f"interval {text!r} is shorter than one minute")
        return Schedule(text=text, interval=timedelta(seconds=seconds))
    fields = t.split()
    if len(fields) != 5 or not croniter.is_valid(t):
        raise ValueError(f"{text!r} is neither an interval (30m, 1h, 1d) nor a 5-field cron expression")
    return Schedule(text=text, cron=t)
