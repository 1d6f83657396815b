"""Keys and signatures (https://atproto.com/specs/cryptography).

atproto uses two elliptic curves, both with ECDSA over SHA-256:

* ``ES256K``: secp256k1 (k256). Account signing keys use it, so every commit is signed with it and
  every firehose consumer verifies it. It goes through ``coincurve`` (libsecp256k1), an order of
  magnitude faster than OpenSSL's generic curve code (see ``bench/crypto_libs.py``).
* ``ES256``: NIST P-256 (p256), through ``cryptography``.

Signatures are the 64-byte "compact" ``r || s`` form and must be **low-S** (``s <= n/2``). A
high-S or DER-encoded signature is mathematically valid ECDSA but is refused, so that a
signature cannot be re-shaped into a second valid one. Signing always produces low-S.

Public keys travel as the 33-byte compressed point, wrapped as ``did:key`` or a DID document's
``publicKeyMultibase``: ``'z'`` + base58btc(multicodec varint + compressed point), with the
multicodecs ``secp256k1-pub`` (0xe7) and ``p256-pub`` (0x1200). Older DID documents carry the point
without the multicodec; that legacy form is read when the caller says which curve to expect.

base58btc is a small local implementation rather than ``multiformats``: a did:key is parsed for
every signature check, and ``multiformats`` takes ~30 µs to decode and ~180 µs to encode one key,
more than the signature check itself. The tests cross-check it against ``multiformats``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import MappingProxyType

import coincurve
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import SignatureError

__all__ = [
    "ES256K",
    "ES256",
    "PublicKey",
    "Keypair",
    "Secp256k1Keypair",
    "P256Keypair",
    "load_keypair",
    "parse_did_key",
    "verify_signature",
    "format_did_key",
]

ES256K = "ES256K"
ES256 = "ES256"

# Group orders: a signature's r and s live in [1, n-1]; low-S means s <= n // 2.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ORDER = MappingProxyType({ES256K: SECP256K1_N, ES256: P256_N})

# Unsigned-varint multicodec prefixes: secp256k1-pub = 0xe7, p256-pub = 0x1200.
_MULTICODEC_PREFIX = MappingProxyType({ES256K: b"\xe7\x01", ES256: b"\x80\x24"})
_PREFIX_TO_ALG = MappingProxyType({v: k for k, v in _MULTICODEC_PREFIX.items()})

DID_KEY_PREFIX = "did:key:"

# A did:key for these curves is 57 characters; the bound keeps base58 decoding (quadratic in the
# input length) cheap on hostile input while leaving room for keys from other curves to be
# recognised and refused with a clear message.
_MAX_MULTIBASE_LEN = 256

# Names a caller may use to say which curve a key or keypair is on. The DID-document suite names
# come from the legacy verification-method types that carry the multicodec-less key form.
_ALGORITHM_ALIASES = MappingProxyType({
    "es256k": ES256K,
    "secp256k1": ES256K,
    "k256": ES256K,
    "k-256": ES256K,
    "ecdsasecp256k1verificationkey2019": ES256K,
    "es256": ES256,
    "p256": ES256,
    "p-256": ES256,
    "secp256r1": ES256,
    "ecdsasecp256r1verificationkey2019": ES256,
})


def normalize_algorithm(name: str) -> str:
    """Map a curve, JWT ``alg`` or DID-document suite name to ``'ES256K'`` or ``'ES256'``."""
    if not isinstance(name, str):
        raise SignatureError(f"key algorithm must be a string, got {type(name).__name__}")
    try:
        return _ALGORITHM_ALIASES[name.lower()]
    except KeyError:
        raise SignatureError(
            f"unsupported key algorithm {name!r}: atproto uses ES256K (secp256k1) or ES256 (P-256)"
        ) from None


# -- base58btc ---------------------------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = MappingProxyType({c: i for i, c in enumerate(_B58_ALPHABET)})


def b58encode(data: bytes) -> str:
    """base58btc (Bitcoin alphabet), no multibase prefix."""
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    # Each leading zero byte is spelt as one '1' (the zero digit), as the format requires.
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises :class:`SignatureError` on a non-alphabet character."""
    num = 0
    for ch in text:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            raise SignatureError(f"invalid base58btc character {ch!r}")
        num = num * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\x00" * zeros + body


