"""Lexicon schema documents: parsing and checking (https://atproto.com/specs/lexicon).

A Lexicon document is JSON: ``{"lexicon": 1, "id": NSID, "defs": {name: definition, ...}}``.
``parse_lexicon_doc`` turns one into immutable definition objects and rejects what the spec rules
out ("Lexicon Files", "Primary Type Definitions", "Field Type Definitions"): a ``lexicon`` other
than the integer 1, an ``id`` that is not an NSID, primary types (record, query, procedure,
subscription, permission-set) anywhere but ``main``, ``unknown``/``ref``/``union``/``params`` as
named definitions, records whose ``record`` is not an ``object``, closed unions without refs, and
fields whose constraints have the wrong type or contradict each other.

References are resolved against the document's own NSID as they are parsed, so every ``RefDef.ref``
and ``UnionDef.refs`` entry is the full form ``nsid#name`` (``#main`` for a bare NSID). Whether the
target exists is a question about a *set* of documents; ``Lexicons`` answers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Union

from ..errors import InvalidSyntax
from ..syntax import FORMAT_VALIDATORS
from .errors import LexiconSchemaError

STRING_FORMATS = frozenset(
    {
        "at-identifier",
        "at-uri",
        "cid",
        "datetime",
        "did",
        "handle",
        "nsid",
        "tid",
        "record-key",
        "uri",
        "language",
    }
)

# Record key types (https://atproto.com/specs/record-key). "record-key" is accepted as another name
# for "any": it is the string format that "any" keys must match.
RECORD_KEY_TYPES = frozenset({"tid", "nsid", "any", "record-key"})

PRIMARY_TYPES = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
FIELD_TYPES = frozenset(
    {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "ref", "union", "unknown"}
)
# Types that exist only inside another definition (spec: "can not be used as named definitions").
_NOT_NAMED = frozenset({"unknown", "ref", "union", "params", "permission"})
_PARAM_TYPES = frozenset({"boolean", "integer", "string", "unknown"})
_KNOWN_TYPES = FIELD_TYPES | PRIMARY_TYPES | {"token", "params", "permission"}

# A MIME type, a "type/*" glob, or "*/*"; partial globs and a lone "*" are not supported (spec: blob).
_ACCEPT_RE = re.compile(r"\*/\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*)")


# --- definition objects -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BooleanDef:
    default: bool | None = None
    const: bool | None = None
    type = "boolean"


@dataclass(frozen=True, slots=True)
class IntegerDef:
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[int, ...] | None = None
    default: int | None = None
    const: int | None = None
    type = "integer"


@dataclass(frozen=True, slots=True)
class StringDef:
    format: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_graphemes: int | None = None
    max_graphemes: int | None = None
    enum: tuple[str, ...] | None = None
    const: str | None = None
    default: str | None = None
    known_values: tuple[str, ...] | None = None
    type = "string"


@dataclass(frozen=True, slots=True)
class BytesDef:
    min_length: int | None = None
    max_length: int | None = None
    type = "bytes"


@dataclass(frozen=True, slots=True)
class CidLinkDef:
    type = "cid-link"


@dataclass(frozen=True, slots=True)
class BlobDef:
    accept: tuple[str, ...] | None = None
    max_size: int | None = None
    type = "blob"


@dataclass(frozen=True, slots=True)
class UnknownDef:
    type = "unknown"


@dataclass(frozen=True, slots=True)
class TokenDef:
    type = "token"


@dataclass(frozen=True, slots=True)
class RefDef:
    ref: str  # full form: "nsid#name"
    type = "ref"


@dataclass(frozen=True, slots=True)
class UnionDef:
    refs: tuple[str, ...]  # full forms
    closed: bool = False
    type = "union"


@dataclass(frozen=True, slots=True)
class ArrayDef:
    items: "FieldDef"
    min_length: int | None = None
    max_length: int | None = None
    type = "array"


@dataclass(frozen=True, slots=True)
class ObjectDef:
    properties: Mapping[str, "FieldDef"]
    required: tuple[str, ...] = ()
    nullable: tuple[str, ...] = ()
    type = "object"


@dataclass(frozen=True, slots=True)
class RecordDef:
    key: str
    record: ObjectDef
    type = "record"


@dataclass(frozen=True, slots=True)
class ParamsDef:
    properties: Mapping[str, "FieldDef"]
    required: tuple[str, ...] = ()
    type = "params"


@dataclass(frozen=True, slots=True)
class BodyDef:
    encoding: str
    schema: "ObjectDef | RefDef | UnionDef | None" = None


@dataclass(frozen=True, slots=True)
class QueryDef:
    parameters: ParamsDef | None = None
    output: BodyDef | None = None
    errors: tuple[str, ...] = ()
    type = "query"


@dataclass(frozen=True, slots=True)
class ProcedureDef:
    parameters: ParamsDef | None = None
    input: BodyDef | None = None
    output: BodyDef | None = None
    errors: tuple[str, ...] = ()
    type = "procedure"


@dataclass(frozen=True, slots=True)
class SubscriptionDef:
    message: UnionDef | None
    parameters: ParamsDef | None = None
    errors: tuple[str, ...] = ()
    type = "subscription"


@dataclass(frozen=True, slots=True)
class PermissionSetDef:
    permissions: tuple[Mapping[str, Any], ...]
    title: str | None = None
    title_lang: Mapping[str, str] | None = None
    detail: str | None = None
    detail_lang: Mapping[str, str] | None = None
    type = "permission-set"


FieldDef = Union[
    BooleanDef, IntegerDef, StringDef, BytesDef, CidLinkDef, BlobDef, UnknownDef, RefDef, UnionDef, ArrayDef, ObjectDef
]
Def = Union[FieldDef, TokenDef, RecordDef, QueryDef, ProcedureDef, SubscriptionDef, PermissionSetDef]


@dataclass(frozen=True, slots=True)
class LexiconDoc:
    id: str
    defs: Mapping[str, Def]
    revision: int | None = None


# --- parsing ------------------------------------------------------------------------------------


def _fail(where: str, message: str) -> LexiconSchemaError:
    return LexiconSchemaError(f"{where}: {message}")


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is a subclass of int and JSON floats are not integers


def _opt_int(node: Mapping[str, Any], key: str, where: str, *, non_negative: bool = False) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise _fail(where, f"{key} must be an integer")
    if non_negative and value < 0:
        raise _fail(where, f"{key} must not be negative")
    return value


def _opt_str(node: Mapping[str, Any], key: str, where: str) -> str | None:
    value = node.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise _fail(where, f"{key} must be a string")
    return value


def _opt_bool(node: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = node.get(key)
    if value is None:
        return None
    if type(value) is not bool:
        raise _fail(where, f"{key} must be a boolean")
    return value


def _opt_list(node: Mapping[str, Any], key: str, where: str, item_ok, item_name: str) -> tuple | None:
    value = node.get(key)
    if value is None:
        return None
    if type(value) is not list or not all(item_ok(x) for x in value):
        raise _fail(where, f"{key} must be an array of {item_name}")
    return tuple(value)


def _is_str(value: Any) -> bool:
    return type(value) is str


def _check_range(low: int | None, high: int | None, low_key: str, high_key: str, where: str) -> None:
    if low is not None and high is not None and low > high:
        raise _fail(where, f"{low_key} ({low}) is greater than {high_key} ({high})")


def _check_nsid(value: str, where: str, what: str) -> None:
    try:
        FORMAT_VALIDATORS["nsid"](value)
    except InvalidSyntax as exc:
        raise _fail(where, f"{what} {value!r} is not a valid NSID ({exc})") from None


def resolve_ref(ref: Any, doc_id: str, where: str) -> str:
    """The full ``nsid#name`` form of a reference written in document ``doc_id``.

    ``#name`` is local to the document and a bare NSID means its ``main`` definition.
    """
    if type(ref) is not str or not ref:
        raise _fail(where, "a reference must be a non-empty string")
    nsid, sep, name = ref.partition("#")
    if "#" in name:
        raise _fail(where, f"reference {ref!r} has more than one '#'")
    if sep and not name:
        raise _fail(where, f"reference {ref!r} has an empty definition name")
    if not nsid:
        nsid = doc_id
    else:
        _check_nsid(nsid, where, "reference")
    return f"{nsid}#{name or 'main'}"


def _parse_boolean(node: Mapping[str, Any], where: str) -> BooleanDef:
    default = _opt_bool(node, "default", where)
    const = _opt_bool(node, "const", where)
    if default is not None and const is not None:
        raise _fail(where, "const and default are mutually exclusive")
    return BooleanDef(default=default, const=const)


def _parse_integer(node: Mapping[str, Any], where: str) -> IntegerDef:
    minimum = _opt_int(node, "minimum", where)
    maximum = _opt_int(node, "maximum", where)
    _check_range(minimum, maximum, "minimum", "maximum", where)
    enum = _opt_list(node, "enum", where, _is_int, "integers")
    default = _opt_int(node, "default", where)
    const = _opt_int(node, "const", where)
    if default is not None and const is not None:
        raise _fail(where, "const and default are mutually exclusive")
    return IntegerDef(minimum=minimum, maximum=maximum, enum=enum, default=default, const=const)


def _parse_string(node: Mapping[str, Any], where: str) -> StringDef:
    fmt = _opt_str(node, "format", where)
    if fmt is not None and fmt not in STRING_FORMATS:
        raise _fail(where, f"unknown string format {fmt!r}")
    min_length = _opt_int(node, "minLength", where, non_negative=True)
    max_length = _opt_int(node, "maxLength", where, non_negative=True)
    _check_range(min_length, max_length, "minLength", "maxLength", where)
    min_graphemes = _opt_int(node, "minGraphemes", where, non_negative=True)
    max_graphemes = _opt_int(node, "maxGraphemes", where, non_negative=True)
    _check_range(min_graphemes, max_graphemes, "minGraphemes", "maxGraphemes", where)
    enum = _opt_list(node, "enum", where, _is_str, "strings")
    const = _opt_str(node, "const", where)
    default = _opt_str(node, "default", where)
    if default is not None and const is not None:
        raise _fail(where, "const and default are mutually exclusive")
    known_values = _opt_list(node, "knownValues", where, _is_str, "strings")
    return StringDef(
        format=fmt,
        min_length=min_length,
        max_length=max_length,
        min_graphemes=min_graphemes,
        max_graphemes=max_graphemes,
        enum=enum,
        const=const,
        default=default,
        known_values=known_values,
    )


def _parse_bytes(node: Mapping[str, Any], where: str) -> BytesDef:
    min_length = _opt_int(node, "minLength", where, non_negative=True)
    max_length = _opt_int(node, "maxLength", where, non_negative=True)
    _check_range(min_length, max_length, "minLength", "maxLength", where)
    return BytesDef(min_length=min_length, max_length=max_length)


def _parse_blob(node: Mapping[str, Any], where: str) -> BlobDef:
    accept = _opt_list(node, "accept", where, _is_str, "strings")
    for pattern in accept or ():
        if not _ACCEPT_RE.fullmatch(pattern):
            raise _fail(where, f"accept entry {pattern!r} is not a MIME type, 'type/*' or '*/*'")
    max_size = _opt_int(node, "maxSize", where, non_negative=True)
    return BlobDef(accept=accept, max_size=max_size)


def _parse_union(node: Mapping[str, Any], doc_id: str, where: str) -> UnionDef:
    refs = node.get("refs")
    if type(refs) is not list:
        raise _fail(where, "union refs must be an array of strings")
    closed = _opt_bool(node, "closed", where) or False
    if closed and not refs:
        raise _fail(where, "a closed union must have at least one ref")
    return UnionDef(refs=tuple(resolve_ref(r, doc_id, where) for r in refs), closed=closed)


def _parse_properties(node: Mapping[str, Any], doc_id: str, where: str, allowed: frozenset[str]):
    properties = node.get("properties")
    if not isinstance(properties, dict):
        raise _fail(where, "properties must be an object")
    parsed = {}
    for key, prop in properties.items():
        if not key:
            raise _fail(where, "property names must not be empty")
        parsed[key] = _parse_field(prop, doc_id, f"{where}/properties/{key}", allowed)
    required = _opt_list(node, "required", where, _is_str, "strings") or ()
    for key in required:
        if key not in parsed:
            raise _fail(where, f"required property {key!r} is not defined in properties")
    return MappingProxyType(parsed), required


def _parse_object(node: Mapping[str, Any], doc_id: str, where: str) -> ObjectDef:
    properties, required = _parse_properties(node, doc_id, where, FIELD_TYPES)
    nullable = _opt_list(node, "nullable", where, _is_str, "strings") or ()
    return ObjectDef(properties=properties, required=required, nullable=nullable)


def _parse_array(node: Mapping[str, Any], doc_id: str, where: str, item_types: frozenset[str]) -> ArrayDef:
    if "items" not in node:
        raise _fail(where, "array must have items")
    items = _parse_field(node["items"], doc_id, f"{where}/items", item_types)
    min_length = _opt_int(node, "minLength", where, non_negative=True)
    max_length = _opt_int(node, "maxLength", where, non_negative=True)
    _check_range(min_length, max_length, "minLength", "maxLength", where)
    return ArrayDef(items=items, min_length=min_length, max_length=max_length)


def _type_of(node: Any, where: str) -> str:
    if not isinstance(node, dict):
        raise _fail(where, "a schema definition must be an object")
    kind = node.get("type")
    if type(kind) is not str:
        raise _fail(where, "a schema definition must have a string type")
    if kind not in _KNOWN_TYPES:
        raise _fail(where, f"unknown type {kind!r}")
    return kind


def _parse_field(node: Any, doc_id: str, where: str, allowed: frozenset[str]) -> FieldDef:
    kind = _type_of(node, where)
    if kind not in allowed:
        raise _fail(where, f"type {kind!r} is not allowed here (expected one of {', '.join(sorted(allowed))})")
    if kind == "boolean":
        return _parse_boolean(node, where)
    if kind == "integer":
        return _parse_integer(node, where)
    if kind == "string":
        return _parse_string(node, where)
    if kind == "bytes":
        return _parse_bytes(node, where)
    if kind == "cid-link":
        return CidLinkDef()
    if kind == "blob":
        return _parse_blob(node, where)
    if kind == "unknown":
        return UnknownDef()
    if kind == "ref":
        return RefDef(ref=resolve_ref(node.get("ref"), doc_id, where))
    if kind == "union":
        return _parse_union(node, doc_id, where)
    if kind == "array":
        # Query parameters only carry arrays of primitives.
        item_types = _PARAM_TYPES if allowed is _PARAM_TYPES_AND_ARRAY else FIELD_TYPES
        return _parse_array(node, doc_id, where, item_types)
    if kind == "object":
        return _parse_object(node, doc_id, where)
    raise _fail(where, f"unknown type {kind!r}")


_PARAM_TYPES_AND_ARRAY = _PARAM_TYPES | {"array"}


def _parse_params(node: Any, doc_id: str, where: str) -> ParamsDef | None:
    if node is None:
        return None
    if _type_of(node, where) != "params":
        raise _fail(where, "parameters must have type 'params'")
    properties, required = _parse_properties(node, doc_id, where, _PARAM_TYPES_AND_ARRAY)
    return ParamsDef(properties=properties, required=required)


def _parse_body(node: Any, doc_id: str, where: str) -> BodyDef | None:
    if node is None:
        return None
    if not isinstance(node, dict):
        raise _fail(where, "must be an object")
    encoding = node.get("encoding")
    if type(encoding) is not str or not encoding:
        raise _fail(where, "encoding must be a non-empty string")
    schema = node.get("schema")
    if schema is not None:
        schema = _parse_field(schema, doc_id, f"{where}/schema", frozenset({"object", "ref", "union"}))
    return BodyDef(encoding=encoding, schema=schema)


def _parse_errors(node: Mapping[str, Any], where: str) -> tuple[str, ...]:
    errors = node.get("errors")
    if errors is None:
        return ()
    if type(errors) is not list:
        raise _fail(where, "errors must be an array")
    names = []
    for entry in errors:
        if not isinstance(entry, dict) or type(entry.get("name")) is not str or not entry["name"]:
            raise _fail(where, "each error must be an object with a non-empty string name")
        if any(c.isspace() for c in entry["name"]):
            raise _fail(where, f"error name {entry['name']!r} must not contain whitespace")
        names.append(entry["name"])
    return tuple(names)


def _parse_record(node: Mapping[str, Any], doc_id: str, where: str) -> RecordDef:
    key = node.get("key")
    if type(key) is not str:
        raise _fail(where, "record key type must be a string")
    if key.startswith("literal:"):
        literal = key[len("literal:") :]
        try:
            FORMAT_VALIDATORS["record-key"](literal)
        except InvalidSyntax as exc:
            raise _fail(where, f"record key {key!r} is not a valid literal record key ({exc})") from None
    elif key not in RECORD_KEY_TYPES:
        raise _fail(where, f"unknown record key type {key!r} (expected tid, nsid, any or literal:<key>)")
    record = node.get("record")
    if _type_of(record, f"{where}/record") != "object":
        raise _fail(where, "record must be a schema of type 'object'")
    return RecordDef(key=key, record=_parse_object(record, doc_id, f"{where}/record"))


def _parse_lang_map(node: Mapping[str, Any], key: str, where: str) -> Mapping[str, str] | None:
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(where, f"{key} must be an object")
    for lang, text in value.items():
        try:
            FORMAT_VALIDATORS["language"](lang)
        except InvalidSyntax as exc:
            raise _fail(where, f"{key} key {lang!r} is not a language tag ({exc})") from None
        if type(text) is not str:
            raise _fail(where, f"{key} values must be strings")
    return MappingProxyType(dict(value))


def _is_permission_scalar(value: Any) -> bool:
    return type(value) in (str, int, bool)


def _parse_permission_set(node: Mapping[str, Any], where: str) -> PermissionSetDef:
    permissions = node.get("permissions")
    if type(permissions) is not list:
        raise _fail(where, "permissions must be an array")
    parsed = []
    for i, perm in enumerate(permissions):
        at = f"{where}/permissions/{i}"
        if not isinstance(perm, dict) or perm.get("type") != "permission":
            raise _fail(at, "must be an object with type 'permission'")
        resource = perm.get("resource")
        if type(resource) is not str or not resource:
            raise _fail(at, "resource must be a non-empty string")
        for key, value in perm.items():
            ok = _is_permission_scalar(value) or (
                type(value) is list and all(_is_permission_scalar(v) for v in value)
            )
            if not ok:
                raise _fail(at, f"{key} must be a string, integer, boolean or an array of them")
        parsed.append(MappingProxyType(dict(perm)))
    return PermissionSetDef(
        permissions=tuple(parsed),
        title=_opt_str(node, "title", where),
        title_lang=_parse_lang_map(node, "title:lang", where),
        detail=_opt_str(node, "detail", where),
        detail_lang=_parse_lang_map(node, "detail:lang", where),
    )


def _parse_def(name: str, node: Any, doc_id: str) -> Def:
    where = f"{doc_id}#{name}"
    kind = _type_of(node, where)
    if kind in PRIMARY_TYPES and name != "main":
        raise _fail(where, f"a {kind} definition must be named 'main'")
    if kind in _NOT_NAMED:
        raise _fail(where, f"type {kind!r} can not be a named definition")
    if kind == "record":
        return _parse_record(node, doc_id, where)
    if kind == "query":
        return QueryDef(
            parameters=_parse_params(node.get("parameters"), doc_id, f"{where}/parameters"),
            output=_parse_body(node.get("output"), doc_id, f"{where}/output"),
            errors=_parse_errors(node, where),
        )
    if kind == "procedure":
        return ProcedureDef(
            parameters=_parse_params(node.get("parameters"), doc_id, f"{where}/parameters"),
            input=_parse_body(node.get("input"), doc_id, f"{where}/input"),
            output=_parse_body(node.get("output"), doc_id, f"{where}/output"),
            errors=_parse_errors(node, where),
        )
    if kind == "subscription":
        message = node.get("message")
        if not isinstance(message, dict):
            raise _fail(where, "subscription must have a message object")
        schema = message.get("schema")
        if _type_of(schema, f"{where}/message/schema") != "union":
            raise _fail(where, "subscription message schema must be a union")
        return SubscriptionDef(
            message=_parse_union(schema, doc_id, f"{where}/message/schema"),
            parameters=_parse_params(node.get("parameters"), doc_id, f"{where}/parameters"),
            errors=_parse_errors(node, where),
        )
    if kind == "permission-set":
        return _parse_permission_set(node, where)
    if kind == "token":
        return TokenDef()
    return _parse_field(node, doc_id, where, FIELD_TYPES)


def parse_lexicon_doc(doc: Any) -> LexiconDoc:
    """Check a Lexicon document (parsed JSON) and return its definitions; raise LexiconSchemaError."""
    if not isinstance(doc, dict):
        raise LexiconSchemaError("a Lexicon document must be a JSON object")
    version = doc.get("lexicon")
    if not _is_int(version) or version != 1:
        raise LexiconSchemaError(f"lexicon must be the integer 1, not {version!r}")
    doc_id = doc.get("id")
    if type(doc_id) is not str:
        raise LexiconSchemaError("id must be a string (an NSID)")
    _check_nsid(doc_id, doc_id, "id")
    revision = _opt_int(doc, "revision", doc_id)
    _opt_str(doc, "description", doc_id)
    defs = doc.get("defs")
    if not isinstance(defs, dict):
        raise _fail(doc_id, "defs must be an object")
    if not defs:
        raise _fail(doc_id, "defs must not be empty")
    parsed: dict[str, Def] = {}
    for name, node in defs.items():
        if not name or "#" in name:
            raise _fail(doc_id, f"definition name {name!r} must be non-empty and contain no '#'")
        parsed[name] = _parse_def(name, node, doc_id)
    return LexiconDoc(id=doc_id, defs=MappingProxyType(parsed), revision=revision)
