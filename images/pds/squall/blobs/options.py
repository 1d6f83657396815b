"""Blob tuning knobs that are not reference-distro settings.

The protocol-facing settings come from ``Settings`` (``PDS_BLOBSTORE_*``, ``PDS_BLOB_UPLOAD_LIMIT``,
``PDS_BLOB_GC_GRACE_SECONDS``). These have safe defaults; they are read from ``SQUALL_BLOBS_*``
variables, outside the ``PDS_*`` namespace that ``squall.config`` checks against the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..tuning import TuningError, read_tuning

OptionsError = TuningError  # the name callers and tests know


MAX_GC_INTERVAL = 600.0


@dataclass(frozen=True)
class BlobOptions:
    # Seconds between garbage-collection sweeps; 0 derives it from the grace period.
    gc_interval_seconds: float = 0.0
    # Total attempts (first try included) for each S3 request before it is reported as failed.
    s3_max_attempts: int = 3
    # Blobs above this size are sent to S3 as multipart uploads.
    s3_multipart_threshold: int = 16 * 1024 * 1024

    def gc_interval(self, grace_seconds: float) -> float:
        """A quarter of the grace period, capped at 10 minutes and at least 1 second."""
        if self.gc_interval_seconds > 0:
            return self.gc_interval_seconds
        return max(1.0, min(grace_seconds / 4, MAX_GC_INTERVAL))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "BlobOptions":
        return read_tuning(cls, "SQUALL_BLOBS_", environ, zero_allowed=frozenset({"gc_interval_seconds"}))
