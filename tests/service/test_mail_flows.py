"""E-mail flows end to end through a real ``squall serve`` and a real SMTP server on loopback
(aiosmtpd with STARTTLS required, a certificate from a test CA, and AUTH with URL-encoded
credentials): request → mail captured → the token read from the mail → the completing call → the
effect. Also: tokens expire and are single-use, no account enumeration, sign-in codes (two-factor)
for createSession, the outbox in the admin status, and what a spam filter looks at in a mail.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from tests.helpers.accounts import PASSWORD, assert_error, bearer, create_account, db_rows
from tests.helpers.smtp import SmtpCapture, make_test_ca, token_in

SMTP_USER = "pds@example.test"
SMTP_PASSWORD = "p@ss:w/rd %"
FROM = "Squall PDS <noreply@pds.example.test>"


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    ca = make_test_ca(tmp_path_factory.mktemp("ca"))
    with SmtpCapture("starttls", ca, user=SMTP_USER, password=SMTP_PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def pds_env(smtp):
    # URL-encoded credentials, as an operator writes them: @ : / % and a blank in the password.
    userinfo = "pds%40example.test:p%40ss%3Aw%2Frd%20%25"
    return {"PDS_EMAIL_SMTP_URL": smtp.url("smtp", userinfo=userinfo, query="?requireTLS=true"),
            "PDS_EMAIL_FROM_ADDRESS": FROM,
            "PDS_MODERATION_EMAIL_SMTP_URL": smtp.url("smtp", userinfo=userinfo),
            "PDS_MODERATION_EMAIL_ADDRESS": "moderation@pds.example.test",
            "SSL_CERT_FILE": str(smtp.ca.ca_path)}


def email_of(user: dict) -> str:
    return f"{user['name']}@example.com"


def login(c, identifier: str, password: str = PASSWORD, **extra):
    return c.post("/xrpc/com.atproto.server.createSession",
                  json={"identifier": identifier, "password": password, **extra})


def expire_tokens(pds, table: str, did: str) -> None:
    """Move a live token's expiry into the past (the server would need 15 minutes otherwise)."""
    with closing(sqlite3.connect(pds.data_dir / "pds.sqlite", timeout=10)) as conn:
        conn.execute(f"UPDATE {table} SET expires_at = ? WHERE did = ?", (int(time.time()) - 1, did))
        conn.commit()


def test_confirm_email(pds, c, smtp):
    user = create_account(c, "confirm")
    assert c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).json()["emailConfirmed"] is False
    r = c.post("/xrpc/com.atproto.server.requestEmailConfirmation", headers=user["headers"])
    assert r.status_code == 200, r.text
    [mail] = smtp.wait_for(email_of(user))
    assert mail.tls and mail.authenticated_as == SMTP_USER  # STARTTLS, then AUTH with the decoded password
    token = token_in(mail)
    assert user["handle"] in mail.text() and "localhost" in mail.text()
    # The token is stored hashed: the plain code is nowhere in the token table.
    stored = db_rows(pds, "SELECT token_hash FROM email_token WHERE did = ?", (user["did"],))
    assert len(stored) == 1 and token not in stored[0]["token_hash"] and len(stored[0]["token_hash"]) == 64
    r = c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"],
               json={"email": "someone.else@example.com", "token": token})
    assert_error(r, 400, "InvalidEmail")
    r = c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"],
               json={"email": email_of(user).upper(), "token": token.lower()})
    assert r.status_code == 200, r.text
    session = c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).json()
    assert session["emailConfirmed"] is True and session["emailAuthFactor"] is False
    # Used once: the same token again is refused.
    r = c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"],
               json={"email": email_of(user), "token": token})
    assert_error(r, 400, "InvalidToken")


def test_mail_headers_and_parts(c, smtp):
    user = create_account(c, "headers")
    assert c.post("/xrpc/com.atproto.server.requestEmailConfirmation", headers=user["headers"]).status_code == 200
    [mail] = smtp.wait_for(email_of(user))
    msg = mail.message()
    assert msg["From"] == FROM and mail.mail_from == "noreply@pds.example.test"
    assert msg["To"] == email_of(user) and mail.rcpt_tos == [email_of(user)]
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@localhost>")
    assert msg["Date"] and msg["Auto-Submitted"] == "auto-generated" and msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"
    html = mail.html()
    assert token_in(mail) in html and user["handle"] in html
    # No tracking: nothing in the HTML loads from anywhere.
    assert "<img" not in html and "http" not in html.split("<body", 1)[1]


