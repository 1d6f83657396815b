"""Inputs for XRPC methods made from their bundled Lexicons: one plausible call per method (for the
auth matrix) and hypothesis strategies of random and near-valid calls (for the fuzz suite)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from squall.atproto.lexicon import bundled_documents

POST = {"$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2024-05-01T12:00:00.000Z"}
CID_SAMPLE = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
DOCS: dict[str, dict] = {doc["id"]: doc for doc in bundled_documents()}


@dataclass
class Subject:
    """Whom a sample call is about."""
    did: str
    handle: str


def method_def(nsid: str) -> dict | None:
    doc = DOCS.get(nsid)
    return doc["defs"]["main"] if doc is not None else None


def _resolve(ref: str, base: str) -> dict | None:
    nsid, _, name = (base + ref if ref.startswith("#") else ref).partition("#")
    doc = DOCS.get(nsid)
    return doc["defs"].get(name or "main") if doc else None


def _base(ref: str, base: str) -> str:
    return (base + ref if ref.startswith("#") else ref).partition("#")[0]


_FORMATS = {
    "nsid": "app.bsky.feed.post", "record-key": "3jzfcijpj2z2a", "tid": "3jzfcijpj2z2a", "cid": CID_SAMPLE,
    "datetime": "2024-05-01T12:00:00.000Z", "uri": "https://example.com/x", "language": "en",
}


def sample(node: dict, name: str, subject: Subject, base: str, depth: int = 0) -> Any:
    kind = node.get("type")
    if kind == "string":
        fmt = node.get("format")
        if name == "collection":
            return "app.bsky.feed.post"
        if fmt in ("did", "at-identifier"):
            return subject.did
        if fmt == "handle":
            return subject.handle
        if fmt == "at-uri":
            return f"at://{subject.did}/app.bsky.feed.post/3jzfcijpj2z2a"
        if fmt in _FORMATS:
            return _FORMATS[fmt]
        if node.get("knownValues"):
            return node["knownValues"][0]
        if node.get("enum"):
            return node["enum"][0]
        return "matrix-sample"
    if kind == "integer":
        return node.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "array":
        items = node.get("items")
        return [sample(items, name, subject, base, depth + 1)] if items and depth < 4 else []
    if kind == "unknown":
        return dict(POST)
    if kind in ("ref", "union") and depth < 4:
        ref = node["ref"] if kind == "ref" else (node.get("refs") or [None])[0]
        target = _resolve(ref, base) if ref else None
        if target is None:
            return {}
        value = sample(target, name, subject, _base(ref, base), depth + 1)
        if kind == "union" and isinstance(value, dict):
            value = {"$type": ref if not ref.startswith("#") else base + ref, **value}
        return value
    if kind in ("object", "params") and depth < 4:
        props = node.get("properties", {})
        return {key: sample(props[key], key, subject, base, depth + 1) for key in node.get("required", [])
                if key in props}
    return None


def sample_call(nsid: str, subject: Subject) -> tuple[dict[str, Any], Any]:
    """(query parameters, JSON body or None) of a plausible call to ``nsid`` about ``subject``."""
    main = method_def(nsid)
    if main is None:
        return {}, None
    params = sample(main["parameters"], "", subject, nsid) if "parameters" in main else {}
    body = None
    schema = main.get("input", {}).get("schema")
    if schema is not None:
        body = sample(schema, "", subject, nsid)
    return params or {}, body


# -- hypothesis strategies for the fuzz suite ----------------------------------------------------------

_HOSTILE_STRINGS = st.sampled_from([
    "", " ", "\x00", "did:", "did:plc:", "at://", "../../etc/passwd", "%00", "a" * 5000, "💥" * 100,
    "did:web:127.0.0.1%2f..", "null", "[]", "{}", "-1", "1e309", "\ud800".encode("utf-8", "surrogatepass").decode(
        "utf-8", "replace"), "app.bsky.feed.post", "3jzfcijpj2z2a", CID_SAMPLE, "com.atproto.repo.createRecord",
])
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40) | _HOSTILE_STRINGS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def value_strategy(node: dict, name: str, subject: Subject, base: str, depth: int = 0) -> st.SearchStrategy:
    """Mostly well-typed values with hostile strings and wrong types mixed in."""
    valid = st.just(sample(node, name, subject, base, depth))
    kind = node.get("type")
    if kind == "string":
        typed = st.text(max_size=64) | _HOSTILE_STRINGS
    elif kind == "integer":
        typed = st.integers(min_value=-(2 ** 64), max_value=2 ** 64)
    elif kind == "boolean":
        typed = st.booleans()
    elif kind == "array" and depth < 3:
        typed = st.lists(value_strategy(node.get("items", {}), name, subject, base, depth + 1), max_size=3)
    elif kind in ("object", "params") and depth < 3:
        typed = object_strategy(node, subject, base, depth + 1)
    else:
        typed = _ANY_JSON
    return st.one_of(valid, typed, _ANY_JSON)


def object_strategy(node: dict, subject: Subject, base: str, depth: int = 0) -> st.SearchStrategy:
    props = node.get("properties", {})
    required = [key for key in node.get("required", []) if key in props]
    optional = [key for key in props if key not in required]
    fields = {key: value_strategy(props[key], key, subject, base, depth) for key in props}
    return st.fixed_dictionaries(
        {key: fields[key] for key in required},
        optional={**{key: fields[key] for key in optional}, "unexpected": _ANY_JSON},
    )


def params_strategy(nsid: str, subject: Subject) -> st.SearchStrategy:
    """Query parameters as (name, text) pairs: the Lexicon's names with random or sampled values,
    repeated or missing, plus stray ones."""
    main = method_def(nsid) or {}
    props = main.get("parameters", {}).get("properties", {})
    names = st.sampled_from(sorted(props) + ["cursor", "limit", "zz"]) if props else st.sampled_from(["zz", "limit"])
    value = st.one_of(st.text(max_size=40), _HOSTILE_STRINGS,
                      st.integers(min_value=-(2 ** 64), max_value=2 ** 64).map(str),
                      st.just(subject.did), st.just(subject.handle))
    return st.lists(st.tuples(names, value), max_size=6)
