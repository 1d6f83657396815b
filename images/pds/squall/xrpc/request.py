"""What a handler receives: the app context, the caller, parameters and the body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from .errors import AuthRequired, InvalidRequest

if TYPE_CHECKING:
    from ..auth.verifier import AuthResult
    from ..context import AppContext
    from .registry import Method


@dataclass
class XrpcRequest:
    ctx: "AppContext"
    method: "Method"
    http: Request
    auth: "AuthResult"
    body: Any = None  # parsed JSON object for "json" input; None otherwise
    # The parameters the method's Lexicon declares, already checked by the dispatcher: typed
    # (integer, boolean, a list for an array), with the Lexicon's defaults filled in; a parameter
    # that is neither sent nor defaulted is absent. Empty for a method without a bundled Lexicon.
    # When the method has one, its JSON ``body`` has been checked against the input schema too.
    args: dict[str, Any] = field(default_factory=dict)

    # -- caller ------------------------------------------------------------------------------

    @property
    def did(self) -> str:
        """The authenticated user's DID (handlers with a user auth policy only)."""
        if self.auth.did is None:
            raise AuthRequired()
        return self.auth.did

    # -- Squall's own caps, which the Lexicons do not state (they have checked types and formats) ---

    def capped_param(self, name: str, max_length: int) -> Any:
        """Query parameter ``name`` (a string; None when absent), refused when longer than ``max_length``."""
        value = self.args.get(name)
        if value is not None and len(value) > max_length:
            raise InvalidRequest(f"Error: Params property \"{name}\" is too long")
        return value

    def capped_list_param(self, name: str, max_items: int) -> list[Any]:
        """Array query parameter ``name`` (empty when absent), refused when longer than ``max_items``."""
        values = self.args.get(name, [])
        if len(values) > max_items:
            raise InvalidRequest(f"Error: Params property \"{name}\" has too many items")
        return values

    # -- JSON body ---------------------------------------------------------------------------------

    def capped(self, name: str, max_length: int) -> Any:
        """A string property of the JSON input (None when absent), refused when longer than
        ``max_length``: Squall's own cap, which the Lexicon (that checked the type) does not state."""
        value = self.body.get(name)
        if value is not None and len(value) > max_length:
            raise InvalidRequest(f"Input/{name} is too long (at most {max_length} characters)")
        return value

    def field(self, name: str, kind: type | tuple[type, ...], *, required: bool = True, default: Any = None) -> Any:
        """A top-level property of the JSON input, type-checked (bool is not an int here), for a
        method without a bundled Lexicon (app.bsky.actor.putPreferences)."""
        body = self.body if isinstance(self.body, dict) else {}
        if name not in body or body[name] is None:
            if required:
                raise InvalidRequest(f"Input must have the property \"{name}\"")
            return default
        value = body[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise InvalidRequest(f"Input/{name} must be {_type_name(kinds)}")
        if not isinstance(value, kinds):
            raise InvalidRequest(f"Input/{name} must be {_type_name(kinds)}")
        return value


def _type_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "an array"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
