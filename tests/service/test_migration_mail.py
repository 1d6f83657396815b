"""Account migration when the OLD server has SMTP configured: the variant of
``test_migration.test_full_migration_between_two_squall_servers`` where the PLC token comes by
e-mail, as with the reference PDS — requestPlcOperationSignature mails it, signPlcOperation takes
it from the mail (once), the NEW server publishes the operation and the account moves.
"""

from __future__ import annotations

import pytest

from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble
from tests.helpers.smtp import SmtpCapture, token_in
from tests.helpers.verify import fetch_did_doc, signing_key, verify_repo_car
from tests.service.test_migration import (CAR, NEW_SERVICE_DID, assert_error, bearer, events_of, export,
                                          migrate_create, plc_token, service_auth, sign_on, sign_request, signup)


@pytest.fixture(scope="module")
def plc():
    with PlcDirectoryDouble() as double:
        yield double


@pytest.fixture(scope="module")
def smtp():
    with SmtpCapture("plain") as server:
        yield server


@pytest.fixture(scope="module")
def old(plc, smtp, tmp_path_factory):
    env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true",
           "PDS_EMAIL_SMTP_URL": smtp.url(), "PDS_EMAIL_FROM_ADDRESS": "old-pds@example.test"}
    with PdsProcess(tmp_path_factory.mktemp("old") / "data", env_extra=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def new(plc, tmp_path_factory):
    env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url, "PDS_DEV_MODE": "true",
           "PDS_SERVICE_DID": NEW_SERVICE_DID}
    with PdsProcess(tmp_path_factory.mktemp("new") / "data", env_extra=env) as proc:
        yield proc


def test_migration_with_the_plc_token_by_mail(old, new, plc, smtp):
    user = signup(old, "mailmover")
    did = user["did"]
    auth_old = bearer(user["accessJwt"])
    old_key = signing_key(fetch_did_doc(did, plc_url=plc.url))
    with old.client() as old_c, new.client() as new_c:
        r = old_c.post("/xrpc/com.atproto.repo.createRecord", headers=auth_old, json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"text": "before the move", "createdAt": "2024-05-01T12:00:00.000Z"}})
        assert r.status_code == 200, r.text
        r = migrate_create(new, user, service_auth(old, user))
        assert r.status_code == 200, r.text
        auth_new = bearer(r.json()["accessJwt"])
        car = export(old, did)
        exported = verify_repo_car(car, did, old_key)
        r = new_c.post("/xrpc/com.atproto.repo.importRepo", content=car, headers={**auth_new, **CAR})
        assert r.status_code == 200, r.text

        # The identity: the old server mails the PLC token (no operator involved).
        r = old_c.post("/xrpc/com.atproto.identity.requestPlcOperationSignature", headers=auth_old)
        assert r.status_code == 200, r.text
        [mail] = smtp.wait_for(f"{user['handle']}@example.com")
        token = token_in(mail)
        assert "identity" in mail.text() and user["handle"] in mail.text()
        recommended = new_c.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers=auth_new).json()
        assert_error(sign_request(old, auth_old, {"token": "ABCDE-FGHIJ", **recommended}), 400, "InvalidToken")
        operation = sign_on(old, auth_old, token, **recommended)
        # Used once.
        assert_error(sign_request(old, auth_old, {"token": token, **recommended}), 400, "InvalidToken")
        r = new_c.post("/xrpc/com.atproto.identity.submitPlcOperation", headers=auth_new, json={"operation": operation})
        assert r.status_code == 200, r.text
        doc = fetch_did_doc(did, plc_url=plc.url)
        assert signing_key(doc).did_key() == recommended["verificationMethods"]["atproto"]
        assert new_c.post("/xrpc/com.atproto.server.activateAccount", headers=auth_new).status_code == 200
        assert old_c.post("/xrpc/com.atproto.server.deactivateAccount", headers=auth_old, json={}).status_code == 200
        assert [kind for kind, _ in events_of(new, did)] == ["identity", "account", "identity", "sync"]
        assert events_of(new, did)[-1][1]["rev"] == exported.rev

    # The operator's token still works on a server that mails (e.g. the user lost access to the mailbox).
    other = signup(old, "optok")
    op = sign_on(old, bearer(other["accessJwt"]), plc_token(old, other["did"]))
    assert op["prev"] and op["type"] == "plc_operation"
