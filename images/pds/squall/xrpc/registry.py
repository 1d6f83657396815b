"""The XRPC registry: every method the PDS serves, declared as data.

Each namespace module (``squall.xrpc.server``, ``.repo``, ``.sync`` …) exposes ``METHODS``, a
tuple of ``Method`` values: NSID, kind, auth policy, handler, declared errors, input limits and
rate limits.
The registry is therefore the table of contents of the API, and the dispatcher
(``squall.xrpc.dispatch``) is the only place that turns HTTP into calls.

Each method's Lexicon, when the bundle has one (the com.atproto methods; see
``squall.atproto.lexicon``), is compiled here once, as the method is registered: the dispatcher
checks every call's parameters and JSON input against it before the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Literal

from ..atproto import syntax
from ..atproto.lexicon import Lexicons, MethodSchema, bundled_documents
from ..auth.policy import Auth
from ..ratelimit import RateLimit

__all__ = ["Auth", "Handler", "Kind", "Method", "Registry"]

if TYPE_CHECKING:
    from .request import XrpcRequest


Kind = Literal["query", "procedure"]
Handler = Callable[["XrpcRequest"], Awaitable[Any]]

# Where Squall deliberately accepts more than a published Lexicon says, the bundled document is kept
# as published and the property's ``format`` is dropped here when the registry loads it, with the
# reason; the handler then checks the value itself. (method NSID, "parameters" or "input", property)
LOOSENED_FORMATS: dict[tuple[str, str, str], str] = {
    ("com.atproto.server.getServiceAuth", "parameters", "aud"):
        "the audience may be a service reference, did#service_id (as clients send for an appview); "
        "the handler checks the DID and the fragment",
}

DEFAULT_JSON_LIMIT = 1024 * 1024  # reference caps JSON bodies at 100 KB for most routes; records may be larger


@dataclass(frozen=True)
class Method:
    nsid: str
    kind: Kind
    handler: Handler
    auth: Auth = Auth.NONE
    errors: tuple[str, ...] = ()
    # Procedures: "json" parses a JSON object body; "bytes" hands the raw stream to the handler
    # (uploadBlob, importRepo); None means the method takes no input.
    input: Literal["json", "bytes"] | None = "json"
    max_body: int = DEFAULT_JSON_LIMIT
    # Enforced by the dispatcher on top of the global per-IP limit (squall.ratelimit).
    rate_limits: tuple[RateLimit, ...] = ()
    # Points one call takes from its caller-keyed limits: a number, or a function of the JSON body.
    rate_cost: int | Callable[[Any], int] = 1

    def __post_init__(self) -> None:
        syntax.ensure_valid_nsid(self.nsid)


@dataclass
class Registry:
    _methods: dict[str, Method] = field(default_factory=dict)
    _schemas: dict[str, MethodSchema] = field(default_factory=dict)
    # The method Lexicons; the bundled set unless given (loaded when the first method is added).
    lexicons: Lexicons | None = None

    def add(self, method: Method) -> None:
        if method.nsid in self._methods:
            raise ValueError(f"XRPC method {method.nsid} registered twice")
        if self.lexicons is None:
            self.lexicons = method_lexicons()
        definition = self.lexicons.get_def(method.nsid)
        if definition is not None and definition.type in ("query", "procedure"):
            schema = self.lexicons.method(method.nsid)
            if schema.type != method.kind:
                raise ValueError(f"XRPC method {method.nsid} is registered as a {method.kind}, "
                                 f"its Lexicon says {schema.type}")
            self._schemas[method.nsid] = schema
        self._methods[method.nsid] = method

    def extend(self, methods: Iterable[Method]) -> None:
        for method in methods:
            self.add(method)

    def get(self, nsid: str) -> Method | None:
        return self._methods.get(nsid)

    def schema(self, nsid: str) -> MethodSchema | None:
        """The compiled Lexicon of a registered method; None for a method the bundle does not describe."""
        return self._schemas.get(nsid)

    def __contains__(self, nsid: str) -> bool:
        return nsid in self._methods

    def nsids(self) -> list[str]:
        return sorted(self._methods)


def method_lexicons() -> Lexicons:
    """The bundled Lexicons with the formats of ``LOOSENED_FORMATS`` dropped."""
    docs = bundled_documents()
    by_id = {doc["id"]: doc for doc in docs}
    for (nsid, where, name) in LOOSENED_FORMATS:
        main = by_id[nsid]["defs"]["main"]
        node = main["parameters"] if where == "parameters" else main["input"]["schema"]
        del node["properties"][name]["format"]
    return Lexicons(docs)
