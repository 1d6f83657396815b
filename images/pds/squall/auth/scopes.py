"""atproto OAuth permission scopes (https://atproto.com/specs/permission): parsing, validation,
matching, and the plain words the consent and account pages show. Pure: no I/O, no web, no SQL.

A scope string is ``resource[:positional][?name=value&…]``; the positional part is shorthand for
the resource's main parameter (``repo:app.bsky.feed.post`` is ``repo?collection=app.bsky.feed.post``).

    repo:<collection>[?action=create|update|delete …]   collection: an NSID or *
    rpc:<lxm>?aud=<did[#service]>|*                     lxm: an NSID or * (not both wildcards)
    blob:<mime pattern>                                 image/png, image/*, */*
    account:<email|repo|status>[?action=read|manage]
    identity:<handle|*>
    include:<nsid>[?aud=…]                              a permission set (resolved elsewhere)

plus the static scopes ``atproto``, ``transition:generic``, ``transition:chat.bsky`` and
``transition:email``. ``Permissions`` answers the questions the resource server asks
(``allows_repo`` …) and names the scope that is missing when the answer is no.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Union
from urllib.parse import parse_qsl, quote

STATIC_SCOPES = ("atproto", "transition:generic", "transition:chat.bsky", "transition:email")
RESOURCES = ("repo", "rpc", "blob", "account", "identity", "include")
REPO_ACTIONS = ("create", "update", "delete")
ACCOUNT_ATTRS = ("email", "repo", "status")
ACCOUNT_ACTIONS = ("read", "manage")
IDENTITY_ATTRS = ("handle", "*")
MAX_SCOPE_LENGTH = 2048
MAX_VALUES = 64

_NSID = re.compile(r"^[a-zA-Z]([a-zA-Z0-9-]{0,62})?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})?)+$")
_MIME_PART = r"[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]{0,126}"
_MIME = re.compile(rf"^(\*/\*|{_MIME_PART}/\*|{_MIME_PART}/{_MIME_PART})$")
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_FRAGMENT = re.compile(r"^[a-zA-Z0-9._~-]{1,64}$")


class ScopeError(ValueError):
    """A scope string that is not valid permission syntax."""


def is_nsid(value: str) -> bool:
    if len(value) > 317 or not _NSID.match(value):
        return False
    parts = value.split(".")
    return len(parts) >= 3 and not parts[0][0].isdigit() and re.match(r"^[a-zA-Z][a-zA-Z0-9]*$", parts[-1]) is not None


def is_audience(value: str) -> bool:
    """``*``, a DID, or a DID with a service fragment (``did:web:api.bsky.app#bsky_appview``)."""
    if value == "*":
        return True
    did, sep, fragment = value.partition("#")
    return bool(_DID.match(did)) and len(did) <= 2048 and (not sep or bool(_FRAGMENT.match(fragment)))


# -- the parsed forms -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoPermission:
    collections: tuple[str, ...]
    actions: tuple[str, ...] = REPO_ACTIONS

    def matches(self, collection: str, action: str) -> bool:
        return action in self.actions and ("*" in self.collections or collection in self.collections)

    def __str__(self) -> str:
        query = [] if self.actions == REPO_ACTIONS else [("action", a) for a in self.actions]
        return _format("repo", "collection", self.collections, query)


@dataclass(frozen=True)
class RpcPermission:
    lxms: tuple[str, ...]
    aud: str

    def matches(self, lxm: str, aud: str) -> bool:
        return ("*" in self.lxms or lxm in self.lxms) and audience_matches(self.aud, aud)

    def __str__(self) -> str:
        return _format("rpc", "lxm", self.lxms, [("aud", self.aud)])


@dataclass(frozen=True)
class BlobPermission:
    accept: tuple[str, ...]

    def matches(self, mime: str) -> bool:
        return any(mime_matches(pattern, mime) for pattern in self.accept)

    def __str__(self) -> str:
        return _format("blob", "accept", self.accept, [])


@dataclass(frozen=True)
class AccountPermission:
    attr: str
    action: str = "read"

    def matches(self, attr: str, action: str) -> bool:
        # Managing an attribute includes reading it.
        return attr == self.attr and (action == self.action or self.action == "manage")

    def __str__(self) -> str:
        return _format("account", "attr", (self.attr,), [] if self.action == "read" else [("action", self.action)])


@dataclass(frozen=True)
class IdentityPermission:
    attr: str

    def matches(self, attr: str) -> bool:
        return self.attr == "*" or self.attr == attr

    def __str__(self) -> str:
        return _format("identity", "attr", (self.attr,), [])


@dataclass(frozen=True)
class IncludeScope:
    nsid: str
    aud: str | None = None

    def __str__(self) -> str:
        return _format("include", "nsid", (self.nsid,), [] if self.aud is None else [("aud", self.aud)])


@dataclass(frozen=True)
class StaticScope:
    name: str

    def __str__(self) -> str:
        return self.name


Permission = Union[RepoPermission, RpcPermission, BlobPermission, AccountPermission, IdentityPermission]
Scope = Union[Permission, IncludeScope, StaticScope]


def _format(resource: str, main: str, values: tuple[str, ...], query: list[tuple[str, str]]) -> str:
    """The canonical text: one main value goes positional, several go to the query."""
    if len(values) == 1:
        head = f"{resource}:{values[0]}"
    else:
        head = resource
        query = [(main, v) for v in values] + query
    if not query:
        return head
    return head + "?" + "&".join(f"{k}={quote(v, safe='*/:.')}" for k, v in query)


def mime_matches(pattern: str, mime: str) -> bool:
    mime = mime.split(";", 1)[0].strip().lower()
    pattern = pattern.lower()
    if pattern == "*/*":
        return "/" in mime
    if pattern.endswith("/*"):
        return mime.startswith(pattern[:-1]) and len(mime) > len(pattern) - 1
    return mime == pattern


def audience_matches(granted: str, asked: str) -> bool:
    """``*`` grants every audience; a bare DID grants each of its services; else an exact match."""
    if granted == "*":
        return True
    if granted == asked:
        return True
    return "#" not in granted and asked.partition("#")[0] == granted


# -- parsing --------------------------------------------------------------------------------------


def parse(text: str) -> Scope:
    """One scope token → its parsed form; ScopeError says what is wrong."""
    if not isinstance(text, str) or not text or len(text) > MAX_SCOPE_LENGTH or any(c.isspace() for c in text):
        raise ScopeError(f"Invalid scope {text!r}")
    if text in STATIC_SCOPES:
        return StaticScope(text)
    head, _, query = text.partition("?")
    resource, colon, positional = head.partition(":")
    if resource not in RESOURCES:
        raise ScopeError(f"Unknown scope {text!r}")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=MAX_VALUES)
    except ValueError:
        raise ScopeError(f"Invalid query in scope {text!r}") from None
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    main = {"repo": "collection", "rpc": "lxm", "blob": "accept", "account": "attr", "identity": "attr",
            "include": "nsid"}[resource]
    if colon:
        if not positional:
            raise ScopeError(f"Empty value after {resource}: in {text!r}")
        if main in params:
            raise ScopeError(f"{text!r} gives {main} both positionally and as a parameter")
        params[main] = [positional]
    return _BUILDERS[resource](text, params)