def test_reset_password_revokes_sessions(c, smtp):
    user = create_account(c, "reset")
    old_refresh = user["refreshJwt"]
    second = login(c, user["handle"]).json()
    r = c.post("/xrpc/com.atproto.server.requestPasswordReset", json={"email": email_of(user)})
    assert r.status_code == 200, r.text
    token = token_in(smtp.wait_for(email_of(user))[0])
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "short"})
    assert_error(r, 400, "InvalidPassword")
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "a brand new password"})
    assert r.status_code == 200, r.text
    assert_error(login(c, user["handle"]), 401, "AuthenticationRequired")
    assert login(c, user["handle"], "a brand new password").status_code == 200
    for refresh in (old_refresh, second["refreshJwt"]):  # every earlier session is over
        r = c.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(refresh))
        assert r.status_code in (400, 401) and r.json()["error"] in ("ExpiredToken", "InvalidToken",
                                                                     "AuthenticationRequired"), r.text
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "yet another password"})
    assert_error(r, 400, "InvalidToken")  # single use


def test_password_reset_does_not_enumerate(c, smtp):
    before = len(smtp.messages)
    unknown = c.post("/xrpc/com.atproto.server.requestPasswordReset", json={"email": "nobody-here@example.com"})
    user = create_account(c, "enum")
    known = c.post("/xrpc/com.atproto.server.requestPasswordReset", json={"email": email_of(user)})
    assert unknown.status_code == known.status_code == 200
    assert unknown.content == known.content and unknown.headers.get("content-type") == known.headers.get("content-type")
    smtp.wait_for(email_of(user))
    time.sleep(0.5)
    assert smtp.to("nobody-here@example.com") == [] and len(smtp.messages) == before + 1
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": "ABCDE-FGHIJ", "password": "whatever pass"})
    assert_error(r, 400, "InvalidToken")


def test_expired_tokens_are_refused(pds, c, smtp):
    user = create_account(c, "expire")
    assert c.post("/xrpc/com.atproto.server.requestPasswordReset", json={"email": email_of(user)}).status_code == 200
    token = token_in(smtp.wait_for(email_of(user))[0])
    expire_tokens(pds, "email_token", user["did"])
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "a brand new password"})
    assert_error(r, 400, "ExpiredToken")
    assert login(c, user["handle"]).status_code == 200  # unchanged
    # Asking again replaces the token: the new one works, the old one does not.
    assert c.post("/xrpc/com.atproto.server.requestPasswordReset", json={"email": email_of(user)}).status_code == 200
    fresh = token_in(smtp.wait_for(email_of(user), 2)[1])
    assert fresh != token
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": token, "password": "a brand new password"})
    assert_error(r, 400, "InvalidToken")
    r = c.post("/xrpc/com.atproto.server.resetPassword", json={"token": fresh, "password": "a brand new password"})
    assert r.status_code == 200, r.text


def _confirm(c, smtp, user) -> None:
    assert c.post("/xrpc/com.atproto.server.requestEmailConfirmation", headers=user["headers"]).status_code == 200
    token = token_in(smtp.wait_for(email_of(user))[-1])
    r = c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"],
               json={"email": email_of(user), "token": token})
    assert r.status_code == 200, r.text


