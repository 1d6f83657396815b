"""Backup archives: tar (PAX) + zstd, optionally age-encrypted, written and read as streams.

Writing: tar → zstd → [age] → file, with the archive's size and SHA-256 computed on the way out.
Reading: source → SHA-256 → [age] → zstd → tar; every member is checked against the manifest (which is
the first member) while it streams, so memory stays constant whatever the archive size. A reader given
no destination only checks; with a destination it extracts, and the caller discards the destination
if anything fails. A thread bridges age (which pulls from a reader / pushes to a writer) and tar.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from .crypto import DecryptionFailed, decrypt_stream, encrypt_stream
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, CHUNK, Manifest, ManifestError, Marker, check_relative_path


class ArchiveError(ValueError):
    """The archive is damaged, altered, or does not match its manifest or marker."""


class Aborted(RuntimeError):
    """The run was asked to stop (SIGTERM) and stopped cleanly."""


CancelCheck = Callable[[], None]


def _no_cancel() -> None:
    return None


class HashingWriter(io.RawIOBase):
    def __init__(self, raw: BinaryIO, cancel: CancelCheck = _no_cancel) -> None:
        self.raw, self.cancel = raw, cancel
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.cancel()
        mv = memoryview(b)
        self.raw.write(mv)
        self.sha.update(mv)
        self.size += len(mv)
        return len(mv)


class HashingReader(io.RawIOBase):
    """Reads from anything with ``read(n)`` (a file, an S3 streaming body), hashing what passes."""

    def __init__(self, raw, cancel: CancelCheck = _no_cancel) -> None:
        self.raw, self.cancel = raw, cancel
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self.cancel()
        data = self.raw.read(min(len(b), CHUNK))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass(frozen=True)
class ArchiveInfo:
    name: str
    size: int
    sha256: str
    encrypted: bool


def archive_name(backup_id: str, encrypted: bool) -> str:
    return f"{backup_id}.tar.zst" + (".age" if encrypted else "")


def write_archive(staging: Path, manifest: Manifest, out_path: Path, recipients: list, level: int,
                  cancel: CancelCheck = _no_cancel) -> ArchiveInfo:
    """Write ``manifest.json`` then every file of the manifest (read from ``staging``) to ``out_path``."""
    manifest_bytes = manifest.to_bytes()

    def produce(sink: BinaryIO) -> None:
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with cctx.stream_writer(sink, closefd=False) as zw:
            with tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size, info.mode, info.mtime = len(manifest_bytes), 0o600, 0
                tar.addfile(info, io.BytesIO(manifest_bytes))
                for entry in manifest.files:
                    src = staging / entry.path
                    info = tarfile.TarInfo(entry.path)
                    info.size, info.mode = entry.size, entry.mode
                    info.mtime = int(src.stat().st_mtime)
                    with open(src, "rb") as f:
                        tar.addfile(info, HashingReader(f, cancel))

    with open(out_path, "wb") as raw:
        out = HashingWriter(raw, cancel)
        if not recipients:
            produce(out)
        else:
            _encrypting_pipe(produce, out, recipients)
        raw.flush()
        os.fsync(raw.fileno())
    return ArchiveInfo(out_path.name, out.size, out.sha.hexdigest(), bool(recipients))


def _encrypting_pipe(produce: Callable[[BinaryIO], None], out: BinaryIO, recipients: list) -> None:
    r, w = os.pipe()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with open(w, "wb", buffering=CHUNK) as sink:
                produce(sink)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    t = threading.Thread(target=run, name="archive-producer", daemon=True)
    with open(r, "rb", buffering=CHUNK) as source:
        t.start()
        try:
            encrypt_stream(source, out, recipients)
        finally:
            source.close()  # unblocks the producer (BrokenPipeError) if encryption stopped early
            t.join()
    if errors:
        raise errors[0]


@dataclass
class ReadResult:
    manifest: Manifest
    archive_size: int
    archive_sha256: str


def read_archive(source, marker: Marker, identities: list | None, dest: Path | None,
                 cancel: CancelCheck = _no_cancel) -> ReadResult:
    """Stream an archive, checking it against ``marker`` and its manifest; extract into ``dest`` if given.

    Raises ``ArchiveError`` (damaged, altered, mismatching) or ``DecryptionFailed`` (wrong identity,
    altered ciphertext).
    """
    hashed = HashingReader(source, cancel)
    if marker.encrypted:
        if not identities:
            raise DecryptionFailed("the archive is encrypted: give an age identity (--identity or "
                                   "BACKUP_AGE_IDENTITY_FILE)")
        result = _decrypting_pipe(hashed, identities, lambda plain: _read_tar(plain, marker, dest))
    else:
        result = _read_tar(hashed, marker, dest)
    hashed.drain()
    if hashed.size != marker.archive["size"] or hashed.sha.hexdigest() != marker.archive["sha256"]:
        raise ArchiveError(f"archive {marker.archive_name} does not match its marker "
                           f"(size {hashed.size} vs {marker.archive['size']}, sha256 differs or was altered)")
    return ReadResult(result, hashed.size, hashed.sha.hexdigest())


def _decrypting_pipe(hashed: HashingReader, identities: list, consume: Callable[[BinaryIO], Manifest]) -> Manifest:
    r, w = os.pipe()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with open(w, "wb", buffering=CHUNK) as sink:
                decrypt_stream(hashed, sink, identities)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run, name="archive-decrypt", daemon=True)
    t.start()
    source = open(r, "rb", buffering=CHUNK)
    try:
        try:
            manifest = consume(source)
            while source.read(CHUNK):  # let age reach the end and authenticate the last chunk
                pass
        finally:
            source.close()
            t.join()
    except (ArchiveError, ManifestError, tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
        # A decryption failure is the root cause of any parse error that follows it.
        if errors and isinstance(errors[0], DecryptionFailed):
            raise errors[0] from None
        raise _as_archive_error(exc) from None
    if errors:
        if isinstance(errors[0], DecryptionFailed):
            raise errors[0]
        raise _as_archive_error(errors[0])
    return manifest


def _as_archive_error(exc: BaseException) -> BaseException:
    if isinstance(exc, (ArchiveError, DecryptionFailed, Aborted)):
        return exc
    if isinstance(exc, ManifestError):
        return ArchiveError(str(exc))
    return ArchiveError(f"the archive is damaged or was altered ({type(exc).__name__}: {exc})")


def _read_tar(plain: BinaryIO, marker: Marker, dest: Path | None) -> Manifest:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(plain, read_across_frames=True, closefd=False)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            return _members(tar, marker, dest)
    except (ArchiveError, DecryptionFailed, Aborted):
        raise
    except (ManifestError, tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        raise _as_archive_error(exc) from None


def _members(tar: tarfile.TarFile, marker: Marker, dest: Path | None) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isfile() or first.size > MAX_MANIFEST_BYTES:
        raise ArchiveError("the archive does not start with its manifest.json")
    data = tar.extractfile(first).read()
    if hashlib.sha256(data).hexdigest() != marker.manifest_sha256:
        raise ArchiveError("manifest.json inside the archive does not match the marker (manifest altered)")
    manifest = Manifest.from_bytes(data)
    if manifest.id != marker.id:
        raise ArchiveError(f"the manifest is for backup {manifest.id}, the marker for {marker.id}")
    expected = {e.path: e for e in manifest.files}
    seen: set[str] = set()
    while (member := tar.next()) is not None:
        name = check_relative_path(member.name)
        if member.isdir():
            continue
        entry = expected.get(name)
        if entry is None or not member.isfile():
            raise ArchiveError(f"unexpected member {name!r} in the archive (not in the manifest)")
        if name in seen:
            raise ArchiveError(f"member {name!r} appears twice")
        seen.add(name)
        if member.size != entry.size:
            raise ArchiveError(f"{name}: size {member.size} differs from the manifest ({entry.size})")
        fin = tar.extractfile(member)
        sha = hashlib.sha256()
        out = None
        if dest is not None:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if name.startswith("secrets/") else 0o755)
            out = open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, entry.mode & 0o777), "wb")
        try:
            while chunk := fin.read(CHUNK):
                sha.update(chunk)
                if out is not None:
                    out.write(chunk)
        finally:
            if out is not None:
                out.close()
        if sha.hexdigest() != entry.sha256:
            raise ArchiveError(f"{name}: content does not match the manifest's SHA-256")
    missing = sorted(set(expected) - seen)
    if missing:
        raise ArchiveError(f"the archive lacks {', '.join(missing[:5])} listed in the manifest")
    return manifest
