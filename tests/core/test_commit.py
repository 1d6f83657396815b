"""Signed v3 commits: shape, signing and verification with both key types."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from squall.atproto import dagcbor
from squall.atproto.cid import CID
from squall.atproto.commit import check_commit, decode_commit, sign_commit, unsigned_bytes, verify_commit
from squall.atproto.crypto import P256_N, SECP256K1_N, P256Keypair, Secp256k1Keypair
from squall.atproto.errors import DecodeError
from squall.atproto.mst import EMPTY_ROOT_CID

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
REV = "3jzfcijpj2z2a"
KEYPAIRS = [Secp256k1Keypair, P256Keypair]


@pytest.mark.parametrize("kind", KEYPAIRS, ids=lambda k: k.__name__)
def test_sign_and_verify(kind) -> None:
    key = kind.generate()
    cid, block, commit = sign_commit(DID, EMPTY_ROOT_CID, REV, key)
    assert cid == CID.from_block(block)
    assert dagcbor.decode(block) == commit
    assert decode_commit(block) == commit
    assert commit == {"did": DID, "version": 3, "data": EMPTY_ROOT_CID, "rev": REV, "prev": None, "sig": commit["sig"]}
    assert len(commit["sig"]) == 64
    # the signature covers the DAG-CBOR of the commit without 'sig'
    assert unsigned_bytes(commit) == dagcbor.encode({k: v for k, v in commit.items() if k != "sig"})
    assert key.public_key.verify(unsigned_bytes(commit), commit["sig"])
    assert verify_commit(commit, key.public_key)
    assert verify_commit(block, key.public_key)
    assert verify_commit(block, key.did_key())
    assert not verify_commit(commit, kind.generate().public_key)


@pytest.mark.parametrize("kind", KEYPAIRS, ids=lambda k: k.__name__)
@pytest.mark.parametrize(
    "field,new",
    [
        ("did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"),
        ("rev", "3jzfcijpj2z2b"),
        ("data", CID.from_block(b"\xa0")),
        ("prev", CID.from_block(b"\xa0")),
    ],
)
def test_tampered_commit_fails(kind, field: str, new: object) -> None:
    key = kind.generate()
    _, _, commit = sign_commit(DID, EMPTY_ROOT_CID, REV, key)
    assert not verify_commit({**commit, field: new}, key.public_key)
    flipped = bytes([commit["sig"][0] ^ 1]) + commit["sig"][1:]
    assert not verify_commit({**commit, "sig": flipped}, key.public_key)


def _high_s(sig: bytes, order: int) -> tuple[bytes, int, int]:
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    assert s <= order // 2  # we only ever emit low-S
    return r.to_bytes(32, "big") + (order - s).to_bytes(32, "big"), r, order - s


def test_high_s_secp256k1_commit_fails() -> None:
    key = Secp256k1Keypair.generate()
    _, _, commit = sign_commit(DID, EMPTY_ROOT_CID, REV, key)
    high, _, _ = _high_s(commit["sig"], SECP256K1_N)
    assert not verify_commit({**commit, "sig": high}, key.public_key)


def test_high_s_p256_commit_fails_though_mathematically_valid() -> None:
    key = P256Keypair.generate()
    _, _, commit = sign_commit(DID, EMPTY_ROOT_CID, REV, key)
    high, r, s = _high_s(commit["sig"], P256_N)
    # plain ECDSA accepts the (r, n - s) twin ...
    key._key.public_key().verify(encode_dss_signature(r, s), unsigned_bytes(commit), ec.ECDSA(hashes.SHA256()))
    # ... atproto does not
    assert not verify_commit({**commit, "sig": high}, key.public_key)


def test_decode_commit_rejects_bad_shapes() -> None:
    key = Secp256k1Keypair.generate()
    _, _, good = sign_commit(DID, EMPTY_ROOT_CID, REV, key)
    no_prev = {k: v for k, v in good.items() if k != "prev"}
    bad = [
        no_prev,
        {**good, "extra": 1},
        {**good, "version": 2},
        {**good, "version": True},
        {**good, "did": 5},
        {**good, "did": "plc:abc"},
        {**good, "data": str(EMPTY_ROOT_CID)},
        {**good, "rev": "not-a-tid"},
        {**good, "rev": 123},
        {**good, "prev": "bafy"},
        {**good, "sig": "c2ln"},
        [good],
    ]
    for value in bad:
        with pytest.raises(DecodeError):
            decode_commit(dagcbor.encode(value))
        with pytest.raises(DecodeError):
            check_commit(value)
    with pytest.raises(DecodeError):
        decode_commit(b"\xff")
    # prev may be a link
    _, block, commit = sign_commit(DID, EMPTY_ROOT_CID, REV, key, prev=CID.from_block(b"\xa0"))
    assert decode_commit(block)["prev"] == CID.from_block(b"\xa0")
    assert verify_commit(block, key.public_key)


def test_sign_commit_refuses_bad_input() -> None:
    key = Secp256k1Keypair.generate()
    with pytest.raises(DecodeError):
        sign_commit("alice", EMPTY_ROOT_CID, REV, key)
    with pytest.raises(DecodeError):
        sign_commit(DID, EMPTY_ROOT_CID, "2024-01-01", key)
