"""Identifier and string-format syntax.

Specs: handles (https://atproto.com/specs/handle), DIDs (https://atproto.com/specs/did), NSIDs
(https://atproto.com/specs/nsid), record keys (https://atproto.com/specs/record-key), AT URIs
(https://atproto.com/specs/at-uri-scheme, the restricted form Lexicon's ``at-uri`` format allows),
TIDs (https://atproto.com/specs/tid) and the other Lexicon string formats
(https://atproto.com/specs/lexicon#string-formats): at-identifier, cid, datetime, language, uri.

Each format has ``ensure_valid_<name>(s)``, which raises :class:`InvalidSyntax` saying what is
wrong, and ``is_valid_<name>(s)``. :data:`FORMAT_VALIDATORS` maps Lexicon format names to the
``ensure_valid_*`` functions. Everything here is ASCII-only: a non-ASCII character is always an
error, never case-folded or normalised.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from .errors import InvalidSyntax
from .tid import ensure_valid_tid, is_valid_tid

__all__ = [
    "AtUri",
    "FORMAT_VALIDATORS",
    "DISALLOWED_TLDS",
    "normalize_handle",
    "handle_is_disallowed_tld",
    "format_datetime",
    "ensure_valid_handle",
    "ensure_valid_did",
    "ensure_valid_nsid",
    "ensure_valid_record_key",
    "ensure_valid_at_uri",
    "ensure_valid_at_identifier",
    "ensure_valid_datetime",
    "ensure_valid_language",
    "ensure_valid_cid",
    "ensure_valid_uri",
    "ensure_valid_tid",
    "is_valid_handle",
    "is_valid_did",
    "is_valid_nsid",
    "is_valid_record_key",
    "is_valid_at_uri",
    "is_valid_at_identifier",
    "is_valid_datetime",
    "is_valid_language",
    "is_valid_cid",
    "is_valid_uri",
    "is_valid_tid",
]

MAX_HANDLE_LENGTH = 253
MAX_DID_LENGTH = 2048
MAX_NSID_LENGTH = 317
MAX_LABEL_LENGTH = 63
MAX_RECORD_KEY_LENGTH = 512
MAX_AT_URI_LENGTH = 8 * 1024
MAX_URI_LENGTH = 8 * 1024
MAX_DATETIME_LENGTH = 64

# Syntactically fine, but the handle spec says these must not be used for account handles.
DISALLOWED_TLDS = frozenset(
    {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
)

# Explicit ASCII classes everywhere: Python's \d and \w also match non-ASCII digits and letters.
_LABEL_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_DID_METHOD_RE = re.compile(r"[a-z]+")
_DID_IDENT_RE = re.compile(r"[a-zA-Z0-9._:%-]+")
_NSID_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9]{0,62}")
_RECORD_KEY_RE = re.compile(r"[a-zA-Z0-9._:~-]+")
_CID_RE = re.compile(r"[a-zA-Z0-9+=]{8,256}")
_URI_RE = re.compile(r"[a-z][a-z0-9+.-]*:[!-~]+")
_DATETIME_RE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?P<tz>Z|(?P<sign>[+-])(?P<tzh>[0-9]{2}):(?P<tzm>[0-9]{2}))"
)


def _require_str(s: object, what: str) -> str:
    if not isinstance(s, str):
        raise InvalidSyntax(f"{what} must be a string, got {type(s).__name__}")
    return s


def _require_ascii(s: str, what: str) -> None:
    if not s.isascii():
        raise InvalidSyntax(f"{what} must be ASCII: {s[:80]!r}")


def _check_label(label: str, what: str) -> None:
    if not label:
        raise InvalidSyntax(f"{what} has an empty segment (leading, trailing or doubled '.')")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidSyntax(f"{what} segment is longer than {MAX_LABEL_LENGTH} characters")
    if _LABEL_RE.fullmatch(label):
        return
    if label[0] == "-" or label[-1] == "-":
        raise InvalidSyntax(f"{what} segment {label!r} starts or ends with '-'")
    raise InvalidSyntax(f"{what} segment {label!r} may only hold letters, digits and '-'")


def _checker(ensure: Callable[[str], None]) -> Callable[[str], bool]:
    def is_valid(s: str) -> bool:
        try:
            ensure(s)
        except InvalidSyntax:
            return False
        return True

    is_valid.__name__ = ensure.__name__.replace("ensure_valid_", "is_valid_")
    is_valid.__qualname__ = is_valid.__name__
    is_valid.__doc__ = f"True when ``{ensure.__name__}`` accepts ``s``."
    return is_valid


# -- handle ------------------------------------------------------------------------------------


def ensure_valid_handle(s: str) -> None:
    """A DNS hostname of 2+ labels, ≤ 253 characters, whose TLD does not start with a digit."""
    _require_str(s, "handle")
    if len(s) > MAX_HANDLE_LENGTH:
        raise InvalidSyntax(f"handle is longer than {MAX_HANDLE_LENGTH} characters")
    _require_ascii(s, "handle (use punycode for international names)")
    labels = s.split(".")
    if len(labels) < 2:
        raise InvalidSyntax(f"handle {s!r} needs at least two labels, like name.example.com")
    for label in labels:
        _check_label(label, "handle")
    if labels[-1][0] in "0123456789":
        raise InvalidSyntax(f"handle {s!r}: the top-level domain must not start with a digit")


def normalize_handle(s: str) -> str:
    """Handles compare case-insensitively; the lower-case form is the one to store and compare."""
    return s.lower()


def handle_is_disallowed_tld(handle: str) -> bool:
    """True for handles under TLDs that are valid syntax but not allowed for accounts."""
    return handle.rsplit(".", 1)[-1].lower() in DISALLOWED_TLDS


# -- DID ---------------------------------------------------------------------------------------


def ensure_valid_did(s: str) -> None:
    """``did:<method>:<identifier>`` with the character set and limits of the atproto DID spec."""
    _require_str(s, "DID")
    if len(s) > MAX_DID_LENGTH:
        raise InvalidSyntax(f"DID is longer than {MAX_DID_LENGTH} characters")
    _require_ascii(s, "DID")
    if not s.startswith("did:"):
        raise InvalidSyntax(f"DID must start with 'did:' (lower-case): {s[:80]!r}")
    parts = s.split(":", 2)
    if len(parts) < 3:
        raise InvalidSyntax(f"DID must be did:<method>:<identifier>: {s!r}")
    _, method, ident = parts
    if not _DID_METHOD_RE.fullmatch(method):
        raise InvalidSyntax(f"DID method must be lower-case letters only: {method!r}")
    if not ident:
        raise InvalidSyntax(f"DID {s!r} has an empty method-specific identifier")
    if not _DID_IDENT_RE.fullmatch(ident):
        raise InvalidSyntax(
            f"DID identifier may only hold letters, digits and . _ : % - : {ident[:80]!r}"
        )
    if ident[-1] in ":%":
        raise InvalidSyntax(f"DID must not end with ':' or '%': {s[-80:]!r}")


# -- NSID --------------------------------------------------------------------------------------


def ensure_valid_nsid(s: str) -> None:
    """A reversed domain authority plus a name segment: ``com.example.fooBar``.

    Only the overall 317-character limit bounds the authority: the interop vectors accept an
    NSID whose authority is longer than a hostname's 253 characters.
    """
    _require_str(s, "NSID")
    if len(s) > MAX_NSID_LENGTH:
        raise InvalidSyntax(f"NSID is longer than {MAX_NSID_LENGTH} characters")
    _require_ascii(s, "NSID")
    segments = s.split(".")
    if len(segments) < 3:
        raise InvalidSyntax(f"NSID {s!r} needs at least three segments (authority and name)")
    *authority, name = segments
    for seg in authority:
        _check_label(seg, "NSID")
    if authority[0][0] in "0123456789":
        # The first segment is the authority's top-level domain.
        raise InvalidSyntax(f"NSID {s!r}: the first segment must not start with a digit")
    if not name:
        raise InvalidSyntax(f"NSID {s!r} has an empty name segment")
    if not _NSID_NAME_RE.fullmatch(name):
        raise InvalidSyntax(
            f"NSID name {name[:80]!r} must start with a letter and hold only letters and digits"
            f" (at most {MAX_LABEL_LENGTH})"
        )


# -- record key --------------------------------------------------------------------------------


def ensure_valid_record_key(s: str) -> None:
    """1-512 characters of ``A-Za-z0-9 . _ : ~ -``, and not ``.`` or ``..``."""
    _require_str(s, "record key")
    if not s:
        raise InvalidSyntax("record key must not be empty")
    if len(s) > MAX_RECORD_KEY_LENGTH:
        raise InvalidSyntax(f"record key is longer than {MAX_RECORD_KEY_LENGTH} characters")
    if not _RECORD_KEY_RE.fullmatch(s):
        raise InvalidSyntax(
            f"record key may only hold letters, digits and . _ : ~ - : {s[:80]!r}"
        )
    if s in (".", ".."):
        raise InvalidSyntax(f"record key must not be {s!r}")


# -- at-identifier and AT URI ------------------------------------------------------------------


def ensure_valid_at_identifier(s: str) -> None:
    """A handle or a DID."""
    _require_str(s, "at-identifier")
    if s.startswith("did:"):
        ensure_valid_did(s)
    else:
        ensure_valid_handle(s)


def ensure_valid_at_uri(s: str) -> None:
    """``at://AUTHORITY[/COLLECTION[/RKEY]]`` (Lexicon ``at-uri``): no query, fragment or trailing '/'."""
    _require_str(s, "at-uri")
    _split_at_uri(s)


