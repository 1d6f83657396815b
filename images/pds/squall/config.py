"""Configuration: the official PDS distro's ``PDS_*`` names, read once at start.

An operator can bring the ``pds.env`` they already have. Names the reference distro defines but
Squall has no use for are accepted with a warning; any other ``PDS_*`` name is refused, because
a typo in a setting should stop the start rather than silently run with a default. Every error
names the variable. Nothing here is global: ``load_settings(environ)`` returns a value the app
is built from.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .atproto import syntax


class ConfigError(Exception):
    """A setting that stops the start; the message names the variable."""


# Reference-distro names that Squall accepts and ignores (their feature is absent or implicit).
IGNORED_REFERENCE_NAMES = frozenset(
    {
        "PDS_BLOBSTORE_DISK_TMP_LOCATION",  # uploads are staged under <data>/tmp
        "PDS_RATE_LIMIT_BYPASS_KEY",  # PDS_RATE_LIMIT_BYPASS_IPS covers the operator's own clients
        "PDS_REDIS_SCRATCH_ADDRESS",
        "PDS_REDIS_SCRATCH_PASSWORD",
        "PDS_ACCOUNT_DB_LOCATION",
        "PDS_SEQUENCER_DB_LOCATION",
        "PDS_DID_CACHE_DB_LOCATION",
        "PDS_ACTOR_STORE_DIRECTORY",
        "PDS_ACTOR_STORE_CACHE_SIZE",
        "PDS_SQLITE_DISABLE_WAL_AUTO_CHECKPOINT",
        "PDS_VERSION",
        "PDS_ENABLE_DID_DOC_WITH_SESSION",
        "PDS_DISABLE_SSRF_PROTECTION",
        "PDS_FETCH_MAX_RESPONSE_SIZE",
        "PDS_HOME_URL",
    }
)

# Reference-distro names for features Squall does not have yet: accepted so an existing pds.env
# still starts, with a warning that says what is missing.
UNSUPPORTED_REFERENCE_NAMES = MappingProxyType({
    "PDS_EMAIL_SMTP_URL": "Squall does not send e-mail yet (no confirmation or password-reset mails)",
    "PDS_EMAIL_FROM_ADDRESS": "Squall does not send e-mail yet",
    "PDS_MODERATION_EMAIL_SMTP_URL": "Squall does not send e-mail yet",
    "PDS_MODERATION_EMAIL_ADDRESS": "Squall does not send e-mail yet",
})

_LOCAL_SUFFIXES = (".local", ".lan", ".home", ".internal", ".localhost", ".test")


def is_local_hostname(hostname: str) -> bool:
    """localhost, an IP address or a LAN-only name: nothing about it may reach the public PLC."""
    host = hostname.lower()
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return "." not in host


CommaList = list[str]


class Settings(BaseModel):
    """Every variable the PDS reads. Field name = variable name without the ``PDS_`` prefix.

    A plain pydantic model rather than pydantic-settings' BaseSettings: ``load_settings`` maps the
    environment itself (it must name unknown variables and let ``PORT`` win), so BaseSettings would
    add nothing but ~16 MB of resident memory for its source providers.
    """

    model_config = ConfigDict(extra="forbid")

    hostname: str = "localhost"
    port: int = Field(default=2583, ge=1, le=65535)
    data_directory: Path = Path("./data")
    dev_mode: bool = False
    service_did: str | None = None
    # Secrets: generated at first boot under <data>/secrets when absent (see squall.secrets).
    jwt_secret: str | None = None
    admin_password: str | None = None
    admin_token_hash: str | None = None  # argon2 hash of a Bearer admin token (keep only the hash)
    plc_rotation_key_k256_private_key_hex: str | None = None
    # Identity
    did_method: Literal["plc", "web"] | None = None
    did_plc_url: str = "https://plc.directory"
    service_handle_domains: CommaList = []
    # Accounts
    invite_required: bool = True
    invite_interval: int | None = None
    invite_epoch: int = 0
    # Blobs
    blobstore_disk_location: Path | None = None
    blobstore_s3_bucket: str | None = None
    blobstore_s3_region: str | None = None
    blobstore_s3_endpoint: str | None = None
    blobstore_s3_force_path_style: bool = True
    blobstore_s3_access_key_id: str | None = None
    blobstore_s3_secret_access_key: str | None = None
    blobstore_s3_upload_timeout_ms: int = Field(default=20000, gt=0)
    blob_upload_limit: int = Field(default=50 * 1024 * 1024, gt=0)
    blob_gc_grace_seconds: int = Field(default=6 * 3600, ge=0)
    # Federation
    crawlers: CommaList = []
    repo_backfill_limit_ms: int = Field(default=7 * 24 * 3600 * 1000, gt=0)
    bsky_app_view_url: str | None = None
    bsky_app_view_did: str | None = None
    bsky_chat_url: str | None = None
    bsky_chat_did: str | None = None
    report_service_url: str | None = None
    report_service_did: str | None = None
    mod_service_url: str | None = None
    mod_service_did: str | None = None
    # Server description
    contact_email_address: str | None = None
    privacy_policy_url: str | None = None
    terms_of_service_url: str | None = None
    # Operations
    log_level: str = "info"
    trust_proxy_headers: bool = False
    rate_limits_enabled: bool = True
    rate_limit_bypass_ips: CommaList = []  # addresses or networks (CIDR) exempt from rate limits
    db_readers: int = Field(default=2, ge=1, le=16)
    # SQLite's wal_autocheckpoint (pages). None: 1000 (SQLite's default), or 0 when the backup
    # sidecar replicates with Litestream (BACKUP_REPLICATE=true), which must own checkpoints.
    sqlite_wal_autocheckpoint: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("service_handle_domains", "crawlers", "rate_limit_bypass_ips", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or "/" in value or ":" in value.strip("[]") and not _is_ip(value):
            raise ValueError("must be a bare host name, without scheme, port or path")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("must be one of debug, info, warning, error, critical")
        return value

    @model_validator(mode="after")
    def _derived(self) -> "Settings":
        domains = []
        for domain in self.service_handle_domains or [f".{self.hostname}"]:
            domain = domain.lower()
            if not domain.startswith("."):
                domain = "." + domain
            domains.append(domain)
        self.service_handle_domains = domains
        if self.did_method is None:
            self.did_method = "web" if is_local_hostname(self.hostname) else "plc"
        if self.service_did is None:
            self.service_did = f"did:web:{self.hostname}"
        return self

    # -- derived values --------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        if self.dev_mode and is_local_hostname(self.hostname):
            return f"http://{self.hostname}:{self.port}"
        return f"https://{self.hostname}"

    @property
    def blob_directory(self) -> Path:
        return self.blobstore_disk_location or self.data_directory / "blobs"

    @property
    def database_path(self) -> Path:
        return self.data_directory / "pds.sqlite"

    @property
    def secrets_directory(self) -> Path:
        return self.data_directory / "secrets"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return True
    except ValueError:
        return False


def _field_env_names() -> dict[str, str]:
    return {f"PDS_{name.upper()}": name for name in Settings.model_fields}


def load_settings(environ: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """Build the settings from an environment; return them with warnings worth logging.

    Raises ConfigError naming the variable on any unknown, malformed or contradictory value.
    """
    env = dict(os.environ if environ is None else environ)
    warnings: list[str] = []
    known = _field_env_names()
    for name in sorted(env):
        if not name.startswith("PDS_"):
            continue
        if name in known:
            continue
        if name in IGNORED_REFERENCE_NAMES:
            warnings.append(f"{name} is a reference-PDS setting that Squall does not use; ignored")
            continue
        if name in UNSUPPORTED_REFERENCE_NAMES:
            warnings.append(f"{name} ignored: {UNSUPPORTED_REFERENCE_NAMES[name]}")
            continue
        raise ConfigError(f"{name}: unknown setting (typo?). Known PDS_* settings: see config/pds.env.example")
    values = {known[name]: value for name, value in env.items() if name in known}
    # Empty values in an env file mean "unset", as in the reference distro's pds.env.
    values = {key: value for key, value in values.items() if value != ""}
    if env.get("PORT"):
        values["port"] = env["PORT"]  # Railway's PORT wins over PDS_PORT
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        var = "PORT" if field == "port" and env.get("PORT") else f"PDS_{field.upper()}"
        raise ConfigError(f"{var}: {err['msg']}") from None
    _check_consistency(settings, env, warnings)
    if settings.sqlite_wal_autocheckpoint is None:
        replicated = env.get("BACKUP_REPLICATE", "").strip().lower() in ("1", "true", "yes", "on")
        settings.sqlite_wal_autocheckpoint = 0 if replicated else 1000
    return settings, warnings


def _check_consistency(s: Settings, env: Mapping[str, str], warnings: list[str]) -> None:
    def fail(var: str, message: str) -> None:
        raise ConfigError(f"{var}: {message}")

    if not syntax.is_valid_handle(s.hostname) and not _is_ip(s.hostname) and s.hostname != "localhost":
        fail("PDS_HOSTNAME", f"{s.hostname!r} is not a valid host name")
    for domain in s.service_handle_domains:
        if not syntax.is_valid_handle("x" + domain) and domain != ".localhost" and not s.dev_mode:
            fail("PDS_SERVICE_HANDLE_DOMAINS", f"{domain!r} is not a valid domain suffix")
    if not s.service_did.startswith("did:"):
        fail("PDS_SERVICE_DID", "must be a DID")
    if s.did_method == "plc" and is_local_hostname(s.hostname) and not s.dev_mode:
        fail("PDS_DID_METHOD", "did:plc needs a public PDS_HOSTNAME; use 'web' for localhost/LAN (or PDS_DEV_MODE=true with a test directory)")
    for var in ("PDS_DID_PLC_URL", "PDS_BSKY_APP_VIEW_URL", "PDS_BSKY_CHAT_URL", "PDS_REPORT_SERVICE_URL",
                "PDS_MOD_SERVICE_URL", "PDS_BLOBSTORE_S3_ENDPOINT"):
        value = getattr(s, var[4:].lower())
        if value is None:
            continue
        if not value.startswith(("https://", "http://")):
            fail(var, "must be an http(s) URL")
        if value.startswith("http://") and not s.dev_mode and var != "PDS_BLOBSTORE_S3_ENDPOINT":
            fail(var, "plain http is only allowed with PDS_DEV_MODE=true")
    for url_var, did_var in (("PDS_BSKY_APP_VIEW_URL", "PDS_BSKY_APP_VIEW_DID"),
                             ("PDS_BSKY_CHAT_URL", "PDS_BSKY_CHAT_DID"),
                             ("PDS_REPORT_SERVICE_URL", "PDS_REPORT_SERVICE_DID"),
                             ("PDS_MOD_SERVICE_URL", "PDS_MOD_SERVICE_DID")):
        url, did = getattr(s, url_var[4:].lower()), getattr(s, did_var[4:].lower())
        if bool(url) != bool(did):
            fail(did_var if url else url_var, f"{url_var} and {did_var} must be set together")
        if did and not syntax.is_valid_did(did):
            fail(did_var, f"{did!r} is not a DID")
    if s.blobstore_s3_bucket and env.get("PDS_BLOBSTORE_DISK_LOCATION"):
        fail("PDS_BLOBSTORE_S3_BUCKET", "set either PDS_BLOBSTORE_S3_BUCKET or PDS_BLOBSTORE_DISK_LOCATION, not both")
    if s.blobstore_s3_bucket and not (s.blobstore_s3_access_key_id and s.blobstore_s3_secret_access_key):
        fail("PDS_BLOBSTORE_S3_ACCESS_KEY_ID", "S3 blob storage needs an access key id and secret access key")
    if s.plc_rotation_key_k256_private_key_hex is not None:
        key = s.plc_rotation_key_k256_private_key_hex.strip()
        if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
            fail("PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX", "must be 64 hex characters (a secp256k1 private key)")
    if s.jwt_secret is not None and len(s.jwt_secret) < 16:
        fail("PDS_JWT_SECRET", "must be at least 16 characters")
    if s.admin_password is not None and len(s.admin_password) < 8:
        fail("PDS_ADMIN_PASSWORD", "must be at least 8 characters")
    if s.admin_token_hash is not None and not s.admin_token_hash.startswith("$argon2"):
        fail("PDS_ADMIN_TOKEN_HASH", "must be an argon2 hash (see `squall admin hash-token`)")
    for entry in s.rate_limit_bypass_ips:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            fail("PDS_RATE_LIMIT_BYPASS_IPS", f"{entry!r} is not an IP address or network")
    for crawler in s.crawlers:
        if not crawler.startswith(("https://", "http://")):
            fail("PDS_CRAWLERS", f"{crawler!r} must be an http(s) URL")
    if s.invite_required is False and not is_local_hostname(s.hostname):
        warnings.append("PDS_INVITE_REQUIRED=false: anyone who can reach this server can create an account")
