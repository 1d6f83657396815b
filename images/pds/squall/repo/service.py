"""The repository service: ``ctx.repo``.

It owns what every repo write shares — the app's TID clock, the bundled Lexicons (the app's one
copy, held by the XRPC registry), a cache of decoded MST nodes — and runs each write as prepare
(here, before any lock) → build and persist (:func:`squall.repo.writer.commit_writes`, one
``Database.write`` transaction) → wake the firehose and make referenced blobs permanent (after the
commit is durable).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from types import ModuleType
from weakref import WeakSet
from typing import TYPE_CHECKING, Any

from ..atproto.cid import CID
from ..atproto.lexicon import Lexicons
from ..atproto.mst import NodeCache
from ..atproto.tid import TidClock
from ..store.db import Database
from .prepare import Preparer, PreparedWrite
from .writer import CommitOutcome, commit_writes

if TYPE_CHECKING:
    from ..blobs.service import BlobService
    from ..firehose.service import Firehose

# Decoded MST nodes shared by all repos' writes and proofs. A repo of 10k records has ~3k nodes,
# and writes with TID keys touch the root and the right edge; 4k nodes keep those decoded while
# holding RSS after 10k writes under the 90 MB target (bench/repo.py: 16k nodes cost ~8 MB more).
NODE_CACHE_SIZE = 4_096


def _load_blob_refs(log: logging.Logger) -> ModuleType | None:
    try:
        return importlib.import_module("squall.blobs.refs")
    except ImportError as exc:
        log.warning("blob references are not tracked: squall.blobs.refs is unavailable (%s)", exc)
        return None


# A commit of up to this many writes runs on the event loop's thread when the writer is idle
# (Database.write's inline path): ~0.5 ms for one record, a few ms for ten; larger ones (big
# applyWrites batches) go to the writer thread and leave the loop free.
INLINE_WRITES = 10


class RepoService:
    def __init__(self, db: Database, clock: TidClock, log: logging.Logger, *, firehose: "Firehose | None",
                 blobs: "BlobService | None", lexicons: Lexicons, blob_refs: ModuleType | None = None) -> None:
        self.db = db
        self.clock = clock
        self.log = log
        self.firehose = firehose  # woken after each commit
        self.blobs = blobs  # makes newly referenced blobs permanent after each commit
        self.lexicons = lexicons
        self.preparer = Preparer(self.lexicons, clock)
        self.node_cache = NodeCache(NODE_CACHE_SIZE)
        self.blob_refs = blob_refs if blob_refs is not None else _load_blob_refs(log)
        self._keypairs: dict = {}  # parsed signing keys, only touched inside write transactions
        self.prepared_readers: WeakSet = WeakSet()  # reader connections with the CID SQL function
        self.metrics: Any = None  # squall.metrics.Metrics, set by start()

    async def apply(self, did: str, writes: list[PreparedWrite], swap_commit: CID | None = None) -> CommitOutcome:
        started = time.perf_counter()
        outcome = await self.db.write(commit_writes, did, writes, swap_commit, self.clock, self.node_cache,
                                      self.blob_refs, self._keypairs, inline=len(writes) <= INLINE_WRITES)
        if self.metrics is not None:
            self.metrics.observe_write(outcome.writes, time.perf_counter() - started,
                                       committed=outcome.commit_cid is not None, block_bytes=outcome.block_bytes)
        if outcome.commit_cid is not None:
            await self._after_commit(outcome)
        return outcome

    async def _after_commit(self, outcome: CommitOutcome) -> None:
        firehose = self.firehose
        if firehose is not None:
            result = firehose.notify(outcome.seq)
            if inspect.isawaitable(result):
                await result
        if outcome.permanent_blobs:
            blobs = self.blobs
            if blobs is None:
                self.log.error("records reference blobs but no blob store is configured", extra={"did": outcome.did})
                return
            try:
                await blobs.make_permanent(outcome.did, outcome.permanent_blobs)
            except Exception:
                # The commit stands; the blobs stay in temporary storage and the blob store's own
                # recovery moves them (the rows already say they are referenced).
                self.log.exception("could not make blobs permanent after commit",
                                   extra={"did": outcome.did, "rev": outcome.rev})
