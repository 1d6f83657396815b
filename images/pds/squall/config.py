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
import re
from pathlib import Path, PurePosixPath
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
        # Branding details the sign-in page does not need (it takes PDS_*_COLOR and
        # PDS_PRIMARY_COLOR_CONTRAST).
        "PDS_PRIMARY_COLOR_HUE",
        "PDS_ERROR_COLOR_CONTRAST",
        "PDS_ERROR_COLOR_HUE",
        "PDS_WARNING_COLOR_CONTRAST",
        "PDS_WARNING_COLOR_HUE",
        "PDS_SUCCESS_COLOR_CONTRAST",
        "PDS_SUCCESS_COLOR_HUE",
        # Proxy details: Squall's proxy speaks HTTP/1.1, does not retry and relays what it gets.
        "PDS_PROXY_ALLOW_HTTP2",
        "PDS_PROXY_MAX_RETRIES",
        "PDS_PROXY_PREFER_COMPRESSED",
        "PDS_HANDLE_BACKUP_NAMESERVERS",
        "PDS_PLC_ROTATION_KEY_KMS_KEY_ID",  # the rotation key lives in <data>/secrets or the env
        "PDS_REPO_SIGNING_KEY_K256_PRIVATE_KEY_HEX",  # retired by the reference: keys are per account
    }
)

# Reference-distro names for features Squall does not have yet: accepted so an existing pds.env
# still starts, with a warning that says what is missing.
UNSUPPORTED_REFERENCE_NAMES: Mapping[str, str] = MappingProxyType({
    "PDS_HCAPTCHA_SITE_KEY": "Squall has no sign-up captcha (sign-up is by invite, or open)",
    "PDS_HCAPTCHA_SECRET_KEY": "Squall has no sign-up captcha (sign-up is by invite, or open)",
    "PDS_HCAPTCHA_TOKEN_SALT": "Squall has no sign-up captcha (sign-up is by invite, or open)",
    "PDS_ENTRYWAY_URL": "Squall is a standalone PDS, never behind an entryway",
    "PDS_ENTRYWAY_DID": "Squall is a standalone PDS, never behind an entryway",
    "PDS_ENTRYWAY_JWT_VERIFY_KEY_K256_PUBLIC_KEY_HEX": "Squall is a standalone PDS, never behind an entryway",
    "PDS_ENTRYWAY_PLC_ROTATION_KEY": "Squall is a standalone PDS, never behind an entryway",
})

# Reference names matched by pattern: page background images (the sign-in page has none; its
# strict CSP loads no outside images but the https logo), and the older PDS_OAUTH_PROVIDER_*
# branding names (PDS_SERVICE_NAME, PDS_LOGO_URL and PDS_*_COLOR replace them).
IGNORED_REFERENCE_PATTERNS = (re.compile(r"^PDS_BACKGROUND_[A-Z0-9_]+_URL$"),
                              re.compile(r"^PDS_OAUTH_PROVIDER_[A-Z0-9_]+$"))

# The reference installer's fixed layout: its volume is mounted at /pds. Paths under it in a
# brought pds.env mean "in the volume", which is PDS_DATA_DIRECTORY here (/data in the images).
REFERENCE_DATA_ROOT = PurePosixPath("/pds")
# Within it, where the reference keeps blobs; Squall keeps them in <data>/blobs (the backup
# sidecar reads them from there).
REFERENCE_BLOB_DIRECTORY = REFERENCE_DATA_ROOT / "blocks"

# Defaults of the public profile: the services the reference installer writes into pds.env, so
# the Bluesky app works against a public PDS with no configuration. An explicit empty value turns
# one off; the LAN profile has none (app.bsky.* then says which variable to set).
PUBLIC_PROFILE_DEFAULTS = MappingProxyType({
    "PDS_BSKY_APP_VIEW_URL": "https://api.bsky.app",
    "PDS_BSKY_APP_VIEW_DID": "did:web:api.bsky.app",
    "PDS_BSKY_CHAT_URL": "https://api.bsky.chat",
    "PDS_BSKY_CHAT_DID": "did:web:api.bsky.chat",
    "PDS_REPORT_SERVICE_URL": "https://mod.bsky.app",
    "PDS_REPORT_SERVICE_DID": "did:plc:ar7c4by46qjdydhdevvrndac",
    "PDS_CRAWLERS": "https://bsky.network",
})

# The reference's pino LOG_LEVEL values → PDS_LOG_LEVEL.
_REFERENCE_LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning",
                         "warning": "warning", "error": "error", "fatal": "critical", "silent": "critical"}
_HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")

_LOCAL_SUFFIXES = (".local", ".lan", ".home", ".internal", ".localhost", ".test")


