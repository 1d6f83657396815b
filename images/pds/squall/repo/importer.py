"""Importing a whole repository from a CAR (com.atproto.repo.importRepo; account migration,
https://atproto.com/guides/account-migration, https://atproto.com/specs/repository).

The CAR arrives as the request body, possibly hundreds of megabytes, so it is never held in
memory. Three phases:

1. **Stage.** The body is read with the core's ``AsyncCarReader`` (every block checked against
   its CID, sizes bounded) and the blocks are spooled, in batches, into a private temporary SQLite
   file under the data directory's ``tmp/``. Nothing in the PDS database changes yet.
2. **Verify** (in a worker thread, over the staging file). The CAR has exactly one root, a v3
   commit for the importing account's DID, signed by the DID document's ``#atproto`` key — the key
   of the PDS the account comes from. The MST is walked from the commit with the core's
   ``NodeWrangler`` (node encoding, key heights and order checked); every record it names must be
   present and decode as DAG-CBOR, and its blob references are noted. Blocks the tree does not
   reach are ignored.
3. **Store**, in ONE ``Database.write`` transaction: the account's previous repo blocks, records
   and blob references are replaced by the imported ones and ``repo_root`` is set to the imported
   commit's CID and rev. One transaction means a failed import leaves the old repo untouched and
   readers never see half a repo; the price is a WAL as large as the repo until the next
   checkpoint, which SQLite handles at these sizes. Were repos ever far larger, this would be the
   place to switch to bounded batches behind a "repo importing" flag.

The imported commit is kept as it is, signed by the old PDS's key; as in the reference, the next
write here builds a new commit over the imported tree, signed with this account's new key. Blobs
are not in the CAR: the references are recorded, ``listMissingBlobs`` reports the ones not yet
uploaded, and the client uploads them with ``uploadBlob``.

An import into an active account is allowed only when it moves the repo forward: its commit's
rev must be newer than the account's current rev (``RepoRollback`` otherwise). ``sync.getRepo``
is public, so without this anyone holding the account's session could put back an older CAR and
erase every record written since. It is announced with a ``#sync`` event, since the new state
cannot be expressed as a diff. A deactivated account (the migration case: a fresh target whose
own initial commit is newer than the source's history) accepts any rev and is announced when it
is activated. The operator may override the rule for one import (``allow_rollback``, the admin
route ``/xrpc/_admin/import-repo`` behind ``squall account import --force``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ..accounts import events
from ..atproto import dagcbor, syntax
from ..atproto.blockstore import MissingBlock
from ..atproto.car import AsyncCarReader
from ..atproto.cid import CID
from ..atproto.commit import decode_commit, verify_commit
from ..progress import Progress
from ..atproto.crypto import PublicKey
from ..atproto.errors import AtprotoError, DecodeError, InvalidSyntax
from ..atproto.mst import NodeStore, NodeWrangler
from ..blobs.refs import find_blob_refs
from ..store import accounts, imports, repos
from ..store import blobs as blob_rows
from ..store.imports import StagedBlocks, Staging
from ..store.sequencer import now_iso
from ..errors import InvalidRequest, PayloadTooLarge

# The largest CAR accepted. Not a setting: it only has to exceed any real account's repo (the
# largest Bluesky repos are a few hundred MB) while still bounding the temporary disk an import
# may take. Memory use does not depend on it: the CAR is streamed to disk.
MAX_IMPORT_BYTES = 1 << 30
STAGE_BATCH_BYTES = 4 * 1024 * 1024
STAGE_BATCH_ROWS = 2000


@dataclass(frozen=True)
class ImportedRepo:
    did: str
    commit_cid: CID
    rev: str
    blocks: int
    records: int
    blob_refs: int
    seq: int | None  # of the #sync event, for an active account


# -- phase 1: stage --------------------------------------------------------------------------------


async def _stage(staging: Staging, body: AsyncIterator[bytes], max_bytes: int, progress: Any = None) -> list[CID]:
    received = 0

    async def metered() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"Repository CAR exceeds the import limit of {max_bytes} bytes")
            if progress is not None:
                progress.add(nbytes=len(chunk))
            yield chunk

    reader = AsyncCarReader(metered())
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    try:
        roots = await reader.read_header()
        async for cid, block in reader:
            batch.append((cid.bytes, block))
            size += len(block)
            if size >= STAGE_BATCH_BYTES or len(batch) >= STAGE_BATCH_ROWS:
                await asyncio.to_thread(staging.put_blocks, batch)
                batch, size = [], 0
        if batch:
            await asyncio.to_thread(staging.put_blocks, batch)
    except DecodeError as exc:
        raise InvalidRequest(f"Invalid repository CAR: {exc}") from None
    return roots


# -- phase 2: verify -------------------------------------------------------------------------------


def _verify(staging: Staging, did: str, roots: list[CID], keys: list[PublicKey],
            progress: Any = None) -> tuple[CID, str, int, int, int]:
    """(commit CID, rev, blocks kept, records, blob references); fills ``keep``, ``rec``, ``blobref``."""
    if len(roots) != 1:
        raise InvalidRequest(f"A repository CAR must have exactly one root (the commit), not {len(roots)}")
    root = roots[0]
    store = StagedBlocks(staging.conn)
    block = store.get(root)
    if block is None:
        raise InvalidRequest(f"The CAR's root commit {root} is not in the CAR")
    try:
        commit = decode_commit(block)
    except (DecodeError, AtprotoError) as exc:
        raise InvalidRequest(f"The CAR's root is not a valid repository commit: {exc}") from None
    if commit["did"] != did:
        raise InvalidRequest(f"The repository is for {commit['did']}, not for this account ({did})")
    if not any(verify_commit(commit, key) for key in keys):
        raise InvalidRequest("The repository commit's signature does not verify against the DID document's "
                             "signing key")
    keep = [root.bytes]
    recs: list[tuple[str, str, bytes]] = []
    refs: list[tuple[str, str]] = []
    counts = {"records": 0, "refs": 0}

    def flush() -> None:
        staging.put_walked(keep, recs, refs)
        keep.clear()
        recs.clear()
        refs.clear()

    wrangler = NodeWrangler(NodeStore(store))
    try:
        for node, i in wrangler.walk_entries(commit["data"]):
            if i < 0:
                keep.append(node.cid.bytes)
                continue
            path, value = node.keys[i], node.vals[i]
            collection, _, rkey = path.partition("/")
            try:
                syntax.ensure_valid_nsid(collection)
                syntax.ensure_valid_record_key(rkey)
            except InvalidSyntax as exc:
                raise InvalidRequest(f"The repository holds an invalid record path {path!r}: {exc}") from None
            data = store.get(value)
            if data is None:
                raise InvalidRequest(f"The CAR lacks the record block {value} of {path}")
            try:
                record = dagcbor.decode(data)
            except DecodeError as exc:
                raise InvalidRequest(f"Could not parse record at '{path}': {exc}") from None
            if type(record) is not dict:
                raise InvalidRequest(f"Could not parse record at '{path}': not a map")
            keep.append(value.bytes)
            recs.append((collection, rkey, value.bytes))
            counts["records"] += 1
            if progress is not None:
                progress.add(items=1)
            uri = f"at://{did}/{path}"
            try:
                found = find_blob_refs(record)
            except InvalidRequest:
                found = []  # a malformed blob reference is not a blob; the record is kept as it is
            for ref in found:
                refs.append((uri, str(ref.cid)))
                counts["refs"] += 1
            if len(recs) >= STAGE_BATCH_ROWS or len(keep) >= STAGE_BATCH_ROWS:
                flush()
    except MissingBlock as exc:
        raise InvalidRequest(f"The CAR is incomplete: {exc}") from None
    except (DecodeError, AtprotoError) as exc:
        raise InvalidRequest(f"The repository's tree is invalid: {exc}") from None
    flush()
    blocks = staging.count_kept()  # records held twice count once
    return root, commit["rev"], blocks, counts["records"], counts["refs"]


# -- phase 3: store ----------------------------------------------------------------------------------


ROLLBACK_ERROR = "RepoRollback"


def _store(conn: sqlite3.Connection, staging_path: Path, did: str, commit_cid: CID, rev: str,
           counts: tuple[int, int, int], allow_rollback: bool = False) -> ImportedRepo:
    account = accounts.repo_import_account(conn, did)
    if account is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    if account["takedown_ref"] is not None:
        raise InvalidRequest("Account has been taken down", "AccountTakedown")
    if account["deactivated_at"] is None and not allow_rollback:
        current = repos.get_root_row(conn, did)
        # TIDs sort as strings in time order; checked in this transaction, so no write can slip between.
        if current is not None and current["rev"] and rev <= current["rev"]:
            raise InvalidRequest(
                f"The imported commit's rev {rev} is not newer than this active repository's rev "
                f"{current['rev']}: importing it would roll the repository back. Import into a "
                f"deactivated account, or ask the operator to force it", ROLLBACK_ERROR)
    now = now_iso()
    old_blobs = blob_rows.referenced_blob_cids(conn, did)
    blob_rows.delete_record_blob_refs_for_account(conn, did)
    repos.delete_repo_contents(conn, did)
    with imports.open_staged(staging_path) as staged:
        for rows in imports.kept_blocks(staged, STAGE_BATCH_ROWS):
            repos.insert_imported_blocks(conn, did, rev, rows)
        for rows in imports.staged_records(staged, STAGE_BATCH_ROWS):
            repos.insert_imported_records(conn, did, rev, now, rows)
        for rows in imports.staged_blob_refs(staged, STAGE_BATCH_ROWS):
            blob_rows.insert_record_blob_refs(conn, did, rows)
    # Blobs already uploaded and referenced again are no longer awaiting collection; those the old
    # repo referenced and the new one does not start their grace period.
    blob_rows.clear_unreferenced_for_account(conn, did)
    blob_rows.mark_unreferenced(conn, did, old_blobs, now)
    repos.put_root(conn, did, commit_cid, rev, now)
    seq = None
    if account["deactivated_at"] is None:
        block = repos.get_block(conn, did, commit_cid)
        seq = events.sync(conn, did, commit_cid, block, rev, now)
    blocks, records, refs = counts
    return ImportedRepo(did, commit_cid, rev, blocks, records, refs, seq)


# -- the whole import ----------------------------------------------------------------------------------


KeysLookup = Callable[[], Any]  # async () -> list[PublicKey]


async def import_repo(ctx: Any, did: str, body: AsyncIterator[bytes], signing_keys: KeysLookup, *,
                      max_bytes: int = MAX_IMPORT_BYTES, allow_rollback: bool = False) -> ImportedRepo:
    """Stage, verify and store the CAR in ``body`` as ``did``'s repo. ``signing_keys()`` returns
    the keys the commit may be signed with (asked only once the CAR has been staged).
    ``allow_rollback`` (the operator's override only) lets an older rev replace an active repo."""
    staging = Staging(ctx.settings.data_directory / "tmp")
    try:
        progress = Progress(f"importRepo {did}", lambda fields: ctx.log.info("import progress", extra=fields),
                            items="records")
        roots = await _stage(staging, body, max_bytes, progress)
        keys = await signing_keys()
        commit_cid, rev, blocks, records, refs = await asyncio.to_thread(_verify, staging, did, roots, keys, progress)
        progress.finish()
        imported = await ctx.db.write(_store, staging.path, did, commit_cid, rev, (blocks, records, refs),
                                      allow_rollback)
    finally:
        await asyncio.to_thread(staging.close)
    clock = ctx.tid_clock
    if clock is not None:
        clock.observe(rev)  # later commits here must sort after the imported one
    if imported.seq is not None:
        await events.wake_firehose(ctx)
    ctx.log.info("repository imported", extra={"did": did, "rev": rev, "blocks": blocks, "records": records,
                                               "blob_refs": refs, "forced": allow_rollback})
    return imported