def _split_at_uri(s: str) -> tuple[str, str | None, str | None]:
    if len(s) > MAX_AT_URI_LENGTH:
        raise InvalidSyntax(f"at-uri is longer than {MAX_AT_URI_LENGTH} characters")
    _require_ascii(s, "at-uri")
    if not s.startswith("at://"):
        raise InvalidSyntax(f"at-uri must start with 'at://': {s[:80]!r}")
    if "?" in s or "#" in s:
        raise InvalidSyntax(f"at-uri must not have a query or fragment: {s[:80]!r}")
    parts = s[5:].split("/")
    if len(parts) > 3:
        raise InvalidSyntax(
            f"at-uri path may hold only a collection and a record key: {s[:80]!r}"
        )
    authority = parts[0]
    if not authority:
        raise InvalidSyntax(f"at-uri has no authority: {s[:80]!r}")
    try:
        ensure_valid_at_identifier(authority)
    except InvalidSyntax as exc:
        raise InvalidSyntax(f"at-uri authority is not a handle or DID: {exc}") from None
    collection = rkey = None
    if len(parts) >= 2:
        collection = parts[1]
        if not collection:
            raise InvalidSyntax(f"at-uri has an empty path segment or trailing '/': {s[:80]!r}")
        try:
            ensure_valid_nsid(collection)
        except InvalidSyntax as exc:
            raise InvalidSyntax(f"at-uri collection is not an NSID: {exc}") from None
    if len(parts) == 3:
        rkey = parts[2]
        if not rkey:
            raise InvalidSyntax(f"at-uri has a trailing '/': {s[:80]!r}")
        try:
            ensure_valid_record_key(rkey)
        except InvalidSyntax as exc:
            raise InvalidSyntax(f"at-uri record key is invalid: {exc}") from None
    return authority, collection, rkey


