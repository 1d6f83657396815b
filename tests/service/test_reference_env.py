"""The reference distribution's env files start Squall as they are (issue 18, items 1 and 2).

The fixtures in tests/fixtures/reference_env are shaped like the reference installer's generated
``/pds/pds.env`` and the reference package's ``example.env``. Each test starts a real ``squall
serve`` from one, changing only what compose.yaml changes (the data directory and port) and what
keeps the test on loopback (the PLC directory double, no crawler, dev mode for plain http).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from squall.atproto.crypto import Secp256k1Keypair
from squall.config import PUBLIC_PROFILE_DEFAULTS, ConfigError, Settings, load_settings
from squall.oauth.dpop import DpopChecker
from tests.helpers.pds import PdsProcess

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reference_env"
INSTALLER_ENV = {k: v or "" for k, v in dotenv_values(FIXTURES / "installer-pds.env").items()}
EXAMPLE_ENV = {k: v or "" for k, v in dotenv_values(FIXTURES / "example.env").items()}
RECOVERY = Secp256k1Keypair.generate()
DPOP_SECRET = EXAMPLE_ENV["PDS_DPOP_SECRET"]


class EnvFilePds(PdsProcess):
    """A PdsProcess whose settings are an env file's, plus a few overrides (nothing else)."""

    def __init__(self, data_dir: Path, file_env: dict[str, str], overrides: dict[str, str], **kw):
        super().__init__(data_dir, **kw)
        self.file_env = file_env
        self.overrides = overrides

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PDS_", "BACKUP_", "LOG_", "SQUALL_")) and k != "PORT"}
        env.update(self.file_env)
        env.update(self.overrides)
        env["PDS_PORT"] = str(self.port)
        return env


def loopback_overrides(plc) -> dict[str, str]:
    # Plain http to the PLC double needs dev mode; the crawler is turned off with an empty value.
    return {"PDS_DEV_MODE": "true", "PDS_DID_PLC_URL": plc.url, "PDS_CRAWLERS": ""}


