"""Keys, did:key and signatures against the interop vectors, plus the low-S rule on our own output."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import coincurve
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import multibase

from squall.atproto import crypto
from squall.atproto.crypto import (
    P256_N,
    SECP256K1_N,
    Keypair,
    P256Keypair,
    PublicKey,
    Secp256k1Keypair,
    load_keypair,
    parse_did_key,
    verify_signature,
)
from squall.atproto.errors import AtprotoError, SignatureError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interop" / "crypto"


def _load_json(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _b64(s: str) -> bytes:
    # The fixtures use standard base64 without padding.
    return base64.b64decode(s + "=" * (-len(s) % 4))


SIGNATURE_FIXTURES = _load_json("signature-fixtures.json")
K256_DIDKEYS = _load_json("w3c_didkey_K256.json")
P256_DIDKEYS = _load_json("w3c_didkey_P256.json")

CURVES = {
    "ES256K": (Secp256k1Keypair, SECP256K1_N, ec.SECP256K1()),
    "ES256": (P256Keypair, P256_N, ec.SECP256R1()),
}


_FIXED_KEYS = {
    "ES256K": Secp256k1Keypair.from_private_hex(K256_DIDKEYS[0]["privateKeyBytesHex"]),
    "ES256": P256Keypair.from_private_bytes(crypto.b58decode(P256_DIDKEYS[0]["privateKeyBytesBase58"])),
}


def _rs(sig: bytes) -> tuple[int, int]:
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def _openssl_accepts(key: PublicKey, message: bytes, r: int, s: int) -> bool:
    """Plain ECDSA (no low-S rule) through OpenSSL: is (r, s) mathematically a valid signature?"""
    curve = CURVES[key.algorithm][2]
    pub = ec.EllipticCurvePublicKey.from_encoded_point(curve, key.compressed)
    try:
        pub.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# -- interop vectors ---------------------------------------------------------------------------


def test_fixture_files_are_complete():
    assert len(SIGNATURE_FIXTURES) == 6
    assert len(K256_DIDKEYS) == 5
    assert len(P256_DIDKEYS) == 1


@pytest.mark.parametrize(
    "case", SIGNATURE_FIXTURES, ids=[f"{c['algorithm']}-{c['tags'] or 'valid'}" for c in SIGNATURE_FIXTURES]
)
def test_signature_fixture(case):
    message = _b64(case["messageBase64"])
    signature = _b64(case["signatureBase64"])
    key = PublicKey.from_did_key(case["publicKeyDid"])
    assert key.algorithm == case["algorithm"]
    assert key.did_key() == case["publicKeyDid"]

    # The legacy multibase form (no multicodec) names the same key, given either hint.
    assert PublicKey.from_multibase(case["publicKeyMultibase"], case["didDocSuite"]) == key
    assert PublicKey.from_multibase(case["publicKeyMultibase"], case["algorithm"]) == key

    assert key.verify(message, signature) is case["validSignature"]
    assert verify_signature(case["publicKeyDid"], message, signature) is case["validSignature"]

    if "high-s" in case["tags"]:
        r, s = _rs(signature)
        assert s > CURVES[key.algorithm][1] // 2
        # Mathematically valid: refusing it is atproto policy, not a failed ECDSA check.
        assert _openssl_accepts(key, message, r, s)
    if "der-encoded" in case["tags"]:
        assert signature[0] == 0x30 and len(signature) != 64


@pytest.mark.parametrize("case", K256_DIDKEYS, ids=lambda c: c["publicDidKey"][-8:])
def test_k256_did_key_vectors(case):
    raw = bytes.fromhex(case["privateKeyBytesHex"])
    keypair = Secp256k1Keypair.from_private_hex(case["privateKeyBytesHex"])
    assert keypair.did_key() == case["publicDidKey"]
    assert keypair.private_bytes() == raw
    assert keypair.private_hex() == case["privateKeyBytesHex"]
    assert load_keypair("ES256K", raw).did_key() == case["publicDidKey"]
    parsed = parse_did_key(case["publicDidKey"])
    assert parsed.algorithm == "ES256K"
    assert parsed == keypair.public_key
    assert parsed.compressed[0] in (2, 3) and len(parsed.compressed) == 33
    assert case["publicDidKey"].startswith("did:key:zQ3s")


@pytest.mark.parametrize("case", P256_DIDKEYS, ids=lambda c: c["publicDidKey"][-8:])
def test_p256_did_key_vectors(case):
    raw = crypto.b58decode(case["privateKeyBytesBase58"])
    assert len(raw) == 32
    keypair = P256Keypair.from_private_bytes(raw)
    assert keypair.did_key() == case["publicDidKey"]
    assert load_keypair("ES256", raw).did_key() == case["publicDidKey"]
    assert parse_did_key(case["publicDidKey"]) == keypair.public_key
    assert parse_did_key(case["publicDidKey"]).algorithm == "ES256"
    assert case["publicDidKey"].startswith("did:key:zDna")


# -- base58btc ---------------------------------------------------------------------------------


@given(st.binary(max_size=80), st.integers(min_value=0, max_value=4))
def test_base58_matches_multiformats(data, zeros):
    data = b"\x00" * zeros + data
    encoded = crypto.b58encode(data)
    assert "z" + encoded == multibase.encode(data, "base58btc")
    assert crypto.b58decode(encoded) == data


def test_base58_rejects_non_alphabet():
    for bad in ("0", "O", "I", "l", "abc+"):
        with pytest.raises(SignatureError):
            crypto.b58decode(bad)


# -- signing and verifying ---------------------------------------------------------------------


@pytest.fixture(params=["ES256K", "ES256"])
def keypair(request) -> Keypair:
    return CURVES[request.param][0].generate()


def test_sign_verify_round_trip(keypair):
    message = b"commit bytes"
    sig = keypair.sign(message)
    assert len(sig) == 64
    assert keypair.public_key.verify(message, sig)
    assert verify_signature(keypair.did_key(), message, sig)
    assert not keypair.public_key.verify(message + b"!", sig)
    other = type(keypair).generate()
    assert not other.public_key.verify(message, sig)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not keypair.public_key.verify(message, flipped)


def test_jwt_alg(keypair):
    assert keypair.jwt_alg == keypair.algorithm == keypair.public_key.algorithm
    assert keypair.public_key.jwt_alg == keypair.algorithm


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
@settings(max_examples=300, deadline=None)
@given(message=st.binary(max_size=256))
def test_signatures_are_low_s(alg, message):
    cls, order, _ = CURVES[alg]
    kp = _FIXED_KEYS[alg]
    sig = kp.sign(message)
    r, s = _rs(sig)
    assert 0 < r < order
    assert 0 < s <= order // 2
    assert kp.public_key.verify(message, sig)


def test_high_s_variant_of_own_signature_is_rejected(keypair):
    order = CURVES[keypair.algorithm][1]
    message = b"hello high-s"
    r, s = _rs(keypair.sign(message))
    high = r.to_bytes(32, "big") + (order - s).to_bytes(32, "big")
    assert _openssl_accepts(keypair.public_key, message, r, order - s)
    assert keypair.public_key.verify(message, high) is False
    assert verify_signature(keypair.did_key(), message, high) is False


def test_libsecp256k1_itself_refuses_high_s():
    # The explicit low-S check in PublicKey.verify is the rule; this shows coincurve does not
    # quietly normalise a high-S signature either (so the two layers agree).
    kp = _FIXED_KEYS["ES256K"]
    r, s = _rs(kp.sign(b"m"))
    raw = coincurve.PublicKey(kp.public_key.compressed)
    assert raw.verify(encode_dss_signature(r, s), b"m") is True
    assert raw.verify(encode_dss_signature(r, SECP256K1_N - s), b"m") is False


def test_public_keys_are_immutable():
    key = _FIXED_KEYS["ES256K"].public_key
    with pytest.raises(AttributeError):
        key.algorithm = "ES256"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        key.compressed = b"\x02" * 33  # type: ignore[misc]


def test_der_form_of_own_signature_is_rejected(keypair):
    message = b"hello der"
    r, s = _rs(keypair.sign(message))
    der = encode_dss_signature(r, s)
    assert _openssl_accepts(keypair.public_key, message, r, s)
    assert keypair.public_key.verify(message, der) is False


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
def test_out_of_range_scalars_are_rejected(alg):
    order = CURVES[alg][1]
    key = _FIXED_KEYS[alg].public_key
    for r, s in [(0, 1), (1, 0), (order, 1), (1, order // 2 + 1), (2**256 - 1, 1)]:
        assert key.verify(b"m", r.to_bytes(32, "big") + s.to_bytes(32, "big")) is False


@given(st.one_of(st.binary(max_size=100), st.none(), st.text(max_size=10), st.integers()))
def test_verify_never_raises_on_garbage(signature):
    for key in (_FIXED_KEYS["ES256K"].public_key, _FIXED_KEYS["ES256"].public_key):
        assert key.verify(b"message", signature) is False


def test_secp256k1_signing_is_deterministic():
    kp = _FIXED_KEYS["ES256K"]
    assert kp.sign(b"same") == kp.sign(b"same")
    assert kp.sign(b"same") != kp.sign(b"other")


# -- keys and did:key --------------------------------------------------------------------------


def test_did_key_round_trip(keypair):
    did = keypair.did_key()
    key = parse_did_key(did)
    assert key == keypair.public_key
    assert hash(key) == hash(keypair.public_key)
    assert key.did_key() == did
    assert did == "did:key:" + key.multibase()
    assert PublicKey.from_multibase(key.multibase()) == key
    assert PublicKey.from_compressed(key.compressed, keypair.algorithm) == key
    assert crypto.format_did_key(keypair.algorithm, key.compressed) == did
    # The multicodec prefix is the varint of secp256k1-pub (0xe7) or p256-pub (0x1200).
    prefix = {"ES256K": b"\xe7\x01", "ES256": b"\x80\x24"}[keypair.algorithm]
    assert crypto.b58decode(did[len("did:key:z"):]) == prefix + key.compressed


def test_legacy_uncompressed_multibase_is_read_and_compressed(keypair):
    key = keypair.public_key
    legacy = "z" + crypto.b58encode(key.uncompressed)
    assert len(key.uncompressed) == 65 and key.uncompressed[0] == 4
    assert PublicKey.from_multibase(legacy, keypair.algorithm) == key


def test_multibase_algorithm_checks():
    k1 = _FIXED_KEYS["ES256K"].public_key
    legacy = "z" + crypto.b58encode(k1.compressed)
    with pytest.raises(SignatureError, match="legacy"):
        PublicKey.from_multibase(legacy)
    with pytest.raises(SignatureError, match="expected ES256"):
        PublicKey.from_multibase(k1.multibase(), "ES256")
    with pytest.raises(SignatureError, match="unsupported key algorithm"):
        PublicKey.from_multibase(legacy, "Ed25519")
    with pytest.raises(SignatureError, match="base58btc"):
        PublicKey.from_multibase("m" + legacy[1:], "ES256K")


def _off_curve_x(alg: str) -> bytes:
    """A compressed encoding whose x has no point on the curve (found by search, checked by OpenSSL)."""
    curve = CURVES[alg][2]
    for x in range(1, 100):
        raw = b"\x02" + x.to_bytes(32, "big")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)
        except ValueError:
            return raw
    raise AssertionError("no off-curve x found")


@pytest.mark.parametrize(
    "did, why",
    [
        ("did:web:example.com", "not a did:key"),
        ("did:key:", "base58btc"),
        ("did:key:Q3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "base58btc"),
        ("did:key:z0Q3shok", "base58btc character"),
        # ed25519-pub (0xed) is a real multicodec, but not an atproto curve.
        ("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "unsupported key multicodec"),
        ("did:key:z" + "Q3s" * 100, "too long"),
        ("did:key:z", "too short"),
        (None, "must be a string"),
    ],
)
def test_malformed_did_keys_raise(did, why):
    with pytest.raises(SignatureError, match=why):
        parse_did_key(did)


def test_did_key_with_truncated_point_raises():
    did = _FIXED_KEYS["ES256K"].did_key()
    short = "did:key:z" + crypto.b58encode(b"\xe7\x01" + _FIXED_KEYS["ES256K"].public_key.compressed[:-1])
    assert short != did
    with pytest.raises(SignatureError, match="33-byte"):
        parse_did_key(short)


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
def test_off_curve_points_are_rejected(alg):
    raw = _off_curve_x(alg)
    with pytest.raises(SignatureError, match="not a valid"):
        PublicKey.from_compressed(raw, alg)
    prefix = {"ES256K": b"\xe7\x01", "ES256": b"\x80\x24"}[alg]
    with pytest.raises(SignatureError):
        parse_did_key("did:key:z" + crypto.b58encode(prefix + raw))


def test_verify_signature_raises_only_for_a_bad_did_key():
    with pytest.raises(SignatureError):
        verify_signature("did:plc:abc", b"m", b"\x01" * 64)
    assert verify_signature(_FIXED_KEYS["ES256"].did_key(), b"m", b"\x01" * 64) is False


def test_errors_are_atproto_errors():
    assert issubclass(SignatureError, AtprotoError)


# -- keypairs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
def test_private_key_round_trip(alg):
    cls = CURVES[alg][0]
    kp = cls.generate()
    raw = kp.private_bytes()
    assert len(raw) == 32
    again = cls.from_private_bytes(raw)
    assert again.did_key() == kp.did_key()
    assert cls.from_private_hex(kp.private_hex()).did_key() == kp.did_key()
    assert load_keypair(alg.lower(), raw).did_key() == kp.did_key()
    assert isinstance(load_keypair(alg, raw), cls)
    # A signature from one copy verifies with the other.
    assert again.public_key.verify(b"x", kp.sign(b"x"))


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
def test_bad_private_keys_raise(alg):
    cls, order, _ = CURVES[alg]
    for raw in (b"", b"\x01" * 31, b"\x01" * 33, b"\x00" * 32, order.to_bytes(32, "big"), b"\xff" * 32):
        with pytest.raises(SignatureError):
            cls.from_private_bytes(raw)
    with pytest.raises(SignatureError, match="hex"):
        cls.from_private_hex("not hex")


def test_load_keypair_unknown_algorithm():
    with pytest.raises(SignatureError, match="unsupported key algorithm"):
        load_keypair("Ed25519", b"\x01" * 32)


def test_repr_does_not_leak_private_key(keypair):
    text = repr(keypair)
    assert keypair.private_hex() not in text
    assert keypair.did_key() in text


def test_keypair_is_abstract():
    with pytest.raises(TypeError):
        Keypair()  # type: ignore[abstract]
