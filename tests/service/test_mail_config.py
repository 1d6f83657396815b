"""PDS_EMAIL_* / PDS_MODERATION_EMAIL_*: what the URL means, and a bad value stops the start in one
line that names the variable (and never repeats a password)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from squall.config import ConfigError, load_settings
from squall.mail.url import parse_smtp_url

FROM = {"PDS_EMAIL_FROM_ADDRESS": "pds@example.com"}


@pytest.mark.parametrize("url, host, port, implicit, starttls, user, password", [
    ("smtps://apikey:s3cr%40t@smtp.example.com", "smtp.example.com", 465, True, False, "apikey", "s3cr@t"),
    ("smtp://u%40x.com:p%3Aw@mail.example:2525", "mail.example", 2525, False, None, "u@x.com", "p:w"),
    ("smtp://relay.lan:25?ignoreTLS=true", "relay.lan", 25, False, False, None, None),
    ("smtp://u:p@smtp.example.com?requireTLS=true", "smtp.example.com", 587, False, True, "u", "p"),
])
def test_smtp_urls(url, host, port, implicit, starttls, user, password):
    parsed = parse_smtp_url(url)
    assert (parsed.host, parsed.port, parsed.implicit_tls, parsed.starttls, parsed.username, parsed.password) == \
        (host, port, implicit, starttls, user, password)
    assert "s3cr" not in parsed.describe() and "s3cr" not in repr(parsed)


@pytest.mark.parametrize("env, var", [
    ({"PDS_EMAIL_SMTP_URL": "https://user:hunter22@smtp.example.com", **FROM}, "PDS_EMAIL_SMTP_URL"),
    ({"PDS_EMAIL_SMTP_URL": "smtp://user:hunter22@", **FROM}, "PDS_EMAIL_SMTP_URL"),
    ({"PDS_EMAIL_SMTP_URL": "smtp://user:hunter22@smtp.example.com:99999", **FROM}, "PDS_EMAIL_SMTP_URL"),
    ({"PDS_EMAIL_SMTP_URL": "smtp://user:hunter22@h.example?pool=true", **FROM}, "PDS_EMAIL_SMTP_URL"),
    ({"PDS_EMAIL_SMTP_URL": "smtps://user:hunter22@h.example?requireTLS=true", **FROM}, "PDS_EMAIL_SMTP_URL"),
    ({"PDS_EMAIL_SMTP_URL": "smtp://user:hunter22@h.example"}, "PDS_EMAIL_FROM_ADDRESS"),
    ({"PDS_EMAIL_SMTP_URL": "smtp://h.example", "PDS_EMAIL_FROM_ADDRESS": "not an address"}, "PDS_EMAIL_FROM_ADDRESS"),
    ({"PDS_MODERATION_EMAIL_SMTP_URL": "smtp://h.example"}, "PDS_MODERATION_EMAIL_ADDRESS"),
    ({"PDS_MODERATION_EMAIL_SMTP_URL": "ftp://h.example", "PDS_MODERATION_EMAIL_ADDRESS": "m@example.com"},
     "PDS_MODERATION_EMAIL_SMTP_URL"),
])
def test_bad_email_settings_name_the_variable(env, var):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(var + ":") and "\n" not in message and "hunter22" not in message


def test_good_email_settings_load_without_warnings():
    s, warnings = load_settings({"PDS_EMAIL_SMTP_URL": "smtps://a:b@smtp.example.com",
                                 "PDS_EMAIL_FROM_ADDRESS": "My PDS <noreply@example.com>",
                                 "PDS_MODERATION_EMAIL_SMTP_URL": "smtps://a:b@smtp.example.com",
                                 "PDS_MODERATION_EMAIL_ADDRESS": "mod@example.com"})
    assert s.email_from_address == "My PDS <noreply@example.com>" and warnings == []
    # A From address without a URL (mail off) is not an error: a reference pds.env may have one.
    s, warnings = load_settings({"PDS_EMAIL_FROM_ADDRESS": "noreply@example.com"})
    assert s.email_smtp_url is None


def test_serve_refuses_a_bad_smtp_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env.update({"PDS_DATA_DIRECTORY": str(tmp_path), "PDS_EMAIL_SMTP_URL": "mailto://u:hunter22@x.example",
                "PDS_EMAIL_FROM_ADDRESS": "a@example.com"})
    r = subprocess.run([sys.executable, "-m", "squall.cli", "serve"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert "PDS_EMAIL_SMTP_URL" in r.stderr and "hunter22" not in r.stderr