@dataclass(frozen=True, slots=True)
class AtUri:
    """A Lexicon ``at-uri``: a repository, optionally a collection in it, optionally a record."""

    authority: str
    collection: str | None = None
    rkey: str | None = None

    def __post_init__(self) -> None:
        ensure_valid_at_identifier(self.authority)
        if self.collection is not None:
            ensure_valid_nsid(self.collection)
        if self.rkey is not None:
            if self.collection is None:
                raise InvalidSyntax("an at-uri with a record key needs a collection")
            ensure_valid_record_key(self.rkey)

    @classmethod
    def parse(cls, s: str) -> "AtUri":
        _require_str(s, "at-uri")
        return cls(*_split_at_uri(s))

    def __str__(self) -> str:
        out = "at://" + self.authority
        if self.collection is not None:
            out += "/" + self.collection
            if self.rkey is not None:
                out += "/" + self.rkey
        return out


# -- datetime ----------------------------------------------------------------------------------


_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def ensure_valid_datetime(s: str) -> None:
    """RFC 3339 ∩ ISO 8601 datetime: upper-case ``T``, whole seconds, ``Z`` or ``±HH:MM`` required.

    Also checks the values (month 01-12, real day of month, hour ≤ 23, minute and second ≤ 59:
    leap seconds are refused as most parsers do) and that the instant is not before year 0.
    """
    _require_str(s, "datetime")
    if len(s) > MAX_DATETIME_LENGTH:
        raise InvalidSyntax(f"datetime is longer than {MAX_DATETIME_LENGTH} characters")
    m = _DATETIME_RE.fullmatch(s)
    if m is None:
        raise InvalidSyntax(
            f"datetime must look like 1985-04-12T23:20:50.123Z (RFC 3339, with a timezone): {s!r}"
        )
    year, month, day = int(m["year"]), int(m["month"]), int(m["day"])
    hour, minute, second = int(m["hour"]), int(m["minute"]), int(m["second"])
    if not 1 <= month <= 12:
        raise InvalidSyntax(f"datetime month {m['month']} is not 01-12: {s!r}")
    last_day = _DAYS_IN_MONTH[month] + (1 if month == 2 and calendar.isleap(year) else 0)
    if not 1 <= day <= last_day:
        raise InvalidSyntax(f"datetime day {m['day']} does not exist in {year:04d}-{month:02d}: {s!r}")
    if hour > 23:
        raise InvalidSyntax(f"datetime hour {m['hour']} is not 00-23: {s!r}")
    if minute > 59:
        raise InvalidSyntax(f"datetime minute {m['minute']} is not 00-59: {s!r}")
    if second > 59:
        raise InvalidSyntax(f"datetime second {m['second']} is not 00-59: {s!r}")
    offset = 0
    if m["tz"] != "Z":
        tzh, tzm = int(m["tzh"]), int(m["tzm"])
        if tzh > 23 or tzm > 59:
            raise InvalidSyntax(f"datetime timezone offset {m['tz']} is out of range: {s!r}")
        if m["tz"] == "-00:00":
            raise InvalidSyntax(f"datetime must not use '-00:00' (write 'Z' or '+00:00'): {s!r}")
        offset = (tzh * 60 + tzm) * (1 if m["sign"] == "+" else -1)
    # Offsets are under a day, so only the first day of year 0 can normalise to before it.
    if (year, month, day) == (0, 1, 1) and hour * 60 + minute - offset < 0:
        raise InvalidSyntax(f"datetime is before year 0 in UTC: {s!r}")


