"""Service-auth JWTs: the token format (squall.auth.service_jwt, checked independently with PyJWT
and by hand), verification rules, and com.atproto.server.getServiceAuth against a real server
whose accounts are did:plc identities in the PLC directory double."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from squall.atproto.crypto import SECP256K1_N, P256Keypair, PublicKey, Secp256k1Keypair
from squall.auth.service_jwt import (
    ServiceJwtError,
    create_service_jwt,
    decode_service_jwt,
    verify_service_jwt,
)
from tests.helpers.accounts import assert_error, bearer, signup
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

ISS = "did:plc:issueraaaaaaaaaaaaaaaaaa"
AUD = "did:web:appview.example.com"
LXM = "app.bsky.feed.getTimeline"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pyjwt_key(public: PublicKey):
    curve = ec.SECP256K1() if public.algorithm == "ES256K" else ec.SECP256R1()
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, public.compressed)


def key_lookup(*keys: PublicKey | None):
    """get_key for verify_service_jwt: the first answer when cached, the last when fresh."""
    calls: list[tuple[str, bool]] = []

    async def get_key(did: str, fresh: bool):
        calls.append((did, fresh))
        return keys[-1] if fresh else keys[0]

    get_key.calls = calls  # type: ignore[attr-defined]
    return get_key


# -- format ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keypair_class", [Secp256k1Keypair, P256Keypair])
def test_token_format(keypair_class):
    key = keypair_class.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM, iat=1_700_000_000)
    head, payload, sig = token.split(".")
    assert json.loads(unb64url(head)) == {"typ": "JWT", "alg": key.jwt_alg}
    claims = json.loads(unb64url(payload))
    assert list(claims) == ["iat", "iss", "aud", "exp", "lxm", "jti"]
    assert claims["iat"] == 1_700_000_000 and claims["exp"] == 1_700_000_060
    assert (claims["iss"], claims["aud"], claims["lxm"]) == (ISS, AUD, LXM)
    assert len(claims["jti"]) == 32 and int(claims["jti"], 16) >= 0
    raw = unb64url(sig)
    assert len(raw) == 64 and "=" not in sig
    order = SECP256K1_N if key.jwt_alg == "ES256K" else 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    assert int.from_bytes(raw[32:], "big") <= order // 2  # low-S
    assert key.public_key.verify(f"{head}.{payload}".encode(), raw)
    # an independent JWT library accepts it too (JWS ECDSA signatures are r || s as here)
    decoded = jwt.decode(token, pyjwt_key(key.public_key), algorithms=[key.jwt_alg], audience=AUD,
                         options={"verify_exp": False})
    assert decoded["iss"] == ISS


def test_low_s_over_many_signatures():
    key = P256Keypair.generate()  # OpenSSL emits high-S half of the time; the token must not
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    for _ in range(40):
        sig = unb64url(create_service_jwt(key, iss=ISS, aud=AUD).split(".")[2])
        assert int.from_bytes(sig[32:], "big") <= n // 2


def test_methodless_token_and_explicit_exp():
    key = Secp256k1Keypair.generate()
    claims = json.loads(unb64url(create_service_jwt(key, iss=ISS, aud=AUD, exp=123, iat=100).split(".")[1]))
    assert "lxm" not in claims and claims["exp"] == 123
    tokens = {create_service_jwt(key, iss=ISS, aud=AUD, iat=100) for _ in range(5)}
    assert len(tokens) == 5  # the jti differs even within one second


# -- verification -------------------------------------------------------------------------------------


async def test_verify_round_trip():
    key = Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM)
    claims = await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(key.public_key))
    assert claims.iss == ISS and claims.lxm == LXM and claims.alg == "ES256K"
    # audience / lxm checks can be skipped explicitly
    await verify_service_jwt(token, audience=None, lxm=None, get_key=key_lookup(key.public_key))


@pytest.mark.parametrize("kwargs, name", [
    ({"audience": "did:web:other.example"}, "BadJwtAudience"),
    ({"lxm": "app.bsky.feed.getFeed"}, "BadJwtLexiconMethod"),
])
async def test_verify_refuses_wrong_audience_or_method(kwargs, name):
    key = Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM)
    args = {"audience": AUD, "lxm": LXM, **kwargs}
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(token, get_key=key_lookup(key.public_key), **args)
    assert info.value.name == name


async def test_verify_missing_lxm():
    key = Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD)
    with pytest.raises(ServiceJwtError, match="missing") as info:
        await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(key.public_key))
    assert info.value.name == "BadJwtLexiconMethod"


async def test_verify_expired():
    key = Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM, iat=int(time.time()) - 120)
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(key.public_key))
    assert info.value.name == "JwtExpired"


async def test_verify_signature_failures():
    key, other = Secp256k1Keypair.generate(), Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM)
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(other.public_key))
    assert info.value.name == "BadJwtSignature"
    # a rotated key: the cached one fails, the fresh one is asked for and works
    lookup = key_lookup(other.public_key, key.public_key)
    await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=lookup)
    assert lookup.calls == [(ISS, False), (ISS, True)]
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(None))
    assert info.value.name == "BadJwtSignature"
    # a tampered payload
    head, payload, sig = token.split(".")
    claims = json.loads(unb64url(payload))
    claims["aud"] = "did:web:evil.example"
    forged = f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(forged, audience="did:web:evil.example", lxm=LXM, get_key=key_lookup(key.public_key))
    assert info.value.name == "BadJwtSignature"


async def test_verify_refuses_high_s_and_der_and_alg_confusion():
    key = Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM)
    head, payload, sig = token.split(".")
    raw = unb64url(sig)
    s = int.from_bytes(raw[32:], "big")
    high = raw[:32] + (SECP256K1_N - s).to_bytes(32, "big")
    with pytest.raises(ServiceJwtError):
        await verify_service_jwt(f"{head}.{payload}.{b64url(high)}", audience=AUD, lxm=LXM,
                                 get_key=key_lookup(key.public_key))
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), s)
    with pytest.raises(ServiceJwtError):
        await verify_service_jwt(f"{head}.{payload}.{b64url(der)}", audience=AUD, lxm=LXM,
                                 get_key=key_lookup(key.public_key))
    es256_head = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
    with pytest.raises(ServiceJwtError):
        await verify_service_jwt(f"{es256_head}.{payload}.{sig}", audience=AUD, lxm=LXM,
                                 get_key=key_lookup(key.public_key))


@pytest.mark.parametrize("typ", ["at+jwt", "refresh+jwt", "dpop+jwt"])
async def test_verify_refuses_other_token_types(typ):
    key = Secp256k1Keypair.generate()
    _, payload, sig = create_service_jwt(key, iss=ISS, aud=AUD, lxm=LXM).split(".")
    head = b64url(json.dumps({"typ": typ, "alg": "ES256K"}).encode())
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(f"{head}.{payload}.{sig}", audience=AUD, lxm=LXM, get_key=key_lookup(key.public_key))
    assert info.value.name == "BadJwtType"


@pytest.mark.parametrize("token", [
    "", "a.b", "a.b.c.d", "!!!.e30.e30", "e30.e30.e30",  # {} header has no alg
    b64url(b'{"alg":"ES256K"}') + "." + b64url(b"[]") + ".AAAA",
    b64url(b'{"alg":"ES256K"}') + "." + b64url(b'{"iss":"did:plc:x","aud":"a","exp":"soon"}') + ".AAAA",
    b64url(b'{"alg":"ES256K"}') + "." + b64url(b'{"iss":"did:plc:x","aud":"a","exp":true}') + ".AAAA",
    b64url(b'{"alg":"ES256K"}') + "." + b64url(b'{"iss":"did:plc:x","aud":1,"exp":1}') + ".AAAA",
    b64url(b'{"alg":"ES256K"}') + "." + b64url(b'{"iss":"did:plc:x","aud":"a","exp":1,"lxm":5}') + ".AAAA",
    b64url(b'{"alg":"ES256K"}') + "." + b64url(b"\xff\xfe") + ".AAAA",
    "x" * 9000,
])
def test_decode_refuses_malformed(token):
    with pytest.raises(ServiceJwtError) as info:
        decode_service_jwt(token)
    assert info.value.name == "BadJwt"


async def test_verify_refuses_bad_iss():
    key = Secp256k1Keypair.generate()
    token = create_service_jwt(key, iss="not a did", aud=AUD, lxm=LXM)
    with pytest.raises(ServiceJwtError) as info:
        await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(key.public_key))
    assert info.value.name == "BadJwtIss"


# -- com.atproto.server.getServiceAuth ---------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with PlcDirectoryDouble() as plc:
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url}
        with PdsProcess(tmp_path_factory.mktemp("service-auth") / "data", env_extra=env) as pds:
            with pds.client() as c:
                r = signup(c, "bob")
                assert r.status_code == 200, r.text
                session = r.json()
                tokens = {"full": session["accessJwt"]}
                for name, privileged in (("app", False), ("privileged_app", True)):
                    created = c.post("/xrpc/com.atproto.server.createAppPassword",
                                     json={"name": name, "privileged": privileged},
                                     headers=bearer(session["accessJwt"]))
                    assert created.status_code == 200, created.text
                    login = c.post("/xrpc/com.atproto.server.createSession",
                                   json={"identifier": "bob.localhost", "password": created.json()["password"]})
                    tokens[name] = login.json()["accessJwt"]
            yield {"pds": pds, "plc": plc, "did": session["did"], "tokens": tokens}


def get_service_auth(world, kind: str = "full", **params) -> httpx.Response:
    with world["pds"].client() as c:
        return c.get("/xrpc/com.atproto.server.getServiceAuth", params=params,
                     headers=bearer(world["tokens"][kind]))


def document_key(world) -> PublicKey:
    doc = httpx.get(f"{world['plc'].url}/{world['did']}").json()
    method = next(m for m in doc["verificationMethod"] if m["id"] == f"{world['did']}#atproto")
    return PublicKey.from_multibase(method["publicKeyMultibase"])


async def test_token_verifies_against_the_did_document(world):
    r = get_service_auth(world, aud=AUD, lxm=LXM)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    key = document_key(world)
    claims = await verify_service_jwt(token, audience=AUD, lxm=LXM, get_key=key_lookup(key))
    assert claims.iss == world["did"] and claims.exp - claims.iat == 60
    decoded = jwt.decode(token, pyjwt_key(key), algorithms=["ES256K"], audience=AUD)
    assert decoded["lxm"] == LXM


def test_explicit_exp_and_service_ref_audience(world):
    exp = int(time.time()) + 1800
    r = get_service_auth(world, aud=f"{AUD}#bsky_appview", lxm=LXM, exp=str(exp))
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["exp"] == exp and claims["aud"] == f"{AUD}#bsky_appview"
    # a method-less token may live a minute
    r = get_service_auth(world, aud=AUD, exp=str(int(time.time()) + 50))
    assert r.status_code == 200, r.text
    assert "lxm" not in jwt.decode(r.json()["token"], options={"verify_signature": False})


@pytest.mark.parametrize("delta, lxm, message", [
    (-10, LXM, "in past"),
    (3600 + 120, LXM, "more than an hour"),
    (300, None, "method-less"),
])
def test_bad_expiration(world, delta, lxm, message):
    params = {"aud": AUD, "exp": str(int(time.time()) + delta)}
    if lxm:
        params["lxm"] = lxm
    body = assert_error(get_service_auth(world, **params), 400, "BadExpiration")
    assert message in body["message"]


@pytest.mark.parametrize("lxm", ["com.atproto.server.createAppPassword", "com.atproto.identity.updateHandle",
                                 "com.atproto.server.getSession", "com.atproto.admin.sendEmail",
                                 "COM.ATPROTO.SERVER.UPDATEEMAIL"])
def test_protected_methods_refused(world, lxm):
    body = assert_error(get_service_auth(world, aud=AUD, lxm=lxm), 400, "InvalidRequest")
    assert "protected method" in body["message"]


def test_privileged_methods_need_privilege(world):
    lxm = "chat.bsky.convo.sendMessage"
    body = assert_error(get_service_auth(world, "app", aud=AUD, lxm=lxm), 400, "InvalidRequest")
    assert "insufficient access" in body["message"]
    assert get_service_auth(world, "privileged_app", aud=AUD, lxm=lxm).status_code == 200
    assert get_service_auth(world, "full", aud=AUD, lxm=lxm).status_code == 200
    body = assert_error(get_service_auth(world, "app", aud=AUD, lxm="chat.bsky.convo.addReaction"),
                        400, "InvalidRequest")
    # other methods are fine for an ordinary app password
    assert get_service_auth(world, "app", aud=AUD, lxm=LXM).status_code == 200


@pytest.mark.parametrize("params", [
    {}, {"aud": "not-a-did"}, {"aud": "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},
    {"aud": f"{AUD}#"}, {"aud": f"{AUD}#a#b"}, {"aud": AUD, "lxm": "not an nsid"},
    {"aud": AUD, "exp": "soon"}, {"aud": "did:plc:short"},
])
def test_bad_parameters(world, params):
    assert_error(get_service_auth(world, **params), 400, "InvalidRequest")


def test_needs_authentication(world):
    with world["pds"].client() as c:
        r = c.get("/xrpc/com.atproto.server.getServiceAuth", params={"aud": AUD})
    assert_error(r, 401, "AuthenticationRequired")
