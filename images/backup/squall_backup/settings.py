"""Settings of the backup sidecar, read from environment variables.

Every variable is listed in ``VARIABLES`` below (the README's table is made from the same list). A bad
value, an unknown ``BACKUP_*`` variable or a contradictory combination stops the start with a
``SettingsError`` whose message names the variable. ``python -m squall_backup.settings`` prints the
markdown table of every variable that the README carries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .crypto import parse_recipients
from .schedule import parse_schedule

#: (environment variable, default shown to operators, meaning) — the documentation of every setting.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("PDS_DATA_DIRECTORY", "/data", "The PDS data volume (same variable as the PDS)."),
    ("BACKUP_SCHEDULE", "1h", "When to back up: an interval (`90s`, `30m`, `1h`, `1d`, `2h30m`) or a "
     "5-field cron expression evaluated in UTC (`15 * * * *`)."),
    ("BACKUP_KEEP_HOURLY", "24", "Keep the newest backup of each of the last N hours that have one."),
    ("BACKUP_KEEP_DAILY", "7", "Keep the newest backup of each of the last N days that have one."),
    ("BACKUP_KEEP_WEEKLY", "8", "Keep the newest backup of each of the last N ISO weeks that have one. "
     "The newest good backup is always kept."),
    ("BACKUP_AGE_RECIPIENTS", "(empty)", "Comma-separated age recipients (`age1…` X25519 keys, "
     "`ssh-ed25519 …`/`ssh-rsa …` public keys). Empty = archives are NOT encrypted (a loud warning "
     "is logged when the target is remote: the archive holds the signing keys)."),
    ("BACKUP_AGE_IDENTITY_FILE", "(unset)", "age identity file for `verify`/`restore` (or `--identity`). "
     "When set for the daemon, each uploaded backup is also verified end to end."),
    ("BACKUP_S3_ENDPOINT", "(unset)", "S3 API endpoint, e.g. `https://<account>.r2.cloudflarestorage.com`. "
     "Unset = AWS."),
    ("BACKUP_S3_BUCKET", "(unset)", "Bucket for backups. Unset = no S3 target."),
    ("BACKUP_S3_REGION", "auto", "Region (`auto` for R2)."),
    ("BACKUP_S3_ACCESS_KEY_ID", "(unset)", "Access key id (else the usual AWS credential chain)."),
    ("BACKUP_S3_SECRET_ACCESS_KEY", "(unset)", "Secret access key; never logged."),
    ("BACKUP_S3_PREFIX", "(empty)", "Key prefix inside the bucket, e.g. `squall/`."),
    ("BACKUP_S3_ADDRESSING_STYLE", "path", "`path`, `virtual` or `auto`."),
    ("BACKUP_S3_MAX_ATTEMPTS", "5", "Attempts per S3 request (standard retry mode, exponential backoff)."),
    ("BACKUP_S3_CONNECT_TIMEOUT", "10", "Seconds to connect to the S3 endpoint."),
    ("BACKUP_S3_READ_TIMEOUT", "60", "Seconds to wait for S3 to answer."),
    ("BACKUP_S3_MULTIPART_THRESHOLD_MB", "64", "Archives at least this big are uploaded in parts."),
    ("BACKUP_S3_MULTIPART_CHUNK_MB", "32", "Part size of multipart uploads (R2 and S3 need >= 5)."),
    ("BACKUP_S3_MAX_CONCURRENCY", "4", "Parallel part/blob uploads."),
    ("BACKUP_LOCAL_DIR", "(unset)", "A local directory target (e.g. a mounted second disk). With no bucket "
     "and no local dir, archives go to `<data>/backups/archive/`, which is NOT off-site."),
    ("BACKUP_ZSTD_LEVEL", "3", "zstd compression level, 1..19."),
    ("BACKUP_MAX_PENDING", "3", "Snapshots kept locally while their upload keeps failing; the oldest "
     "beyond this number is dropped."),
    ("BACKUP_VERIFY_AFTER_UPLOAD", "true", "After each upload, download the new backup and check every "
     "byte and the database's integrity (needs BACKUP_AGE_IDENTITY_FILE when archives are encrypted)."),
    ("BACKUP_RUN_ON_START", "false", "`run` takes a backup as soon as it starts."),
    ("BACKUP_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR."),
    ("BACKUP_DRILL_SCHEDULE", "1w", "When the daemon runs a restore drill on the newest backup (boots a PDS "
     "on it on loopback and checks every repo, blob and the firehose): an interval or a cron expression "
     "like BACKUP_SCHEDULE, or `off`. A failed drill marks backups unhealthy in status.json. Needs "
     "BACKUP_AGE_IDENTITY_FILE when archives are encrypted (else the drill is recorded as skipped)."),
    ("BACKUP_DRILL_LOGIN_SAMPLE", "3", "Accounts whose login path a drill checks (stored argon2 hash parses, "
     "a wrong password is refused with AuthenticationRequired)."),
    ("BACKUP_REPLICATE", "false", "Stream the database continuously to the target with Litestream "
     "(RPO about one second), as a supervised child of `squall-backup run`. The PDS then leaves WAL "
     "checkpoints to Litestream (it reads this variable too)."),
    ("BACKUP_REPLICATE_UNENCRYPTED", "false", "Required with BACKUP_REPLICATE: Litestream 0.5 cannot encrypt "
     "its replica, so the replicated database (account signing keys, password hashes) is stored as is. "
     "Setting it says you accept that (the snapshots stay age-encrypted)."),
    ("BACKUP_REPLICATE_SYNC_INTERVAL_MS", "250", "How often Litestream ships new WAL frames to the replica, "
     "milliseconds (100..60000). The RPO is about this plus one upload."),
    ("BACKUP_REPLICATE_RETENTION", "72h", "How far back `restore --at` can go (Litestream snapshot "
     "retention; `h` or `m` units)."),
)

KNOWN_VARIABLES = frozenset(name for name, _, _ in VARIABLES)


class SettingsError(ValueError):
    """A setting is wrong; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKUP_", case_sensitive=False, extra="ignore",
                                      populate_by_name=True)

    data_directory: Path = Field(Path("/data"), validation_alias="PDS_DATA_DIRECTORY")
    schedule: str = "1h"
    keep_hourly: int = Field(24, ge=0, le=100_000)
    keep_daily: int = Field(7, ge=0, le=100_000)
    keep_weekly: int = Field(8, ge=0, le=100_000)
    age_recipients: str = ""
    age_identity_file: Path | None = None
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "auto"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"
    s3_max_attempts: int = Field(5, ge=1, le=20)
    s3_connect_timeout: float = Field(10.0, gt=0, le=600)
    s3_read_timeout: float = Field(60.0, gt=0, le=3600)
    s3_multipart_threshold_mb: int = Field(64, ge=5, le=5000)
    s3_multipart_chunk_mb: int = Field(32, ge=5, le=5000)
    s3_max_concurrency: int = Field(4, ge=1, le=64)
    local_dir: Path | None = None
    zstd_level: int = Field(3, ge=1, le=19)
    max_pending: int = Field(3, ge=1, le=100)
    verify_after_upload: bool = True
    run_on_start: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    drill_schedule: str = "1w"
    drill_login_sample: int = Field(3, ge=0, le=1000)
    replicate: bool = False
    replicate_unencrypted: bool = False
    replicate_sync_interval_ms: int = Field(250, ge=100, le=60_000)
    replicate_retention: str = "72h"

    @field_validator("drill_schedule")
    @classmethod
    def _drill_schedule(cls, v: str) -> str:
        if v.strip().lower() == "off":
            return "off"
        parse_schedule(v)
        return v.strip()

    @field_validator("replicate_retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        import re
        v = v.strip().lower()
        if not re.fullmatch(r"[1-9]\d*[hm]", v):
            raise ValueError("must be a duration in hours or minutes, e.g. 72h or 90m")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v.strip()

    @field_validator("age_recipients")
    @classmethod
    def _recipients(cls, v: str) -> str:
        parse_recipients(v)
        return v

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        if not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("must start with https:// (or http:// for a test server)")
        return v.rstrip("/")

    @field_validator("s3_bucket", "s3_access_key_id")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip().lstrip("/")
        if v and not v.endswith("/"):
            v += "/"
        return v

    # -- derived values -------------------------------------------------------------------------
    @property
    def recipients(self) -> list:
        return parse_recipients(self.age_recipients)

    @property
    def backups_dir(self) -> Path:
        return self.data_directory / "backups"

    @property
    def default_archive_dir(self) -> Path:
        return self.backups_dir / "archive"


def _env_name(field: str) -> str:
    if field == "data_directory":
        return "PDS_DATA_DIRECTORY"
    return "BACKUP_" + field.upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read the settings from ``environ`` (default: the process environment).

    Raises ``SettingsError`` naming the variable on any bad, unknown or contradictory value.
    """
    env = dict(os.environ if environ is None else environ)
    unknown = sorted(k for k in env if k.upper().startswith("BACKUP_") and k.upper() not in KNOWN_VARIABLES)
    if unknown:
        raise SettingsError(f"{unknown[0]}: unknown setting (known BACKUP_* variables are listed in the README)")
    # pydantic-settings reads os.environ itself; pass our mapping explicitly so tests stay hermetic.
    values: dict[str, object] = {}
    for field in Settings.model_fields:
        name = _env_name(field)
        for key, value in env.items():
            # An empty value means "unset", as for the PDS's PDS_* variables: one .env file serves
            # both, and the reference distro's pds.env leaves optional values empty.
            if key.upper() == name and value.strip() != "":
                values[field] = value
    values.update(overrides)
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        if field == "PDS_DATA_DIRECTORY":
            field = "data_directory"
        msg = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{_env_name(field)}: {msg}") from None

    s3_only = [("s3_endpoint", settings.s3_endpoint), ("s3_access_key_id", settings.s3_access_key_id),
               ("s3_secret_access_key", settings.s3_secret_access_key)]
    if settings.s3_bucket is None:
        for field, value in s3_only:
            if value is not None:
                raise SettingsError(f"{_env_name(field)} is set but BACKUP_S3_BUCKET is not")
    if (settings.s3_access_key_id is None) != (settings.s3_secret_access_key is None):
        missing = "s3_secret_access_key" if settings.s3_secret_access_key is None else "s3_access_key_id"
        raise SettingsError(f"{_env_name(missing)}: required when the other S3 key variable is set")
    if settings.age_identity_file is not None and not settings.age_identity_file.is_file():
        raise SettingsError(f"BACKUP_AGE_IDENTITY_FILE: {settings.age_identity_file} is not a readable file")
    if settings.local_dir is not None and settings.local_dir.resolve() == settings.data_directory.resolve():
        raise SettingsError("BACKUP_LOCAL_DIR: must not be the data directory itself")
    if settings.s3_multipart_chunk_mb > settings.s3_multipart_threshold_mb:
        raise SettingsError("BACKUP_S3_MULTIPART_CHUNK_MB: must not exceed BACKUP_S3_MULTIPART_THRESHOLD_MB")
    if settings.replicate:
        if not settings.replicate_unencrypted:
            raise SettingsError("BACKUP_REPLICATE: Litestream cannot encrypt its replica, which holds the account "
                                "signing keys and password hashes; set BACKUP_REPLICATE_UNENCRYPTED=true to accept "
                                "an unencrypted replica on the target")
        if settings.s3_bucket is None and settings.local_dir is None:
            raise SettingsError("BACKUP_REPLICATE: needs a target, BACKUP_S3_BUCKET or BACKUP_LOCAL_DIR "
                                "(a replica on the data volume would die with it)")
    return settings


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in VARIABLES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
