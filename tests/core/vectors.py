"""Readers for the interop vectors in tests/fixtures/interop (see its SOURCE.md).

Import as ``from tests.core.vectors import read_lines, load_json`` (or ``from .vectors import …``
from a test module in tests/core).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "interop"


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else FIXTURES_DIR / path


def read_lines(path: str | Path) -> list[str]:
    """The test cases of a .txt vector file, one per line, NOT trimmed.

    Blank lines and lines whose first character is '#' are skipped; leading and trailing
    spaces are kept because some cases test exactly those. ``path`` is absolute or relative
    to the interop fixtures directory (e.g. "syntax/handle_syntax_valid.txt").
    """
    text = _resolve(path).read_text(encoding="utf-8")
    # Split on "\n" only: str.splitlines would also split on \x0b, \x1c, U+2028, … inside a case.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line for line in lines if line and line[0] != "#"]


def load_json(relpath: str | Path) -> Any:
    """A JSON vector file, absolute or relative to the interop fixtures directory."""
    return json.loads(_resolve(relpath).read_text(encoding="utf-8"))
