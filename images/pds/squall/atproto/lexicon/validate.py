"""Compiling Lexicon definitions into validators of data-model values (https://atproto.com/specs/lexicon).

Values are in the atproto data model (https://atproto.com/specs/data-model) as ``datamodel.from_json``
produces them: ``dict`` objects, ``list`` arrays, ``str``, ``int``, ``bool``, ``None``, ``bytes``
and ``CID`` links; a blob is the object ``{"$type": "blob", "ref": CID, "mimeType": str, "size": int}``.

Every definition is compiled once, per ``Lexicons`` instance, into a closure ``check(value) -> None``
with its constraints bound as constants, so validating a record is a walk over the record alone.
On failure a check raises ``Invalid``; containers add their property name or index to it as it
propagates, so the happy path builds no path strings. ``Lexicons`` turns it into
``LexiconValidationError`` with the full path (``Record/embed/images/0/alt``).

Semantics (spec "Field Type Definitions"): ``null`` is accepted only for properties listed in
``nullable``; a missing ``required`` property is an error unless the schema gives it a ``default``
(defaults are not inserted: this only validates); ``knownValues`` are not enforced; string
``minLength``/``maxLength`` count UTF-8 bytes and ``minGraphemes``/``maxGraphemes`` count extended
grapheme clusters; properties the schema does not name are ignored (spec "Authority and Control").
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

from ..cid import CID
from ..errors import InvalidSyntax
from ..syntax import FORMAT_VALIDATORS
from .errors import LexiconSchemaError
from .schema import (
    ArrayDef,
    BlobDef,
    BooleanDef,
    BytesDef,
    CidLinkDef,
    Def,
    IntegerDef,
    ObjectDef,
    ParamsDef,
    RecordDef,
    RefDef,
    StringDef,
    UnionDef,
    UnknownDef,
)

Check = Callable[[Any], None]
# Query parameters: (name, value) pairs as they come in the query string → the typed parameters.
ParamsCheck = Callable[[Iterable[tuple[str, str]]], dict[str, Any]]

_BLOB_KEYS = frozenset({"$type", "ref", "mimeType", "size"})
_MISSING = object()


class Invalid(Exception):
    """A validation failure on its way up: ``segments`` is the path from the failing value upwards."""

    __slots__ = ("reason", "segments", "format")

    def __init__(self, reason: str, format: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str] = []
        self.format = format  # the string format the value failed, if that is what failed


def grapheme_len(text: str) -> int:
    """The number of extended grapheme clusters in ``text``."""
    if text.isascii():
        # In ASCII only CR LF forms a cluster of two; isascii() is O(1) in CPython.
        return len(text) - text.count("\r\n")
    # \X is an extended grapheme cluster (Unicode TR29), the unit of maxGraphemes/minGraphemes.
    # regex is imported on the first non-ASCII string (it is not needed to serve an idle PDS) and
    # keeps the compiled pattern in its own cache.
    import regex

    return len(regex.findall(r"\X", text))


class Compiler:
    """Turns definitions into checks; ``resolve(uri)`` gives the check of a named definition.

    ``lookup(uri)`` returns the definition for a full ``nsid#name`` reference, or None. Compiled
    checks are memoised per instance; a definition that (indirectly) refers to itself gets a
    forwarding check while it is being compiled, so recursive schemas terminate.
    """

    def __init__(self, lookup: Callable[[str], Def | None]):
        self._lookup = lookup
        self._compiled: dict[str, Check] = {}
        self._in_progress: set[str] = set()

    def resolve(self, uri: str, context: str, kinds: frozenset[str]) -> Check:
        check = self._compiled.get(uri)
        if check is not None:
            self._assert_kind(uri, context, kinds)
            return check
        definition = self._assert_kind(uri, context, kinds)
        if uri in self._in_progress:
            compiled = self._compiled

            def forward(value: Any) -> None:
                compiled[uri](value)

            return forward
        self._in_progress.add(uri)
        try:
            if isinstance(definition, RecordDef):
                check = self.compile(definition.record)
            else:
                check = self.compile(definition)
        finally:
            self._in_progress.discard(uri)
        self._compiled[uri] = check
        return check

    def _assert_kind(self, uri: str, context: str, kinds: frozenset[str]) -> Def:
        definition = self._lookup(uri)
        if definition is None:
            raise LexiconSchemaError(f"{context}: no loaded Lexicon defines {uri}")
        if definition.type not in kinds:
            raise LexiconSchemaError(
                f"{context}: {uri} is a {definition.type}, expected {' or '.join(sorted(kinds))}"
            )
        return definition

    def compile(self, definition: Def) -> Check:
        method = getattr(self, "_compile_" + definition.type.replace("-", "_"), None)
        if method is None:
            raise TypeError(f"can not validate data against a {definition.type} definition")
        return method(definition)

    # --- concrete types -------------------------------------------------------------------------

    def _compile_boolean(self, d: BooleanDef) -> Check:
        const = d.const

        def check(value: Any) -> None:
            if value is not True and value is not False:
                raise Invalid("must be a boolean")
            if const is not None and value is not const:
                raise Invalid(f"must be {'true' if const else 'false'}")

        return check

    def _compile_integer(self, d: IntegerDef) -> Check:
        const, minimum, maximum = d.const, d.minimum, d.maximum
        enum = frozenset(d.enum) if d.enum is not None else None
        enum_text = "|".join(map(str, d.enum)) if d.enum is not None else ""

        def check(value: Any) -> None:
            if type(value) is not int:
                raise Invalid("must be an integer")
            if const is not None and value != const:
                raise Invalid(f"must be {const}")
            if enum is not None and value not in enum:
                raise Invalid(f"must be one of ({enum_text})")
            if maximum is not None and value > maximum:
                raise Invalid(f"can not be greater than {maximum}")
            if minimum is not None and value < minimum:
                raise Invalid(f"can not be less than {minimum}")

        return check

    def _compile_string(self, d: StringDef) -> Check:
        const = d.const
        enum = frozenset(d.enum) if d.enum is not None else None
        enum_text = "|".join(d.enum) if d.enum is not None else ""
        min_len, max_len = d.min_length, d.max_length
        min_g, max_g = d.min_graphemes, d.max_graphemes
        has_len = min_len is not None or max_len is not None
        has_graphemes = min_g is not None or max_g is not None
        fmt_name = d.format
        fmt = FORMAT_VALIDATORS[fmt_name] if fmt_name is not None else None

        def check(value: Any) -> None:
            if type(value) is not str:
                raise Invalid("must be a string")
            if const is not None and value != const:
                raise Invalid(f"must be {const}")
            if enum is not None and value not in enum:
                raise Invalid(f"must be one of ({enum_text})")
            if has_len:
                chars = len(value)
                # A code point is 1 to 4 UTF-8 bytes: encode only when the bounds do not decide.
                if (max_len is not None and chars * 4 > max_len) or (min_len is not None and chars < min_len):
                    size = len(value.encode("utf-8", "surrogatepass"))
                    if max_len is not None and size > max_len:
                        raise Invalid(f"must not be longer than {max_len} bytes (UTF-8)")
                    if min_len is not None and size < min_len:
                        raise Invalid(f"must not be shorter than {min_len} bytes (UTF-8)")
            if has_graphemes:
                chars = len(value)
                # A grapheme cluster is at least one code point.
                if min_g is not None and chars < min_g:
                    raise Invalid(f"must not be shorter than {min_g} graphemes")
                if min_g is not None or chars > max_g:
                    count = grapheme_len(value)
                    if max_g is not None and count > max_g:
                        raise Invalid(f"must not be longer than {max_g} graphemes")
                    if min_g is not None and count < min_g:
                        raise Invalid(f"must not be shorter than {min_g} graphemes")
            if fmt is not None:
                try:
                    fmt(value)
                except InvalidSyntax as exc:
                    raise Invalid(f"must be a valid {fmt_name} ({exc})", fmt_name) from None

        return check

    def _compile_bytes(self, d: BytesDef) -> Check:
        min_len, max_len = d.min_length, d.max_length

        def check(value: Any) -> None:
            if type(value) is not bytes:
                raise Invalid("must be bytes")
            if max_len is not None and len(value) > max_len:
                raise Invalid(f"must not be larger than {max_len} bytes")
            if min_len is not None and len(value) < min_len:
                raise Invalid(f"must not be smaller than {min_len} bytes")

        return check

    def _compile_cid_link(self, d: CidLinkDef) -> Check:
        def check(value: Any) -> None:
            if not isinstance(value, CID):
                raise Invalid("must be a CID link")

        return check

    def _compile_blob(self, d: BlobDef) -> Check:
        max_size = d.max_size
        accept_any = d.accept is None or "*/*" in d.accept
        exact = frozenset(a.lower() for a in d.accept or () if not a.endswith("/*"))
        prefixes = tuple(a[:-1].lower() for a in d.accept or () if a.endswith("/*") and a != "*/*")
        accept_text = ", ".join(d.accept or ())

        def check(value: Any) -> None:
            if type(value) is not dict or value.get("$type") != "blob":
                raise Invalid("must be a blob (an object with $type 'blob')")
            if value.keys() != _BLOB_KEYS:
                raise Invalid("must be a blob with exactly the fields $type, ref, mimeType and size")
            if not isinstance(value["ref"], CID):
                raise Invalid("must be a blob whose ref is a CID link")
            mime = value["mimeType"]
            if type(mime) is not str or not mime:
                raise Invalid("must be a blob whose mimeType is a non-empty string")
            size = value["size"]
            if type(size) is not int or size < 0:
                raise Invalid("must be a blob whose size is a non-negative integer")
            if max_size is not None and size > max_size:
                raise Invalid(f"must not be larger than {max_size} bytes (blob size {size})")
            if not accept_any:
                # MIME types are case-insensitive and parameters (";charset=…") do not change the type.
                base = mime.split(";", 1)[0].strip().lower()
                if base not in exact and not base.startswith(prefixes):
                    raise Invalid(f"has mimeType {mime!r}, which is not accepted ({accept_text})")

        return check

    def _compile_unknown(self, d: UnknownDef) -> Check:
        def check(value: Any) -> None:
            # Spec: "unknown" data must be an object, and not one shaped like a blob.
            if type(value) is not dict or value.get("$type") == "blob":
                raise Invalid("must be an object")

        return check

    # --- XRPC parameters ------------------------------------------------------------------------

    def compile_params(self, d: ParamsDef) -> ParamsCheck:
        """A check of a query string against a method's ``parameters``: each value arrives as a
        string and is coerced to the declared type (integer, boolean; an array collects the repeated
        key), then checked like an object property. It returns the declared parameters, with the
        schema's defaults filled in; parameters the schema does not declare are ignored (as the
        reference does: a client may send more than a method knows)."""
        specs = []
        for name, prop in d.properties.items():
            array = prop.type == "array"
            kind = prop.items.type if array else prop.type
            # "unknown" parameters have no string form to check (the spec allows them; none is used).
            check = self.compile(prop) if kind != "unknown" else _accept
            default = getattr(prop, "default", None)
            specs.append((name, _COERCE.get(kind, _as_is), check, array, default, name in d.required))
        wanted = frozenset(d.properties)

        def check_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
            raw: dict[str, list[str]] = {}
            for key, value in pairs:
                if key in wanted:
                    if key in raw:
                        raw[key].append(value)
                    else:
                        raw[key] = [value]
            out: dict[str, Any] = {}
            for name, coerce, check, array, default, required in specs:
                values = raw.get(name)
                if values is None:
                    if default is not None:
                        out[name] = default
                    elif required:
                        raise Invalid(f'must have the property "{name}"')
                    continue
                try:
                    if array:
                        value: Any = [coerce(v) for v in values]
                    elif len(values) > 1:
                        raise Invalid("must appear once")
                    else:
                        value = coerce(values[0])
                    check(value)
                except Invalid as exc:
                    exc.segments.append(name)
                    raise
                out[name] = value
            return out

        return check_params

    # --- containers -----------------------------------------------------------------------------

    def _compile_array(self, d: ArrayDef) -> Check:
        min_len, max_len = d.min_length, d.max_length
        item = self.compile(d.items)

        def check(value: Any) -> None:
            if type(value) is not list:
                raise Invalid("must be an array")
            if max_len is not None and len(value) > max_len:
                raise Invalid(f"must not have more than {max_len} elements")
            if min_len is not None and len(value) < min_len:
                raise Invalid(f"must not have fewer than {min_len} elements")
            for i, element in enumerate(value):
                try:
                    item(element)
                except Invalid as exc:
                    exc.segments.append(str(i))
                    raise

        return check

    def _compile_object(self, d: ObjectDef) -> Check:
        nullable = frozenset(d.nullable)
        props: dict[str, tuple[Check, bool]] = {
            key: (self.compile(prop), key in nullable) for key, prop in d.properties.items()
        }
        # A required property with a default is satisfied by the default (as the reference does).
        must_have = tuple(
            key for key in d.required if getattr(d.properties[key], "default", None) is None
        )
        return _object_check(props, must_have)

    def _compile_ref(self, d: RefDef) -> Check:
        return self.resolve(d.ref, f"ref {d.ref}", _REF_TARGETS)

    def _compile_union(self, d: UnionDef) -> Check:
        variants: dict[str, Check] = {}
        for uri in d.refs:
            check = self.resolve(uri, f"union ref {uri}", _UNION_TARGETS)
            variants[uri] = check
            if uri.endswith("#main"):
                # A main definition's $type is written as the bare NSID (the spec's "must"), but
                # "nsid#main" is accepted too, as the reference implementation does.
                variants[uri[: -len("#main")]] = check
        closed = d.closed
        names = ", ".join(u[: -len("#main")] if u.endswith("#main") else u for u in d.refs)

        def check(value: Any) -> None:
            if type(value) is not dict:
                raise Invalid('must be an object which includes the "$type" property')
            kind = value.get("$type", _MISSING)
            if type(kind) is not str:
                raise Invalid('must be an object which includes the "$type" property')
            variant = variants.get(kind)
            if variant is None:
                if closed:
                    raise Invalid(f"$type must be one of {names}")
                return  # open union: a variant we do not know is allowed
            variant(value)

        return check


_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")  # what fits an int64; longer is out of any range we declare
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _as_is(text: str) -> Any:
    return text


def _integer_text(text: str) -> Any:
    # Not int(): it also takes "+1", " 1", "1_0" and non-ASCII digits. Text that is no integer
    # stays a string, so the integer check reports it as "must be an integer".
    return int(text) if _INTEGER_TEXT.fullmatch(text) else text


def _boolean_text(text: str) -> Any:
    return _BOOLEAN_TEXT.get(text, text)


def _accept(value: Any) -> None:
    pass


_COERCE: dict[str, Callable[[str], Any]] = {"integer": _integer_text, "boolean": _boolean_text}

_REF_TARGETS = frozenset(
    {"object", "record", "string", "integer", "boolean", "bytes", "cid-link", "blob", "array"}
)
_UNION_TARGETS = frozenset({"object", "record"})


def _object_check(props: Mapping[str, tuple[Check, bool]], must_have: tuple[str, ...]) -> Check:
    def check(value: Any) -> None:
        if type(value) is not dict:
            raise Invalid("must be an object")
        for key in must_have:
            if key not in value:
                raise Invalid(f'must have the property "{key}"')
        for key, item in value.items():
            entry = props.get(key)
            if entry is None:
                continue
            if item is None and entry[1]:
                continue
            try:
                entry[0](item)
            except Invalid as exc:
                exc.segments.append(key)
                raise

    return check
