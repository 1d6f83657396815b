"""The verified-token memo of squall.auth.tokens.TokenIssuer (issue #21): a remembered token is
still refused once it expires, a tampered token is never taken for a remembered one, the memo is
bounded, and a refresh token never passes as an access token through it."""

from __future__ import annotations

import time

import pytest

from squall.auth.tokens import ACCESS_TTL, TokenError, TokenIssuer

AUD = "did:web:localhost"


def test_remembered_token_still_expires():
    # Issued so that it expires within 0.5–1.5 s (iat and exp are whole seconds).
    issuer = TokenIssuer("s" * 32, AUD, clock=lambda: time.time() - ACCESS_TTL + 1.5)
    token = issuer.access_token("did:plc:abc")
    assert issuer.decode(token, expect_typ="at+jwt").did == "did:plc:abc"
    assert issuer.decode(token, expect_typ="at+jwt").did == "did:plc:abc"  # from the memo
    time.sleep(1.6)
    with pytest.raises(TokenError) as info:
        issuer.decode(token, expect_typ="at+jwt")
    assert info.value.expired


def test_tampered_and_wrong_type_tokens_are_refused_after_a_hit():
    issuer = TokenIssuer("s" * 32, AUD)
    token = issuer.access_token("did:plc:abc")
    issuer.decode(token, expect_typ="at+jwt")
    head, body, sig = token.split(".")
    with pytest.raises(TokenError):
        issuer.decode(f"{head}.{body}.{sig[:-2]}AA", expect_typ="at+jwt")
    with pytest.raises(TokenError):  # the memo is per expected type
        issuer.decode(token, expect_typ="refresh+jwt")
    refresh, _, _ = issuer.refresh_token("did:plc:abc")
    issuer.decode(refresh, expect_typ="refresh+jwt")
    with pytest.raises(TokenError):
        issuer.decode(refresh, expect_typ="at+jwt")
    other = TokenIssuer("t" * 32, AUD)
    with pytest.raises(TokenError):  # another issuer's memo knows nothing of this one's tokens
        other.decode(token, expect_typ="at+jwt")


def test_memo_is_bounded():
    issuer = TokenIssuer("s" * 32, AUD)
    issuer.VERIFIED_MAX = 16
    for i in range(100):
        issuer.decode(issuer.access_token(f"did:plc:a{i}"), expect_typ="at+jwt")
        assert len(issuer._verified) <= 16
