"""The PLC directory double enforces the directory's rules: a wrongly formed operation is refused.

Operations here are built by hand (DAG-CBOR + keys from the core), not with squall.identity.plc, so
the double is checked on its own. A real published log (did:plc:nhxcyu4ewwhl5pqil4dotqjo, public
data of plc.directory) shows that it accepts what the real directory accepted.
"""

from __future__ import annotations

import base64
import copy
import hashlib

import httpx
import pytest

from squall.atproto import dagcbor
from squall.atproto.cid import CID
from squall.atproto.crypto import SECP256K1_N, P256Keypair, Secp256k1Keypair
from tests.helpers.plc import PlcDirectoryDouble

# A real operation log from the public directory (a genesis and one handle change).
REAL_DID = "did:plc:nhxcyu4ewwhl5pqil4dotqjo"
REAL_LOG = [
    {
        "sig": "v9rHEhW4XVwMKRSd2yeFgk4-mZthHSZwJ4tShNPqDP4NH3w79CkxIOmJ393D6MEyWZLN1qxS1qBIbFEGtfoDDw",
        "prev": None,
        "type": "plc_operation",
        "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://pds.robocracy.org"}},
        "alsoKnownAs": ["at://bnewbold.pds.robocracy.org"],
        "rotationKeys": ["did:key:zQ3shcciz4AvrLyDnUdZLpQys3kyCsesojRNzJAieyDStGxGo"],
        "verificationMethods": {"atproto": "did:key:zQ3shazA2airLo8gNJvxGMFZWPJDRkLGNR6mn9Txsc8YYndwy"},
    },
    {
        "sig": "P8TrUomEKSnJpyuoyqdaqv-KilKbQKoi6MNf8DNN8LdFn1cA3_BtkqVYAjmucpQ8DDSze-jG4YDvC6HFK9QPOA",
        "prev": "bafyreidj5ywfhbfvr27l4cc7a3u4clup5vx343ufuzdliethuhzzxjbg4q",
        "type": "plc_operation",
        "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://pds.robocracy.org"}},
        "alsoKnownAs": ["at://bnewbold.robocracy.org"],
        "rotationKeys": ["did:key:zQ3shcciz4AvrLyDnUdZLpQys3kyCsesojRNzJAieyDStGxGo"],
        "verificationMethods": {"atproto": "did:key:zQ3shazA2airLo8gNJvxGMFZWPJDRkLGNR6mn9Txsc8YYndwy"},
    },
]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(op: dict, key) -> dict:
    unsigned = {k: v for k, v in op.items() if k != "sig"}
    return {**unsigned, "sig": b64url(key.sign(dagcbor.encode(unsigned)))}


def did_of(op: dict) -> str:
    return "did:plc:" + base64.b32encode(hashlib.sha256(dagcbor.encode(op)).digest()).decode().lower()[:24]


def cid_of(op: dict) -> str:
    return str(CID.from_block(dagcbor.encode(op)))


def unsigned_op(rotation: list[str], handle: str = "alice.example.com", prev: str | None = None) -> dict:
    signing = Secp256k1Keypair.generate()
    return {
        "type": "plc_operation",
        "rotationKeys": rotation,
        "verificationMethods": {"atproto": signing.did_key()},
        "alsoKnownAs": [f"at://{handle}"],
        "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://pds.example.com"}},
        "prev": prev,
    }


@pytest.fixture(scope="module")
def plc():
    with PlcDirectoryDouble() as double:
        yield double


@pytest.fixture
def client(plc):
    plc.clear_failures()
    with httpx.Client(base_url=plc.url, timeout=10) as c:
        yield c


def genesis(client, key=None):
    key = key or Secp256k1Keypair.generate()
    op = sign(unsigned_op([key.did_key()]), key)
    did = did_of(op)
    r = client.post(f"/{did}", json=op)
    assert r.status_code == 200, r.text
    return did, op, key


def test_real_directory_log_is_accepted(client):
    r = client.post(f"/{REAL_DID}", json=REAL_LOG[0])
    assert r.status_code == 200, r.text
    r = client.post(f"/{REAL_DID}", json=REAL_LOG[1])
    assert r.status_code == 200, r.text
    audit = client.get(f"/{REAL_DID}/log/audit").json()
    assert [e["cid"] for e in audit] == ["bafyreidj5ywfhbfvr27l4cc7a3u4clup5vx343ufuzdliethuhzzxjbg4q",
                                         "bafyreiemmb2ephqyt7orhiv4vp7gmdohnzhgkehwzfrvirgvg7fg352ysi"]
    doc = client.get(f"/{REAL_DID}").json()
    assert doc["alsoKnownAs"] == ["at://bnewbold.robocracy.org"]
    assert doc["verificationMethod"][0]["publicKeyMultibase"] == "zQ3shazA2airLo8gNJvxGMFZWPJDRkLGNR6mn9Txsc8YYndwy"
    assert client.get(f"/{REAL_DID}/log/last").json() == REAL_LOG[1]
    # Sending an operation that is already in the log is a conflict, not a new entry.
    assert client.post(f"/{REAL_DID}", json=REAL_LOG[1]).status_code == 409


def test_genesis_and_update_chain(client):
    did, op, key = genesis(client)
    update = sign(unsigned_op([key.did_key()], handle="bob.example.com", prev=cid_of(op)), key)
    assert client.post(f"/{did}", json=update).status_code == 200
    assert client.get(f"/{did}").json()["alsoKnownAs"] == ["at://bob.example.com"]
    assert len(client.get(f"/{did}/log").json()) == 2


def test_p256_rotation_keys_work(client):
    key = P256Keypair.generate()
    did, _, _ = genesis(client, key)
    assert client.get(f"/{did}").status_code == 200