def format_datetime(value: _dt.datetime) -> str:
    """The preferred atproto spelling of an aware datetime: UTC, milliseconds, ``Z``."""
    if value.tzinfo is None:
        raise InvalidSyntax("datetime to format must be timezone-aware")
    try:
        u = value.astimezone(_dt.timezone.utc)
    except OverflowError:
        raise InvalidSyntax(f"datetime {value!r} is outside years 1-9999 in UTC") from None
    # Not strftime: glibc's %Y does not zero-pad years before 1000.
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


# -- language (BCP 47) -------------------------------------------------------------------------

# RFC 5646 section 2.2.8: tags that predate the grammar and are well-formed only as whole strings.
_GRANDFATHERED = frozenset(
    tag.lower()
    for tag in (
        "en-GB-oed i-ami i-bnn i-default i-enochian i-hak i-klingon i-lux i-mingo i-navajo i-pwn"
        " i-tao i-tay i-tsu sgn-BE-FR sgn-BE-NL sgn-CH-DE art-lojban cel-gaulish no-bok no-nyn"
        " zh-guoyu zh-hakka zh-min zh-min-nan zh-xiang"
    ).split()
)
_SUBTAG_RE = re.compile(r"[a-zA-Z0-9]{1,8}")
_PRIMARY_RE = re.compile(r"[a-z]{2,3}")


def _is_alpha(s: str, n: int) -> bool:
    return len(s) == n and s.isascii() and s.isalpha()


def _is_variant(s: str) -> bool:
    return 5 <= len(s) <= 8 or (len(s) == 4 and s[0] in "0123456789")


