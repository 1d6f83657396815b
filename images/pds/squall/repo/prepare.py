"""Record writes checked and shaped before they reach a commit
(https://atproto.com/specs/repository#repo-data-structure-v3, https://atproto.com/specs/record-key,
https://atproto.com/specs/lexicon#record-key; ``validate`` semantics as com.atproto.repo.* state).

A record's ``$type`` is its collection (added when absent, refused when different). Its key is
given, or chosen: the literal a Lexicon demands (``literal:self``) or a fresh TID. ``validate``:

* ``False`` — no Lexicon check; no ``validationStatus`` in the answer;
* unset — records of a known type are checked (``valid``), others pass as ``unknown``;
* ``True`` — the type must be known and the record must match it.

Everything here runs before the write transaction, so a bad record costs no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Final

from ..atproto import dagcbor, datamodel, syntax
from ..atproto.cid import CID
from ..atproto.errors import AtprotoError, DecodeError, InvalidSyntax
from ..atproto.lexicon import Lexicons, LexiconValidationError
from ..atproto.repo import CREATE, DELETE, MAX_RECORD_BYTES, UPDATE
from ..atproto.tid import TidClock
from ..errors import InvalidRequest

PUT: Final = "put"  # create or update, decided inside the transaction (putRecord)

VALID: Final = "valid"
UNKNOWN: Final = "unknown"


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()  # a swapRecord that was not given (null means "must not exist")


@dataclass(frozen=True)
class PreparedWrite:
    action: str  # create | update | delete | put
    collection: str
    rkey: str
    record: dict | None = None  # data-model value with $type
    cid: CID | None = None
    validation_status: str | None = None
    swap_record: CID | None | _Unset = UNSET
    missing_ok: bool = False  # a delete of an absent record is a no-op (deleteRecord)

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"

    def uri(self, did: str) -> str:
        return f"at://{did}/{self.collection}/{self.rkey}"


def check_string(value: Any, where: str, validate: Callable[[str], None], invalid: str) -> str:
    """A string input that must pass a syntax validator; ``invalid`` prefixes the syntax error."""
    if type(value) is not str:
        raise InvalidRequest(f"{where} must be a string")
    try:
        validate(value)
    except InvalidSyntax as exc:
        raise InvalidRequest(f"{invalid}: {exc}") from None
    return value


def check_collection(collection: Any, where: str = "Input/collection") -> str:
    return check_string(collection, where, syntax.ensure_valid_nsid, f"{where} must be a valid NSID")


def check_rkey(rkey: Any, where: str = "Input/rkey") -> str:
    return check_string(rkey, where, syntax.ensure_valid_record_key, "Invalid record key")


def parse_cid(value: Any, where: str) -> CID:
    if type(value) is not str:
        raise InvalidRequest(f"{where} must be a CID string")
    try:
        return CID.decode(value)
    except (AtprotoError, ValueError) as exc:
        raise InvalidRequest(f"{where} is not a valid CID: {exc}") from None


class Preparer:
    """Turns API input into :class:`PreparedWrite` values using the app's Lexicons and TID clock."""

    def __init__(self, lexicons: Lexicons, tid_clock: TidClock) -> None:
        self.lexicons = lexicons
        self.tid_clock = tid_clock

    def record_write(self, action: str, collection: Any, rkey: Any, record: Any, *,
                     validate: bool | None, swap_record: CID | None | _Unset = UNSET,
                     where: str = "Input") -> PreparedWrite:
        collection = check_collection(collection, f"{where}/collection")
        if rkey is not None:
            rkey = check_rkey(rkey, f"{where}/rkey")
        elif action != CREATE:
            raise InvalidRequest(f"{where} must have the property \"rkey\"")
        if type(record) is not dict:
            raise InvalidRequest(f"{where}/{'record' if where == 'Input' else 'value'} must be an object")
        try:
            value = datamodel.from_json(record)
        except DecodeError as exc:
            raise InvalidRequest(f"Invalid record: {exc}") from None
        kind = value.get("$type")
        if kind is None:
            value = {**value, "$type": collection}
        elif kind != collection:
            raise InvalidRequest(f"Invalid $type: expected {collection}, got {kind}")
        known = self.lexicons.has_record_type(collection)
        if rkey is None:
            rkey = self._default_rkey(collection, known)
        status = self._validate(collection, rkey, value, known, validate)
        try:
            cid, block = dagcbor.cid_for(value)
        except DecodeError as exc:
            raise InvalidRequest(f"Invalid record: {exc}") from None
        if len(block) > MAX_RECORD_BYTES:
            raise InvalidRequest(f"Record is too large: {len(block)} bytes encoded, at most {MAX_RECORD_BYTES}")
        return PreparedWrite(action, collection, rkey, value, cid, status, swap_record)

    def delete(self, collection: Any, rkey: Any, *, swap_record: CID | None | _Unset = UNSET,
               missing_ok: bool = False, where: str = "Input") -> PreparedWrite:
        collection = check_collection(collection, f"{where}/collection")
        if rkey is None:
            raise InvalidRequest(f"{where} must have the property \"rkey\"")
        rkey = check_rkey(rkey, f"{where}/rkey")
        return PreparedWrite(DELETE, collection, rkey, swap_record=swap_record, missing_ok=missing_ok)

    def _default_rkey(self, collection: str, known: bool) -> str:
        if known:
            key = self.lexicons.record_key_type(collection)
            if key.startswith("literal:"):
                return key[len("literal:"):]
        return self.tid_clock.next_tid()

    def _validate(self, collection: str, rkey: str, value: dict, known: bool, validate: bool | None) -> str | None:
        if validate is False:
            return None
        if not known:
            if validate is True:
                raise InvalidRequest(f"Unknown lexicon type: {collection}")
            return UNKNOWN
        try:
            self.lexicons.validate_record_key(collection, rkey)
        except LexiconValidationError as exc:
            raise InvalidRequest(f"Invalid record key for {collection}: {exc.reason}") from None
        try:
            self.lexicons.validate_record(collection, value)
        except LexiconValidationError as exc:
            raise InvalidRequest(f"Invalid {collection} record: {exc}") from None
        return VALID


__all__ = ["CREATE", "UPDATE", "DELETE", "PUT", "UNSET", "VALID", "UNKNOWN", "PreparedWrite", "Preparer",
           "check_collection", "check_rkey", "parse_cid"]
