"""Settings: defaults, and every bad value stops the start with a message naming the variable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from squall_backup.crypto import generate_identity
from squall_backup.schedule import parse_schedule
from squall_backup.settings import KNOWN_VARIABLES, SettingsError, load_settings, markdown_table


def test_defaults(tmp_path):
    s = load_settings({"PDS_DATA_DIRECTORY": str(tmp_path)})
    assert s.schedule == "1h" and parse_schedule(s.schedule).interval == timedelta(hours=1)
    assert (s.keep_hourly, s.keep_daily, s.keep_weekly) == (24, 7, 8)
    assert s.recipients == [] and s.s3_bucket is None
    assert s.default_archive_dir == tmp_path / "backups" / "archive"


def test_default_data_directory_is_slash_data():
    assert str(load_settings({}).data_directory) == "/data"


@pytest.mark.parametrize("name,value,fragment", [
    ("BACKUP_SCHEDULE", "every hour", "neither an interval"),
    ("BACKUP_SCHEDULE", "10s", "shorter than one minute"),
    ("BACKUP_SCHEDULE", "61 * * * *", "neither an interval"),
    ("BACKUP_KEEP_HOURLY", "-1", "greater than or equal"),
    ("BACKUP_KEEP_DAILY", "many", "integer"),
    ("BACKUP_AGE_RECIPIENTS", "age1notakey", "not an age recipient"),
    ("BACKUP_S3_ENDPOINT", "r2.example.com", "https://"),
    ("BACKUP_S3_MAX_ATTEMPTS", "0", "greater than or equal"),
    ("BACKUP_S3_READ_TIMEOUT", "soon", "number"),
    ("BACKUP_ZSTD_LEVEL", "30", "less than or equal"),
    ("BACKUP_S3_ADDRESSING_STYLE", "sideways", "path"),
    ("BACKUP_LOG_LEVEL", "chatty", "DEBUG"),
])
def test_bad_value_names_the_variable(tmp_path, name, value, fragment):
    env = {"PDS_DATA_DIRECTORY": str(tmp_path), name: value}
    if name.startswith("BACKUP_S3_") :
        env["BACKUP_S3_BUCKET"] = "b"
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert str(info.value).startswith(name + ":")
    assert fragment in str(info.value)


def test_unknown_variable_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="^BACKUP_S3_BUKET: unknown setting"):
        load_settings({"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_S3_BUKET": "x"})


@pytest.mark.parametrize("env,name", [
    ({"BACKUP_S3_ENDPOINT": "https://x.r2.cloudflarestorage.com"}, "BACKUP_S3_ENDPOINT"),
    ({"BACKUP_S3_BUCKET": "b", "BACKUP_S3_ACCESS_KEY_ID": "id"}, "BACKUP_S3_SECRET_ACCESS_KEY"),
    ({"BACKUP_S3_BUCKET": "b", "BACKUP_S3_SECRET_ACCESS_KEY": "sk"}, "BACKUP_S3_ACCESS_KEY_ID"),
    ({"BACKUP_AGE_IDENTITY_FILE": "/nonexistent/key"}, "BACKUP_AGE_IDENTITY_FILE"),
    ({"BACKUP_S3_BUCKET": "b", "BACKUP_S3_MULTIPART_CHUNK_MB": "100"}, "BACKUP_S3_MULTIPART_CHUNK_MB"),
])
def test_contradictions_name_the_variable(tmp_path, env, name):
    with pytest.raises(SettingsError) as info:
        load_settings({"PDS_DATA_DIRECTORY": str(tmp_path), **env})
    assert str(info.value).startswith(name)


def test_secret_value_never_in_error(tmp_path):
    with pytest.raises(SettingsError) as info:
        load_settings({"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_S3_SECRET_ACCESS_KEY": "very-secret-value"})
    assert "very-secret-value" not in str(info.value)


def test_recipients_and_prefix(tmp_path):
    _, a = generate_identity()
    _, b = generate_identity()
    ssh = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN")
    s = load_settings({"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_AGE_RECIPIENTS": f" {a},{b} ,{ssh}",
                       "BACKUP_S3_BUCKET": "bk", "BACKUP_S3_PREFIX": "/squall"})
    assert len(s.recipients) == 3 and s.s3_prefix == "squall/"


def test_every_variable_is_documented():
    table = markdown_table()
    for name in KNOWN_VARIABLES:
        assert f"`{name}`" in table
    assert len(KNOWN_VARIABLES) == len(set(KNOWN_VARIABLES))


def test_schedule_interval_and_cron():
    now = datetime(2026, 1, 5, 10, 7, 30, tzinfo=timezone.utc)
    every = parse_schedule("2h30m")
    assert every.next_after(None, now) == now + timedelta(hours=2, minutes=30)
    # a run that overran its interval is followed right away, never overlapped
    assert every.next_after(now - timedelta(hours=3), now) == now
    cron = parse_schedule("15 * * * *")
    assert cron.next_after(now, now) == datetime(2026, 1, 5, 10, 15, tzinfo=timezone.utc)
    assert parse_schedule("0 3 * * 1").next_after(None, now) == datetime(2026, 1, 12, 3, 0, tzinfo=timezone.utc)


def test_empty_values_mean_unset_like_the_pds(tmp_path):
    # One .env serves the PDS and the sidecar; the reference pds.env leaves optional values empty.
    s = load_settings({"PDS_DATA_DIRECTORY": str(tmp_path), "BACKUP_S3_BUCKET": "", "BACKUP_S3_ENDPOINT": "",
                       "BACKUP_KEEP_DAILY": " ", "BACKUP_AGE_RECIPIENTS": ""})
    assert s.s3_bucket is None and s.s3_endpoint is None and s.keep_daily == 7
