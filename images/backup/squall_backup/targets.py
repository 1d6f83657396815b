"""Where backups are stored: an S3-compatible bucket (AWS, Cloudflare R2, MinIO…) or a local directory.

Layout, the same on both (``<p>`` is ``BACKUP_S3_PREFIX`` on S3, nothing on a directory):

    <p>backups/<id>.tar.zst[.age]   the archive (database + secrets + manifest)
    <p>backups/<id>.json            the marker, written LAST: a backup is listed only when it exists
    <p>blobs/<did>/<cid>            blobs, by content address, uploaded once and shared by all backups

S3 requests use R2-compatible settings: checksums only when required (the SDK's default trailing
CRC32 checksums are refused by R2), an explicit ``x-amz-checksum-sha256`` on single-part uploads, a
signed ``x-amz-content-sha256`` payload hash on every request (multipart parts included), multipart
uploads through ``TransferConfig`` above a threshold, bounded retries with exponential backoff
(``standard`` mode) and connect/read timeouts.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from . import logs
from .manifest import FileEntry, ManifestError, Marker, hash_file

Cancel = Callable[[], None]


class TargetError(RuntimeError):
    """A target could not be read or written (after the configured retries)."""


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    modified: datetime


class Target(abc.ABC):
    name: str
    kind: str
    remote: bool
    location: str

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "location": self.location, "remote": self.remote}

    # -- backups ---------------------------------------------------------------------------------
    def list_markers(self) -> list[Marker]:
        markers = []
        for obj in self._list("backups/"):
            if not obj.name.endswith(".json"):
                continue
            try:
                markers.append(Marker.from_bytes(self._get_bytes("backups/" + obj.name)))
            except ManifestError as exc:
                logs.warning("target.bad_marker", target=self.name, object=obj.name, error=str(exc))
        markers.sort(key=lambda m: (m.created_at, m.id))
        return markers

    def get_marker(self, backup_id: str) -> Marker:
        markers = self.list_markers()
        if not markers:
            raise TargetError(f"no backup on target {self.name} ({self.location})")
        if backup_id == "latest":
            return markers[-1]
        for m in markers:
            if m.id == backup_id:
                return m
        raise TargetError(f"no backup {backup_id!r} on target {self.name}; `squall-backup list` shows them")

    def list_archives(self) -> list[StoredObject]:
        return [o for o in self._list("backups/") if ".tar.zst" in o.name]

    def put_archive(self, path: Path, name: str, sha256: str, cancel: Cancel) -> None:
        self._put_file(path, "backups/" + name, sha256, cancel)

    def put_marker(self, marker: Marker) -> None:
        data = marker.to_bytes()
        self._put_bytes(f"backups/{marker.id}.json", data, hashlib.sha256(data).hexdigest())

    @contextlib.contextmanager
    def open_archive(self, marker: Marker) -> Iterator[BinaryIO]:
        with self._open("backups/" + marker.archive_name) as f:
            yield f

    def delete_backup(self, marker: Marker) -> None:
        # Marker first: from this moment on the backup is no longer listed as good.
        self._delete(f"backups/{marker.id}.json")
        self._delete("backups/" + marker.archive_name)

    def delete_object(self, key: str) -> None:
        self._delete(key)

    # -- blobs -----------------------------------------------------------------------------------
    def existing_blobs(self) -> dict[str, int]:
        return {"blobs/" + o.name: o.size for o in self._list("blobs/")}

    def put_blob(self, source: Path, entry: FileEntry, cancel: Cancel) -> None:
        self._put_file(source, entry.path, entry.sha256, cancel)

    @contextlib.contextmanager
    def open_blob(self, entry: FileEntry) -> Iterator[BinaryIO]:
        with self._open(entry.path) as f:
            yield f

    # -- primitives ------------------------------------------------------------------------------
    @abc.abstractmethod
    def _list(self, prefix: str) -> list[StoredObject]:
        """Storage primitive each target implements."""

    @abc.abstractmethod
    def _get_bytes(self, key: str) -> bytes:
        """Storage primitive each target implements."""

    @abc.abstractmethod
    def _put_file(self, path: Path, key: str, sha256: str, cancel: Cancel) -> None:
        """Storage primitive each target implements."""

    @abc.abstractmethod
    def _put_bytes(self, key: str, data: bytes, sha256: str) -> None:
        """Storage primitive each target implements."""

    @abc.abstractmethod
    def _open(self, key: str):
        """Storage primitive each target implements."""

    @abc.abstractmethod
    def _delete(self, key: str) -> None:
        """Storage primitive each target implements."""


class LocalTarget(Target):
    kind = "local"
    remote = False

    def __init__(self, root: Path, name: str = "local") -> None:
        self.root = Path(root)
        self.name = name
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _list(self, prefix: str) -> list[StoredObject]:
        base = self._path(prefix)
        out = []
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.startswith("."):
                    continue  # in-progress temporary files
                p = Path(dirpath) / f
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                out.append(StoredObject(p.relative_to(base).as_posix(), st.st_size,
                                        datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return out

    def _get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise TargetError(f"{self.name}: cannot read {key}: {exc.strerror}") from None

    def _write(self, key: str, writer: Callable[[BinaryIO], None]) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TargetError(f"{self.name}: cannot write {key}: {exc.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _put_file(self, path: Path, key: str, sha256: str, cancel: Cancel) -> None:
        def copy(out: BinaryIO) -> None:
            with open(path, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    cancel()
                    out.write(chunk)
        self._write(key, copy)
        if hash_file(self._path(key))[1] != sha256:
            self._path(key).unlink(missing_ok=True)
            raise TargetError(f"{self.name}: {key} changed while it was copied")

    def _put_bytes(self, key: str, data: bytes, sha256: str) -> None:
        self._write(key, lambda f: f.write(data))

    @contextlib.contextmanager
    def _open(self, key: str):
        try:
            f = open(self._path(key), "rb")
        except OSError as exc:
            raise TargetError(f"{self.name}: cannot open {key}: {exc.strerror}") from None
        with f:
            yield f

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class S3Target(Target):
    kind = "s3"
    remote = True

    def __init__(self, *, bucket: str, prefix: str = "", endpoint: str | None = None, region: str = "auto",
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 addressing_style: str = "path", max_attempts: int = 5, connect_timeout: float = 10,
                 read_timeout: float = 60, multipart_threshold: int = 64 * 2**20,
                 multipart_chunksize: int = 32 * 2**20, max_concurrency: int = 4, name: str = "s3") -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.name = name
        self.bucket, self.prefix = bucket, prefix
        host = endpoint or "aws"
        self.location = f"s3://{bucket}/{prefix} at {host}"
        self.multipart_threshold = multipart_threshold
        self.max_concurrency = max_concurrency
        config = Config(
            region_name=region,
            signature_version="s3v4",
            # total_max_attempts counts the first try too (max_attempts would count retries only)
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max(10, max_concurrency * 2),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": addressing_style, "payload_signing_enabled": True},
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key, config=config)
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency, use_threads=max_concurrency > 1)

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise TargetError(f"{self.name}: {what} failed: {err.get('Code', '?')} {err.get('Message', '')}".rstrip()) from None
        except BotoCoreError as exc:
            raise TargetError(f"{self.name}: {what} failed: {exc}") from None

    def _list(self, prefix: str) -> list[StoredObject]:
        full = self.prefix + prefix
        out = []
        paginator = self.client.get_paginator("list_objects_v2")

        def walk() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    out.append(StoredObject(obj["Key"][len(full):], obj["Size"], obj["LastModified"]))
        self._call(f"listing {full}", walk)
        return out

    def _get_bytes(self, key: str) -> bytes:
        resp = self._call(f"reading {self.prefix + key}", self.client.get_object, Bucket=self.bucket, Key=self.prefix + key)
        return self._call(f"reading {self.prefix + key}", resp["Body"].read)

    def _put_file(self, path: Path, key: str, sha256: str, cancel: Cancel) -> None:
        full = self.prefix + key
        size = path.stat().st_size
        cancel()
        if size < self.multipart_threshold:
            with open(path, "rb") as f:
                self._call(f"uploading {full}", self.client.put_object, Bucket=self.bucket, Key=full, Body=f,
                           ContentLength=size, ChecksumSHA256=_b64(sha256))
        else:
            self._call(f"uploading {full}", self.client.upload_file, str(path), self.bucket, full,
                       Config=self.transfer_config, Callback=lambda _n: cancel())
        head = self._call(f"checking {full}", self.client.head_object, Bucket=self.bucket, Key=full)
        if head["ContentLength"] != size:
            raise TargetError(f"{self.name}: {full} has {head['ContentLength']} bytes after upload, expected {size}")

    def _put_bytes(self, key: str, data: bytes, sha256: str) -> None:
        full = self.prefix + key
        self._call(f"uploading {full}", self.client.put_object, Bucket=self.bucket, Key=full, Body=data,
                   ContentType="application/json", ChecksumSHA256=_b64(sha256))

    @contextlib.contextmanager
    def _open(self, key: str):
        full = self.prefix + key
        resp = self._call(f"downloading {full}", self.client.get_object, Bucket=self.bucket, Key=full)
        body = resp["Body"]
        try:
            yield _BodyReader(self, full, body)
        finally:
            body.close()

    def _delete(self, key: str) -> None:
        full = self.prefix + key
        self._call(f"deleting {full}", self.client.delete_object, Bucket=self.bucket, Key=full)

    def abort_stale_uploads(self, older_than: datetime) -> int:
        """Abort multipart uploads left by a killed run (they are invisible but billed)."""
        resp = self._call("listing multipart uploads", self.client.list_multipart_uploads,
                          Bucket=self.bucket, Prefix=self.prefix + "backups/")
        n = 0
        for up in resp.get("Uploads", []):
            if up["Initiated"] < older_than:
                self._call("aborting an upload", self.client.abort_multipart_upload, Bucket=self.bucket,
                           Key=up["Key"], UploadId=up["UploadId"])
                n += 1
        return n


class _BodyReader:
    """A streaming S3 body whose network errors surface as ``TargetError``."""

    def __init__(self, target: S3Target, key: str, body) -> None:
        self.target, self.key, self.body = target, key, body

    def read(self, n: int = -1) -> bytes:
        return self.target._call(f"downloading {self.key}", self.body.read, n)


def build_targets(settings) -> list[Target]:
    targets: list[Target] = []
    if settings.s3_bucket:
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        targets.append(S3Target(
            bucket=settings.s3_bucket, prefix=settings.s3_prefix, endpoint=settings.s3_endpoint,
            region=settings.s3_region, access_key_id=settings.s3_access_key_id, secret_access_key=secret,
            addressing_style=settings.s3_addressing_style, max_attempts=settings.s3_max_attempts,
            connect_timeout=settings.s3_connect_timeout, read_timeout=settings.s3_read_timeout,
            multipart_threshold=settings.s3_multipart_threshold_mb * 2**20,
            multipart_chunksize=settings.s3_multipart_chunk_mb * 2**20,
            max_concurrency=settings.s3_max_concurrency))
    if settings.local_dir is not None:
        targets.append(LocalTarget(settings.local_dir, name="local"))
    if not targets:
        targets.append(LocalTarget(settings.default_archive_dir, name="local"))
    return targets


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
