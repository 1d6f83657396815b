"""First-boot secrets under ``<data>/secrets`` (mode 0600), reused on every later boot.

The environment wins when it sets a value (``PDS_JWT_SECRET``, ``PDS_ADMIN_PASSWORD``,
``PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX``). Otherwise a value is generated once and written
atomically, so a crash mid-write never leaves a half secret. The admin password is generated
readable (the CLI inside the container uses it) and shown to the operator exactly once.
"""

from __future__ import annotations

import os
import secrets as _random
import string
from dataclasses import dataclass
from pathlib import Path

from .atproto.crypto import Secp256k1Keypair
from .config import Settings

JWT_SECRET_FILE = "jwt_secret"
ADMIN_PASSWORD_FILE = "admin_password"
PLC_ROTATION_KEY_FILE = "plc_rotation_key.k256.hex"


@dataclass(frozen=True)
class Secrets:
    jwt_secret: str
    admin_password: str | None
    plc_rotation_key: Secp256k1Keypair
    generated_admin_password: str | None  # set only on the boot that created it: print it once

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return "Secrets(<redacted>)"


def _write_secret(path: Path, value: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_or_create(directory: Path, name: str, make) -> tuple[str, bool]:
    path = directory / name
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value, False
    value = make()
    _write_secret(path, value)
    return value, True


def _new_admin_password() -> str:
    # Letters and digits only (~190 bits): a password that starts with "-" reads as an option on
    # command lines (`--admin-password -x…`), and operators paste this one into tools.
    alphabet = string.ascii_letters + string.digits
    return "".join(_random.choice(alphabet) for _ in range(32))


def load_or_create_secrets(settings: Settings) -> Secrets:
    directory = settings.secrets_directory
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)

    if settings.jwt_secret:
        jwt_secret = settings.jwt_secret
    else:
        jwt_secret, _ = _read_or_create(directory, JWT_SECRET_FILE, lambda: _random.token_hex(32))

    generated = None
    if settings.admin_password:
        admin_password: str | None = settings.admin_password
    elif settings.admin_token_hash:
        admin_password = None  # the operator keeps only a hash: no Basic password at all
    else:
        admin_password, created = _read_or_create(directory, ADMIN_PASSWORD_FILE, _new_admin_password)
        generated = admin_password if created else None

    if settings.plc_rotation_key_k256_private_key_hex:
        rotation_hex = settings.plc_rotation_key_k256_private_key_hex.strip().lower()
    else:
        rotation_hex, _ = _read_or_create(
            directory, PLC_ROTATION_KEY_FILE, lambda: Secp256k1Keypair.generate().private_hex()
        )
    rotation = Secp256k1Keypair.from_private_hex(rotation_hex)
    return Secrets(jwt_secret, admin_password, rotation, generated)
