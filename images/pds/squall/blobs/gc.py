"""Blob garbage collection: unreferenced blobs are deleted once a grace period has passed.

The reference PDS never purges blobs that lose their last reference, and leaves uploads that were
never referenced in its temp area forever. Squall sweeps, every ``interval`` seconds:

1. blob rows not referenced by any record whose grace period is over: uploads never referenced
   (``temp_key`` set, ``created_at`` older than the grace) and blobs whose last reference was
   dropped (``unreferenced_since`` older than the grace). Taken-down blobs are kept (their row
   blocks a re-upload). The rows are deleted in one transaction first, then the bytes; if the
   store fails, the row is put back so the next sweep retries.
2. temp files/objects that no row names (an upload cut off by a crash) older than the grace
   period, unless an upload in this process is still writing them.
3. blobs referenced by a record but still staged (making them permanent failed after the commit,
   e.g. S3 was down): retried.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

from ..atproto.cid import CID
from ..store import blobs as blob_rows
from ..store.db import Database
from .store import BlobStore, BlobStoreError

BATCH = 500
MAX_BATCHES_PER_SWEEP = 20  # bounds one sweep's work; the rest waits for the next sweep


@dataclass
class SweepReport:
    blobs_deleted: int = 0
    temp_files_deleted: int = 0
    made_permanent: int = 0
    errors: list[str] = field(default_factory=list)


def iso_before(seconds: float) -> str:
    """The atproto datetime ``seconds`` ago, in the format the blob table stores (ordered as text)."""
    t = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GarbageCollector:
    def __init__(self, db: Database, store: BlobStore, *, grace_seconds: float, interval_seconds: float,
                 log: logging.Logger, uploads_in_progress: Callable[[], set[str]],
                 make_permanent: Callable[[str, list[CID]], Awaitable[list[CID]]]) -> None:
        self.db = db
        self.store = store
        self.grace = grace_seconds
        self.interval = interval_seconds
        self.log = log
        self._in_progress = uploads_in_progress
        self._make_permanent = make_permanent
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one sweep at a time (background task and explicit calls)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="blob-gc")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                report = await self.sweep()
            except Exception:
                self.log.exception("blob garbage collection failed")
                continue
            if report.blobs_deleted or report.temp_files_deleted or report.made_permanent or report.errors:
                self.log.info("blob garbage collection", extra={
                    "blobs_deleted": report.blobs_deleted, "temp_files_deleted": report.temp_files_deleted,
                    "made_permanent": report.made_permanent, "errors": len(report.errors)})

    async def sweep(self) -> SweepReport:
        async with self._lock:
            report = SweepReport()
            await self._collect_rows(report)
            await self._collect_orphan_temps(report)
            await self._retry_permanent(report)
            return report

    async def _collect_rows(self, report: SweepReport) -> None:
        cutoff = iso_before(self.grace)
        for _ in range(MAX_BATCHES_PER_SWEEP):
            rows = await self.db.write(blob_rows.claim_garbage, cutoff, BATCH)
            failed = 0
            for row in rows:
                did, cid, temp_key = row[0], row[1], row[4]
                try:
                    if temp_key is not None:
                        await self.store.delete_temp(temp_key)
                    # A blob may have been made permanent just before its temp key was cleared.
                    await self.store.delete(did, CID.decode(cid))
                except BlobStoreError as exc:
                    failed += 1
                    report.errors.append(f"{did}/{cid}: {exc}")
                    await self.db.write(blob_rows.restore_blob, row)
                    continue
                report.blobs_deleted += 1
            if len(rows) < BATCH or failed:
                return

    async def _collect_orphan_temps(self, report: SweepReport) -> None:
        try:
            entries = await self.store.list_temp()
        except BlobStoreError as exc:
            report.errors.append(f"listing temp uploads: {exc}")
            return
        old = [e.key for e in entries if e.age_seconds > self.grace]
        if not old:
            return
        # Snapshot uploads in progress BEFORE reading the table: an upload that finishes in between
        # is then found in the table.
        busy = set(self._in_progress())
        known = set()
        for i in range(0, len(old), BATCH):
            known.update(await blob_rows.known_temp_keys(self.db, old[i:i + BATCH]))
        for key in old:
            if key in busy or key in known:
                continue
            try:
                await self.store.delete_temp(key)
            except BlobStoreError as exc:
                report.errors.append(f"temp {key}: {exc}")
                continue
            report.temp_files_deleted += 1

    async def _retry_permanent(self, report: SweepReport) -> None:
        rows = await blob_rows.referenced_temp_blobs(self.db, BATCH)
        by_did: dict[str, list[CID]] = {}
        for r in rows:
            by_did.setdefault(r["did"], []).append(CID.decode(r["cid"]))
        for did, cids in by_did.items():
            failed = await self._make_permanent(did, cids)
            report.made_permanent += len(cids) - len(failed)
            report.errors.extend(f"{did}/{c}: could not make permanent" for c in failed)