# -- signature shape ---------------------------------------------------------------------------


def _split_compact(signature: object, order: int) -> tuple[int, int] | None:
    """(r, s) of a 64-byte low-S compact signature, or None if it is any other shape."""
    if not isinstance(signature, (bytes, bytearray, memoryview)):
        return None
    sig = bytes(signature)
    if len(sig) != 64:
        return None  # DER signatures (70-72 bytes) and everything else end here
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < order and 0 < s <= order // 2):
        return None
    return r, s


def _compact_low_s(der: bytes, order: int) -> bytes:
    r, s = decode_dss_signature(der)
    if s > order // 2:
        s = order - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# -- public keys -------------------------------------------------------------------------------


class PublicKey:
    """A verification key on one of the two atproto curves, held as its compressed point."""

    __slots__ = ("_algorithm", "_compressed", "_backend")

    def __init__(self, algorithm: str, compressed: bytes, _backend: object) -> None:
        # Use the from_* constructors: they validate the point.
        self._algorithm = algorithm
        self._compressed = compressed
        self._backend = _backend

    @property
    def algorithm(self) -> str:
        """``'ES256K'`` (secp256k1) or ``'ES256'`` (P-256)."""
        return self._algorithm

    @property
    def compressed(self) -> bytes:
        """The 33-byte compressed SEC1 point."""
        return self._compressed

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_compressed(cls, raw: bytes, algorithm: str) -> "PublicKey":
        """A key from its 33-byte compressed SEC1 point; the point must lie on the curve."""
        algorithm = normalize_algorithm(algorithm)
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise SignatureError("public key must be bytes")
        raw = bytes(raw)
        if len(raw) != 33 or raw[0] not in (2, 3):
            raise SignatureError(
                f"{algorithm} public key must be a 33-byte compressed point, got {len(raw)} bytes"
            )
        return cls._from_point(raw, algorithm)

    @classmethod
    def _from_point(cls, raw: bytes, algorithm: str) -> "PublicKey":
        """Compressed (33 bytes) or uncompressed (65 bytes) SEC1 point, validated."""
        if algorithm == ES256K:
            try:
                backend = coincurve.PublicKey(raw)
            except (ValueError, TypeError) as exc:
                raise SignatureError("not a valid secp256k1 public key point") from exc
            return cls(ES256K, backend.format(compressed=True), backend)
        try:
            backend = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError as exc:
            raise SignatureError("not a valid P-256 public key point") from exc
        compressed = backend.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        return cls(ES256, compressed, backend)

    @classmethod
    def from_multicodec(cls, data: bytes) -> "PublicKey":
        """A key from multicodec varint + compressed point (the bytes inside a did:key)."""
        data = bytes(data)
        if len(data) < 2:
            raise SignatureError("multicodec key is too short")
        prefix = data[:2]
        algorithm = _PREFIX_TO_ALG.get(prefix)
        if algorithm is None:
            raise SignatureError(
                f"unsupported key multicodec 0x{prefix.hex()}: expected secp256k1-pub or p256-pub"
            )
        return cls.from_compressed(data[2:], algorithm)

    @classmethod
    def from_did_key(cls, did: str) -> "PublicKey":
        """Parse ``did:key:z…``; raises :class:`SignatureError` on anything else."""
        if not isinstance(did, str):
            raise SignatureError(f"did:key must be a string, got {type(did).__name__}")
        if not did.startswith(DID_KEY_PREFIX):
            raise SignatureError(f"not a did:key: {did[:64]!r}")
        mb = did[len(DID_KEY_PREFIX):]
        if not mb.startswith("z"):
            raise SignatureError("did:key must use base58btc multibase (a 'z' prefix)")
        return cls.from_multicodec(_decode_z(mb))

    @classmethod
    def from_multibase(cls, value: str, algorithm: str | None = None) -> "PublicKey":
        """Parse a DID document's ``publicKeyMultibase``.

        The current (``Multikey``) form carries the multicodec and needs no hint. The legacy form
        (suites ``EcdsaSecp256k1VerificationKey2019`` / ``EcdsaSecp256r1VerificationKey2019``) is
        the bare point, compressed or not, and is only read when ``algorithm`` names the curve.
        """
        if not isinstance(value, str):
            raise SignatureError(f"publicKeyMultibase must be a string, got {type(value).__name__}")
        if not value.startswith("z"):
            raise SignatureError("publicKeyMultibase must use base58btc (a 'z' prefix)")
        data = _decode_z(value)
        expected = normalize_algorithm(algorithm) if algorithm is not None else None
        prefix_alg = _PREFIX_TO_ALG.get(data[:2])
        if prefix_alg is not None and len(data) == 35:
            if expected is not None and expected != prefix_alg:
                raise SignatureError(f"publicKeyMultibase is a {prefix_alg} key, expected {expected}")
            return cls.from_compressed(data[2:], prefix_alg)
        if expected is None:
            raise SignatureError(
                "publicKeyMultibase has no known multicodec; the legacy form needs the key algorithm"
            )
        # Legacy points start with 0x02/0x03 (compressed) or 0x04, never with a multicodec byte.
        if (len(data) == 33 and data[0] in (2, 3)) or (len(data) == 65 and data[0] == 4):
            return cls._from_point(data, expected)
        raise SignatureError(f"legacy publicKeyMultibase is not a SEC1 point ({len(data)} bytes)")

    # -- views --------------------------------------------------------------------------------

    @property
    def jwt_alg(self) -> str:
        return self.algorithm

    @property
    def uncompressed(self) -> bytes:
        """65-byte SEC1 ``04 || x || y`` (what a JWK's x and y are cut from)."""
        if self.algorithm == ES256K:
            return self._backend.format(compressed=False)
        return self._backend.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def multicodec(self) -> bytes:
        return _MULTICODEC_PREFIX[self.algorithm] + self.compressed

    def multibase(self) -> str:
        """``publicKeyMultibase`` for a ``Multikey`` verification method."""
        return "z" + b58encode(self.multicodec())

    def did_key(self) -> str:
        return DID_KEY_PREFIX + self.multibase()

    # -- verification -------------------------------------------------------------------------

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a 64-byte low-S ``r || s`` ECDSA signature of SHA-256(message).

        Never raises for a bad signature: malformed, DER, high-S or wrong all give False.
        """
        parts = _split_compact(signature, _ORDER[self.algorithm])
        if parts is None:
            return False
        der = encode_dss_signature(*parts)
        if self.algorithm == ES256K:
            # libsecp256k1 refuses high-S on its own as well; the explicit check above keeps the
            # rule independent of the library.
            try:
                return self._backend.verify(der, bytes(message))
            except ValueError:
                return False
        try:
            self._backend.verify(der, bytes(message), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    # -- value semantics ----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PublicKey)
            and other.algorithm == self.algorithm
            and other.compressed == self.compressed
        )

    def __hash__(self) -> int:
        return hash((self.algorithm, self.compressed))

    def __repr__(self) -> str:
        return f"PublicKey({self.did_key()!r})"


def _decode_z(value: str) -> bytes:
    if len(value) > _MAX_MULTIBASE_LEN:
        raise SignatureError(f"multibase key is too long ({len(value)} characters)")
    return b58decode(value[1:])


def parse_did_key(did: str) -> PublicKey:
    """The public key inside a ``did:key``; raises :class:`SignatureError` when malformed."""
    return PublicKey.from_did_key(did)


def format_did_key(algorithm: str, compressed: bytes) -> str:
    """``did:key`` for a compressed point on the named curve (the point is validated)."""
    return PublicKey.from_compressed(compressed, algorithm).did_key()


def verify_signature(did_key: str, message: bytes, signature: bytes) -> bool:
    """Verify ``signature`` over ``message`` with the key in ``did_key``.

    A malformed did:key raises :class:`SignatureError` (the caller's data is broken); a bad
    signature returns False.
    """
    return parse_did_key(did_key).verify(message, signature)


# -- keypairs ----------------------------------------------------------------------------------


def _private_scalar(raw: object, order: int, curve: str) -> bytes:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise SignatureError("private key must be bytes")
    raw = bytes(raw)
    if len(raw) != 32:
        raise SignatureError(f"{curve} private key must be 32 bytes, got {len(raw)}")
    if not 0 < int.from_bytes(raw, "big") < order:
        raise SignatureError(f"{curve} private key is out of range")
    return raw


def _hex_bytes(value: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError("private key hex must be a string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise SignatureError("private key is not valid hex") from None


class Keypair(ABC):
    """A signing key. Signatures are SHA-256 ECDSA, 64-byte compact ``r || s``, low-S."""

    algorithm: str

    @property
    def jwt_alg(self) -> str:
        return self.algorithm

    @classmethod
    @abstractmethod
    def generate(cls) -> "Keypair": ...

    @classmethod
    @abstractmethod
    def from_private_bytes(cls, raw: bytes) -> "Keypair": ...

    @classmethod
    def from_private_hex(cls, value: str) -> "Keypair":
        return cls.from_private_bytes(_hex_bytes(value))

    @abstractmethod
    def private_bytes(self) -> bytes:
        """The 32-byte big-endian private scalar."""

    def private_hex(self) -> str:
        return self.private_bytes().hex()

    @property
    @abstractmethod
    def public_key(self) -> PublicKey: ...

    def did_key(self) -> str:
        return self.public_key.did_key()

    @abstractmethod
    def sign(self, message: bytes) -> bytes:
        """Sign SHA-256(message); returns 64 bytes ``r || s`` with S normalised to low-S."""

    def __repr__(self) -> str:
        # Never show the private key.
        return f"{type(self).__name__}({self.did_key()!r})"


class Secp256k1Keypair(Keypair):
    """secp256k1 (ES256K) through libsecp256k1, which signs deterministically (RFC 6979)."""

    algorithm = ES256K
    __slots__ = ("_key", "_public")

    def __init__(self, key: coincurve.PrivateKey) -> None:
        self._key = key
        self._public = PublicKey(ES256K, key.public_key.format(compressed=True), key.public_key)

    @classmethod
    def generate(cls) -> "Secp256k1Keypair":
        return cls(coincurve.PrivateKey())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "Secp256k1Keypair":
        return cls(coincurve.PrivateKey(_private_scalar(raw, SECP256K1_N, "secp256k1")))

    def private_bytes(self) -> bytes:
        return self._key.secret

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        # libsecp256k1 already emits low-S; normalising again costs nothing and keeps the rule local.
        return _compact_low_s(self._key.sign(bytes(message)), SECP256K1_N)


class P256Keypair(Keypair):
    """NIST P-256 (ES256) through ``cryptography``."""

    algorithm = ES256
    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        backend = key.public_key()
        compressed = backend.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        self._public = PublicKey(ES256, compressed, backend)

    @classmethod
    def generate(cls) -> "P256Keypair":
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "P256Keypair":
        scalar = int.from_bytes(_private_scalar(raw, P256_N, "P-256"), "big")
        return cls(ec.derive_private_key(scalar, ec.SECP256R1()))

    def private_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        # OpenSSL returns high-S about half the time; atproto only accepts low-S.
        der = self._key.sign(bytes(message), ec.ECDSA(hashes.SHA256()))
        return _compact_low_s(der, P256_N)


_KEYPAIR_CLASSES = MappingProxyType({ES256K: Secp256k1Keypair, ES256: P256Keypair})


def keypair_class(algorithm: str) -> type[Keypair]:
    return _KEYPAIR_CLASSES[normalize_algorithm(algorithm)]


def load_keypair(algorithm: str, raw: bytes) -> Keypair:
    """A keypair from its 32-byte private scalar; ``algorithm`` as in :func:`normalize_algorithm`."""
    return keypair_class(algorithm).from_private_bytes(raw)
