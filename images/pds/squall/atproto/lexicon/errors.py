"""Errors of Lexicon schema loading and record validation (https://atproto.com/specs/lexicon)."""

from __future__ import annotations

from ..errors import AtprotoError


class LexiconSchemaError(AtprotoError):
    """A Lexicon document (or a set of them) that is malformed or whose references do not resolve."""


class LexiconNotFoundError(LexiconSchemaError):
    """A record type or definition that no loaded Lexicon describes."""


class LexiconValidationError(AtprotoError):
    """Data that does not match its Lexicon schema.

    ``path`` names where the problem is, rooted at ``Record`` (or ``Object``, or a method's ``Params``
    or ``Input``) with ``/`` between property names and array indexes, e.g.
    ``Record/embed/images/0/alt``; ``reason`` says what is wrong there. The message is both, e.g. ``Record/text must not be longer than 300 graphemes``.
    """

    def __init__(self, path: str, reason: str, format: str | None = None):
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason
        self.format = format  # the string format (``handle``, ``did`` …) the value failed, if that failed
