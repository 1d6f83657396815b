"""Versioned schema migrations, applied at start inside one transaction each.

The schema version is SQLite's ``user_version`` (the backup sidecar reads it into its manifest).
A database written by a newer Squall is refused rather than guessed at: downgrades lose data.
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3


class SchemaTooNew(Exception):
    pass


_V1 = """
CREATE TABLE squall_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- Accounts ------------------------------------------------------------------------------------
CREATE TABLE account (
  did              TEXT PRIMARY KEY,
  handle           TEXT UNIQUE,                   -- lower-case; NULL while a handle is invalid
  email            TEXT UNIQUE COLLATE NOCASE,
  password_hash    TEXT,                          -- argon2id
  signing_key_alg  TEXT NOT NULL,                 -- 'ES256K' or 'ES256'
  signing_key      BLOB NOT NULL,                 -- 32-byte private scalar of the repo signing key
  created_at       TEXT NOT NULL,
  email_confirmed_at TEXT,
  deactivated_at   TEXT,
  delete_after     TEXT,
  takedown_ref     TEXT,
  invites_disabled INTEGER NOT NULL DEFAULT 0,
  plc_pending_op   BLOB                           -- signed PLC op not yet accepted by the directory
);

CREATE TABLE refresh_token (
  id                TEXT PRIMARY KEY,            -- the refresh JWT's jti
  did               TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  app_password_name TEXT,
  expires_at        INTEGER NOT NULL,           -- unix seconds
  next_id           TEXT                         -- set once rotated: the token may not be used again
);
CREATE INDEX refresh_token_did ON refresh_token(did);

CREATE TABLE app_password (
  did           TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  name          TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  privileged    INTEGER NOT NULL DEFAULT 0,
  created_at    TEXT NOT NULL,
  PRIMARY KEY (did, name)
);

CREATE TABLE invite_code (
  code            TEXT PRIMARY KEY,
  available_uses  INTEGER NOT NULL,
  disabled        INTEGER NOT NULL DEFAULT 0,
  for_account     TEXT NOT NULL,                 -- DID, or 'admin'
  created_by      TEXT NOT NULL,
  created_at      TEXT NOT NULL
);
CREATE INDEX invite_code_for_account ON invite_code(for_account);

CREATE TABLE invite_code_use (
  code    TEXT NOT NULL REFERENCES invite_code(code),
  used_by TEXT NOT NULL,
  used_at TEXT NOT NULL,
  PRIMARY KEY (code, used_by)
);

CREATE TABLE account_pref (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,   -- keeps the client's order
  did       TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  name      TEXT NOT NULL,                       -- the preference's $type
  value     TEXT NOT NULL                        -- JSON
);
CREATE INDEX account_pref_did ON account_pref(did);

-- Repositories ---------------------------------------------------------------------------------
CREATE TABLE repo_root (
  did        TEXT PRIMARY KEY REFERENCES account(did) ON DELETE CASCADE,
  cid        TEXT NOT NULL,                      -- current commit
  rev        TEXT NOT NULL,
  indexed_at TEXT NOT NULL
);

CREATE TABLE repo_block (
  did      TEXT NOT NULL,
  cid      BLOB NOT NULL,                        -- binary CID
  repo_rev TEXT NOT NULL,                        -- rev of the commit that introduced the block
  size     INTEGER NOT NULL,
  content  BLOB NOT NULL,
  PRIMARY KEY (did, cid)
) WITHOUT ROWID;
CREATE INDEX repo_block_rev ON repo_block(did, repo_rev);

CREATE TABLE record (
  did        TEXT NOT NULL,
  collection TEXT NOT NULL,
  rkey       TEXT NOT NULL,
  cid        TEXT NOT NULL,
  repo_rev   TEXT NOT NULL,
  indexed_at TEXT NOT NULL,
  PRIMARY KEY (did, collection, rkey)
) WITHOUT ROWID;
CREATE INDEX record_rev ON record(did, repo_rev);

-- Blobs --------------------------------------------------------------------------------------------
CREATE TABLE blob (
  did        TEXT NOT NULL,
  cid        TEXT NOT NULL,
  mime_type  TEXT NOT NULL,
  size       INTEGER NOT NULL,
  temp_key   TEXT,                               -- set while only uploaded, not yet referenced
  created_at TEXT NOT NULL,
  unreferenced_since TEXT,                       -- for garbage collection after a grace period
  takedown_ref TEXT,
  PRIMARY KEY (did, cid)
) WITHOUT ROWID;

