"""Who may call a method: the auth policies an XRPC method declares and the verifier enforces.

A plain enum below the web layer, so that ``squall.auth`` (the verifier) and ``squall.xrpc``
(the registry that declares policies) both depend on it and not on each other.
"""

from __future__ import annotations

import enum


class Auth(enum.Enum):
    NONE = "none"  # public
    OPTIONAL = "optional"  # a valid access token is used when present; a bad one is refused
    ACCESS = "access"  # any access token: full session or app password
    # … or a taken-down account's session (appeals: createReport, getPreferences)
    ACCESS_OR_TAKENDOWN = "access_or_takendown"
    PRIVILEGED = "privileged"  # full session or privileged app password
    FULL = "full"  # full session only (no app password)
    REFRESH = "refresh"  # refresh token
    ADMIN = "admin"  # admin credential only; user tokens are refused
    ACCESS_OR_ADMIN = "access_or_admin"