def is_public_profile(hostname: str, environ: Mapping[str, str]) -> bool:
    """The public profile: a public host name, unless SQUALL_PROXY_PROFILE forces one (the same
    choice the proxy's entrypoint makes)."""
    forced = (environ.get("SQUALL_PROXY_PROFILE") or "auto").strip().lower()
    if forced in ("public", "lan"):
        return forced == "public"
    return not is_local_hostname(hostname)


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
    bsky_app_view_cdn_url_pattern: str | None = None  # read-after-write image URLs: %s kind, DID, CID
    bsky_chat_url: str | None = None
    bsky_chat_did: str | None = None
    report_service_url: str | None = None
    report_service_did: str | None = None
    mod_service_url: str | None = None
    mod_service_did: str | None = None
    # Identity: a did:key of the operator's own, placed first in new did:plc accounts' rotation
    # keys (above the PDS's key), so the operator can recover an identity without this server.
    recovery_did_key: str | None = None
    # The DID cache and resolver, milliseconds (the reference's names and defaults).
    did_cache_stale_ttl: int = Field(default=3600 * 1000, gt=0)
    did_cache_max_ttl: int = Field(default=24 * 3600 * 1000, gt=0)
    id_resolver_timeout: int = Field(default=3000, gt=0)
    # Service proxying: waiting for the upstream's headers (and between body chunks), the whole
    # body (milliseconds), and the largest response relayed (bytes).
    proxy_headers_timeout: int = Field(default=15000, gt=0)
    proxy_body_timeout: int = Field(default=60000, gt=0)
    proxy_max_response_size: int = Field(default=10 * 1024 * 1024, gt=0)
    # Firehose: frames a live subscriber may have waiting before it is cut off as too slow
    # (default: SQUALL_FIREHOSE_QUEUE_FRAMES, 2000).
    max_subscription_buffer: int | None = Field(default=None, gt=0)
    # Relay monitor (squall.relays): relays watched besides PDS_CRAWLERS, seconds between checks,
    # and the per-host limits the relays publish (shown beside our own account count and event rate).
    relay_monitor_urls: CommaList = []
    relay_monitor_interval: float = Field(default=600.0, gt=0)
    relay_monitor_account_limit: int = Field(default=100, ge=1)
    relay_monitor_event_limits: str = "50/s,1500/h,10000/d"
    # Account migration into this server
    accepting_repo_imports: bool = True
    max_repo_import_size: int = Field(default=1 << 30, gt=0)
    # OAuth DPoP nonces: HMAC key (64 hex characters). Default: a random key per process.
    dpop_secret: str | None = None
    # Dev mode only: lexicon authorities resolved without DNS (com.example=did:web:…, comma-separated),
    # for testing include: permission sets against a loopback lexicon host.
    dev_lexicon_authorities: CommaList = []
    # Branding of the sign-in and consent page
    service_name: str | None = None
    logo_url: str | None = None
    support_url: str | None = None
    primary_color: str | None = None
    primary_color_contrast: str | None = None
    error_color: str | None = None
    warning_color: str | None = None
    success_color: str | None = None
    # Server description
    contact_email_address: str | None = None
    privacy_policy_url: str | None = None
    terms_of_service_url: str | None = None
    # E-mail (squall.mail): the reference's names; mail is off while PDS_EMAIL_SMTP_URL is unset
    email_smtp_url: str | None = None
    email_from_address: str | None = None
    moderation_email_smtp_url: str | None = None
    moderation_email_address: str | None = None
    # Operations
    log_level: str = "info"
    trust_proxy_headers: bool = False
    rate_limits_enabled: bool = True
    # Seconds a client has to send a request's line and headers, and per window of its body
    # (squall.httpguard); past them it gets 408 and the connection is closed.
    http_header_timeout: float = Field(default=20.0, gt=0, le=3600)
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600)
    rate_limit_bypass_ips: CommaList = []  # addresses or networks (CIDR) exempt from rate limits
    # Per-account repo write budgets in points (create 3, update 2, delete 1), as the reference.
    rate_limit_repo_write_hour: int = Field(default=5000, ge=1)
    rate_limit_repo_write_day: int = Field(default=35000, ge=1)
    db_readers: int = Field(default=2, ge=1, le=16)
    metrics_enabled: bool = False  # /metrics (Prometheus); 404 when false (issue #14)
    # SQLite's wal_autocheckpoint (pages). None: 1000 (SQLite's default), or 0 when the backup
    # sidecar replicates with Litestream (BACKUP_REPLICATE=true), which must own checkpoints.
    sqlite_wal_autocheckpoint: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("service_handle_domains", "crawlers", "rate_limit_bypass_ips", "relay_monitor_urls",
                     "dev_lexicon_authorities", mode="before")
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


