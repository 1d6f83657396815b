"""age encryption (https://age-encryption.org/v1) of backup archives, streamed through pyrage.

pyrage's ``encrypt_io``/``decrypt_io`` read and write file objects in small chunks, so an archive of
any size is encrypted in constant memory and the result opens with the standard ``age`` tool.
Recipients are X25519 (``age1…``) or SSH (``ssh-ed25519``, ``ssh-rsa``) public keys; identities are
read from an age identity file (``AGE-SECRET-KEY-1…`` lines) or an unencrypted OpenSSH private key.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pyrage


class IdentityError(ValueError):
    """The identity file is missing, unreadable or holds no usable key."""


class DecryptionFailed(ValueError):
    """The archive does not open with the given identities, or its bytes were altered."""


def parse_recipients(text: str) -> list:
    """Parse a comma-separated list of recipients; a bad one raises ``ValueError`` naming it."""
    out = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            if item.startswith("age1"):
                out.append(pyrage.x25519.Recipient.from_str(item))
            elif item.startswith("ssh-"):
                out.append(pyrage.ssh.Recipient.from_str(item))
            else:
                raise ValueError("unknown kind")
        except Exception:
            shown = item if len(item) <= 24 else item[:20] + "…"
            raise ValueError(f"not an age recipient (age1… or ssh-ed25519/ssh-rsa key): {shown!r}") from None
    return out


def load_identities(path: Path) -> list:
    """Read an age identity file (one or more ``AGE-SECRET-KEY-1`` lines) or an OpenSSH private key."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror}") from None
    text = data.decode("utf-8", "replace")
    if "-----BEGIN" in text:
        try:
            return [pyrage.ssh.Identity.from_buffer(data)]
        except Exception:
            raise IdentityError(f"{path}: not a usable (unencrypted) OpenSSH private key") from None
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise IdentityError(f"{path}: a line is not an age identity (AGE-SECRET-KEY-1…)") from None
    if not identities:
        raise IdentityError(f"{path}: holds no age identity")
    return identities


def generate_identity() -> tuple[str, str]:
    """A new X25519 identity as (secret identity line, public recipient)."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def encrypt_stream(reader: BinaryIO, writer: BinaryIO, recipients: list) -> None:
    pyrage.encrypt_io(reader, writer, recipients)


def decrypt_stream(reader: BinaryIO, writer: BinaryIO, identities: list) -> None:
    try:
        pyrage.decrypt_io(reader, writer, identities)
    except pyrage.DecryptError as exc:
        raise DecryptionFailed(_explain(str(exc))) from None
    except OSError as exc:
        # pyrage reports a failed chunk authentication (altered or truncated payload) as an OSError.
        if "decryption error" in str(exc).lower():
            raise DecryptionFailed("the archive is damaged or was altered (payload authentication failed)") from None
        raise


def _explain(message: str) -> str:
    low = message.lower()
    if "no matching keys" in low:
        return "the archive is not encrypted to this identity (wrong key)"
    return f"the archive is damaged or was altered ({message})"
