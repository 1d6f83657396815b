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

An import into an active account is allowed (as the reference does); it is announced with a
``#sync`` event, since the new state cannot be expressed as a diff. A deactivated account (the
migration case) is announced when it is activated.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

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


class _Staging:
    """The private temporary SQLite file an import is spooled into (deleted by ``close``)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"import-{secrets.token_hex(8)}.sqlite"
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Scratch data: durability would only cost time; a crash leaves a file the next import
        # does not read (a new random name), removed below or by the operator.
        for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF", "PRAGMA temp_store=FILE"):
            self.conn.execute(pragma)
        self.conn.executescript(
            "CREATE TABLE block (cid BLOB PRIMARY KEY, content BLOB NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE keep (cid BLOB PRIMARY KEY) WITHOUT ROWID;"
            "CREATE TABLE rec (collection TEXT NOT NULL, rkey TEXT NOT NULL, cid BLOB NOT NULL);"
            "CREATE TABLE blobref (uri TEXT NOT NULL, cid TEXT NOT NULL);"
        )

    def put_blocks(self, rows: list[tuple[bytes, bytes]]) -> None:
        with self.batch():
            self.conn.executemany("INSERT OR IGNORE INTO block (cid, content) VALUES (?, ?)", rows)

    @contextmanager
    def batch(self) -> Iterator[None]:
        # One transaction per batch (the connection is in autocommit mode otherwise).
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class _StagedBlocks:
    """The core's BlockStore interface over the staging file (read-only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, cid: CID) -> bytes | None:
        row = self.conn.execute("SELECT content FROM block WHERE cid = ?", (cid.bytes,)).fetchone()
        return None if row is None else bytes(row[0])

    def has(self, cid: CID) -> bool:
        return self.conn.execute("SELECT 1 FROM block WHERE cid = ?", (cid.bytes,)).fetchone() is not None

    def put(self, cid: CID, data: bytes) -> None:
        raise TypeError("the staged import is read-only")


# -- phase 1: stage --------------------------------------------------------------------------------


async def _stage(staging: _Staging, body: AsyncIterator[bytes], max_bytes: int, progress: Any = None) -> list[CID]:
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


def _verify(staging: _Staging, did: str, roots: list[CID], keys: list[PublicKey],
            progress: Any = None) -> tuple[CID, str, int, int, int]:
    """(commit CID, rev, blocks kept, records, blob references); fills ``keep``, ``rec``, ``blobref``."""
    if len(roots) != 1:
        raise InvalidRequest(f"A repository CAR must have exactly one root (the commit), not {len(roots)}")
    root = roots[0]
    store = _StagedBlocks(staging.conn)
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
    conn = staging.conn

    def flush() -> None:
        with staging.batch():
            conn.executemany("INSERT OR IGNORE INTO keep (cid) VALUES (?)", [(c,) for c in keep])
            conn.executemany("INSERT INTO rec (collection, rkey, cid) VALUES (?, ?, ?)", recs)
            conn.executemany("INSERT INTO blobref (uri, cid) VALUES (?, ?)", refs)
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
    blocks = conn.execute("SELECT COUNT(*) FROM keep").fetchone()[0]  # records held twice count once
    return root, commit["rev"], blocks, counts["records"], counts["refs"]


# -- phase 3: store ----------------------------------------------------------------------------------


