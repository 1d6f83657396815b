"""Error types of the protocol core. Callers catch these, never bare exceptions."""


class AtprotoError(ValueError):
    """Base of every error the core raises on bad input."""


class DecodeError(AtprotoError):
    """Bytes or values that are not valid DAG-CBOR, CIDs, CARs or atproto JSON."""


class InvalidSyntax(AtprotoError):
    """A string that does not match an atproto syntax (handle, DID, NSID, …)."""


class SignatureError(AtprotoError):
    """A key, signature or did:key that cannot be used."""