def test_wrong_did_is_refused(client):
    key = Secp256k1Keypair.generate()
    op = sign(unsigned_op([key.did_key()]), key)
    other = sign(unsigned_op([key.did_key()]), key)
    r = client.post(f"/{did_of(other)}", json=op)
    assert r.status_code == 400 and "DID mismatch" in r.json()["message"]


def test_bad_signature_is_refused(client):
    key = Secp256k1Keypair.generate()
    op = sign(unsigned_op([key.did_key()]), key)
    tampered = {**op, "alsoKnownAs": ["at://mallory.example.com"]}  # signed content changed
    r = client.post(f"/{did_of(tampered)}", json=tampered)
    assert r.status_code == 400 and "signature" in r.json()["message"]


def test_genesis_signed_by_a_key_outside_its_rotation_keys_is_refused(client):
    listed, signer = Secp256k1Keypair.generate(), Secp256k1Keypair.generate()
    op = sign(unsigned_op([listed.did_key()]), signer)
    r = client.post(f"/{did_of(op)}", json=op)
    assert r.status_code == 400 and "signature" in r.json()["message"]


def test_update_by_a_non_rotation_key_is_refused(client):
    did, op, key = genesis(client)
    attacker = Secp256k1Keypair.generate()
    # The attacker lists itself as rotation key in the new op: only the previous op's keys count.
    update = sign(unsigned_op([attacker.did_key()], prev=cid_of(op)), attacker)
    r = client.post(f"/{did}", json=update)
    assert r.status_code == 400 and "rotation key of the previous operation" in r.json()["message"]
    assert len(client.get(f"/{did}/log").json()) == 1


def test_bad_prev_is_refused(client):
    did, op, key = genesis(client)
    first = sign(unsigned_op([key.did_key()], handle="b1.example.com", prev=cid_of(op)), key)
    assert client.post(f"/{did}", json=first).status_code == 200
    # prev pointing at the genesis again (a fork), and prev pointing nowhere
    fork = sign(unsigned_op([key.did_key()], handle="b2.example.com", prev=cid_of(op)), key)
    r = client.post(f"/{did}", json=fork)
    assert r.status_code == 400 and "prev" in r.json()["message"]
    nowhere = sign(unsigned_op([key.did_key()], handle="b3.example.com",
                               prev=str(CID.from_block(b"nothing"))), key)
    assert client.post(f"/{did}", json=nowhere).status_code == 400
    missing_prev = sign(unsigned_op([key.did_key()], handle="b4.example.com", prev=None), key)
    assert client.post(f"/{did}", json=missing_prev).status_code == 400
    # a genesis whose prev is not null
    g = sign(unsigned_op([key.did_key()], prev=cid_of(op)), key)
    assert client.post(f"/{did_of(g)}", json=g).status_code == 400


def _high_s(op: dict) -> dict:
    raw = base64.urlsafe_b64decode(op["sig"] + "==")
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    return {**op, "sig": b64url(r + (SECP256K1_N - s).to_bytes(32, "big"))}


@pytest.mark.parametrize("mutate, fragment", [
    (lambda op: {k: v for k, v in op.items() if k != "services"}, "exactly the fields"),
    (lambda op: {**op, "extra": 1}, "exactly the fields"),
    (lambda op: {**op, "type": "create_account"}, "unsupported operation type"),
    (lambda op: {**op, "sig": op["sig"] + "=="}, "base64url"),
    (lambda op: {**op, "sig": op["sig"][:-1]}, "64-byte"),
    (_high_s, "signature"),
    (lambda op: {**op, "rotationKeys": []}, "1 to 5"),
    (lambda op: {**op, "rotationKeys": op["rotationKeys"] * 2}, "repeat"),
    (lambda op: {**op, "rotationKeys": ["did:key:zNotAKey"]}, "did:key"),
    (lambda op: {**op, "verificationMethods": {"atproto": 42}}, "verificationMethods"),
    (lambda op: {**op, "services": {"atproto_pds": {"type": "x"}}}, "services"),
    (lambda op: {**op, "alsoKnownAs": ["at://" + "a" * 8000]}, "bytes"),
])
def test_malformed_operations_are_refused(client, mutate, fragment):
    key = Secp256k1Keypair.generate()
    op = mutate(sign(unsigned_op([key.did_key()]), key))
    try:
        did = did_of(op)
    except Exception:
        did = "did:plc:" + "a" * 24
    r = client.post(f"/{did}", json=op)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]


def test_non_json_body_is_refused(client):
    r = client.post("/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", content=b"\x00not json")
    assert r.status_code == 400


def test_tombstone_ends_the_log(client):
    did, op, key = genesis(client)
    tomb = sign({"type": "plc_tombstone", "prev": cid_of(op)}, key)
    assert client.post(f"/{did}", json=tomb).status_code == 200
    assert client.get(f"/{did}").status_code == 410
    after = sign(unsigned_op([key.did_key()], prev=cid_of(tomb)), key)
    r = client.post(f"/{did}", json=after)
    assert r.status_code == 400 and "tombstoned" in r.json()["message"]


def test_unknown_did_is_404(client):
    assert client.get("/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").status_code == 404
    assert client.get("/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/log/last").status_code == 404


def test_failure_knob(plc, client):
    plc.fail_next(2, status=502)
    key = Secp256k1Keypair.generate()
    op = sign(unsigned_op([key.did_key()]), key)
    did = did_of(op)
    assert client.post(f"/{did}", json=op).status_code == 502
    assert client.post(f"/{did}", json=op).status_code == 502
    assert client.get(f"/{did}").status_code == 404  # the forced failures stored nothing
    assert client.post(f"/{did}", json=copy.deepcopy(op)).status_code == 200
