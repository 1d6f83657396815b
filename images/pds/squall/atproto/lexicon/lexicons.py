"""A set of Lexicon documents, with references resolved across them (https://atproto.com/specs/lexicon).

``Lexicons`` is immutable once built. Building it parses every document, and compiles the schema of
every ``record`` definition, which checks that every reference a record can reach resolves to a
definition of a type that may be referenced (spec: "ref", "union"). A document whose unreachable
parts refer to Lexicons that are not loaded (an XRPC endpoint, say) is still accepted.

It answers what a PDS asks on every write: is this a known record type (``has_record_type``), which
record key type does it use (``record_key_type``, ``validate_record_key``, spec "Record Key"), and
does a record match its schema (``validate_record``). For XRPC methods (``query`` and ``procedure``
definitions) ``method`` compiles a ``MethodSchema`` that checks a call's query parameters and JSON
input (spec "HTTP API (XRPC)": parameters arrive as strings and are typed by the Lexicon).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from ..errors import InvalidSyntax
from ..syntax import FORMAT_VALIDATORS
from .errors import LexiconNotFoundError, LexiconSchemaError, LexiconValidationError
from .schema import Def, LexiconDoc, ProcedureDef, QueryDef, RecordDef, parse_lexicon_doc
from .validate import Check, Compiler, Invalid, ParamsCheck

_OBJECT_KINDS = frozenset({"object", "record"})


def _error(root: str, exc: Invalid) -> LexiconValidationError:
    return LexiconValidationError("/".join([root, *reversed(exc.segments)]), exc.reason, exc.format)


@dataclass(frozen=True, slots=True)
class MethodSchema:
    """The compiled inputs of one XRPC method: keep it (compiling walks the schema; checking does not).

    ``type`` is ``query`` or ``procedure``; ``input_encoding`` is the procedure's declared input
    encoding (``application/json``, ``*/*`` …) or None when it takes no input.
    """

    nsid: str
    type: str
    input_encoding: str | None
    _params: ParamsCheck | None
    _input: Check | None

    @property
    def has_params(self) -> bool:
        return self._params is not None

    @property
    def has_input_schema(self) -> bool:
        return self._input is not None

    def validate_params(self, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """The declared parameters of a query string given as (name, value) pairs, typed and with
        defaults filled in. Raises LexiconValidationError rooted at ``Params``, e.g.
        ``Params must have the property "did"`` or ``Params/limit can not be greater than 100``."""
        if self._params is None:
            return {}
        try:
            return self._params(pairs)
        except Invalid as exc:
            raise _error("Params", exc) from None

    def validate_input(self, body: Any) -> None:
        """Check a JSON input (parsed JSON) against the input schema, if the method declares one.
        Raises LexiconValidationError rooted at ``Input``, e.g. ``Input/repo must be a valid did``."""
        if self._input is None:
            return
        try:
            self._input(body)
        except Invalid as exc:
            raise _error("Input", exc) from None


class Lexicons:
    """An immutable collection of Lexicon documents keyed by NSID.

    ``docs`` are Lexicon JSON documents (parsed JSON objects) or ``LexiconDoc`` values. Raises
    LexiconSchemaError for a malformed document, a repeated NSID, or a record schema whose
    references do not resolve.
    """

    def __init__(self, docs: Iterable[Mapping[str, Any] | LexiconDoc] = ()):
        parsed: dict[str, LexiconDoc] = {}
        for doc in docs:
            if not isinstance(doc, LexiconDoc):
                doc = parse_lexicon_doc(doc)
            if doc.id in parsed:
                raise LexiconSchemaError(f"{doc.id}: the Lexicon is loaded twice")
            parsed[doc.id] = doc
        self._docs: Mapping[str, LexiconDoc] = MappingProxyType(parsed)
        self._compiler = Compiler(self.get_def)
        records: dict[str, tuple[RecordDef, Check]] = {}
        for nsid, doc in parsed.items():
            main = doc.defs.get("main")
            if isinstance(main, RecordDef):
                check = self._compiler.resolve(f"{nsid}#main", f"{nsid}#main", _OBJECT_KINDS)
                records[nsid] = (main, check)
        self._records = records

    # --- lookup ---------------------------------------------------------------------------------

    def __contains__(self, nsid: object) -> bool:
        return nsid in self._docs

    def __iter__(self) -> Iterator[str]:
        return iter(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def get_doc(self, nsid: str) -> LexiconDoc | None:
        return self._docs.get(nsid)

    def get_def(self, ref: str) -> Def | None:
        """The definition named by ``nsid#name`` or ``nsid`` (its ``main``), or None."""
        nsid, _, name = ref.partition("#")
        doc = self._docs.get(nsid)
        if doc is None:
            return None
        return doc.defs.get(name or "main")

    def has_record_type(self, nsid: str) -> bool:
        return nsid in self._records

    def record_types(self) -> frozenset[str]:
        return frozenset(self._records)

    def _record(self, nsid: str) -> tuple[RecordDef, Check]:
        entry = self._records.get(nsid)
        if entry is None:
            raise LexiconNotFoundError(f"no loaded Lexicon defines the record type {nsid!r}")
        return entry

    def record_key_type(self, nsid: str) -> str:
        """The record's ``key``: ``tid``, ``nsid``, ``any``, ``record-key`` or ``literal:<rkey>``."""
        return self._record(nsid)[0].key

    def method(self, nsid: str) -> MethodSchema:
        """Compile the parameters and input schema of the query or procedure ``nsid``.

        Raises LexiconNotFoundError when no loaded Lexicon defines that method, LexiconSchemaError
        when its schema refers to definitions that are missing or of the wrong type."""
        definition = self.get_def(nsid)
        if not isinstance(definition, (QueryDef, ProcedureDef)):
            raise LexiconNotFoundError(f"no loaded Lexicon defines the XRPC method {nsid!r}")
        params = self._compiler.compile_params(definition.parameters) if definition.parameters else None
        body = definition.input if isinstance(definition, ProcedureDef) else None
        check = None
        if body is not None and body.schema is not None:
            check = self._compiler.compile(body.schema)
        return MethodSchema(nsid=nsid, type=definition.type, input_encoding=body.encoding if body else None,
                            _params=params, _input=check)

    def method_nsids(self) -> frozenset[str]:
        """The NSIDs of the loaded query and procedure definitions."""
        return frozenset(nsid for nsid, doc in self._docs.items()
                         if isinstance(doc.defs.get("main"), (QueryDef, ProcedureDef)))

    # --- validation -----------------------------------------------------------------------------

    def validate_record_key(self, nsid: str, rkey: str) -> None:
        """Check ``rkey`` against the record key type of collection ``nsid`` (spec "Record Key")."""
        key = self._record(nsid)[0].key
        if type(rkey) is not str:
            raise LexiconValidationError("rkey", "must be a string")
        try:
            FORMAT_VALIDATORS["record-key"](rkey)
            if key == "tid":
                FORMAT_VALIDATORS["tid"](rkey)
            elif key == "nsid":
                FORMAT_VALIDATORS["nsid"](rkey)
        except InvalidSyntax as exc:
            raise LexiconValidationError("rkey", f"{rkey!r} is not a valid {key} record key for {nsid} ({exc})") from None
        if key.startswith("literal:") and rkey != key[len("literal:") :]:
            raise LexiconValidationError("rkey", f"must be {key[len('literal:'):]!r} for {nsid}, not {rkey!r}")

    def validate_record(self, nsid: str, record: Any) -> None:
        """Check ``record`` (a data-model value) against the record schema of collection ``nsid``.

        The record's ``$type`` must be ``nsid`` itself (spec: "When to use $type"). Raises
        LexiconValidationError naming the failing path, or LexiconNotFoundError if ``nsid`` is not a
        known record type (see ``has_record_type``).
        """
        check = self._record(nsid)[1]
        if type(record) is not dict:
            raise LexiconValidationError("Record", "must be an object")
        kind = record.get("$type")
        if type(kind) is not str:
            raise LexiconValidationError("Record/$type", "must be a string")
        if kind != nsid:
            raise LexiconValidationError("Record/$type", f"must be {nsid}, not {kind}")
        try:
            check(record)
        except Invalid as exc:
            raise _error("Record", exc) from None

    def validate_object(self, ref: str, value: Any) -> None:
        """Check ``value`` against the object (or record) definition ``ref`` (``nsid#name``)."""
        nsid, _, name = ref.partition("#")
        uri = f"{nsid}#{name or 'main'}"
        if self.get_def(uri) is None:
            raise LexiconNotFoundError(f"no loaded Lexicon defines {ref!r}")
        check = self._compiler.resolve(uri, uri, _OBJECT_KINDS)
        try:
            check(value)
        except Invalid as exc:
            raise _error("Object", exc) from None
