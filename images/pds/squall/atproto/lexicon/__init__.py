"""Lexicon schemas and record validation (https://atproto.com/specs/lexicon).

``Lexicons`` holds a set of parsed documents with references resolved across them and validates
records (data-model values) against them; ``load_bundled()`` gives the record Lexicons Squall ships.
"""

from .bundled import bundled_documents, load_bundled
from .errors import LexiconNotFoundError, LexiconSchemaError, LexiconValidationError
from .lexicons import Lexicons
from .schema import LexiconDoc, parse_lexicon_doc
from .validate import grapheme_len

__all__ = [
    "Lexicons",
    "LexiconDoc",
    "LexiconNotFoundError",
    "LexiconSchemaError",
    "LexiconValidationError",
    "bundled_documents",
    "grapheme_len",
    "load_bundled",
    "parse_lexicon_doc",
]