def serve_fails(env_file: dict[str, str], overrides: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "LOG_", "SQUALL_")) and k != "PORT"}
    env.update(env_file)
    env.update(overrides)
    return subprocess.run([sys.executable, "-m", "squall.cli", "serve", "--host", "127.0.0.1"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def new_account(proc: PdsProcess, admin_password: str, handle: str) -> dict:
    with proc.client() as c:
        r = c.post("/xrpc/com.atproto.server.createInviteCode", json={"useCount": 1},
                   auth=("admin", admin_password))
        assert r.status_code == 200, r.text
        r = c.post("/xrpc/com.atproto.server.createAccount",
                   json={"handle": handle, "email": f"{handle.split('.')[0]}@example.com",
                         "password": "hunter2-hunter2", "inviteCode": r.json()["code"]})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def installer_pds(plc, tmp_path_factory):
    data = tmp_path_factory.mktemp("installer") / "volume"
    # compose.yaml fixes PDS_DATA_DIRECTORY to the volume whatever pds.env says; so does the test.
    # The installer's SMTP server becomes a closed loopback port (same credentials, so the log check
    # below still means something): a test reaches nothing but loopback.
    smtp = {"PDS_EMAIL_SMTP_URL": "smtps://postmaster:s3cr3t-mail-pass@127.0.0.1:9/"}
    proc = EnvFilePds(data, INSTALLER_ENV, {**loopback_overrides(plc), **smtp, "PDS_DATA_DIRECTORY": str(data),
                                            "PDS_MAX_REPO_IMPORT_SIZE": "1000"})
    with proc:
        yield proc


@pytest.fixture(scope="module")
def example_pds(plc, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("example")
    overrides = {**loopback_overrides(plc), "PDS_DID_METHOD": "plc", "PDS_RECOVERY_DID_KEY": RECOVERY.did_key(),
                 "PDS_SERVICE_NAME": "Gull & Tern PDS", "PDS_LOGO_URL": "https://cdn.example.com/logo.png",
                 "PDS_SUPPORT_URL": "https://help.example.com/", "PDS_PRIMARY_COLOR": "#0a7d5a",
                 "PDS_ERROR_COLOR": "#b00020", "PDS_ACCEPTING_REPO_IMPORTS": "false",
                 "PDS_INVITE_REQUIRED": "false"}
    # example.env's paths are relative ("data", "blobs"): the server runs in its own directory.
    proc = EnvFilePds(cwd / "data", EXAMPLE_ENV, overrides, cwd=cwd)
    with proc:
        yield proc


# -- the installer's pds.env -----------------------------------------------------------------------


def test_installer_env_starts_with_its_secrets_and_the_volume_layout(installer_pds, plc):
    logs = installer_pds.logs()
    assert "Traceback" not in logs
    assert "PDS_BLOBSTORE_DISK_LOCATION=/pds/blocks is the reference installer's layout" in logs
    # The e-mail settings are honoured now (not "ignored"), and the SMTP password never reaches the log.
    assert "PDS_EMAIL_SMTP_URL ignored" not in logs and "s3cr3t-mail-pass" not in logs
    # the admin password, JWT secret and rotation key of the file are used, none generated
    assert not (installer_pds.data_dir / "secrets" / "admin_password").exists()
    account = new_account(installer_pds, INSTALLER_ENV["PDS_ADMIN_PASSWORD"], "alice.pds.example.com")
    rotation = Secp256k1Keypair.from_private_hex(INSTALLER_ENV["PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX"])
    assert plc.log(account["did"])[0]["rotationKeys"] == [rotation.did_key()]
    with installer_pds.client() as c:
        r = c.post("/xrpc/com.atproto.repo.uploadBlob", content=b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
                   headers={"Authorization": f"Bearer {account['accessJwt']}", "Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        blob = r.json()["blob"]
        post = {"$type": "app.bsky.feed.post", "text": "first post", "createdAt": "2024-05-01T12:00:00.000Z",
                "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]}}
        r = c.post("/xrpc/com.atproto.repo.createRecord", json={"repo": account["did"], "collection":
                   "app.bsky.feed.post", "record": post}, headers={"Authorization": f"Bearer {account['accessJwt']}"})
        assert r.status_code == 200, r.text
    cid = blob["ref"]["$link"]
    assert (installer_pds.data_dir / "blobs" / account["did"] / cid).is_file()
    assert not Path("/pds").exists()


def test_installer_env_sets_the_bluesky_services(installer_pds):
    settings, _ = load_settings({**INSTALLER_ENV, "PDS_DATA_DIRECTORY": "/data"})
    assert settings.bsky_app_view_did == "did:web:api.bsky.app"
    assert settings.report_service_did == "did:plc:ar7c4by46qjdydhdevvrndac"
    # not in the installer's file: the public profile's default
    assert settings.bsky_chat_did == "did:web:api.bsky.chat"


def test_installer_env_caps_repo_imports(installer_pds):
    account = new_account(installer_pds, INSTALLER_ENV["PDS_ADMIN_PASSWORD"], "bob.pds.example.com")
    with installer_pds.client() as c:
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=b"\0" * 5000,
                   headers={"Authorization": f"Bearer {account['accessJwt']}",
                            "Content-Type": "application/vnd.ipld.car"})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge", r.text
    assert "1000 bytes" in r.json()["message"]


def test_installer_env_without_the_volume_override_is_one_line(tmp_path):
    r = serve_fails(INSTALLER_ENV, {}, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squall: configuration error: PDS_DATA_DIRECTORY: /pds is")
    assert not Path("/pds").exists()


@pytest.mark.parametrize("variable", ["PDS_DATA_DIRECTORY", "PDS_BLOBSTORE_DISK_LOCATION"])
def test_an_unusable_directory_is_one_line_naming_it(tmp_path, variable):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    overrides = {"PDS_DATA_DIRECTORY": str(tmp_path / "data"), "PDS_HOSTNAME": "localhost"}
    overrides[variable] = str(blocker / "sub")
    r = serve_fails({}, overrides, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"squall: configuration error: {variable}: "), r.stderr


# -- the reference package's example.env -----------------------------------------------------------


def test_example_env_starts_and_uses_its_relative_paths(example_pds):
    logs = example_pds.logs()
    assert "Traceback" not in logs and "squall started" in logs
    cwd = example_pds.cwd
    assert (cwd / "data" / "pds.sqlite").is_file() and (cwd / "blobs").is_dir()
    # the names the reference reads but Squall does not: a warning each when set, never refused
    assert "PDS_REPO_SIGNING_KEY_K256_PRIVATE_KEY_HEX is a reference-PDS setting that has no effect" in logs
    assert "PDS_HCAPTCHA_SITE_KEY" not in logs  # empty: nothing to warn about


def test_every_name_of_example_env_is_accepted_with_a_value():
    """Each PDS_* name of example.env, given a value, is honoured or warned about, not refused."""
    values = {"PDS_HOSTNAME": "localhost", "PDS_DEV_MODE": "true"}
    for name, value in EXAMPLE_ENV.items():
        if not name.startswith("PDS_") or value:
            continue
        try:
            _, warnings = load_settings({**values, name: "x"})
        except ConfigError as exc:
            assert name in str(exc) and "unknown setting" not in str(exc), exc
        else:
            honoured = name.removeprefix("PDS_").lower() in Settings.model_fields
            assert honoured or any(w.startswith(name + " ") for w in warnings), name


def test_recovery_key_comes_first(example_pds, plc):
    account = new_account(example_pds, EXAMPLE_ENV["PDS_ADMIN_PASSWORD"], "carol.localhost")
    pds_key = Secp256k1Keypair.from_private_hex(EXAMPLE_ENV["PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX"]).did_key()
    assert plc.log(account["did"])[0]["rotationKeys"] == [RECOVERY.did_key(), pds_key]
    with example_pds.client() as c:
        r = c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials",
                  headers={"Authorization": f"Bearer {account['accessJwt']}"})
    assert r.status_code == 200 and r.json()["rotationKeys"] == [RECOVERY.did_key(), pds_key]


def test_branding_on_the_sign_in_page_keeps_the_strict_csp(example_pds):
    with example_pds.client() as c:
        r = c.get("/oauth/authorize")
    html, csp = r.text, r.headers["content-security-policy"]
    assert "<title>Cannot continue · Gull &amp; Tern PDS</title>" in html
    assert '<img src="https://cdn.example.com/logo.png" alt="">' in html
    assert 'href="https://help.example.com/"' in html
    assert "button.allow { background: #0a7d5a; }" in html and "#b00020" in html
    assert "img-src 'self' https://cdn.example.com;" in csp and "script-src" not in csp
    assert "default-src 'none'" in csp and "style-src 'nonce-" in csp


def test_dpop_nonces_come_from_the_configured_secret(example_pds):
    with example_pds.client() as c:
        r = c.post("/oauth/par", data={"client_id": "x"})
    nonce = r.headers["dpop-nonce"]
    assert DpopChecker(secret=bytes.fromhex(DPOP_SECRET))._nonce_ok(nonce)
    assert not DpopChecker()._nonce_ok(nonce)


def test_repo_imports_can_be_refused(example_pds):
    account = new_account(example_pds, EXAMPLE_ENV["PDS_ADMIN_PASSWORD"], "dave.localhost")
    with example_pds.client() as c:
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=b"\0" * 10,
                   headers={"Authorization": f"Bearer {account['accessJwt']}",
                            "Content-Type": "application/vnd.ipld.car"})
    assert r.status_code == 400 and r.json() == {"error": "InvalidRequest",
                                                 "message": "Service is not accepting repo imports"}


# -- tuning names of the reference, wired to the parts they tune -----------------------------------


def test_reference_tuning_names_reach_their_parts():
    from squall.firehose import options_for
    from squall.identity import IdentityService
    from squall.proxy import ProxyLimits

    settings, _ = load_settings({"PDS_DID_CACHE_STALE_TTL": "60000", "PDS_DID_CACHE_MAX_TTL": "120000",
                                 "PDS_ID_RESOLVER_TIMEOUT": "1500", "PDS_PROXY_HEADERS_TIMEOUT": "2000",
                                 "PDS_PROXY_BODY_TIMEOUT": "9000", "PDS_PROXY_MAX_RESPONSE_SIZE": "4096",
                                 "PDS_MAX_SUBSCRIPTION_BUFFER": "77"})
    limits = ProxyLimits.from_settings(settings)
    assert (limits.read_timeout, limits.total_timeout, limits.max_response_bytes) == (2.0, 9.0, 4096)
    assert options_for(settings, {}).queue_frames == 77
    assert options_for(load_settings({})[0], {}).queue_frames == 2000
    service = IdentityService(settings, db=None, rotation_key=Secp256k1Keypair.generate())  # type: ignore[arg-type]
    assert (service.dids.stale_after, service.dids.max_age) == (60.0, 120.0)
    assert service.handles._dns_timeout == 1.5
    assert service._resolve_http.timeout.read == 1.5 and service.http.timeout.read == 10.0
    with pytest.raises(ConfigError, match="^PDS_DID_CACHE_MAX_TTL: "):
        load_settings({"PDS_DID_CACHE_STALE_TTL": "60000", "PDS_DID_CACHE_MAX_TTL": "1000"})


@pytest.mark.parametrize("env, var", [
    ({"PDS_RECOVERY_DID_KEY": "did:key:zNotAKey"}, "PDS_RECOVERY_DID_KEY"),
    ({"PDS_PRIMARY_COLOR": "red; background: url(https://evil.example)"}, "PDS_PRIMARY_COLOR"),
    ({"PDS_LOGO_URL": "http://cdn.example.com/logo.png"}, "PDS_LOGO_URL"),
    ({"PDS_DPOP_SECRET": "short"}, "PDS_DPOP_SECRET"),
    ({"PDS_ACCEPTING_REPO_IMPORTS": "perhaps"}, "PDS_ACCEPTING_REPO_IMPORTS"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
])
def test_bad_honoured_values_name_the_variable(env, var):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value).startswith(var + ":")


def test_reference_log_level_maps_onto_pds_log_level():
    assert load_settings({"LOG_LEVEL": "warn"})[0].log_level == "warning"
    assert load_settings({"LOG_LEVEL": "trace"})[0].log_level == "debug"
    assert load_settings({"LOG_LEVEL": "warn", "PDS_LOG_LEVEL": "error"})[0].log_level == "error"


# -- item 2: the public profile has the Bluesky services by default ---------------------------------


def test_public_profile_defaults_to_the_bluesky_services():
    s, _ = load_settings({"PDS_HOSTNAME": "pds.example.com"})
    assert (s.bsky_app_view_url, s.bsky_app_view_did) == ("https://api.bsky.app", "did:web:api.bsky.app")
    assert (s.bsky_chat_url, s.bsky_chat_did) == ("https://api.bsky.chat", "did:web:api.bsky.chat")
    assert (s.report_service_url, s.report_service_did) == ("https://mod.bsky.app", "did:plc:ar7c4by46qjdydhdevvrndac")
    assert s.crawlers == ["https://bsky.network"]
    # an explicit empty value turns one off; a set value wins
    s, _ = load_settings({"PDS_HOSTNAME": "pds.example.com", "PDS_CRAWLERS": "", "PDS_BSKY_CHAT_URL": "",
                          "PDS_BSKY_CHAT_DID": "", "PDS_BSKY_APP_VIEW_URL": "https://appview.example.net",
                          "PDS_BSKY_APP_VIEW_DID": "did:web:appview.example.net"})
    assert s.crawlers == [] and s.bsky_chat_url is None and s.bsky_chat_did is None
    assert s.bsky_app_view_did == "did:web:appview.example.net"
    # the LAN profile (and a public name forced onto it) has none
    for env in ({"PDS_HOSTNAME": "pds.lan"}, {"PDS_HOSTNAME": "pds.example.com", "SQUALL_PROXY_PROFILE": "lan"}):
        s, _ = load_settings(env)
        assert s.bsky_app_view_url is None and s.crawlers == [] and s.report_service_url is None
    assert set(PUBLIC_PROFILE_DEFAULTS) == {"PDS_BSKY_APP_VIEW_URL", "PDS_BSKY_APP_VIEW_DID", "PDS_BSKY_CHAT_URL",
                                            "PDS_BSKY_CHAT_DID", "PDS_REPORT_SERVICE_URL", "PDS_REPORT_SERVICE_DID",
                                            "PDS_CRAWLERS"}


@pytest.mark.parametrize("nsid, variable", [
    ("app.bsky.actor.getProfile", "PDS_BSKY_APP_VIEW_URL"),
    ("chat.bsky.convo.listConvos", "PDS_BSKY_CHAT_URL"),
])
def test_lan_profile_names_the_variable_to_set(pds, nsid, variable):
    with pds.client() as c:
        r = c.get(f"/xrpc/{nsid}")
    assert r.status_code == 501 and r.json()["error"] == "MethodNotImplemented"
    assert f"set {variable} and {variable[:-4]}_DID" in r.json()["message"]
    with pds.client() as c:
        r = c.get("/xrpc/com.example.nothing.here")
    assert r.status_code == 501 and "PDS_" not in r.json().get("message", "")