def ensure_valid_language(s: str) -> None:
    """A well-formed BCP 47 language tag (RFC 5646 section 2.1) that is also "valid" in the sense
    of section 2.2.9 for repeats: no variant or extension singleton twice (case-insensitively).

    The primary language subtag must be 2-3 lower-case letters, as registered ISO 639 codes are
    written: 4-letter subtags are reserved, 5-8 letter ones have no registrations, and the
    atproto interop vectors refuse upper-case ones (``JA``).
    """
    _require_str(s, "language")
    if s.lower() in _GRANDFATHERED:
        return
    subtags = s.split("-")
    for sub in subtags:
        if not _SUBTAG_RE.fullmatch(sub):
            raise InvalidSyntax(
                f"language tag {s[:80]!r}: subtags are 1-8 letters or digits separated by '-'"
            )
    first = subtags[0]
    if first.lower() == "x":
        if len(subtags) < 2:
            raise InvalidSyntax(f"language tag {s!r}: private use 'x' needs at least one subtag")
        return
    if not _PRIMARY_RE.fullmatch(first):
        raise InvalidSyntax(
            f"language tag {s[:80]!r}: primary language must be 2-3 lower-case letters"
        )
    i, n = 1, len(subtags)
    extlangs = 0
    while i < n and extlangs < 3 and _is_alpha(subtags[i], 3):
        i += 1
        extlangs += 1
    if i < n and _is_alpha(subtags[i], 4):  # script
        i += 1
    if i < n and (_is_alpha(subtags[i], 2) or (len(subtags[i]) == 3 and subtags[i].isdigit())):
        i += 1  # region
    variants: set[str] = set()
    while i < n and _is_variant(subtags[i]):
        variant = subtags[i].lower()
        if variant in variants:
            raise InvalidSyntax(f"language tag {s!r} repeats the variant {subtags[i]!r}")
        variants.add(variant)
        i += 1
    singletons: set[str] = set()
    while i < n and len(subtags[i]) == 1 and subtags[i].lower() != "x":
        singleton = subtags[i].lower()
        if singleton in singletons:
            raise InvalidSyntax(f"language tag {s!r} repeats the extension {subtags[i]!r}")
        singletons.add(singleton)
        i += 1
        start = i
        while i < n and 2 <= len(subtags[i]) <= 8:
            i += 1
        if i == start:
            raise InvalidSyntax(
                f"language tag {s!r}: extension {singleton!r} needs subtags of 2-8 characters"
            )
    if i < n and subtags[i].lower() == "x":
        if i + 1 == n:
            raise InvalidSyntax(f"language tag {s!r}: private use 'x' needs at least one subtag")
        return
    if i < n:
        raise InvalidSyntax(f"language tag {s!r}: unexpected subtag {subtags[i]!r}")


# -- cid and uri -------------------------------------------------------------------------------


def ensure_valid_cid(s: str) -> None:
    """Loose CID string syntax: 8-256 characters of ``[a-zA-Z0-9+=]``, not a CIDv0 (``Qm…``).

    This is the Lexicon ``cid`` format check; decoding the CID is :mod:`squall.atproto.cid`'s job.
    """
    _require_str(s, "cid")
    if not _CID_RE.fullmatch(s):
        raise InvalidSyntax(f"cid must be 8-256 characters of [a-zA-Z0-9+=]: {s[:80]!r}")
    if s.startswith("Qm"):
        raise InvalidSyntax("cid: CIDv0 ('Qm…') is not allowed, use CIDv1")


def ensure_valid_uri(s: str) -> None:
    """A URI: lower-case ``scheme:`` then printable non-space ASCII, at most 8 KB."""
    _require_str(s, "uri")
    if len(s) > MAX_URI_LENGTH:
        raise InvalidSyntax(f"uri is longer than {MAX_URI_LENGTH} characters")
    if not _URI_RE.fullmatch(s):
        raise InvalidSyntax(
            f"uri must be 'scheme:rest' with a lower-case scheme and no spaces: {s[:80]!r}"
        )


# -- is_valid_* and the Lexicon format table ---------------------------------------------------

is_valid_handle = _checker(ensure_valid_handle)
is_valid_did = _checker(ensure_valid_did)
is_valid_nsid = _checker(ensure_valid_nsid)
is_valid_record_key = _checker(ensure_valid_record_key)
is_valid_at_identifier = _checker(ensure_valid_at_identifier)
is_valid_at_uri = _checker(ensure_valid_at_uri)
is_valid_datetime = _checker(ensure_valid_datetime)
is_valid_language = _checker(ensure_valid_language)
is_valid_cid = _checker(ensure_valid_cid)
is_valid_uri = _checker(ensure_valid_uri)

FORMAT_VALIDATORS: Mapping[str, Callable[[str], None]] = MappingProxyType(
    {
        "at-identifier": ensure_valid_at_identifier,
        "at-uri": ensure_valid_at_uri,
        "cid": ensure_valid_cid,
        "datetime": ensure_valid_datetime,
        "did": ensure_valid_did,
        "handle": ensure_valid_handle,
        "nsid": ensure_valid_nsid,
        "tid": ensure_valid_tid,
        "record-key": ensure_valid_record_key,
        "uri": ensure_valid_uri,
        "language": ensure_valid_language,
    }
)