def _store(conn: sqlite3.Connection, staging_path: Path, did: str, commit_cid: CID, rev: str,
           counts: tuple[int, int, int]) -> ImportedRepo:
    account = conn.execute("SELECT deactivated_at, takedown_ref FROM account WHERE did = ?", (did,)).fetchone()
    if account is None:
        raise InvalidRequest("Account not found", "AccountNotFound")
    if account["takedown_ref"] is not None:
        raise InvalidRequest("Account has been taken down", "AccountTakedown")
    now = now_iso()
    old_blobs = [r[0] for r in conn.execute("SELECT DISTINCT blob_cid FROM record_blob WHERE did = ?", (did,))]
    conn.execute("DELETE FROM record_blob WHERE did = ?", (did,))
    conn.execute("DELETE FROM record WHERE did = ?", (did,))
    conn.execute("DELETE FROM repo_block WHERE did = ?", (did,))
    with closing(sqlite3.connect(f"file:{staging_path}?mode=ro", uri=True)) as staged:
        cur = staged.execute("SELECT k.cid, b.content FROM keep AS k JOIN block AS b ON b.cid = k.cid")
        while rows := cur.fetchmany(STAGE_BATCH_ROWS):
            conn.executemany("INSERT OR IGNORE INTO repo_block (did, cid, repo_rev, size, content) "
                             "VALUES (?, ?, ?, ?, ?)",
                             [(did, cid, rev, len(content), content) for cid, content in rows])
        cur = staged.execute("SELECT collection, rkey, cid FROM rec")
        while rows := cur.fetchmany(STAGE_BATCH_ROWS):
            conn.executemany("INSERT OR REPLACE INTO record (did, collection, rkey, cid, repo_rev, indexed_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             [(did, c, k, str(CID.from_bytes(cid)), rev, now) for c, k, cid in rows])
        cur = staged.execute("SELECT uri, cid FROM blobref")
        while rows := cur.fetchmany(STAGE_BATCH_ROWS):
            conn.executemany("INSERT OR IGNORE INTO record_blob (did, blob_cid, record_uri) VALUES (?, ?, ?)",
                             [(did, cid, uri) for uri, cid in rows])
    # Blobs already uploaded and referenced again are no longer awaiting collection; those the old
    # repo referenced and the new one does not start their grace period.
    conn.execute("UPDATE blob SET unreferenced_since = NULL WHERE did = ? AND unreferenced_since IS NOT NULL "
                 "AND EXISTS (SELECT 1 FROM record_blob AS r WHERE r.did = blob.did AND r.blob_cid = blob.cid)",
                 (did,))
    for cid in old_blobs:
        conn.execute(
            "UPDATE blob SET unreferenced_since = ? WHERE did = ? AND cid = ? AND unreferenced_since IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM record_blob AS r WHERE r.did = blob.did AND r.blob_cid = blob.cid)",
            (now, did, cid))
    cur = conn.execute("UPDATE repo_root SET cid = ?, rev = ?, indexed_at = ? WHERE did = ?",
                       (str(commit_cid), rev, now, did))
    if cur.rowcount == 0:
        conn.execute("INSERT INTO repo_root (did, cid, rev, indexed_at) VALUES (?, ?, ?, ?)",
                     (did, str(commit_cid), rev, now))
    seq = None
    if account["deactivated_at"] is None:
        block = conn.execute("SELECT content FROM repo_block WHERE did = ? AND cid = ?",
                             (did, commit_cid.bytes)).fetchone()
        seq = events.sync(conn, did, commit_cid, bytes(block[0]), rev, now)
    blocks, records, refs = counts
    return ImportedRepo(did, commit_cid, rev, blocks, records, refs, seq)


# -- the whole import ----------------------------------------------------------------------------------


KeysLookup = Callable[[], Any]  # async () -> list[PublicKey]


async def import_repo(ctx: Any, did: str, body: AsyncIterator[bytes], signing_keys: KeysLookup, *,
                      max_bytes: int = MAX_IMPORT_BYTES) -> ImportedRepo:
    """Stage, verify and store the CAR in ``body`` as ``did``'s repo. ``signing_keys()`` returns
    the keys the commit may be signed with (asked only once the CAR has been staged)."""
    staging = _Staging(ctx.settings.data_directory / "tmp")
    try:
        progress = Progress(f"importRepo {did}", lambda fields: ctx.log.info("import progress", extra=fields),
                            items="records")
        roots = await _stage(staging, body, max_bytes, progress)
        keys = await signing_keys()
        commit_cid, rev, blocks, records, refs = await asyncio.to_thread(_verify, staging, did, roots, keys, progress)
        progress.finish()
        imported = await ctx.db.write(_store, staging.path, did, commit_cid, rev, (blocks, records, refs))
    finally:
        await asyncio.to_thread(staging.close)
    clock = ctx.tid_clock
    if clock is not None:
        clock.observe(rev)  # later commits here must sort after the imported one
    if imported.seq is not None:
        await events.wake_firehose(ctx)
    ctx.log.info("repository imported", extra={"did": did, "rev": rev, "blocks": blocks, "records": records,
                                               "blob_refs": refs})
    return imported
