"""/metrics against a real server: a scripted workload, then a scrape parsed with the Prometheus
client's own parser; every family moves by what the workload did (issue #14)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.helpers.accounts import create_account, db_rows
from tests.helpers.net import free_port
from tests.helpers.pds import PdsProcess

N_CREATES = 5
N_DELETES = 2
BLOB = bytes(range(256)) * 4 + b"metrics"  # 1031 bytes
BACKUP_STATUS = {
    "format": "squall-backup-status/1", "state": "idle",
    "last_success": {"id": "20260101T000000Z", "finished_at": "2026-01-01T00:00:00Z", "duration_seconds": 12.5,
                     "archive_bytes": 123456},
    "last_failure": {"id": "x", "at": "2025-12-31T23:00:00Z", "stage": "upload", "error": "boom"},
    "consecutive_failures": 0,
}


class _Relay(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _Relay.hits.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def relay():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Relay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def pds_env(plc, relay):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: each crawl request there fails
    return {**plc.pds_env(), "PDS_METRICS_ENABLED": "true", "PDS_RATE_LIMITS_ENABLED": "true",
            "PDS_CRAWLERS": f"{relay},{dead}",
            # One frame of queue: a transaction that appends several events (createAccount) cuts
            # a live subscriber off with ConsumerTooSlow.
            "SQUALL_FIREHOSE_QUEUE_FRAMES": "1"}


def scrape(c: httpx.Client) -> dict[tuple[str, tuple], float]:
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def val(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_scrape_after_workload(pds, c, admin):
    (pds.data_dir / "backups").mkdir(exist_ok=True)
    (pds.data_dir / "backups" / "status.json").write_text(json.dumps(BACKUP_STATUS))
    before = scrape(c)
    assert val(before, "process_resident_memory_bytes") > 0
    assert val(before, "process_open_fds") > 0

    user = create_account(c, "met")
    did, headers = user["did"], user["headers"]
    base = scrape(c)

    # N creates and N_DELETES deletes: one commit each.
    uris = []
    for i in range(N_CREATES):
        r = c.post("/xrpc/com.atproto.repo.createRecord", headers=headers, json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": "2026-01-01T00:00:00Z"}})
        assert r.status_code == 200, r.text
        uris.append(r.json()["uri"])
    for uri in uris[:N_DELETES]:
        r = c.post("/xrpc/com.atproto.repo.deleteRecord", headers=headers,
                   json={"repo": did, "collection": "app.bsky.feed.post", "rkey": uri.rsplit("/", 1)[1]})
        assert r.status_code == 200, r.text
    # One blob upload; two calls of methods nobody serves (one label for both).
    r = c.post("/xrpc/com.atproto.repo.uploadBlob", headers={**headers, "content-type": "application/octet-stream"},
               content=BLOB)
    assert r.status_code == 200, r.text
    assert c.get("/xrpc/com.example.nothing.here").status_code == 501
    assert c.get("/xrpc/not-an-nsid").status_code == 501
    # 31 wrong passwords for one identifier: the 31st is refused by createSession's 30 per 5 minutes.
    statuses = [c.post("/xrpc/com.atproto.server.createSession",
                       json={"identifier": user["handle"], "password": "wrong password"}).status_code
                for _ in range(31)]
    assert statuses.count(429) == 1 and statuses[-1] == 429
    after = scrape(c)

    def delta(name: str, **labels: str) -> float:
        return val(after, name, **labels) - val(base, name, **labels)

    assert delta("squall_repo_writes_total", action="create") == N_CREATES
    assert delta("squall_repo_writes_total", action="delete") == N_DELETES
    assert delta("squall_repo_writes_total", action="update") == 0
    assert delta("squall_repo_commits_total") == N_CREATES + N_DELETES
    assert delta("squall_repo_write_duration_seconds_count") == N_CREATES + N_DELETES
    new_blocks = db_rows(pds, "SELECT COALESCE(SUM(size), 0) FROM repo_block WHERE did = ?", (did,))[0][0]
    assert delta("squall_repo_block_bytes_written_total") >= new_blocks > 0
    create = "com.atproto.repo.createRecord"
    assert delta("squall_xrpc_requests_total", nsid=create, status="200") == N_CREATES
    assert delta("squall_xrpc_request_duration_seconds_count", nsid=create) == N_CREATES
    assert delta("squall_xrpc_requests_total", nsid="unknown", status="501") == 2
    assert delta("squall_xrpc_requests_total", nsid="com.atproto.server.createSession", status="401") == 30
    assert delta("squall_xrpc_requests_total", nsid="com.atproto.server.createSession", status="429") == 1
    assert delta("squall_rate_limited_requests_total", nsid="com.atproto.server.createSession") == 1
    assert not any(labels and dict(labels).get("nsid") in ("com.example.nothing.here", "not-an-nsid")
                   for _, labels in after)
    assert delta("squall_blob_uploads_total") == 1
    assert delta("squall_blob_upload_bytes_total") == len(BLOB)
    # Every write transaction is timed: at least the commits, the blob row and the sign-in failures' none.
    assert delta("squall_db_transaction_duration_seconds_count", kind="write") >= N_CREATES + N_DELETES + 1
    assert delta("squall_db_transaction_duration_seconds_count", kind="read") > 0
    assert val(after, "squall_db_writer_queue_depth") == 0

    # Scrape-time gauges (cached for 5 s: wait it out).
    time.sleep(5.2)
    m = scrape(c)
    blob_bytes = db_rows(pds, "SELECT COALESCE(SUM(size), 0) FROM blob")[0][0]
    assert val(m, "squall_blob_store_bytes") == blob_bytes == len(BLOB)
    assert val(m, "squall_blob_store_blobs") == 1
    assert val(m, "squall_database_bytes") == (pds.data_dir / "pds.sqlite").stat().st_size
    assert val(m, "squall_database_wal_bytes") >= 0
    assert val(m, "squall_accounts", status="active") == 1
    assert val(m, "squall_backup_last_success_timestamp_seconds") == 1767225600.0
    assert val(m, "squall_backup_last_failure_timestamp_seconds") == 1767222000.0
    assert val(m, "squall_backup_last_duration_seconds") == 12.5
    assert val(m, "squall_backup_last_size_bytes") == 123456
    # Outbound: the PLC double answered every identity request; one crawler answered, one is down.
    assert val(m, "squall_outbound_requests_total", target="identity", outcome="ok") > 0
    wait_for(lambda: val(scrape(c), "squall_outbound_requests_total", target="crawler", outcome="error") >= 1)
    m = scrape(c)
    assert val(m, "squall_outbound_requests_total", target="crawler", outcome="ok") == len(_Relay.hits) >= 1

    # Account status changes show after the cache expires.
    other = create_account(c, "met")
    third = create_account(c, "met")
    r = c.post("/xrpc/com.atproto.admin.updateSubjectStatus", auth=admin, json={
        "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": other["did"]}, "takedown": {"applied": True}})
    assert r.status_code == 200, r.text
    r = c.post("/xrpc/com.atproto.server.deactivateAccount", headers=third["headers"], json={})
    assert r.status_code == 200, r.text
    time.sleep(5.2)
    m = scrape(c)
    assert val(m, "squall_accounts", status="active") == 1
    assert val(m, "squall_accounts", status="takendown") == 1
    assert val(m, "squall_accounts", status="deactivated") == 1


def test_firehose_families(pds, c):
    seq_now = db_rows(pds, "SELECT MAX(seq) FROM repo_seq")[0][0] or 0
    events = db_rows(pds, "SELECT COUNT(*) FROM repo_seq")[0][0]
    base = scrape(c)
    url = pds.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
    with connect(f"{url}?cursor=0", max_size=None) as ws:
        for _ in range(events):
            ws.recv(timeout=10)
        m = scrape(c)
        assert val(m, "squall_firehose_subscribers") == 1
        assert val(m, "squall_firehose_replay_events_total") - val(base, "squall_firehose_replay_events_total") == events
        user = create_account(c, "fh")  # several events in one transaction: the 1-frame queue overflows
        frame = ws.recv(timeout=10)
        assert frame  # the first event made it, or the ConsumerTooSlow error frame
        wait_for(lambda: val(scrape(c), "squall_firehose_slow_consumer_drops_total") == 1)
    wait_for(lambda: val(scrape(c), "squall_firehose_subscribers") == 0)
    m = scrape(c)
    sent = val(m, "squall_firehose_events_sent_total") - val(base, "squall_firehose_events_sent_total")
    assert events <= sent <= events + 1
    assert val(m, "squall_firehose_seq") > seq_now
    assert user["did"]


def test_metrics_off_is_404(tmp_path):
    with PdsProcess(tmp_path / "data") as proc, proc.client() as client:
        r = client.get("/metrics")
        assert r.status_code == 404
        assert r.json()["error"] == "NotFound"
        assert "PDS_METRICS_ENABLED" in r.json()["message"]


# -- the restore drill, health and replication from status.json (issue #16) -------------------------------

DRILL_STATUS = {
    **BACKUP_STATUS, "healthy": False,
    "unhealthy_reasons": ["the last restore drill (20260105T120000Z) failed: blobs: did:plc:x: blob b is missing"],
    "last_drill": {
        "id": "20260105T120000Z", "ok": False, "started_at": "2026-01-05T12:00:00Z",
        "finished_at": "2026-01-05T12:00:02Z", "duration_seconds": 2.25, "accounts": 4, "records": 20, "blobs": 7,
        "summary": "blobs: did:plc:x: blob b is missing",
        "checks": [
            {"name": "restore", "ok": True, "seconds": 0.31, "count": 15, "fault_count": 0, "faults": []},
            {"name": "repos", "ok": True, "seconds": 0.4, "count": 4, "fault_count": 0, "faults": []},
            {"name": "blobs", "ok": False, "seconds": 0.2, "count": 7, "fault_count": 2,
             "faults": [{"account": "did:plc:x", "fault": "blob b is missing"}]},
            {"name": "not-a-known-check", "ok": True, "seconds": 1, "count": 1, "fault_count": 0, "faults": []},
        ]},
    "replication": {"enabled": True, "state": "restarting", "encrypted": False, "lag_seconds": 0.75, "restarts": 3,
                    "replica": "s3://bucket/litestream/pds.sqlite", "last_error": "boom"},
}


def test_backup_drill_health_and_replication_families(pds, c):
    path = pds.data_dir / "backups" / "status.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(DRILL_STATUS))
    # Read at scrape time (the snapshot is cached for 5 s): wait for the new file to show.
    wait_for(lambda: any(name == "squall_backup_healthy" for name, _ in scrape(c)), timeout=10)
    m = scrape(c)
    assert val(m, "squall_backup_healthy") == 0
    assert val(m, "squall_backup_drill_last_ok") == 0
    assert val(m, "squall_backup_drill_last_failure_timestamp_seconds") == 1767614402.0  # 2026-01-05T12:00:02Z
    assert ("squall_backup_drill_last_success_timestamp_seconds", ()) not in m
    assert val(m, "squall_backup_drill_duration_seconds") == 2.25
    assert val(m, "squall_backup_drill_check_ok", check="restore") == 1
    assert val(m, "squall_backup_drill_check_ok", check="blobs") == 0
    assert val(m, "squall_backup_drill_check_seconds", check="repos") == 0.4
    assert val(m, "squall_backup_drill_check_count", check="blobs") == 7
    assert val(m, "squall_backup_drill_check_faults", check="blobs") == 2
    # Labels are the sidecar's closed sets: an unknown check name is not turned into a series.
    assert not any(dict(labels).get("check") == "not-a-known-check" for _, labels in m)
    assert val(m, "squall_backup_replication_lag_seconds") == 0.75
    assert val(m, "squall_backup_replication_restarts") == 3
    assert val(m, "squall_backup_replication_encrypted") == 0
    states = {dict(labels)["state"]: v for (name, labels), v in m.items() if name == "squall_backup_replication_state"}
    assert states == {"starting": 0, "waiting": 0, "running": 0, "restarting": 1, "failing": 0, "stopped": 0}
    # The snapshot families still come from the same file.
    assert val(m, "squall_backup_last_success_timestamp_seconds") == 1767225600.0

    # A passing drill, healthy, replication off: the success time, no replication series.
    passed = {**DRILL_STATUS, "healthy": True, "unhealthy_reasons": [], "replication": None,
              "last_drill": {**DRILL_STATUS["last_drill"], "ok": True, "finished_at": "2026-01-06T00:00:00Z"}}
    path.write_text(json.dumps(passed))
    wait_for(lambda: val(scrape(c), "squall_backup_healthy") == 1, timeout=10)
    m = scrape(c)
    assert val(m, "squall_backup_drill_last_success_timestamp_seconds") == 1767657600.0
    assert val(m, "squall_backup_drill_last_ok") == 1
    assert not any(name.startswith("squall_backup_replication") for name, _ in m)


# -- the relay monitor (issue #15) --------------------------------------------------------------------------


def test_relay_families(tmp_path):
    from tests.helpers.fake_relays import FakeRelay

    from squall.relays.model import ACCOUNT_STATES, HOST_STATES

    pds = PdsProcess(tmp_path / "data")
    with FakeRelay("localhost", pds.url, name="m-follower") as follower, \
            FakeRelay("localhost", pds.url, name="m-ahead") as ahead:
        follower.know_host()
        ahead.know_host()
        closed = f"http://127.0.0.1:{free_port()}"
        pds.env_extra = {"PDS_METRICS_ENABLED": "true", "PDS_RELAY_MONITOR_INTERVAL": "1",
                         "PDS_RELAY_MONITOR_URLS": f"{follower.url},{ahead.url},{closed}",
                         "PDS_RELAY_MONITOR_ACCOUNT_LIMIT": "50",
                         "SQUALL_RELAY_MONITOR_MIN_REQUEST_GAP": "0.2", "SQUALL_RELAY_MONITOR_REQUEST_TIMEOUT": "1.5",
                         "SQUALL_RELAY_MONITOR_RECHECK_DELAY": "0.3"}
        with pds, pds.client() as client:
            admin = ("admin", pds.admin_password())
            accounts = [create_account(client, "rm") for _ in range(2)]
            for relay in (follower, ahead):
                relay.wait_for(lambda: all(relay.repo(a["did"]) and relay.repo(a["did"]).rev for a in accounts),
                               what="the relay to see the accounts")
            ahead.seq_override = 10_000

            def status() -> dict:
                r = client.get("/xrpc/_admin/relays", params={"accounts": "true"}, auth=admin)
                assert r.status_code == 200, r.text
                return {row["url"]: row for row in r.json()["relays"]}

            def settled() -> bool:
                rows = status()
                return (rows[follower.url]["status"] == "ok" and rows[follower.url]["accounts"].get("ok") == 2
                        and rows[ahead.url]["status"] == "seq_ahead" and rows[closed]["status"] == "unreachable")

            wait_for(settled, timeout=20)
            time.sleep(5.2)  # the scrape snapshot is cached 5 s
            m = scrape(client)
            rows = status()
            # One-hot status over the bounded state set, one series per configured relay.
            for url, expected in ((follower.url, "ok"), (ahead.url, "seq_ahead"), (closed, "unreachable")):
                series = {dict(labels)["status"]: v for (name, labels), v in m.items()
                          if name == "squall_relay_status" and dict(labels)["relay"] == url}
                assert set(series) == set(HOST_STATES)
                assert [s for s, v in series.items() if v == 1] == [expected]
                assert val(m, "squall_relay_account_limit", relay=url) == 50
            relays_seen = {dict(labels).get("relay") for name, labels in m if name.startswith("squall_relay_")}
            assert relays_seen - {None} == {follower.url, ahead.url, closed}
            f = rows[follower.url]
            # The values are the stored check's (a check may have run since: compare with a tolerance of one check).
            assert val(m, "squall_relay_their_seq", relay=follower.url) <= f["theirSeq"]
            assert val(m, "squall_relay_their_seq", relay=ahead.url) == 10_000
            assert val(m, "squall_relay_account_count", relay=follower.url) == f["accountCount"] == 2
            assert val(m, "squall_relay_lag_events", relay=ahead.url) == 0
            assert abs(val(m, "squall_relay_clock_skew_seconds", relay=follower.url)) < 2
            assert ("squall_relay_their_seq", (("relay", closed),)) not in m  # unknown stays absent, not 0
            for state in ACCOUNT_STATES:
                expected = 2 if state == "ok" else 0
                assert val(m, "squall_relay_accounts", relay=follower.url, status=state) == expected, state
            assert ("squall_relay_accounts", (("relay", follower.url), ("status", "ok"))) in m
