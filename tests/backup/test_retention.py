"""Retention with a fake clock: hourly/daily/weekly buckets, locally and on S3, never the newest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from squall_backup.engine import Engine
from squall_backup.retention import select_keep

from .helpers import s3_env, settings_for

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)  # a Monday


class FakeClock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw) -> None:
        self.t += timedelta(**kw)


def _series(n: int, step: timedelta) -> list[tuple[str, datetime]]:
    return [(f"b{i:03d}", T0 + i * step) for i in range(n)]


def test_newest_is_kept_even_with_zero_keeps():
    backups = _series(5, timedelta(hours=1))
    assert select_keep(backups, 0, 0, 0) == {"b004"}
    assert select_keep([], 3, 3, 3) == set()


def test_hourly_buckets_keep_the_newest_of_each_hour():
    backups = _series(12, timedelta(minutes=20))  # three per hour over four hours
    assert select_keep(backups, 2, 0, 0) == {"b011", "b008"}


def test_buckets_count_only_where_backups_exist():
    # A week-long outage: the old backups are still the newest of their days, so they are kept.
    backups = [("old1", T0), ("old2", T0 + timedelta(days=1)), ("new", T0 + timedelta(days=9))]
    assert select_keep(backups, 0, 3, 0) == {"old1", "old2", "new"}


def test_weekly_uses_iso_weeks():
    backups = [("sun", datetime(2026, 1, 11, 23, tzinfo=timezone.utc)),
               ("mon", datetime(2026, 1, 12, 1, tzinfo=timezone.utc)),
               ("prev_sat", datetime(2026, 1, 10, 12, tzinfo=timezone.utc))]
    assert select_keep(backups, 0, 0, 2) == {"mon", "sun"}


def _expected_ids_after_ten_days() -> set[str]:
    # Backups every 6 h from Mon 5 Jan 00:00 to Wed 14 Jan 18:00 (40 runs); keep 3 hourly, 4 daily, 2 weekly:
    # hourly → 14th 18:00, 12:00, 06:00; daily → 14th, 13th, 12th, 11th at 18:00;
    # weekly → the newest of ISO week 3 (14th 18:00) and of week 2 (Sun 11th 18:00).
    times = ["20260114T180000Z", "20260114T120000Z", "20260114T060000Z",
             "20260113T180000Z", "20260112T180000Z", "20260111T180000Z"]
    return set(times)


@pytest.mark.parametrize("where", ["local", "s3+local"])
def test_retention_over_ten_days_with_fake_clock(tmp_path, data_dir, moto_server, bucket, where):
    env = {"BACKUP_LOCAL_DIR": str(tmp_path / "second-disk"), "BACKUP_KEEP_HOURLY": "3",
           "BACKUP_KEEP_DAILY": "4", "BACKUP_KEEP_WEEKLY": "2"}
    if where == "s3+local":
        env.update(s3_env(moto_server, bucket))
    clock = FakeClock(T0)
    engine = Engine(settings_for(data_dir, **env), clock=clock)
    for _ in range(40):
        engine.run_once()
        clock.advance(hours=6)
    for target in engine.targets:
        assert {m.id for m in target.list_markers()} == _expected_ids_after_ten_days(), target.name
        # no archive is left without its marker
        archives = {o.name.split(".", 1)[0] for o in target.list_archives()}
        assert archives == _expected_ids_after_ten_days()


def test_prune_dry_run_deletes_nothing(tmp_path, data_dir):
    clock = FakeClock(T0)
    engine = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"), BACKUP_KEEP_HOURLY="100"),
                    clock=clock)
    for _ in range(3):
        engine.run_once()
        clock.advance(hours=1)
    engine2 = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t"), BACKUP_KEEP_HOURLY="1",
                                  BACKUP_KEEP_DAILY="0", BACKUP_KEEP_WEEKLY="0"), clock=clock)
    report = engine2.prune(dry_run=True)
    assert len(report["local"]["deleted"]) == 2
    assert len(engine2.target().list_markers()) == 3
    engine2.prune()
    assert [m.id for m in engine2.target().list_markers()] == ["20260105T020000Z"]


def test_orphan_archive_from_a_killed_upload_is_cleaned(tmp_path, data_dir):
    clock = FakeClock(T0)
    engine = Engine(settings_for(data_dir, BACKUP_LOCAL_DIR=str(tmp_path / "t")), clock=clock)
    engine.run_once()
    orphan = tmp_path / "t" / "backups" / "20260101T000000Z.tar.zst"
    orphan.write_bytes(b"partial")
    import os
    old = (T0 - timedelta(days=2)).timestamp()
    os.utime(orphan, (old, old))
    assert {m.id for m in engine.target().list_markers()} == {"20260105T000000Z"}
    clock.advance(hours=1)
    engine.run_once()
    assert not orphan.exists()