_LIMIT_WINDOWS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_event_limits(text: str) -> dict[int, int]:
    """``50/s,1500/h,10000/d`` → {window seconds: events}. Raises ValueError saying what is wrong."""
    limits: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        count, _, unit = part.partition("/")
        if not count.strip().isdigit() or unit.strip() not in _LIMIT_WINDOWS or int(count) < 1:
            raise ValueError(f"{part!r} is not a limit like 50/s, 1500/h or 10000/d")
        limits[_LIMIT_WINDOWS[unit.strip()]] = int(count)
    return limits


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
        # A reference name Squall does not honour: one warning line when it has a value (an empty
        # value means unset, as in the reference's example.env, so nothing is lost).
        if name in IGNORED_REFERENCE_NAMES or any(p.match(name) for p in IGNORED_REFERENCE_PATTERNS):
            if env[name] != "":
                warnings.append(f"{name} is a reference-PDS setting that has no effect in Squall; ignored")
            continue
        if name in UNSUPPORTED_REFERENCE_NAMES:
            if env[name] != "":
                warnings.append(f"{name} ignored: {UNSUPPORTED_REFERENCE_NAMES[name]}")
            continue
        raise ConfigError(f"{name}: unknown setting (typo?). Known PDS_* settings: see config/pds.env.example")
    values = {known[name]: value for name, value in env.items() if name in known}
    # Empty values in an env file mean "unset", as in the reference distro's pds.env.
    values = {key: value for key, value in values.items() if value != ""}
    if "log_level" not in values and env.get("LOG_LEVEL"):
        # The reference's logger reads LOG_LEVEL (pino's level names).
        level = _REFERENCE_LOG_LEVELS.get(env["LOG_LEVEL"].strip().lower())
        if level is None:
            raise ConfigError(f"LOG_LEVEL: must be one of {', '.join(_REFERENCE_LOG_LEVELS)} (or set PDS_LOG_LEVEL)")
        values["log_level"] = level
    if is_public_profile(env.get("PDS_HOSTNAME") or "localhost", env):
        for name, default in PUBLIC_PROFILE_DEFAULTS.items():
            if name not in env:  # absent; an explicit empty value turns the service off
                values.setdefault(known[name], default)
    _map_reference_paths(env, values, warnings)
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


