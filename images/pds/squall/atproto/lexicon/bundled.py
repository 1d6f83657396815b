"""The Lexicons Squall ships: the record types a Bluesky client writes to its PDS, and the
definitions they reference (https://atproto.com/specs/lexicon).

The documents in ``lexicons/`` (one ``<nsid>.json`` each) hold only the schema: types,
constraints, references and knownValues, without descriptions.
"""

from __future__ import annotations

import json
from importlib import resources

from .lexicons import Lexicons


def bundled_documents() -> list[dict]:
    """The bundled Lexicon documents as parsed JSON, in NSID order."""
    folder = resources.files(__package__).joinpath("lexicons")
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            docs.append(json.loads(entry.read_text(encoding="utf-8")))
    return docs


def load_bundled() -> Lexicons:
    """A new ``Lexicons`` with the bundled documents; callers keep the instance (it is not cached)."""
    return Lexicons(bundled_documents())
