"""Tuning knobs outside the reference's ``PDS_*`` namespace (``SQUALL_<FEATURE>_*`` variables).

A feature declares its knobs as a frozen dataclass of numbers with safe defaults; ``read_tuning``
fills it from the environment. Like the ``PDS_*`` settings, a malformed value or an unknown name
under the feature's prefix stops the start with a message naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Mapping, TypeVar

T = TypeVar("T")


class TuningError(ValueError):
    """A SQUALL_* variable that is unknown or not a usable number; the message names it."""


def read_tuning(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None, *,
                zero_allowed: frozenset[str] = frozenset()) -> T:
    env = os.environ if environ is None else environ
    known = {prefix + f.name.upper(): f for f in fields(cls)}  # type: ignore[arg-type]
    for name in env:
        if name.startswith(prefix) and name not in known:
            raise TuningError(f"{name}: unknown setting (known: {', '.join(sorted(known))})")
    values: dict[str, float | int] = {}
    for name, f in known.items():
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        kind = int if f.type in (int, "int") else float
        try:
            value = kind(raw)
        except ValueError:
            raise TuningError(f"{name}: {raw!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < 0 or (value == 0 and f.name not in zero_allowed):
            raise TuningError(f"{name}: must be greater than zero")
        values[f.name] = value
    return cls(**values)