CREATE TABLE record_blob (
  did        TEXT NOT NULL,
  blob_cid   TEXT NOT NULL,
  record_uri TEXT NOT NULL,
  PRIMARY KEY (did, blob_cid, record_uri)
) WITHOUT ROWID;
CREATE INDEX record_blob_uri ON record_blob(did, record_uri);

-- Sequencer (firehose). AUTOINCREMENT: a rolled-back transaction also rolls back the counter, so
-- seq stays gapless, and a pruned seq is never reused. ---------------------------------------------
CREATE TABLE repo_seq (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  did          TEXT NOT NULL,
  event_type   TEXT NOT NULL,                    -- 'commit' | 'sync' | 'identity' | 'account'
  event        BLOB NOT NULL,                    -- DAG-CBOR body without seq
  sequenced_at TEXT NOT NULL
);
CREATE INDEX repo_seq_did ON repo_seq(did);
CREATE INDEX repo_seq_sequenced_at ON repo_seq(sequenced_at);

-- Identity cache for other DIDs ----------------------------------------------------------------
CREATE TABLE did_cache (
  did        TEXT PRIMARY KEY,
  doc        TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
"""

# v2: the blob garbage collector looks blobs up by temp_key and unreferenced_since on every sweep.
_V2 = """
CREATE INDEX blob_temp_key ON blob(temp_key) WHERE temp_key IS NOT NULL;
CREATE INDEX blob_unreferenced ON blob(unreferenced_since) WHERE unreferenced_since IS NOT NULL;
"""

# v3: an update or delete asks whether another path of the repo still holds the old record CID.
_V3 = """
CREATE INDEX record_cid ON record(did, cid);
"""

# v4: admin takedowns of single records (hidden from repo reads), and the account-deletion tokens an
# operator issues (``squall account delete-token``) because Squall sends no e-mail.
_V4 = """
ALTER TABLE record ADD COLUMN takedown_ref TEXT;
CREATE INDEX record_takedown ON record(did) WHERE takedown_ref IS NOT NULL;
CREATE TABLE account_delete_token (
  did        TEXT PRIMARY KEY REFERENCES account(did) ON DELETE CASCADE,
  token_hash TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
"""

# v5: the operator-issued tokens serve more than deletion (``squall.accounts.operator_tokens``):
# one live token per account AND purpose ('delete', 'plc'). The v4 deletion tokens are kept.
_V5 = """
CREATE TABLE account_token (
  did        TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  purpose    TEXT NOT NULL,                      -- 'delete' | 'plc'
  token_hash TEXT NOT NULL,                      -- SHA-256 hex of the token
  expires_at INTEGER NOT NULL,                   -- unix seconds
  PRIMARY KEY (did, purpose)
) WITHOUT ROWID;
INSERT INTO account_token (did, purpose, token_hash, expires_at)
  SELECT did, 'delete', token_hash, expires_at FROM account_delete_token;
DROP TABLE account_delete_token;
"""

_V6 = """
-- OAuth (squall.oauth): pushed authorization requests (and the code each one yields), grant
-- sessions with their current refresh token, and spent refresh tokens (reuse revokes the session).
CREATE TABLE oauth_request (
  id              TEXT PRIMARY KEY,               -- the request_uri's random part
  client_id       TEXT NOT NULL,
  client_auth     TEXT NOT NULL,                  -- 'none' | 'private_key_jwt'
  dpop_jkt        TEXT NOT NULL,                  -- thumbprint of the DPoP key used at PAR
  params          TEXT NOT NULL,                  -- JSON of the validated authorization parameters
  expires_at      INTEGER NOT NULL,               -- unix seconds
  failed_logins   INTEGER NOT NULL DEFAULT 0,
  did             TEXT,                           -- set on approval
  code            TEXT UNIQUE,                    -- SHA-256 hex of the authorization code
  code_expires_at INTEGER,
  session_id      TEXT                            -- set when the code is exchanged (reuse revokes it)
);
CREATE TABLE oauth_session (
  id                 TEXT PRIMARY KEY,
  did                TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  client_id          TEXT NOT NULL,
  client_auth        TEXT NOT NULL,
  dpop_jkt           TEXT NOT NULL,
  scope              TEXT NOT NULL,
  created_at         INTEGER NOT NULL,
  expires_at         INTEGER NOT NULL,            -- the whole grant's end (shorter for public clients)
  refresh_hash       TEXT NOT NULL UNIQUE,        -- SHA-256 hex of the current refresh token
  refresh_expires_at INTEGER NOT NULL
);
CREATE INDEX oauth_session_did ON oauth_session(did);
CREATE TABLE oauth_spent_refresh (
  refresh_hash TEXT PRIMARY KEY,
  session_id   TEXT NOT NULL,
  expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
"""

# v7: signing keys reserved by com.atproto.server.reserveSigningKey for an account that is about
# to migrate here (``store/reserved_keys.py``); createAccount with that DID takes the key.
_V7 = """
CREATE TABLE reserved_signing_key (
  key_did     TEXT PRIMARY KEY,                  -- did:key of the public key
  did         TEXT UNIQUE,                       -- the account it is reserved for, if named
  private_key BLOB NOT NULL,                     -- 32-byte secp256k1 private scalar
  created_at  INTEGER NOT NULL                   -- unix seconds
);
CREATE INDEX reserved_signing_key_created ON reserved_signing_key(created_at);
"""

# v8: the admin dashboard's sign-in sessions.
_V8 = """
-- The admin dashboard's sign-in sessions (squall.admin_web): the cookie holds a random id, the table
-- only its SHA-256; sign-out deletes the row, so a copied cookie dies with it.
CREATE TABLE admin_session (
  id_hash    TEXT PRIMARY KEY,                    -- SHA-256 hex of the cookie's session id
  csrf       TEXT NOT NULL,                       -- the session's CSRF token (every form carries it)
  created_at INTEGER NOT NULL,                    -- unix seconds
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
"""

# v9: e-mail (squall.mail, store/mail.py): the outbox a background sender drains, the mailed
# tokens (hashed, one live per account and purpose), and which accounts sign in with an e-mailed code.
_V9 = """
CREATE TABLE mail_outbox (
  id              INTEGER PRIMARY KEY,
  transport       TEXT NOT NULL,                  -- 'account' | 'moderation'
  did             TEXT,                           -- the account it concerns (no FK: kept after deletion)
  recipient       TEXT NOT NULL,
  subject         TEXT NOT NULL,
  message         BLOB,                           -- the RFC 5322 message; cleared once sent or failed
  created_at      INTEGER NOT NULL,               -- unix seconds
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  sent_at         INTEGER,
  failed_at       INTEGER,
  last_error      TEXT,
  last_error_at   INTEGER
);
CREATE INDEX mail_outbox_due ON mail_outbox(next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE TABLE email_token (
  did        TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  purpose    TEXT NOT NULL,                      -- 'confirm_email' | 'update_email' | 'reset_password' | 'sign_in'
  token_hash TEXT NOT NULL,                      -- SHA-256 hex of the token
  expires_at INTEGER NOT NULL,                   -- unix seconds
  PRIMARY KEY (did, purpose)
) WITHOUT ROWID;
CREATE INDEX email_token_hash ON email_token(purpose, token_hash);
CREATE TABLE email_auth_factor (
  did        TEXT PRIMARY KEY REFERENCES account(did) ON DELETE CASCADE,
  enabled_at TEXT NOT NULL
) WITHOUT ROWID;
"""

# v10: the relay monitor.
_V10 = """
-- The relay monitor (squall.relays): what each relay reported of this host, the lag history,
-- each relay's view of each local account, the actions taken, and the self-checks.
CREATE TABLE relay_host (
  relay          TEXT PRIMARY KEY,                -- the relay's base URL
  checked_at     REAL,                            -- unix seconds of the last host check
  status         TEXT NOT NULL,                   -- squall.relays.model.HOST_STATES
  message        TEXT,
  host_status    TEXT,                            -- what the relay said (active, idle, offline, throttled, banned)
  their_seq      INTEGER,
  our_seq        INTEGER,
  account_count  INTEGER,
  clock_skew_ms  INTEGER,                         -- their Date header minus our clock
  last_error     TEXT,
  last_crawl_at  REAL,                            -- the last requestCrawl we sent it
  warnings       TEXT                             -- JSON list of strings
);
CREATE TABLE relay_lag (
  relay      TEXT NOT NULL,
  checked_at REAL NOT NULL,
  our_seq    INTEGER NOT NULL,
  their_seq  INTEGER NOT NULL
);
CREATE INDEX relay_lag_relay ON relay_lag(relay, checked_at);
CREATE TABLE relay_account (
  relay        TEXT NOT NULL,
  did          TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  status       TEXT NOT NULL,                     -- squall.relays.model.ACCOUNT_STATES
  message      TEXT,
  their_active INTEGER,
  their_status TEXT,
  their_rev    TEXT,
  our_rev      TEXT,
  checked_at   REAL NOT NULL,
  behind_since REAL,                              -- first check that saw their rev behind ours
  action       TEXT,
  action_at    REAL,
  PRIMARY KEY (relay, did)
) WITHOUT ROWID;
CREATE INDEX relay_account_did ON relay_account(did);
CREATE TABLE relay_action (
  id     INTEGER PRIMARY KEY,
  at     REAL NOT NULL,
  relay  TEXT,                                    -- NULL: every relay
  did    TEXT,
  action TEXT NOT NULL,
  reason TEXT NOT NULL,
  result TEXT NOT NULL
);
CREATE TABLE relay_self_check (
  name       TEXT PRIMARY KEY,                    -- describeServer, subscribeRepos
  ok         INTEGER NOT NULL,
  detail     TEXT NOT NULL,
  checked_at REAL NOT NULL
) WITHOUT ROWID;
"""

# v11: when each OAuth grant was last used, for the account page.
_V11 = """
ALTER TABLE oauth_session ADD COLUMN last_used_at INTEGER;
"""

# v12: access-token cut-offs (revocation takes effect at once).
_V12 = """
-- Access-token cut-offs (squall.auth.revocation): an access token of ``did`` issued before
-- ``cutoff_ms`` under ``credential`` ('' = any: the password changed; 'app:<name>' = that app
-- password, revoked) is refused. A row older than the access-token lifetime is swept.
CREATE TABLE token_cutoff (
  did        TEXT NOT NULL,
  credential TEXT NOT NULL,
  cutoff_ms  INTEGER NOT NULL,                    -- unix milliseconds
  PRIMARY KEY (did, credential)
) WITHOUT ROWID;
CREATE INDEX token_cutoff_age ON token_cutoff(cutoff_ms);
"""

# v13: the account page's server-side sign-in sessions (squall.account_web, store/account_sessions.py).
_V13 = """
-- The cookie holds a random id, the table only its SHA-256; sign-out deletes the row, so a copied
-- cookie dies with it. 'code': the password was right, the e-mailed sign-in code is awaited.
CREATE TABLE account_session (
  id_hash    TEXT PRIMARY KEY,                    -- SHA-256 hex of the cookie's session id
  did        TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
  csrf       TEXT NOT NULL,                       -- the session's CSRF token (every form carries it)
  stage      TEXT NOT NULL,                       -- 'active' | 'code'
  created_at INTEGER NOT NULL,                    -- unix seconds
  expires_at INTEGER NOT NULL,
  user_agent TEXT NOT NULL                        -- shown in the session list (truncated)
) WITHOUT ROWID;
CREATE INDEX account_session_did ON account_session(did);
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5), (6, _V6), (7, _V7),
                                           (8, _V8), (9, _V9), (10, _V10), (11, _V11), (12, _V12),
                                           (13, _V13))
LATEST = MIGRATIONS[-1][0]


def apply_migrations(conn: sqlite3.Connection, pds_version: str) -> int:
    """Bring the schema to LATEST; return the version. Refuses a newer database."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > LATEST:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this Squall supports ({LATEST}); "
            "run the newer Squall release or restore a backup made by this one"
        )
    for version, sql in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO squall_meta(key, value) VALUES ('pds_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (pds_version,),
    )
    conn.execute("COMMIT")
    return LATEST


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT implicitly; splitting keeps each migration in one transaction.
    statements, buf = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped:
            continue
        buf.append(stripped)
        if stripped.endswith(";"):
            statement = "\n".join(buf).strip()
            if sqlite3.complete_statement(statement):
                statements.append(statement)
                buf = []
    if buf:
        statements.append("\n".join(buf))
    return statements
