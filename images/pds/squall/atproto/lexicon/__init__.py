"""Lexicon schemas and record validation (https://atproto.com/specs/lexicon).

``Lexicons`` holds a set of parsed documents with references resolved across them and validates
records (data-model values) and XRPC method inputs against them; ``load_bundled()`` gives the
Lexicons Squall ships (record types, and the com.atproto methods it serves).
"""

from .bundled import bundled_documents, load_bundled
from .errors import LexiconNotFoundError, LexiconSchemaError, LexiconValidationError
from .lexicons import Lexicons, MethodSchema
from .schema import LexiconDoc, parse_lexicon_doc
from .validate import grapheme_len

__all__ = [
    "Lexicons",
    "LexiconDoc",
    "LexiconNotFoundError",
    "LexiconSchemaError",
    "LexiconValidationError",
    "MethodSchema",
    "bundled_documents",
    "grapheme_len",
    "load_bundled",
    "parse_lexicon_doc",
]