def _take(text: str, params: dict[str, list[str]], allowed: Iterable[str]) -> None:
    unknown = set(params) - set(allowed)
    if unknown:
        raise ScopeError(f"Unknown parameter {sorted(unknown)[0]!r} in scope {text!r}")


def _one(text: str, params: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise ScopeError(f"{name} may appear only once in scope {text!r}")
    return values[0]


def _dedupe(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _repo(text: str, params: dict[str, list[str]]) -> RepoPermission:
    _take(text, params, ("collection", "action"))
    collections = _dedupe(params.get("collection", []))
    if not collections:
        raise ScopeError(f"repo scope {text!r} names no collection")
    for c in collections:
        if c != "*" and not is_nsid(c):
            raise ScopeError(f"repo scope {text!r}: {c!r} is not an NSID or *")
    if "*" in collections:
        collections = ("*",)
    actions = _dedupe(params.get("action", REPO_ACTIONS))
    for a in actions:
        if a not in REPO_ACTIONS:
            raise ScopeError(f"repo scope {text!r}: action must be create, update or delete")
    return RepoPermission(collections, tuple(a for a in REPO_ACTIONS if a in actions))


def _rpc(text: str, params: dict[str, list[str]]) -> RpcPermission:
    _take(text, params, ("lxm", "aud"))
    lxms = _dedupe(params.get("lxm", []))
    if not lxms:
        raise ScopeError(f"rpc scope {text!r} names no method")
    for m in lxms:
        if m != "*" and not is_nsid(m):
            raise ScopeError(f"rpc scope {text!r}: {m!r} is not an NSID or *")
    aud = _one(text, params, "aud")
    if aud is None:
        raise ScopeError(f"rpc scope {text!r} needs an aud (a service DID, or *)")
    if not is_audience(aud):
        raise ScopeError(f"rpc scope {text!r}: aud must be a DID, a DID#service or *")
    if "*" in lxms:
        if aud == "*":
            raise ScopeError(f"rpc scope {text!r}: method and audience cannot both be *")
        lxms = ("*",)
    return RpcPermission(lxms, aud)


def _blob(text: str, params: dict[str, list[str]]) -> BlobPermission:
    _take(text, params, ("accept",))
    accept = _dedupe(a.lower() for a in params.get("accept", []))
    if not accept:
        raise ScopeError(f"blob scope {text!r} names no MIME type")
    for a in accept:
        if not _MIME.match(a):
            raise ScopeError(f"blob scope {text!r}: {a!r} is not a MIME type or pattern")
    return BlobPermission(accept)


def _account(text: str, params: dict[str, list[str]]) -> AccountPermission:
    _take(text, params, ("attr", "action"))
    attr = _one(text, params, "attr")
    if attr not in ACCOUNT_ATTRS:
        raise ScopeError(f"account scope {text!r}: attribute must be email, repo or status")
    action = _one(text, params, "action", "read")
    if action not in ACCOUNT_ACTIONS:
        raise ScopeError(f"account scope {text!r}: action must be read or manage")
    return AccountPermission(attr, action)  # type: ignore[arg-type]


def _identity(text: str, params: dict[str, list[str]]) -> IdentityPermission:
    _take(text, params, ("attr",))
    attr = _one(text, params, "attr")
    if attr not in IDENTITY_ATTRS:
        raise ScopeError(f"identity scope {text!r}: attribute must be handle or *")
    return IdentityPermission(attr)  # type: ignore[arg-type]


def _include(text: str, params: dict[str, list[str]]) -> IncludeScope:
    _take(text, params, ("nsid", "aud"))
    nsid = _one(text, params, "nsid")
    if nsid is None or not is_nsid(nsid):
        raise ScopeError(f"include scope {text!r} must name a permission set by NSID")
    aud = _one(text, params, "aud")
    if aud is not None and (aud == "*" or not is_audience(aud)):
        raise ScopeError(f"include scope {text!r}: aud must be a DID or DID#service")
    return IncludeScope(nsid, aud)


_BUILDERS: dict[str, Any] = {"repo": _repo, "rpc": _rpc, "blob": _blob, "account": _account,
                             "identity": _identity, "include": _include}


def split(scope: Any) -> list[str]:
    """The tokens of a space-separated scope parameter, in order, without repeats."""
    if not isinstance(scope, str):
        return []
    return list(dict.fromkeys(s for s in scope.split(" ") if s))


# -- permission sets (lexicons of type permission-set) -------------------------------------------


class PermissionSetError(ValueError):
    """A permission-set lexicon that cannot be used."""


@dataclass(frozen=True)
class PermissionSet:
    nsid: str
    title: str | None
    detail: str | None
    scopes: tuple[str, ...]  # the concrete permissions it grants, as scope strings


def _namespace_of(nsid: str) -> str:
    return nsid.rsplit(".", 1)[0]


def _within(namespace: str, nsid: str) -> bool:
    return nsid.startswith(namespace + ".")


def expand_permission_set(include: IncludeScope, doc: Any) -> PermissionSet:
    """The permissions a permission-set lexicon grants, as the spec limits them: only ``repo``
    and ``rpc`` resources, only for collections and methods inside the set's own NSID namespace;
    an ``rpc`` entry takes the include's ``aud`` when it says ``inheritAud``. Entries outside
    these limits are dropped (never widened)."""
    if not isinstance(doc, dict) or doc.get("lexicon") != 1 or doc.get("id") != include.nsid:
        raise PermissionSetError(f"{include.nsid} is not a lexicon document with that id")
    main = (doc.get("defs") or {}).get("main") if isinstance(doc.get("defs"), dict) else None
    if not isinstance(main, dict) or main.get("type") != "permission-set":
        raise PermissionSetError(f"{include.nsid} is not a permission set")
    entries = main.get("permissions")
    if not isinstance(entries, list) or len(entries) > MAX_VALUES:
        raise PermissionSetError(f"{include.nsid} has no list of permissions")
    namespace = _namespace_of(include.nsid)
    out: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("type") != "permission":
            continue
        resource = entry.get("resource")
        if resource == "repo":
            collections = [c for c in _strings(entry.get("collection")) if _within(namespace, c) and is_nsid(c)]
            actions = [a for a in _strings(entry.get("action")) if a in REPO_ACTIONS] or list(REPO_ACTIONS)
            if collections:
                out.append(str(RepoPermission(_dedupe(collections), tuple(a for a in REPO_ACTIONS if a in actions))))
        elif resource == "rpc":
            lxms = [m for m in _strings(entry.get("lxm")) if _within(namespace, m) and is_nsid(m)]
            aud = include.aud if entry.get("inheritAud") is True else entry.get("aud")
            if lxms and isinstance(aud, str) and is_audience(aud):
                out.append(str(RpcPermission(_dedupe(lxms), aud)))
    return PermissionSet(nsid=include.nsid, title=_text(main.get("title")), detail=_text(main.get("detail")),
                         scopes=tuple(dict.fromkeys(out)))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)][:MAX_VALUES]
    return []


