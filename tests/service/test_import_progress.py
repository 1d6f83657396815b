"""importRepo reports its progress (bytes received, records checked, elapsed) in the JSON log."""

from __future__ import annotations

import json

from tests.service.test_migration import CAR, bearer, export, old, plc, signup  # noqa: F401 (fixtures)


def test_import_logs_progress(old):
    user = signup(old, "prog")
    did = user["did"]
    with old.client() as c:
        for i in range(7):
            r = c.post("/xrpc/com.atproto.repo.createRecord", headers=bearer(user["accessJwt"]), json={
                "repo": did, "collection": "app.bsky.feed.post",
                "record": {"text": f"post {i}", "createdAt": "2024-05-01T12:00:00.000Z"}})
            assert r.status_code == 200, r.text
        car = export(old, did)
        # An active repo refuses a CAR whose rev is not newer (no rollback by import, issue #20); a
        # deactivated one, as a migration target is, takes it.
        r = c.post("/xrpc/com.atproto.server.deactivateAccount", headers=bearer(user["accessJwt"]), json={})
        assert r.status_code == 200, r.text
        r = c.post("/xrpc/com.atproto.repo.importRepo", content=car, headers={**bearer(user["accessJwt"]), **CAR})
        assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in old.logs().splitlines() if line.startswith("{")]
    progress = [line for line in lines if line.get("message") == "import progress" and did in line.get("task", "")]
    assert progress and progress[-1]["done"] is True
    assert progress[-1]["bytes"] == len(car)
    assert progress[-1]["records"] == 7
    assert progress[-1]["elapsed_seconds"] >= 0
