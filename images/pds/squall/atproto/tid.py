"""Timestamp identifiers (https://atproto.com/specs/tid).

A TID is a 64-bit integer written as 13 characters of base32-sortable
(``234567abcdefghijklmnopqrstuvwxyz``), so string order equals numeric order:

* the top bit is always 0 (hence the first character is one of ``234567abcdefghij``),
* the next 53 bits are microseconds since the UNIX epoch,
* the low 10 bits are a random "clock identifier".

:class:`TidClock` hands out strictly increasing TIDs from one process. It holds its own state, so
two repositories or tests never share a counter by accident.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from types import MappingProxyType
from typing import Callable

from .errors import InvalidSyntax

__all__ = [
    "TidClock",
    "tid_from_parts",
    "tid_timestamp",
    "tid_clock_id",
    "is_valid_tid",
    "ensure_valid_tid",
]

B32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
TID_LENGTH = 13
MAX_MICROS = (1 << 53) - 1
MAX_CLOCK_ID = (1 << 10) - 1

_TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_B32_VALUE = MappingProxyType({c: i for i, c in enumerate(B32_SORTABLE)})


def _encode(value: int) -> str:
    chars = []
    for _ in range(TID_LENGTH):
        chars.append(B32_SORTABLE[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _decode(tid: str) -> int:
    ensure_valid_tid(tid)
    value = 0
    for ch in tid:
        value = (value << 5) | _B32_VALUE[ch]
    return value


def ensure_valid_tid(s: str) -> None:
    """Raise :class:`InvalidSyntax` unless ``s`` is a syntactically valid TID."""
    if not isinstance(s, str):
        raise InvalidSyntax(f"TID must be a string, got {type(s).__name__}")
    if len(s) != TID_LENGTH:
        raise InvalidSyntax(f"TID must be {TID_LENGTH} characters, got {len(s)}")
    if not _TID_RE.fullmatch(s):
        if s[0] in B32_SORTABLE and all(c in B32_SORTABLE for c in s):
            raise InvalidSyntax(f"TID {s!r} has the top bit set (first character above 'j')")
        raise InvalidSyntax(f"TID {s!r} has characters outside base32-sortable 2-7a-z")


def is_valid_tid(s: str) -> bool:
    try:
        ensure_valid_tid(s)
    except InvalidSyntax:
        return False
    return True


def tid_from_parts(micros: int, clock_id: int) -> str:
    """The TID for a microsecond timestamp and a 10-bit clock identifier."""
    if not isinstance(micros, int) or not 0 <= micros <= MAX_MICROS:
        raise InvalidSyntax(f"TID timestamp must be an integer in [0, 2^53), got {micros!r}")
    if not isinstance(clock_id, int) or not 0 <= clock_id <= MAX_CLOCK_ID:
        raise InvalidSyntax(f"TID clock id must be an integer in [0, 1023], got {clock_id!r}")
    return _encode((micros << 10) | clock_id)


def tid_timestamp(tid: str) -> int:
    """Microseconds since the UNIX epoch encoded in ``tid``."""
    return _decode(tid) >> 10


def tid_clock_id(tid: str) -> int:
    return _decode(tid) & MAX_CLOCK_ID


def _wall_clock_micros() -> int:
    return time.time_ns() // 1000


class TidClock:
    """Issues strictly increasing TIDs.

    If the wall clock stands still or steps backwards, the timestamp part keeps counting up from
    the last one issued, so ordering never breaks; it re-joins the wall clock once that catches up.
    """

    __slots__ = ("_now", "_clock_id", "_last", "_lock")

    def __init__(
        self,
        now: Callable[[], int] | None = None,
        clock_id: int | None = None,
        last: int = 0,
    ) -> None:
        """``now`` returns microseconds since the epoch (default: the wall clock).

        ``last`` is the timestamp of a TID already issued (e.g. the newest rev in storage), so a
        restart with a slow clock still moves forward.
        """
        if clock_id is None:
            clock_id = secrets.randbelow(MAX_CLOCK_ID + 1)
        if not isinstance(clock_id, int) or not 0 <= clock_id <= MAX_CLOCK_ID:
            raise InvalidSyntax(f"TID clock id must be an integer in [0, 1023], got {clock_id!r}")
        self._now = now or _wall_clock_micros
        self._clock_id = clock_id
        self._last = last
        self._lock = threading.Lock()

    @property
    def clock_id(self) -> int:
        return self._clock_id

    def observe(self, tid: str) -> None:
        """Never issue a TID at or below the timestamp of ``tid`` (one issued elsewhere or earlier)."""
        micros = tid_timestamp(tid)
        with self._lock:
            if micros > self._last:
                self._last = micros

    def next_tid(self) -> str:
        with self._lock:
            micros = self._now()
            if micros <= self._last:
                micros = self._last + 1
            self._last = micros
        return tid_from_parts(micros, self._clock_id)

    def __repr__(self) -> str:
        return f"TidClock(clock_id={self._clock_id})"
