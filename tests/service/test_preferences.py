"""app.bsky.actor.getPreferences / putPreferences against a real ``squall serve``: stored by the PDS
in the client's order, the app.bsky namespace replaced whole, personal details only for full
sessions, the derived declared-age preference, and forwarding when another AppView is named."""

from __future__ import annotations

import itertools
import json
from datetime import date

import pytest

from squall.xrpc.preferences import age_on
from tests.helpers.accounts import assert_error, bearer, db_rows, signup
from tests.helpers.fake_services import start_service
from tests.helpers.pds import PdsProcess
from tests.helpers.plc import PlcDirectoryDouble

GET = "/xrpc/app.bsky.actor.getPreferences"
PUT = "/xrpc/app.bsky.actor.putPreferences"
PERSONAL = "app.bsky.actor.defs#personalDetailsPref"
DECLARED_AGE = "app.bsky.actor.defs#declaredAgePref"

_names = itertools.count()

PREFS = [
    {"$type": "app.bsky.actor.defs#savedFeedsPrefV2", "items": [
        {"id": "3l", "type": "timeline", "value": "following", "pinned": True}]},
    {"$type": "app.bsky.actor.defs#contentLabelPref", "label": "nsfw", "visibility": "hide"},
    {"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False},
    {"$type": "app.bsky.actor.defs#contentLabelPref", "label": "gore", "visibility": "warn"},
    {"$type": "app.bsky.actor.defs#threadViewPref", "sort": "oldest", "lab_unknownField": {"x": [1, "ü"]}},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with PlcDirectoryDouble() as plc:
        appview = start_service(plc, "appview", "bsky_appview", "BskyAppView")
        other = start_service(plc, "other", "other_appview", "BskyAppView")
        env = {"PDS_DID_METHOD": "plc", "PDS_DID_PLC_URL": plc.url,
               "PDS_BSKY_APP_VIEW_URL": appview.url, "PDS_BSKY_APP_VIEW_DID": appview.did}
        try:
            with PdsProcess(tmp_path_factory.mktemp("prefs") / "data", env_extra=env) as pds:
                yield {"pds": pds, "appview": appview, "other": other}
        finally:
            appview.stop()
            other.stop()


def make_user(world, name: str) -> dict[str, str]:
    with world["pds"].client() as c:
        r = signup(c, name)
        assert r.status_code == 200, r.text
        session = r.json()
        created = c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": "app", "privileged": True},
                         headers=bearer(session["accessJwt"]))
        assert created.status_code == 200, created.text
        login = c.post("/xrpc/com.atproto.server.createSession",
                       json={"identifier": f"{name}.localhost", "password": created.json()["password"]})
        assert login.status_code == 200, login.text
        return {"did": session["did"], "full": session["accessJwt"], "app": login.json()["accessJwt"]}


@pytest.fixture
def c(world):
    world["appview"].reset()
    world["other"].reset()
    with world["pds"].client() as client:
        yield client
    assert world["appview"].jwt_errors() == [] and world["other"].jwt_errors() == []


def get_prefs(c, token: str) -> list[dict]:
    r = c.get(GET, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()["preferences"]


def put_prefs(c, token: str, prefs: list[dict]):
    return c.post(PUT, json={"preferences": prefs}, headers=bearer(token))


def test_round_trip_keeps_order_and_content(world, c):
    user = make_user(world, "carol")
    assert get_prefs(c, user["full"]) == []
    r = put_prefs(c, user["full"], PREFS)
    assert r.status_code == 200, r.text
    assert get_prefs(c, user["full"]) == PREFS
    # put replaces the namespace whole, in the new order
    reordered = [PREFS[3], PREFS[0]]
    assert put_prefs(c, user["full"], reordered).status_code == 200
    assert get_prefs(c, user["full"]) == reordered
    assert put_prefs(c, user["full"], []).status_code == 200
    assert get_prefs(c, user["full"]) == []
    # the AppView is not asked: preferences live here
    assert world["appview"].requests() == []


def test_preferences_are_per_account(world, c):
    one, two = make_user(world, "dave"), make_user(world, "erin")
    assert put_prefs(c, one["full"], PREFS[:2]).status_code == 200
    assert put_prefs(c, two["full"], PREFS[2:]).status_code == 200
    assert get_prefs(c, one["full"]) == PREFS[:2]
    assert get_prefs(c, two["full"]) == PREFS[2:]
    rows = db_rows(world["pds"], "SELECT did, name FROM account_pref WHERE did IN (?, ?) ORDER BY id",
                   (one["did"], two["did"]))
    assert [(r["did"], r["name"]) for r in rows] == (
        [(one["did"], p["$type"]) for p in PREFS[:2]] + [(two["did"], p["$type"]) for p in PREFS[2:]])


@pytest.mark.parametrize("body, message", [
    ({"preferences": [{"label": "x"}]}, "missing a $type"),
    ({"preferences": [{"$type": 5}]}, "missing a $type"),
    ({"preferences": ["x"]}, "must be an object"),
    ({"preferences": [{"$type": "com.example.pref"}]}, "not in the app.bsky namespace"),
    ({"preferences": [{"$type": "app.bskyfake.pref"}]}, "not in the app.bsky namespace"),
    ({"preferences": {"$type": "app.bsky.actor.defs#adultContentPref"}}, "preferences"),
    ({}, "preferences"),
])
def test_bad_input(world, c, body, message):
    user = make_user(world, f"bad{next(_names)}")
    assert put_prefs(c, user["full"], PREFS[:1]).status_code == 200
    err = assert_error(c.post(PUT, json=body, headers=bearer(user["full"])), 400, "InvalidRequest")
    assert message in err["message"]
    assert get_prefs(c, user["full"]) == PREFS[:1]  # nothing changed


def test_authentication_required(world, c):
    assert_error(c.get(GET), 401, "AuthenticationRequired")
    assert_error(c.post(PUT, json={"preferences": []}), 401, "AuthenticationRequired")


def test_personal_details_need_a_full_session(world, c):
    user = make_user(world, "frank")
    details = {"$type": PERSONAL, "birthDate": "1990-04-01T00:00:00.000Z"}
    # an app password (even a privileged one) may not set them …
    err = assert_error(put_prefs(c, user["app"], [PREFS[0], details]), 400, "InvalidRequest")
    assert PERSONAL in err["message"]
    # … a full session may
    assert put_prefs(c, user["full"], [PREFS[0], details, PREFS[1]]).status_code == 200
    full_view = get_prefs(c, user["full"])
    assert full_view[:3] == [PREFS[0], details, PREFS[1]]
    age = {"$type": DECLARED_AGE, "isOverAge13": True, "isOverAge16": True, "isOverAge18": True}
    assert full_view[3:] == [age]
    # the app password sees everything but the birth date, and the derived age
    assert get_prefs(c, user["app"]) == [PREFS[0], PREFS[1], age]
    # an app password replacing its namespace leaves the birth date alone
    assert put_prefs(c, user["app"], [PREFS[2]]).status_code == 200
    assert get_prefs(c, user["full"]) == [details, PREFS[2], age]
    # a full session replacing it drops it
    assert put_prefs(c, user["full"], [PREFS[2]]).status_code == 200
    assert get_prefs(c, user["full"]) == [PREFS[2]]


def test_declared_age_is_derived_not_stored(world, c):
    user = make_user(world, "gina")
    details = {"$type": PERSONAL, "birthDate": f"{date.today().year - 15}-01-01T00:00:00.000Z"}  # 15 years old
    forged = {"$type": DECLARED_AGE, "isOverAge13": True, "isOverAge16": True, "isOverAge18": True}
    assert put_prefs(c, user["full"], [details, forged]).status_code == 200
    prefs = get_prefs(c, user["full"])
    assert prefs[0] == details
    assert prefs[1:] == [{"$type": DECLARED_AGE, "isOverAge13": True, "isOverAge16": False, "isOverAge18": False}]
    rows = db_rows(world["pds"], "SELECT name FROM account_pref WHERE did = ?", (user["did"],))
    assert [r["name"] for r in rows] == [PERSONAL]


def test_age_on():
    assert age_on(date(2000, 6, 15), date(2018, 6, 14)) == 17
    assert age_on(date(2000, 6, 15), date(2018, 6, 15)) == 18
    assert age_on(date(2000, 2, 29), date(2018, 2, 28)) == 17
    assert age_on(date(2000, 2, 29), date(2018, 3, 1)) == 18


def test_other_appview_named_in_the_header_answers_instead(world, c):
    user = make_user(world, "hank")
    other = world["other"]
    assert put_prefs(c, user["full"], PREFS[:1]).status_code == 200
    header = {"atproto-proxy": f"{other.did}#other_appview"}
    r = c.get(GET, headers={**bearer(user["full"]), **header})
    assert r.status_code == 200 and r.json()["service"] == "other"
    r = c.post(PUT, json={"preferences": PREFS[1:2]}, headers={**bearer(user["full"]), **header})
    assert r.status_code == 200, r.text
    got = other.requests()
    assert [g.nsid for g in got] == ["app.bsky.actor.getPreferences", "app.bsky.actor.putPreferences"]
    assert all(g.claims["iss"] == user["did"] and g.claims["aud"] == other.did for g in got)
    assert json.loads(got[1].body) == {"preferences": PREFS[1:2]}
    assert got[1].headers["content-type"] == "application/json"
    # the local copy is untouched; naming the configured AppView means "here"
    appview = world["appview"]
    local = c.get(GET, headers={**bearer(user["full"]), "atproto-proxy": f"{appview.did}#bsky_appview"})
    assert local.json()["preferences"] == PREFS[:1]
    assert appview.requests() == []
