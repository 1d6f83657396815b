"""Blob tuning knobs that are not reference-distro settings.

The protocol-facing settings come from ``Settings`` (``PDS_BLOBSTORE_*``, ``PDS_BLOB_UPLOAD_LIMIT``,
``PDS_BLOB_GC_GRACE_SECONDS``). These have safe defaults; they are read from ``SQUALL_BLOBS_*``
variables, outside the ``PDS_*`` namespace that ``squall.config`` checks against the reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping


class OptionsError(ValueError):
    """A SQUALL_BLOBS_* variable that is not a usable number; the message names it."""


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
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in fields(cls):
            name = "SQUALL_BLOBS_" + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            kind = int if f.type in (int, "int") else float
            try:
                value = kind(raw)
            except ValueError:
                raise OptionsError(f"{name}: {raw!r} is not a {'whole ' if kind is int else ''}number") from None
            if value < 0 or (value == 0 and kind is int):
                raise OptionsError(f"{name}: must be greater than zero")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]
