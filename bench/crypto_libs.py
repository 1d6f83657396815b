"""ECDSA throughput: secp256k1 with coincurve vs cryptography, P-256 with cryptography.

Each row signs or verifies SHA-256 of a ~300-byte message (about a commit object). The
"squall.atproto.crypto" rows are what the PDS actually runs, including the compact r||s
conversion and the low-S check; the "raw" rows are the library call alone.

Run: .venv/bin/python bench/crypto_libs.py [seconds-per-row]
"""

from __future__ import annotations

import os
import sys
import time

import coincurve
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from squall.atproto.crypto import P256Keypair, Secp256k1Keypair, parse_did_key
from squall.atproto.tid import TidClock


def rate(fn, seconds: float) -> tuple[float, float]:
    """(operations per second, microseconds per operation), timed in batches."""
    fn()  # warm up
    n = 0
    batch = 50
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, elapsed / n * 1e6


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    message = os.urandom(300)
    ecdsa = ec.ECDSA(hashes.SHA256())

    k1 = Secp256k1Keypair.generate()
    k1_sig = k1.sign(message)
    k1_pub = k1.public_key

    cc_priv = coincurve.PrivateKey()
    cc_pub = coincurve.PublicKey(cc_priv.public_key.format())
    cc_der = cc_priv.sign(message)

    ossl_k1 = ec.generate_private_key(ec.SECP256K1())
    ossl_k1_pub = ossl_k1.public_key()
    ossl_k1_der = ossl_k1.sign(message, ecdsa)

    p256 = P256Keypair.generate()
    p256_sig = p256.sign(message)
    p256_pub = p256.public_key

    ossl_p256 = ec.generate_private_key(ec.SECP256R1())
    ossl_p256_pub = ossl_p256.public_key()
    ossl_p256_der = ossl_p256.sign(message, ecdsa)

    did = k1.did_key()
    clock = TidClock()

    rows = [
        ("secp256k1 sign    coincurve (raw)", lambda: cc_priv.sign(message)),
        ("secp256k1 verify  coincurve (raw)", lambda: cc_pub.verify(cc_der, message)),
        ("secp256k1 sign    cryptography (raw)", lambda: ossl_k1.sign(message, ecdsa)),
        ("secp256k1 verify  cryptography (raw)", lambda: ossl_k1_pub.verify(ossl_k1_der, message, ecdsa)),
        ("secp256k1 sign    squall.atproto.crypto", lambda: k1.sign(message)),
        ("secp256k1 verify  squall.atproto.crypto", lambda: k1_pub.verify(message, k1_sig)),
        ("P-256     sign    cryptography (raw)", lambda: ossl_p256.sign(message, ecdsa)),
        ("P-256     verify  cryptography (raw)", lambda: ossl_p256_pub.verify(ossl_p256_der, message, ecdsa)),
        ("P-256     sign    squall.atproto.crypto", lambda: p256.sign(message)),
        ("P-256     verify  squall.atproto.crypto", lambda: p256_pub.verify(message, p256_sig)),
        ("did:key parse (secp256k1)", lambda: parse_did_key(did)),
        ("did:key parse + verify (secp256k1)", lambda: parse_did_key(did).verify(message, k1_sig)),
        ("TidClock.next_tid", clock.next_tid),
    ]
    print(f"{'operation':44} {'ops/s':>10} {'µs/op':>9}")
    for name, fn in rows:
        ops, micros = rate(fn, seconds)
        print(f"{name:44} {ops:10,.0f} {micros:9.1f}")


if __name__ == "__main__":
    main()
