"""Syntax validators against every interop list, plus limits, messages and AtUri round trips."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.atproto import syntax
from squall.atproto.errors import AtprotoError, InvalidSyntax
from squall.atproto.syntax import FORMAT_VALIDATORS, AtUri

SYNTAX = Path(__file__).resolve().parents[1] / "fixtures" / "interop" / "syntax"


def _read_lines(path: Path) -> list[str]:
    # Fixture rule: no trimming; skip blank lines and lines starting with '#'.
    text = path.read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]


# fixture file prefix -> (module function suffix, Lexicon format name)
KINDS = {
    "atidentifier": ("at_identifier", "at-identifier"),
    "aturi": ("at_uri", "at-uri"),
    "cid": ("cid", "cid"),
    "datetime": ("datetime", "datetime"),
    "did": ("did", "did"),
    "handle": ("handle", "handle"),
    "language": ("language", "language"),
    "nsid": ("nsid", "nsid"),
    "recordkey": ("record_key", "record-key"),
    "tid": ("tid", "tid"),
    "uri": ("uri", "uri"),
}


def _cases(kind_suffix: str) -> list:
    out = []
    for path in sorted(SYNTAX.glob(f"*_{kind_suffix}.txt")):
        prefix = path.name.split("_", 1)[0]
        for n, line in enumerate(_read_lines(path)):
            out.append(pytest.param(prefix, line, id=f"{prefix}-{n}-{line[:40]!r}"))
    return out


VALID_CASES = _cases("syntax_valid")
INVALID_CASES = _cases("syntax_invalid") + _cases("parse_invalid")


def test_every_fixture_file_is_covered():
    files = {p.name for p in SYNTAX.glob("*.txt")}
    covered = {
        f"{prefix}_{kind}.txt"
        for prefix in KINDS
        for kind in ("syntax_valid", "syntax_invalid", "parse_invalid")
    }
    assert files <= covered
    assert len(files) == 24
    # Counts from tests/fixtures/interop/SOURCE.md.
    assert len(VALID_CASES) == 71 + 24 + 11 + 25 + 16 + 4 + 23 + 8 + 35 + 18 + 9
    assert len(INVALID_CASES) == 48 + 18 + 22 + 27 + 11 + 9 + 72 + 10 + 45 + 7 + 7 + 12 + 4


@pytest.mark.parametrize("prefix, value", VALID_CASES)
def test_valid_fixture(prefix, value):
    suffix, fmt = KINDS[prefix]
    getattr(syntax, f"ensure_valid_{suffix}")(value)
    assert getattr(syntax, f"is_valid_{suffix}")(value) is True
    FORMAT_VALIDATORS[fmt](value)


@pytest.mark.parametrize("prefix, value", INVALID_CASES)
def test_invalid_fixture(prefix, value):
    suffix, fmt = KINDS[prefix]
    with pytest.raises(InvalidSyntax) as info:
        getattr(syntax, f"ensure_valid_{suffix}")(value)
    assert str(info.value)  # a message, not a bare exception
    assert getattr(syntax, f"is_valid_{suffix}")(value) is False
    with pytest.raises(InvalidSyntax):
        FORMAT_VALIDATORS[fmt](value)


# -- format table ------------------------------------------------------------------------------


def test_format_validators_table():
    assert set(FORMAT_VALIDATORS) == {
        "at-identifier", "at-uri", "cid", "datetime", "did", "handle",
        "nsid", "tid", "record-key", "uri", "language",
    }
    with pytest.raises(TypeError):
        FORMAT_VALIDATORS["handle"] = lambda s: None  # type: ignore[index]


@pytest.mark.parametrize("fmt", sorted(FORMAT_VALIDATORS))
@pytest.mark.parametrize("value", [None, 123, b"john.test", ["did:plc:x"]])
def test_non_strings_get_a_clear_error(fmt, value):
    with pytest.raises(InvalidSyntax, match="must be a string"):
        FORMAT_VALIDATORS[fmt](value)


def test_invalid_syntax_is_an_atproto_error():
    assert issubclass(InvalidSyntax, AtprotoError)


# -- length limits -----------------------------------------------------------------------------


def _handle_of_length(n: int) -> str:
    # 'a' * 63 labels joined by dots, trimmed to n, ending with a letter-led TLD.
    labels = []
    remaining = n - len(".test")
    while remaining > 0:
        size = min(63, remaining)
        labels.append("a" * size)
        remaining -= size + 1
    handle = ".".join(labels) + ".test"
    return handle[len(handle) - n:] if len(handle) > n else handle


# Three 63-character authority segments and one of 61 (253 with dots), then a 63-character name.
_NSID_317 = ".".join(["a" * 63] * 3 + ["a" * 61]) + ".b" + "c" * 62


@pytest.mark.parametrize(
    "ensure, ok, too_long",
    [
        (syntax.ensure_valid_handle, _handle_of_length(253), "a" + _handle_of_length(253)),
        (syntax.ensure_valid_did, "did:plc:" + "a" * 2040, "did:plc:" + "a" * 2041),
        (syntax.ensure_valid_nsid, _NSID_317, _NSID_317 + "c"),
        (syntax.ensure_valid_record_key, "k" * 512, "k" * 513),
        (syntax.ensure_valid_uri, "https://x/" + "a" * (8192 - 10), "https://x/" + "a" * (8192 - 9)),
        (syntax.ensure_valid_datetime, "1985-04-12T23:20:50." + "1" * 43 + "Z", "1985-04-12T23:20:50." + "1" * 44 + "Z"),
    ],
    ids=["handle-253", "did-2048", "nsid-317", "rkey-512", "uri-8k", "datetime-64"],
)
def test_length_limits(ensure, ok, too_long):
    assert len(too_long) == len(ok) + 1
    ensure(ok)
    with pytest.raises(InvalidSyntax, match="longer than"):
        ensure(too_long)


def test_at_uri_length_limit():
    # DID, NSID and record-key limits keep any valid at-uri well under 8 KB, so the 8 KB check
    # shows only in which error comes first.
    at_limit = "at://did:plc:" + "a" * (8192 - 13)
    assert len(at_limit) == 8192
    with pytest.raises(InvalidSyntax, match="DID is longer than 2048"):
        syntax.ensure_valid_at_uri(at_limit)
    with pytest.raises(InvalidSyntax, match="at-uri is longer than 8192"):
        syntax.ensure_valid_at_uri(at_limit + "a")


def test_nsid_and_handle_limits_are_the_spec_numbers():
    assert len(_handle_of_length(253)) == 253
    assert len(_NSID_317) == 317
    with pytest.raises(InvalidSyntax, match="63"):
        syntax.ensure_valid_nsid("com.example." + "a" * 64)
    with pytest.raises(InvalidSyntax, match="63"):
        syntax.ensure_valid_handle("a" * 64 + ".test")


# -- messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ensure, value, words",
    [
        (syntax.ensure_valid_handle, "john..test", "empty"),
        (syntax.ensure_valid_handle, "john", "two labels"),
        (syntax.ensure_valid_handle, "john.0", "digit"),
        (syntax.ensure_valid_handle, "john-.test", "'-'"),
        (syntax.ensure_valid_handle, "bücher.test", "ASCII"),
        (syntax.ensure_valid_did, "DID:plc:x", "did:"),
        (syntax.ensure_valid_did, "did:PLC:x", "method"),
        (syntax.ensure_valid_did, "did:plc:x%", "end"),
        (syntax.ensure_valid_nsid, "com.example.fooBar.2", "start with a letter"),
        (syntax.ensure_valid_nsid, "example.com", "three segments"),
        (syntax.ensure_valid_record_key, "..", "'..'"),
        (syntax.ensure_valid_record_key, "a b", "letters, digits"),
        (syntax.ensure_valid_at_uri, "at://did:plc:x#frag", "fragment"),
        (syntax.ensure_valid_at_uri, "at://did:plc:x/", "trailing"),
        (syntax.ensure_valid_at_uri, "at://did:plc:x/short/stuff", "collection"),
        (syntax.ensure_valid_at_uri, "at://did:plc:x/a.b.c/d/e", "only a collection and a record key"),
        (syntax.ensure_valid_datetime, "1985-13-12T23:20:50Z", "month"),
        (syntax.ensure_valid_datetime, "1985-04-31T23:20:50Z", "day"),
        (syntax.ensure_valid_datetime, "1985-04-12T25:20:50Z", "hour"),
        (syntax.ensure_valid_datetime, "1985-04-12T23:20:61Z", "second"),
        (syntax.ensure_valid_datetime, "1985-04-12T23:20:50-00:00", "-00:00"),
        (syntax.ensure_valid_datetime, "0000-01-01T00:00:00+01:00", "before year 0"),
        (syntax.ensure_valid_language, "en-a-foo-a-bar", "repeats the extension"),
        (syntax.ensure_valid_language, "de-DE-1901-1901", "repeats the variant"),
        (syntax.ensure_valid_language, "JA", "lower-case"),
        (syntax.ensure_valid_cid, "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR", "CIDv0"),
        (syntax.ensure_valid_uri, "HTTP://example.com", "lower-case scheme"),
    ],
)
def test_messages_say_what_is_wrong(ensure, value, words):
    with pytest.raises(InvalidSyntax) as info:
        ensure(value)
    assert words in str(info.value)


# -- datetime details --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ok",
    [
        ("2024-02-29T12:00:00Z", True),
        ("2023-02-29T12:00:00Z", False),
        ("1900-02-29T12:00:00Z", False),
        ("2000-02-29T12:00:00Z", True),
        ("0000-02-29T12:00:00Z", True),  # year 0 is a proleptic Gregorian leap year
        ("0000-01-01T00:00:00-01:00", True),  # normalises forward, to 01:00Z
        ("0000-01-01T00:30:00+00:30", True),  # exactly 0000-01-01T00:00Z
        ("0000-01-01T00:30:00+00:31", False),
        ("0000-01-02T00:00:00+23:59", True),
        ("1985-04-12T23:59:60Z", False),  # leap seconds are refused
        ("1985-04-12T23:20:50+24:00", False),
        ("1985-04-12T23:20:50+05:60", False),
    ],
)
def test_datetime_semantics(value, ok):
    assert syntax.is_valid_datetime(value) is ok


@given(st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=st.timezones()))
def test_format_datetime_output_is_valid(value):
    text = syntax.format_datetime(value)
    syntax.ensure_valid_datetime(text)
    assert text.endswith("Z")
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert abs(parsed - value) < dt.timedelta(milliseconds=1)


def test_format_datetime_exact_and_naive_refused():
    value = dt.datetime(1985, 4, 12, 23, 20, 50, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    assert syntax.format_datetime(value) == "1985-04-13T06:20:50.123Z"
    with pytest.raises(InvalidSyntax, match="timezone-aware"):
        syntax.format_datetime(dt.datetime(2020, 1, 1))
    early = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    with pytest.raises(InvalidSyntax, match="outside"):
        syntax.format_datetime(early)
    assert syntax.format_datetime(dt.datetime(999, 1, 1, tzinfo=dt.timezone.utc)) == "0999-01-01T00:00:00.000Z"


# -- language details --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ok",
    [
        ("x-foo", True),
        ("x", False),
        ("en-x", False),
        ("de-1901-x-1901-1901", True),  # private-use subtags are not variants
        ("en-a-bar-x-a-a", True),  # nor are they extension singletons
        ("en-a", False),  # an extension needs content
        ("en-a-b", False),  # ...of 2-8 characters
        ("zh-yue-HK", True),  # extlang
        ("zh-aaa-bbb-ccc-ddd", False),  # at most three extlangs
        ("en--US", False),
        ("en-US-", False),
        ("EN-GB-OED", True),  # grandfathered tags compare case-insensitively
        ("i-foo", False),
        ("en-123456789", False),
    ],
)
def test_language_details(value, ok):
    assert syntax.is_valid_language(value) is ok


# -- handles -----------------------------------------------------------------------------------


def test_normalize_handle():
    assert syntax.normalize_handle("John.Test.BSKY.social") == "john.test.bsky.social"


@pytest.mark.parametrize("tld", sorted(syntax.DISALLOWED_TLDS))
def test_disallowed_tlds(tld):
    handle = f"laptop.{tld}"
    assert syntax.is_valid_handle(handle)  # syntactically fine...
    assert syntax.handle_is_disallowed_tld(handle)  # ...but not for account handles
    assert syntax.handle_is_disallowed_tld(handle.upper())


@pytest.mark.parametrize("handle", ["john.test", "alice.bsky.social", "local.example.com", "onion.com"])
def test_allowed_tlds(handle):
    assert not syntax.handle_is_disallowed_tld(handle)


def test_disallowed_tld_list_matches_brief():
    assert syntax.DISALLOWED_TLDS == {
        "local", "arpa", "invalid", "localhost", "internal", "example", "onion", "alt",
    }


# -- AtUri -------------------------------------------------------------------------------------

AT_URI_VALID = [line for prefix, line in (c.values for c in VALID_CASES) if prefix == "aturi"]


@pytest.mark.parametrize("value", AT_URI_VALID, ids=lambda v: v[:50])
def test_at_uri_round_trip_on_fixtures(value):
    uri = AtUri.parse(value)
    assert str(uri) == value
    assert AtUri(uri.authority, uri.collection, uri.rkey) == uri


def test_at_uri_parts():
    uri = AtUri.parse("at://did:plc:asdf123/com.atproto.feed.post/record")
    assert (uri.authority, uri.collection, uri.rkey) == ("did:plc:asdf123", "com.atproto.feed.post", "record")
    repo = AtUri.parse("at://user.bsky.social")
    assert (repo.authority, repo.collection, repo.rkey) == ("user.bsky.social", None, None)
    coll = AtUri("did:plc:x", "app.bsky.feed.post")
    assert str(coll) == "at://did:plc:x/app.bsky.feed.post"
    assert hash(AtUri.parse(str(coll))) == hash(coll)


@pytest.mark.parametrize(
    "parts",
    [
        ("did:plc:x", None, "rkey"),  # a record key needs a collection
        ("not a handle", None, None),
        ("did:plc:x", "notnsid", None),
        ("did:plc:x", "app.bsky.feed.post", ".."),
        ("did:plc:x", "app.bsky.feed.post", "a/b"),
    ],
)
def test_at_uri_constructor_validates(parts):
    with pytest.raises(InvalidSyntax):
        AtUri(*parts)


@pytest.mark.parametrize("prefix, value", [c for c in INVALID_CASES if c.values[0] == "aturi"])
def test_at_uri_parse_rejects_fixtures(prefix, value):
    with pytest.raises(InvalidSyntax):
        AtUri.parse(value)


@given(
    authority=st.one_of(
        st.from_regex(r"did:plc:[a-z2-7]{24}", fullmatch=True),
        st.from_regex(r"[a-z][a-z0-9]{0,10}\.(bsky\.social|test)", fullmatch=True),
    ),
    collection=st.none() | st.from_regex(r"[a-z]{1,8}\.[a-z0-9]{1,8}\.[a-zA-Z][a-zA-Z0-9]{0,10}", fullmatch=True),
    rkey=st.none() | st.from_regex(r"[A-Za-z0-9._:~-]{1,20}", fullmatch=True).filter(lambda k: k not in (".", "..")),
)
def test_at_uri_round_trip_generated(authority, collection, rkey):
    if collection is None:
        rkey = None
    uri = AtUri(authority, collection, rkey)
    text = str(uri)
    assert syntax.is_valid_at_uri(text)
    assert AtUri.parse(text) == uri
