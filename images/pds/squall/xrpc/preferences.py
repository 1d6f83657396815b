"""``app.bsky.actor.getPreferences`` / ``putPreferences``: the account's app preferences, kept by
the PDS (not the AppView), as the reference PDS does.

Stored in ``account_pref`` one row per preference, in the client's order (the autoincrement id).
``putPreferences`` replaces the whole ``app.bsky`` namespace. Rules from the reference:

* every preference is an object with a string ``$type`` inside ``app.bsky``;
* ``app.bsky.actor.defs#personalDetailsPref`` (birth date) is only read or written by a full
  session: an app password neither sees it nor replaces it, and may not set it;
* ``app.bsky.actor.defs#declaredAgePref`` is derived from the birth date on read and never stored.

A request whose ``atproto-proxy`` header names an AppView other than the configured one is
forwarded there instead (the preferences then live with that service).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timezone
from typing import Any

from ..auth.tokens import SCOPE_ACCESS
from ..store import preferences as preferences_store
from .errors import InvalidRequest
from .proxy import forward_if_other_appview
from .registry import Auth, Method
from .request import XrpcRequest

NAMESPACE = "app.bsky"
PERSONAL_DETAILS = "app.bsky.actor.defs#personalDetailsPref"
DECLARED_AGE = "app.bsky.actor.defs#declaredAgePref"
MAX_PREFERENCES = 1000

GET_NSID = "app.bsky.actor.getPreferences"
PUT_NSID = "app.bsky.actor.putPreferences"


def in_namespace(name: str, namespace: str = NAMESPACE) -> bool:
    return name == namespace or name.startswith(namespace + ".")


def allowed(pref_type: str, *, full_access: bool) -> bool:
    return full_access or pref_type != PERSONAL_DETAILS


def age_on(birth: date, today: date) -> int:
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years


def _birth_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value).date()
    except ValueError:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None


def read_preferences(rows: list[sqlite3.Row], *, full_access: bool, today: date | None = None) -> list[dict]:
    prefs = [json.loads(row["value"]) for row in rows if in_namespace(row["name"])]
    details = next((p for p in prefs if p.get("$type") == PERSONAL_DETAILS), None)
    birth = _birth_date(details.get("birthDate")) if details is not None else None
    if birth is not None:
        age = age_on(birth, today or datetime.now(timezone.utc).date())
        prefs.append({"$type": DECLARED_AGE, "isOverAge13": age >= 13, "isOverAge16": age >= 16,
                      "isOverAge18": age >= 18})
    return [p for p in prefs if allowed(p.get("$type", ""), full_access=full_access)]


def write_preferences(conn: sqlite3.Connection, did: str, prefs: list[dict], full_access: bool) -> None:
    rows = preferences_store.list_preference_names(conn, did)
    # Only what this session could have written is replaced: an app password leaves the birth date.
    doomed = [(row["id"],) for row in rows if in_namespace(row["name"]) and allowed(row["name"], full_access=full_access)]
    preferences_store.delete_preferences(conn, doomed)
    preferences_store.insert_preferences(
        conn,
        [(did, p["$type"], json.dumps(p, ensure_ascii=False, separators=(",", ":")))
         for p in prefs if p["$type"] != DECLARED_AGE],
    )


def _full_access(req: XrpcRequest) -> bool:
    return req.auth.scope == SCOPE_ACCESS


async def get_preferences(req: XrpcRequest) -> Any:
    proxied = await forward_if_other_appview(req, GET_NSID)
    if proxied is not None:
        return proxied
    rows = await preferences_store.list_preferences(req.ctx.db, req.did)
    return {"preferences": read_preferences(rows, full_access=_full_access(req))}


async def put_preferences(req: XrpcRequest) -> Any:
    proxied = await forward_if_other_appview(
        req, PUT_NSID, body=json.dumps(req.body, ensure_ascii=False).encode("utf-8"))
    if proxied is not None:
        return proxied
    prefs = req.field("preferences", list)
    if len(prefs) > MAX_PREFERENCES:
        raise InvalidRequest(f"Input/preferences has too many items (at most {MAX_PREFERENCES})")
    for i, pref in enumerate(prefs):
        if not isinstance(pref, dict):
            raise InvalidRequest(f"Input/preferences/{i} must be an object")
        if not isinstance(pref.get("$type"), str) or not pref["$type"]:
            raise InvalidRequest("Preference is missing a $type")
    if not all(in_namespace(p["$type"]) for p in prefs):
        raise InvalidRequest(f"Some preferences are not in the {NAMESPACE} namespace")
    full_access = _full_access(req)
    forbidden = [p["$type"] for p in prefs if not allowed(p["$type"], full_access=full_access)]
    if forbidden:
        raise InvalidRequest(f"Do not have authorization to set preferences: {', '.join(forbidden)}")
    await req.ctx.db.write(write_preferences, req.did, prefs, full_access)
    return None


METHODS = (
    Method(GET_NSID, "query", get_preferences, Auth.ACCESS_OR_TAKENDOWN),  # appeals: a taken-down session may read
    Method(PUT_NSID, "procedure", put_preferences, Auth.ACCESS),
)
