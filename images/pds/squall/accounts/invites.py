"""Invite codes (com.atproto.server.createInviteCode(s), getAccountInviteCodes, createAccount).

A code looks like ``<hostname with dots as dashes>-xxxxx-xxxxx`` (base32), as the reference
writes them, so a code names the server it belongs to and is not mistaken for a link. A code is
usable while it is not disabled, its owner is not taken down, and it has uses left.
"""

from __future__ import annotations

import secrets
import sqlite3
from datetime import datetime
from typing import Any

from ..errors import InvalidRequest
from ..store import invites as invites_store

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
ADMIN = "admin"
MAX_OPEN_EARNED_CODES = 5


def generate_code(hostname: str) -> str:
    token = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{hostname.replace('.', '-')}-{token[:5]}-{token[5:]}"


def insert_codes(conn: sqlite3.Connection, codes: list[tuple[str, str]], use_count: int, created_by: str,
                 created_at: str, disabled: bool = False) -> None:
    """``codes`` is [(code, for_account)]."""
    invites_store.insert_invite_codes(
        conn, [(code, use_count, int(disabled), account, created_by, created_at) for code, account in codes]
    )


def ensure_available(conn: sqlite3.Connection, code: str) -> None:
    """Raise InvalidInviteCode unless ``code`` can be used once more (run inside the signup transaction)."""
    row = invites_store.get_invite_code_availability(conn, code)
    if row is None or row["disabled"] or row["takedown_ref"] is not None:
        raise InvalidRequest("Provided invite code not available", "InvalidInviteCode")
    used = invites_store.count_invite_code_uses(conn, code)
    if used >= row["available_uses"]:
        raise InvalidRequest("Provided invite code not available", "InvalidInviteCode")


def record_use(conn: sqlite3.Connection, code: str, did: str, used_at: str) -> None:
    invites_store.insert_invite_code_use(conn, code, did, used_at)


def account_codes(conn: sqlite3.Connection, did: str) -> list[dict[str, Any]]:
    """Every code belonging to ``did`` as com.atproto.server.defs#inviteCode, uses newest first."""
    rows = invites_store.list_account_invite_codes(conn, did)
    out = []
    for row in rows:
        uses = invites_store.list_invite_code_uses(conn, row["code"])
        out.append({
            "code": row["code"],
            "available": row["available_uses"],
            "disabled": bool(row["disabled"]),
            "forAccount": row["for_account"],
            "createdBy": row["created_by"],
            "createdAt": row["created_at"],
            "uses": [{"usedBy": u["used_by"], "usedAt": u["used_at"]} for u in uses],
        })
    return out


def _millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def earned_codes_to_create(codes: list[dict[str, Any]], *, account_created_at: str, now_ms: int,
                           interval_ms: int, epoch_ms: int) -> int:
    """How many codes an account has earned and may create now.

    One code per ``interval`` of account lifetime counted from ``epoch`` (or from creation, if
    later), minus the codes it already made since the epoch; never more than five unused at once.
    Codes the admin gave do not count against the account.
    """
    routine = [c for c in codes if c["createdBy"] != ADMIN]
    unused = [c for c in routine if not c["disabled"] and c["available"] > len(c["uses"])]
    start = max(_millis(account_created_at), epoch_ms)
    earned = max(0, (now_ms - start) // interval_ms)
    made_since_epoch = [c for c in routine if _millis(c["createdAt"]) > epoch_ms]
    return max(0, min(MAX_OPEN_EARNED_CODES - len(unused), earned - len(made_since_epoch)))
