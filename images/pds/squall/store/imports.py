"""Owner of the repo-import staging tables — ``block``, ``keep``, ``rec`` and ``blobref`` — which
live not in the PDS database but in a private temporary SQLite file per import
(com.atproto.repo.importRepo, see ``squall.repo.importer``).

``block`` holds every block of the uploaded CAR; the verification walk fills ``keep`` (the blocks
the tree reaches), ``rec`` (the records) and ``blobref`` (their blob references); the import's
write transaction then copies those pages into ``repo_block``, ``record`` and ``record_blob``
(with the writers of ``store.repos`` and ``store.blobs``).
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ..atproto.cid import CID


class Staging:
    """The private temporary SQLite file an import is spooled into (deleted by ``close``). Used
    from one thread at a time (batches run in worker threads)."""

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
        """(binary CID, block) rows of the CAR, in one batch."""
        with self.batch():
            self.conn.executemany("INSERT OR IGNORE INTO block (cid, content) VALUES (?, ?)", rows)

    def put_walked(self, keep: Iterable[bytes], recs: list[tuple[str, str, bytes]],
                   refs: list[tuple[str, str]]) -> None:
        """One batch of what the verification walk found: kept blocks (binary CIDs), records
        (collection, rkey, binary CID) and blob references (record URI, blob CID text)."""
        with self.batch():
            self.conn.executemany("INSERT OR IGNORE INTO keep (cid) VALUES (?)", [(c,) for c in keep])
            self.conn.executemany("INSERT INTO rec (collection, rkey, cid) VALUES (?, ?, ?)", recs)
            self.conn.executemany("INSERT INTO blobref (uri, cid) VALUES (?, ?)", refs)

    def count_kept(self) -> int:
        """Blocks kept (a record held at two paths counts once)."""
        return self.conn.execute("SELECT COUNT(*) FROM keep").fetchone()[0]

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


class StagedBlocks:
    """The core's BlockStore interface over the staged ``block`` table (read-only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, cid: CID) -> bytes | None:
        row = self.conn.execute("SELECT content FROM block WHERE cid = ?", (cid.bytes,)).fetchone()
        return None if row is None else bytes(row[0])

    def has(self, cid: CID) -> bool:
        return self.conn.execute("SELECT 1 FROM block WHERE cid = ?", (cid.bytes,)).fetchone() is not None

    def put(self, cid: CID, data: bytes) -> None:
        raise TypeError("the staged import is read-only")


@contextmanager
def open_staged(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a staging file (for the thread of the import's write transaction)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as staged:
        yield staged


def _pages(cur: sqlite3.Cursor, rows: int) -> Iterator[list]:
    while page := cur.fetchmany(rows):
        yield page


def kept_blocks(staged: sqlite3.Connection, rows: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Pages of (binary CID, block) of the kept blocks."""
    return _pages(staged.execute("SELECT k.cid, b.content FROM keep AS k JOIN block AS b ON b.cid = k.cid"), rows)


def staged_records(staged: sqlite3.Connection, rows: int) -> Iterator[list[tuple[str, str, bytes]]]:
    """Pages of (collection, rkey, binary CID) of the records."""
    return _pages(staged.execute("SELECT collection, rkey, cid FROM rec"), rows)


def staged_blob_refs(staged: sqlite3.Connection, rows: int) -> Iterator[list[tuple[str, str]]]:
    """Pages of (record URI, blob CID text) of the blob references."""
    return _pages(staged.execute("SELECT uri, cid FROM blobref"), rows)