def _text(value: Any) -> str | None:
    return value.strip()[:500] if isinstance(value, str) and value.strip() else None


# -- what a grant allows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Missing:
    """The answer "no": the scope that would have allowed the call."""

    scope: str

    @property
    def message(self) -> str:
        return f'Missing required scope "{self.scope}"'


class Permissions:
    """The permissions of one granted scope string (``include:`` already expanded at grant time;
    an unparsable token grants nothing)."""

    def __init__(self, scope: str):
        self.scope = scope
        self.static: set[str] = set()
        self.granted: list[Permission] = []
        for token in split(scope):
            try:
                parsed = parse(token)
            except ScopeError:
                continue
            if isinstance(parsed, StaticScope):
                self.static.add(parsed.name)
            elif not isinstance(parsed, IncludeScope):
                self.granted.append(parsed)

    @property
    def generic(self) -> bool:
        return "transition:generic" in self.static

    @property
    def chat(self) -> bool:
        return "transition:chat.bsky" in self.static

    def _any(self, kind: type, *args: str) -> bool:
        return any(isinstance(p, kind) and p.matches(*args) for p in self.granted)

    def repo(self, collection: str, action: str) -> Missing | None:
        if self.generic or self._any(RepoPermission, collection, action):
            return None
        return Missing(str(RepoPermission((collection,), (action,))))

    def blob(self, mime: str) -> Missing | None:
        if self.generic or self._any(BlobPermission, mime):
            return None
        return Missing(str(BlobPermission((mime.split(";", 1)[0].strip().lower() or "*/*",))))

    def rpc(self, lxm: str, aud: str) -> Missing | None:
        is_chat = lxm.startswith("chat.bsky.")
        if self.generic and (not is_chat or self.chat):
            return None
        if self._any(RpcPermission, lxm, aud):
            return None
        return Missing(str(RpcPermission((lxm,), aud)))

    def account(self, attr: str, action: str = "read") -> Missing | None:
        if attr == "email" and action == "read" and "transition:email" in self.static:
            return None
        if self._any(AccountPermission, attr, action):
            return None
        return Missing(str(AccountPermission(attr, action)))

    def identity(self, attr: str) -> Missing | None:
        if self._any(IdentityPermission, attr):
            return None
        return Missing(str(IdentityPermission(attr)))


