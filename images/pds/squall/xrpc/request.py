"""What a handler receives: the app context, the caller, parameters and the body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
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
    params: QueryParams
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

    # -- query parameters ----------------------------------------------------------------------

    def str_param(self, name: str, *, required: bool = False, default: str | None = None,
                  max_length: int = 8192) -> str | None:
        values = self.params.getlist(name)
        if not values:
            if required:
                raise InvalidRequest(f"Error: Params must have the property \"{name}\"")
            return default
        if len(values) > 1:
            raise InvalidRequest(f"Error: Params property \"{name}\" must appear once")
        value = values[0]
        if len(value) > max_length:
            raise InvalidRequest(f"Error: Params property \"{name}\" is too long")
        return value

    def int_param(self, name: str, *, default: int | None = None, minimum: int | None = None,
                  maximum: int | None = None, required: bool = False) -> int | None:
        raw = self.str_param(name, required=required)
        if raw is None:
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            raise InvalidRequest(f"Error: Params property \"{name}\" must be an integer") from None
        if minimum is not None and value < minimum:
            raise InvalidRequest(f"Error: Params property \"{name}\" can not be less than {minimum}")
        if maximum is not None and value > maximum:
            raise InvalidRequest(f"Error: Params property \"{name}\" can not be greater than {maximum}")
        return value

    def bool_param(self, name: str, *, default: bool = False) -> bool:
        raw = self.str_param(name)
        if raw is None:
            return default
        if raw in ("true", "1"):
            return True
        if raw in ("false", "0"):
            return False
        raise InvalidRequest(f"Error: Params property \"{name}\" must be a boolean")

    def list_param(self, name: str, *, max_items: int = 100) -> list[str]:
        values = self.params.getlist(name)
        if len(values) > max_items:
            raise InvalidRequest(f"Error: Params property \"{name}\" has too many items")
        return values

    # -- JSON body ---------------------------------------------------------------------------------

    def field(self, name: str, kind: type | tuple[type, ...], *, required: bool = True, default: Any = None) -> Any:
        """A top-level property of the JSON input, type-checked (bool is not an int here)."""
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
