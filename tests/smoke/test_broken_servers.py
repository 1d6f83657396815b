"""The suite against deliberately broken servers: the right check fails, says what it expected
and what it saw, the others pass, and the exit status is non-zero."""

from __future__ import annotations

import pytest

from tests.helpers.net import free_port

from .fakes import FakePds, FakeRelay, make_tls
from .run import run_smoke

READ_ONLY_SKIPS = {"write", "crawler.request-crawl"}


def test_a_sound_fake_passes_every_check():
    # The control for the tests below: without its flaw the fake passes, so each failure there
    # comes from the flaw and nothing else.
    with FakePds() as fake:
        run = run_smoke(*fake.args())
    assert run.code == 0, run.stdout + run.stderr
    assert run.names("fail") == set()
    assert run.names("skip") == READ_ONLY_SKIPS
    assert {"handle.identity", "blob.security-headers", "firehose.upgrade"} <= run.names("pass")


def test_wrong_did_document_fails_the_identity_check():
    with FakePds(flaw="wrong-did-document") as fake:
        run = run_smoke(*fake.args())
    assert run.code == 1
    assert run.names("fail") == {"handle.identity"}
    detail = run.by_name()["handle.identity"]["detail"]
    assert "expected alsoKnownAs containing at://alice.test" in detail
    assert "at://mallory.test" in detail


def test_missing_csp_fails_the_blob_check():
    with FakePds(flaw="no-csp") as fake:
        run = run_smoke(*fake.args())
    assert run.code == 1
    assert run.names("fail") == {"blob.security-headers"}
    detail = run.by_name()["blob.security-headers"]["detail"]
    assert "content-security-policy None" in detail
    assert "default-src 'none'" in detail and "sandbox" in detail


def test_websocket_that_never_upgrades_fails_within_the_timeout():
    with FakePds(flaw="ws-never-upgrades") as fake:
        run = run_smoke(*fake.args(), timeout=60)
    assert run.code == 1
    assert run.names("fail") == {"firehose.upgrade"}
    check = run.by_name()["firehose.upgrade"]
    assert "no result within 3s while waiting for the WebSocket upgrade (HTTP 101)" in check["detail"]
    assert 2.9 <= check["seconds"] < 6


def test_text_report_lists_each_check_and_ends_with_the_counts():
    with FakePds(flaw="no-csp") as fake:
        run = run_smoke(*fake.args(), json_report=False)
    lines = run.stdout.strip().splitlines()
    assert run.code == 1
    assert lines[0] == f"smoke checks against {fake.url}"
    assert any(line.startswith("FAIL  blob.security-headers") for line in lines)
    assert any(line.startswith("SKIP  write ") for line in lines)
    passed = sum(line.startswith("PASS  ") for line in lines)
    assert passed == len(lines) - 5  # the title, 1 FAIL, 2 SKIP and the summary are the rest
    assert lines[-1] == f"{passed} passed, 1 failed, 2 skipped"


def test_unreachable_server_fails_every_network_check_quickly():
    run = run_smoke("--base-url", f"http://127.0.0.1:{free_port()}", "--timeout", "2", timeout=60)
    assert run.code == 1
    assert {"health", "describe-server", "firehose.upgrade"} <= run.names("fail")
    assert "ConnectError" in run.by_name()["health"]["detail"]
    assert all(c["seconds"] < 3 for c in run.report["checks"])


def test_bad_options_exit_with_usage_status():
    run = run_smoke("--base-url", "ftp://example.com", json_report=False, timeout=30)
    assert run.code == 2
    assert "--base-url must be an http(s) URL" in run.stderr


# -- the crawler check against relay doubles ---------------------------------------------------


def test_crawler_check_passes_when_the_relay_accepts():
    with FakePds() as fake, FakeRelay(mode="accept") as relay:
        run = run_smoke(*fake.args(), "--crawler-hostname", relay.url)
    assert run.code == 0, run.stdout
    assert run.by_name()["crawler.request-crawl"]["status"] == "pass"
    # The shape a relay expects: first refused without a hostname, then this PDS's hostname.
    assert relay.received == [{}, {"hostname": "localhost"}]


@pytest.mark.parametrize("mode, words", [
    ("ban", ["accept requestCrawl for localhost", "HTTP 400 HostBanned: localhost is banned"]),
    ("not-a-relay", ["HTTP 4xx with an XRPC error", "HTTP 404 <html>nothing here</html>"]),
])
def test_crawler_check_fails_on_a_refusal_or_a_non_relay(mode, words):
    with FakePds() as fake, FakeRelay(mode=mode) as relay:
        run = run_smoke(*fake.args(), "--crawler-hostname", relay.url)
    assert run.code == 1
    assert run.names("fail") == {"crawler.request-crawl"}
    detail = run.by_name()["crawler.request-crawl"]["detail"]
    for word in words:
        assert word in detail


# -- https and wss with a private CA -----------------------------------------------------------


def test_https_and_wss_pass_with_the_ca_cert(tmp_path):
    ca, cert, key = make_tls(tmp_path)
    with FakePds(tls=(cert, key)) as fake:
        run = run_smoke(*fake.args(), "--ca-cert", str(ca))
    assert run.code == 0, run.stdout + run.stderr
    assert fake.url.startswith("https://")
    assert {"health", "firehose.upgrade", "blob.security-headers"} <= run.names("pass")


def test_https_without_the_ca_cert_fails_on_certificate_verification(tmp_path):
    ca, cert, key = make_tls(tmp_path)
    with FakePds(tls=(cert, key)) as fake:
        run = run_smoke(*fake.args())
    assert run.code == 1
    assert {"health", "firehose.upgrade"} <= run.names("fail")
    assert "CERTIFICATE_VERIFY_FAILED" in run.by_name()["health"]["detail"]
    assert "CERTIFICATE_VERIFY_FAILED" in run.by_name()["firehose.upgrade"]["detail"]