def test_update_email(c, smtp):
    user = create_account(c, "update")
    # Not confirmed yet: no token needed, none mailed.
    r = c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"])
    assert r.status_code == 200 and r.json() == {"tokenRequired": False}
    new1 = f"new1-{user['name']}@example.com"
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"], json={"email": new1})
    assert r.status_code == 200, r.text
    assert c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).json()["email"] == new1
    user["name_email"] = new1
    # Confirm the new address, after which a change wants a token mailed to it.
    assert c.post("/xrpc/com.atproto.server.requestEmailConfirmation", headers=user["headers"]).status_code == 200
    token = token_in(smtp.wait_for(new1)[-1])
    assert c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"],
                  json={"email": new1, "token": token}).status_code == 200
    new2 = f"new2-{user['name']}@example.com"
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"], json={"email": new2})
    assert_error(r, 400, "TokenRequired")
    r = c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"])
    assert r.status_code == 200 and r.json() == {"tokenRequired": True}
    mails = smtp.wait_for(new1, 2)  # to the current (confirmed) address
    token = token_in(mails[-1])
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"], json={"email": new2, "token": "ZZZZZ-ZZZZZ"})
    assert_error(r, 400, "InvalidToken")
    other = create_account(c, "taken")
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
               json={"email": email_of(other), "token": token})
    assert_error(r, 400, "InvalidRequest")  # taken by another account (and the token is not used up)
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"], json={"email": new2, "token": token})
    assert r.status_code == 200, r.text
    session = c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).json()
    assert session["email"] == new2 and session["emailConfirmed"] is False
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"], json={"email": "not an address"})
    assert_error(r, 400, "InvalidRequest")


def test_delete_account_by_mailed_token(pds, c, smtp):
    user = create_account(c, "delete")
    r = c.post("/xrpc/com.atproto.server.requestAccountDelete", headers=user["headers"])
    assert r.status_code == 200, r.text
    token = token_in(smtp.wait_for(email_of(user))[0])
    r = c.post("/xrpc/com.atproto.server.deleteAccount", json={"did": user["did"], "password": PASSWORD,
                                                              "token": "ABCDE-ABCDE"})
    assert_error(r, 400, "InvalidToken")
    r = c.post("/xrpc/com.atproto.server.deleteAccount", json={"did": user["did"], "password": PASSWORD, "token": token})
    assert r.status_code == 200, r.text
    assert db_rows(pds, "SELECT did FROM account WHERE did = ?", (user["did"],)) == []
    assert_error(login(c, user["handle"]), 401, "AuthenticationRequired")


def test_expired_delete_token_is_refused(pds, c, smtp):
    user = create_account(c, "delexp")
    assert c.post("/xrpc/com.atproto.server.requestAccountDelete", headers=user["headers"]).status_code == 200
    token = token_in(smtp.wait_for(email_of(user))[0])
    # The mailed deletion token lives 15 minutes (the operator's lives an hour).
    [row] = db_rows(pds, "SELECT expires_at FROM account_token WHERE did = ? AND purpose = 'delete'", (user["did"],))
    assert 14 * 60 <= row["expires_at"] - time.time() <= 15 * 60
    expire_tokens(pds, "account_token", user["did"])
    r = c.post("/xrpc/com.atproto.server.deleteAccount", json={"did": user["did"], "password": PASSWORD, "token": token})
    assert_error(r, 400, "ExpiredToken")
    assert db_rows(pds, "SELECT did FROM account WHERE did = ?", (user["did"],)) != []


def test_operator_delete_token_still_works(pds, c, admin):
    user = create_account(c, "optoken")
    r = c.post("/xrpc/_admin/account-delete-token", auth=admin, json={"did": user["did"]})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    r = c.post("/xrpc/com.atproto.server.deleteAccount", json={"did": user["did"], "password": PASSWORD, "token": token})
    assert r.status_code == 200, r.text


