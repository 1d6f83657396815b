"""Delivery through a real ``squall serve`` to a real SMTP server on loopback, in each way a PDS
meets one — plain, STARTTLS, implicit TLS (a test CA) — and through trouble: a certificate the
PDS does not trust, and the SMTP server stopped while a request is made (the request still
succeeds; the mail arrives once the server is back, even across a PDS restart, and never twice).
Also: without PDS_EMAIL_SMTP_URL the mail flows say what to set, and operator tokens still work.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers.accounts import PASSWORD, assert_error, create_account
from tests.helpers.pds import PdsProcess
from tests.helpers.smtp import SmtpCapture, make_test_ca, token_in

FROM = "pds@example.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("ca"))


def _pds(tmp_path, env: dict[str, str]) -> PdsProcess:
    return PdsProcess(tmp_path / "data", env_extra=env)


def _admin_mail(pds: PdsProcess, c) -> dict:
    return c.get("/xrpc/_admin/status", auth=("admin", pds.admin_password())).json()["mail"]


def _reset_request(c, user) -> None:
    started = time.monotonic()
    r = c.post("/xrpc/com.atproto.server.requestPasswordReset", json={"email": f"{user['name']}@example.com"})
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 3  # the request never waits for SMTP


@pytest.mark.parametrize("mode,query", [("plain", "?ignoreTLS=true"), ("starttls", "?requireTLS=true"),
                                        ("starttls", ""), ("tls", "")])
def test_each_transport_delivers(tmp_path, ca, mode, query):
    with SmtpCapture(mode, ca) as smtp, \
            _pds(tmp_path, {"PDS_EMAIL_SMTP_URL": smtp.url(query=query), "PDS_EMAIL_FROM_ADDRESS": FROM,
                            "SSL_CERT_FILE": str(ca.ca_path)}) as pds, pds.client() as c:
        user = create_account(c, "mode")
        _reset_request(c, user)
        [mail] = smtp.wait_for(f"{user['name']}@example.com")
        assert mail.tls is (mode != "plain")
        token = token_in(mail)
        r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "new password 123"})
        assert r.status_code == 200, r.text
        status = _admin_mail(pds, c)
        assert status["sent"] == 1 and status["queued"] == 0 and status["lastError"] is None


def test_untrusted_certificate_keeps_the_mail_queued(tmp_path, ca):
    # No SSL_CERT_FILE: the test CA is unknown to the PDS, so STARTTLS fails verification.
    with SmtpCapture("starttls", ca) as smtp, \
            _pds(tmp_path, {"PDS_EMAIL_SMTP_URL": smtp.url(), "PDS_EMAIL_FROM_ADDRESS": FROM}) as pds, \
            pds.client() as c:
        user = create_account(c, "untrusted")
        _reset_request(c, user)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _admin_mail(pds, c)["lastError"] is None:
            time.sleep(0.2)
        status = _admin_mail(pds, c)
        assert status["queued"] == 1 and status["sent"] == 0
        assert "certificate" in status["lastError"].lower(), status
        assert status["oldestQueuedAgeSeconds"] is not None
        assert smtp.messages == []


def test_smtp_outage_delays_but_never_loses_or_doubles(tmp_path, ca):
    smtp = SmtpCapture("plain")
    smtp.start()
    pds = _pds(tmp_path, {"PDS_EMAIL_SMTP_URL": smtp.url(), "PDS_EMAIL_FROM_ADDRESS": FROM})
    try:
        pds.start()
        with pds.client() as c:
            user = create_account(c, "outage")
            address = f"{user['name']}@example.com"
            smtp.stop()  # the SMTP server goes away
            _reset_request(c, user)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _admin_mail(pds, c)["lastError"] is None:
                time.sleep(0.2)
            status = _admin_mail(pds, c)
            assert status["queued"] == 1 and status["lastError"], status
            smtp.start()  # back on the same port: the retry delivers it
            [mail] = smtp.wait_for(address, timeout=30)
            token = token_in(mail)
            time.sleep(6)  # past the next retry time: nothing goes twice
            assert len(smtp.to(address)) == 1
            status = _admin_mail(pds, c)
            assert status["queued"] == 0 and status["sent"] == 1

            # Durable: queued while the PDS is down too, then delivered by the next start.
            smtp.stop()
            other = create_account(c, "outage2")
            _reset_request(c, other)
        pds.stop()
        smtp.start()
        pds.start()
        other_mail = smtp.wait_for(f"{other['name']}@example.com", timeout=30)
        time.sleep(2)
        assert len(smtp.to(f"{other['name']}@example.com")) == 1 and len(smtp.to(address)) == 1
        with pds.client() as c:
            r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "new password 123"})
            assert r.status_code == 200, r.text
            r = c.post("/xrpc/com.atproto.server.resetPassword",
                       json={"token": token_in(other_mail[0]), "password": "new password 456"})
            assert r.status_code == 200, r.text
    finally:
        pds.stop()
        smtp.stop()


def test_without_smtp_the_flows_name_the_setting(tmp_path):
    with _pds(tmp_path, {}) as pds, pds.client() as c:
        user = create_account(c, "nosmtp")
        for nsid, body in (("requestEmailConfirmation", None), ("requestPasswordReset", {"email": "a@example.com"}),
                           ("requestAccountDelete", None)):
            r = c.post(f"/xrpc/com.atproto.server.{nsid}", headers=user["headers"], json=body)
            assert "PDS_EMAIL_SMTP_URL" in assert_error(r, 400, "InvalidRequest")["message"], nsid
        # Nothing to mail for an unconfirmed address: the change works without SMTP.
        r = c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"])
        assert r.json() == {"tokenRequired": False}
        r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
                   json={"email": f"changed-{user['name']}@example.com", "emailAuthFactor": True})
        assert "PDS_EMAIL_SMTP_URL" in assert_error(r, 400, "InvalidRequest")["message"]
        status = _admin_mail(pds, c)
        assert status["configured"] is False and status["queued"] == 0
        # The operator-token path keeps working.
        r = c.post("/xrpc/_admin/account-delete-token", auth=("admin", pds.admin_password()), json={"did": user["did"]})
        assert r.status_code == 200, r.text
        r = c.post("/xrpc/com.atproto.server.deleteAccount",
                   json={"did": user["did"], "password": PASSWORD, "token": r.json()["token"]})
        assert r.status_code == 200, r.text
