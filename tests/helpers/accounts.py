"""Accounts on a running test server: sign up, bearer headers, error answers and database reads.

Shared by the service tests; every helper talks to the server over HTTP as a client would (except
``db_rows``, which reads the server's SQLite file read-only).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass

import httpx

from squall.atproto.crypto import PublicKey

from .pds import PdsProcess
from .verify import fetch_did_doc, signing_key

PASSWORD = "correct horse battery"

_names = itertools.count()


def signup(c: httpx.Client, name: str, *, password: str = PASSWORD, domain: str = ".localhost",
           invite: str | None = None, email: str | None = None) -> httpx.Response:
    body = {"handle": f"{name}{domain}", "email": email or f"{name}@example.com", "password": password}
    if invite is not None:
        body["inviteCode"] = invite
    return c.post("/xrpc/com.atproto.server.createAccount", json=body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, name: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == name, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def db_rows(pds: PdsProcess, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    """Read the server's database from the test process (WAL lets a reader in while it runs)."""
    with closing(sqlite3.connect(f"file:{pds.data_dir / 'pds.sqlite'}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


def create_account(c: httpx.Client, prefix: str, **signup_args) -> dict:
    """A new account with a name unique in this run (and across runs on a reused server):
    the createAccount answer plus ``headers`` (its bearer token) and ``name``."""
    name = f"{prefix}{next(_names)}x{int(time.time() * 1000) % 100000}"
    r = signup(c, name, **signup_args)
    assert r.status_code == 200, r.text
    body = r.json()
    return {**body, "headers": bearer(body["accessJwt"]), "name": name}


@dataclass
class User:
    did: str
    handle: str
    access: str
    headers: dict[str, str]
    key: PublicKey


def make_user(c: httpx.Client, name: str, plc_url: str | None) -> User:
    """An account named ``name`` with the signing key of its DID document (from ``plc_url`` or the PDS)."""
    r = signup(c, name)
    assert r.status_code == 200, r.text
    body = r.json()
    doc = fetch_did_doc(body["did"], plc_url=plc_url, pds=c)
    return User(body["did"], body["handle"], body["accessJwt"], bearer(body["accessJwt"]), signing_key(doc))