def test_sign_in_code(c, smtp):
    user = create_account(c, "twofa")
    # A confirmed address is needed before sign-in codes can be turned on.
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
               json={"email": email_of(user), "emailAuthFactor": True})
    assert_error(r, 400, "InvalidRequest")
    _confirm(c, smtp, user)
    r = c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"])
    token = token_in(smtp.wait_for(email_of(user), 2)[-1])
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
               json={"email": email_of(user), "emailAuthFactor": True, "token": token})
    assert r.status_code == 200, r.text
    session = c.get("/xrpc/com.atproto.server.getSession", headers=user["headers"]).json()
    assert session["emailAuthFactor"] is True and session["emailConfirmed"] is True

    # Without the code: refused, and a code is mailed.
    r = login(c, user["handle"])
    assert_error(r, 401, "AuthFactorTokenRequired")
    assert "accessJwt" not in r.json()
    code = token_in(smtp.wait_for(email_of(user), 3)[-1])
    # A wrong password is refused as before, and mails nothing.
    assert_error(login(c, user["handle"], "wrong password!"), 401, "AuthenticationRequired")
    assert_error(login(c, user["handle"], authFactorToken="AAAAA-AAAAA"), 400, "InvalidToken")
    r = login(c, user["handle"], authFactorToken=code)
    assert r.status_code == 200, r.text
    assert r.json()["emailAuthFactor"] is True and r.json()["accessJwt"]
    assert_error(login(c, user["handle"], authFactorToken=code), 400, "InvalidToken")  # used once
    time.sleep(0.5)
    assert len(smtp.to(email_of(user))) == 3  # the refused attempts with a token mailed nothing more
    # App passwords are for apps: they do not take a code.
    app = c.post("/xrpc/com.atproto.server.createAppPassword", headers=user["headers"], json={"name": "app"})
    assert app.status_code == 200, app.text
    assert login(c, user["handle"], app.json()["password"]).status_code == 200
    # Turned off again: the password alone signs in.
    r = c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"])
    token = token_in(smtp.wait_for(email_of(user), 4)[-1])
    r = c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
               json={"email": email_of(user), "emailAuthFactor": False, "token": token})
    assert r.status_code == 200, r.text
    assert login(c, user["handle"]).status_code == 200


def test_sign_in_code_expires(pds, c, smtp):
    user = create_account(c, "twofaexp")
    _confirm(c, smtp, user)
    c.post("/xrpc/com.atproto.server.requestEmailUpdate", headers=user["headers"])
    token = token_in(smtp.wait_for(email_of(user), 2)[-1])
    assert c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
                  json={"email": email_of(user), "emailAuthFactor": True, "token": token}).status_code == 200
    assert_error(login(c, user["handle"]), 401, "AuthFactorTokenRequired")
    code = token_in(smtp.wait_for(email_of(user), 3)[-1])
    expire_tokens(pds, "email_token", user["did"])
    assert_error(login(c, user["handle"], authFactorToken=code), 400, "ExpiredToken")


def test_moderation_mail(c, smtp, admin):
    user = create_account(c, "moderated")
    r = c.post("/xrpc/com.atproto.admin.sendEmail", auth=admin,
               json={"recipientDid": user["did"], "senderDid": "did:web:localhost", "subject": "About your posts",
                     "content": "Hello <there>, please read our rules."})
    assert r.status_code == 200 and r.json() == {"sent": True}, r.text
    [mail] = smtp.wait_for(email_of(user))
    assert mail.message()["From"] == "moderation@pds.example.test" and mail.message()["Subject"] == "About your posts"
    assert "Hello <there>" in mail.text() and "Hello &lt;there&gt;" in mail.html()


def test_admin_status_shows_the_outbox(c, smtp, admin):
    status = c.get("/xrpc/_admin/status", auth=admin).json()["mail"]
    assert status["configured"] is True and status["moderationConfigured"] is True
    assert status["sent"] >= 1 and status["failed"] == 0
    assert status["queued"] == 0 and status["oldestQueuedAgeSeconds"] is None
    assert "STARTTLS required" in status["smtp"]["account"] and "p@ss" not in str(status)


def test_bad_inputs(c):
    user = create_account(c, "badin")
    assert_error(c.post("/xrpc/com.atproto.server.confirmEmail", headers=user["headers"], json={"email": "x@y.z"}),
                 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.server.resetPassword", json={"token": "X" * 100, "password": "p" * 20}),
                 400, "InvalidToken")
    assert_error(c.post("/xrpc/com.atproto.server.requestPasswordReset", json={}), 400, "InvalidRequest")
    assert_error(c.post("/xrpc/com.atproto.server.requestEmailConfirmation"), 401, "AuthenticationRequired")
    assert_error(c.post("/xrpc/com.atproto.server.updateEmail", headers=user["headers"],
                        json={"email": "a@b.example", "emailAuthFactor": "yes"}), 400, "InvalidRequest")


def test_logs_hold_no_codes_or_smtp_password(pds, smtp):
    logs = pds.logs()
    assert "mail sent" in logs and "mail queued" in logs
    codes = {token_in(m) for m in smtp.messages if m.message()["From"] == FROM}
    assert len(codes) >= 10
    assert not [code for code in codes if code in logs]
    assert SMTP_PASSWORD not in logs and "p%40ss" not in logs
