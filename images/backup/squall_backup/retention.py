"""Which backups to keep: the newest of each of the last N hours, days and ISO weeks that have one.

Buckets are counted only where a backup exists (as restic's ``--keep-hourly`` does), so a sidecar that
was down for a week still keeps its older backups instead of aging them all out. The newest backup is
always kept, whatever the settings. Times are UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import datetime


def _hour(t: datetime) -> Hashable:
    return (t.year, t.month, t.day, t.hour)


def _day(t: datetime) -> Hashable:
    return (t.year, t.month, t.day)


def _week(t: datetime) -> Hashable:
    iso = t.isocalendar()
    return (iso.year, iso.week)


def select_keep(backups: Sequence[tuple[str, datetime]], keep_hourly: int, keep_daily: int,
                keep_weekly: int) -> set[str]:
    """The ids to keep among ``(id, created)`` pairs."""
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    if not ordered:
        return set()
    keep = {ordered[0][0]}
    rules: list[tuple[int, Callable[[datetime], Hashable]]] = [(keep_hourly, _hour), (keep_daily, _day),
                                                                (keep_weekly, _week)]
    for count, bucket in rules:
        seen: set[Hashable] = set()
        for backup_id, created in ordered:
            key = bucket(created)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(key)
            keep.add(backup_id)
    return keep