# -- plain words --------------------------------------------------------------------------------------

_STATIC_WORDS = {
    "atproto": "Know which account you are (your DID and handle)",
    "transition:generic": "Read and write your posts, likes, follows and other records, and upload media "
                          "(everything except managing your account itself)",
    "transition:chat.bsky": "Read and send your direct messages",
    "transition:email": "See your e-mail address",
}
_ACTION_WORDS = {"create": "create", "update": "change", "delete": "delete"}


def _list(words: Iterable[str]) -> str:
    items = list(words)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def describe(scope: str | Scope) -> str:
    """One scope in plain words, for the consent page and the account page."""
    parsed: Scope
    if isinstance(scope, str):
        try:
            parsed = parse(scope)
        except ScopeError:
            return scope
    else:
        parsed = scope
    if isinstance(parsed, StaticScope):
        return _STATIC_WORDS[parsed.name]
    if isinstance(parsed, RepoPermission):
        what = "records of every kind" if "*" in parsed.collections else "records of type " + _list(parsed.collections)
        return f"{_list(_ACTION_WORDS[a] for a in parsed.actions).capitalize()} {what} in your repository"
    if isinstance(parsed, RpcPermission):
        method = "any method" if "*" in parsed.lxms else _list(parsed.lxms)
        service = "any service" if parsed.aud == "*" else parsed.aud
        return f"Call {method} on {service} on your behalf"
    if isinstance(parsed, BlobPermission):
        kinds = ["any file" if a == "*/*" else (f"{a[:-2]} files" if a.endswith("/*") else f"{a} files")
                 for a in parsed.accept]
        return f"Upload {_list(kinds)}"
    if isinstance(parsed, AccountPermission):
        noun = {"email": "your e-mail address", "repo": "your repository as a whole (import)",
                "status": "your account's status (activate, deactivate)"}[parsed.attr]
        return f"{'Manage' if parsed.action == 'manage' else 'See'} {noun}"
    if isinstance(parsed, IdentityPermission):
        return "Change your handle" if parsed.attr == "handle" else "Change your identity (handle, DID document and keys)"
    return f"The permissions of the set {parsed.nsid}"