def _map_reference_paths(env: Mapping[str, str], values: dict[str, Any], warnings: list[str]) -> None:
    """Paths of the reference installer's layout (under /pds) → the same place in the volume.

    compose.yaml (and the images) fix PDS_DATA_DIRECTORY to the volume whatever a brought pds.env
    says; a blob directory under /pds then means the volume too, in Squall's layout."""
    data = values.get("data_directory")
    if data is not None and PurePosixPath(str(data)) == REFERENCE_DATA_ROOT and not Path(REFERENCE_DATA_ROOT).is_dir():
        raise ConfigError("PDS_DATA_DIRECTORY: /pds is the reference installer's volume and does not exist here; "
                          "set PDS_DATA_DIRECTORY to this server's data volume (/data in the images)")
    blobs = values.get("blobstore_disk_location")
    if blobs is None or data is not None and PurePosixPath(str(data)) == REFERENCE_DATA_ROOT:
        return
    path = PurePosixPath(str(blobs))
    if path == REFERENCE_BLOB_DIRECTORY:
        values.pop("blobstore_disk_location")  # <data>/blobs, the volume's blob directory
        warnings.append("PDS_BLOBSTORE_DISK_LOCATION=/pds/blocks is the reference installer's layout; "
                        "blobs are kept in <PDS_DATA_DIRECTORY>/blobs")
    elif path.is_relative_to(REFERENCE_DATA_ROOT):
        base = Path(str(data)) if data is not None else Settings.model_fields["data_directory"].default
        values["blobstore_disk_location"] = base / path.relative_to(REFERENCE_DATA_ROOT)
        warnings.append(f"PDS_BLOBSTORE_DISK_LOCATION={path} is in the reference installer's volume; "
                        f"using {values['blobstore_disk_location']} in PDS_DATA_DIRECTORY")


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
    if s.dev_lexicon_authorities:
        if not s.dev_mode:
            fail("PDS_DEV_LEXICON_AUTHORITIES", "is only allowed with PDS_DEV_MODE=true")
        for entry in s.dev_lexicon_authorities:
            namespace, sep, did = (part.strip() for part in entry.partition("="))
            if not sep or "." not in namespace or not syntax.is_valid_did(did):
                fail("PDS_DEV_LEXICON_AUTHORITIES", f"expected namespace=did pairs (com.example=did:web:…), "
                     f"got {entry!r}")
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
    cdn = s.bsky_app_view_cdn_url_pattern
    if cdn is not None and (not cdn.startswith(("https://", "http://")) or cdn.count("%s") != 3):
        fail("PDS_BSKY_APP_VIEW_CDN_URL_PATTERN", "must be an http(s) URL with three %s (kind, DID, CID)")
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
    for relay in s.relay_monitor_urls:
        if not relay.startswith(("https://", "http://")):
            fail("PDS_RELAY_MONITOR_URLS", f"{relay!r} must be an http(s) URL")
    try:
        parse_event_limits(s.relay_monitor_event_limits)
    except ValueError as exc:
        fail("PDS_RELAY_MONITOR_EVENT_LIMITS", str(exc))
    if s.recovery_did_key is not None:
        from .atproto.crypto import PublicKey  # only when set: keeps config import light

        try:
            if not s.recovery_did_key.startswith("did:key:z"):
                raise ValueError("not a did:key")
            PublicKey.from_did_key(s.recovery_did_key)
        except Exception:
            fail("PDS_RECOVERY_DID_KEY", "must be a secp256k1 or P-256 did:key (did:key:z…)")
    if s.did_cache_max_ttl < s.did_cache_stale_ttl:
        fail("PDS_DID_CACHE_MAX_TTL", "must not be shorter than PDS_DID_CACHE_STALE_TTL")
    if s.dpop_secret is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", s.dpop_secret.strip()):
        fail("PDS_DPOP_SECRET", "must be 64 hex characters (32 random bytes: openssl rand -hex 32)")
    for var in ("PDS_PRIMARY_COLOR", "PDS_PRIMARY_COLOR_CONTRAST", "PDS_ERROR_COLOR", "PDS_WARNING_COLOR",
                "PDS_SUCCESS_COLOR"):
        value = getattr(s, var[4:].lower())
        if value is not None and not _HEX_COLOUR.match(value.strip()):
            fail(var, f"{value!r} is not a hex colour like #1a4fd6")
    for var in ("PDS_LOGO_URL", "PDS_SUPPORT_URL"):
        value = getattr(s, var[4:].lower())
        if value is not None and (not value.startswith("https://") or any(c in value for c in " \"'<>()")):
            fail(var, "must be an https URL")
    if s.service_name is not None and (len(s.service_name) > 100 or not s.service_name.strip()):
        fail("PDS_SERVICE_NAME", "must be 1 to 100 characters")
    _check_email(s, fail)
    if s.invite_required is False and not is_local_hostname(s.hostname):
        warnings.append("PDS_INVITE_REQUIRED=false: anyone who can reach this server can create an account")


def check_directories(s: Settings) -> None:
    """Create the data (and disk blob) directories and check they are writable, before the server
    starts: an unusable one is a ConfigError naming its variable, not a traceback from start-up."""
    dirs = [("PDS_DATA_DIRECTORY", s.data_directory)]
    if not s.blobstore_s3_bucket:
        dirs.append(("PDS_BLOBSTORE_DISK_LOCATION" if s.blobstore_disk_location else "PDS_DATA_DIRECTORY",
                     s.blob_directory))
    for var, path in dirs:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".squall-write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"{var}: {path} is not a usable directory ({reason}); "
                              "point it at a writable directory (the volume)") from None


def _check_email(s: Settings, fail: Any) -> None:
    """PDS_EMAIL_* / PDS_MODERATION_EMAIL_*: a URL aiosmtplib can use, and an address to send from."""
    from .mail.url import SmtpUrlError, parse_smtp_url  # pure parsing, no SMTP library

    for url_var, from_var in (("PDS_EMAIL_SMTP_URL", "PDS_EMAIL_FROM_ADDRESS"),
                              ("PDS_MODERATION_EMAIL_SMTP_URL", "PDS_MODERATION_EMAIL_ADDRESS")):
        url, sender = getattr(s, url_var[4:].lower()), getattr(s, from_var[4:].lower())
        if url is not None:
            try:
                parse_smtp_url(url)
            except SmtpUrlError as exc:
                fail(url_var, str(exc))  # the message never repeats the URL: it may hold a password
            if sender is None:
                fail(from_var, f"required when {url_var} is set (the From address of the mails)")
        if sender is not None and not _looks_like_address(sender):
            fail(from_var, "must be an e-mail address, optionally with a name: Name <user@example.com>")


def _looks_like_address(value: str) -> bool:
    from email.utils import parseaddr

    _, addr = parseaddr(value)
    local, _, domain = addr.rpartition("@")
    return bool(local) and "." in domain and not any(c.isspace() for c in addr)
