"""The layering rules of docs/ARCHITECTURE.md, checked on the source so that a change that breaks
them fails here rather than in review:

* SQL text lives only in the store layer (``squall.store``), migrations included;
* the domain packages never import the web layer (``squall.xrpc``);
* ``squall`` has no import cycle among the imports that run (``if TYPE_CHECKING:`` blocks never do).

Each rule is a function over a source tree, and each is also run on a small tree made to break it,
so none of these checks can pass by seeing nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PDS_ROOT = Path(__file__).resolve().parents[1] / "images" / "pds"

STORE_PACKAGES = ("squall.store",)
DOMAIN_PACKAGES = ("accounts", "repo", "identity", "blobs", "firehose", "auth", "store", "oauth", "proxy",
                   "relays")
WEB_PACKAGE = "squall.xrpc"

# A string literal that is a SQL statement: a statement keyword followed by what that statement
# needs (so prose such as "Create an account" or the repo action "create" is not mistaken for SQL).
SQL_STATEMENT = re.compile(
    r"\b(SELECT\b[\s\S]*\bFROM\b|SELECT\s+(MAX|MIN|COUNT|1)\b|INSERT\s+(OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b"
    r"|DELETE\s+FROM\b|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)\b|REPLACE\s+INTO\b|PRAGMA\s+\w+)"
)


# -- reading a source tree ---------------------------------------------------------------------------


def modules(root: Path, package: str = "squall") -> dict[str, tuple[Path, bool]]:
    """module name → (file, is_package) for every module of ``package`` under ``root``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, is_package: bool, known: set[str], *, runtime_only: bool) -> set[str]:
    """The squall modules that ``name`` imports, anywhere in the file (function-local imports too).
    ``runtime_only`` skips ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime_only and _is_type_checking_block(node):
            for child in getattr(node, "orelse", []):
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_known_prefix(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, is_package, node.level, node.module)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            if submodules and len(submodules) == len(node.names):
                found.update(submodules)  # `from . import web` needs web, not the package's body
            else:
                found.update(_known_prefix(base, known))
                found.update(submodules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # A module's own ancestors are initialised before it runs; importing them is no dependency.
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return found - ancestors - {name}


def _absolute(name: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = name.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _known_prefix(target: str, known: set[str]) -> set[str]:
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return {candidate}
    return set()


# -- the rules ------------------------------------------------------------------------------------------


def sql_outside_store(root: Path, package: str = "squall") -> list[str]:
    """``file:line: text`` for every SQL statement literal outside the store packages."""
    stores = tuple(store.replace("squall", package, 1) for store in STORE_PACKAGES)
    found = []
    for name, (path, _) in modules(root, package).items():
        if any(name == store or name.startswith(store + ".") for store in stores):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            else:
                continue
            if SQL_STATEMENT.search(text):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {text.strip()[:80]!r}")
    return sorted(set(found))


def domain_imports_of_web(root: Path, package: str = "squall") -> list[str]:
    """``module → web module`` for every import of the web layer from a domain package (type-only
    imports included: the domain must not even name web types)."""
    mods = modules(root, package)
    known = set(mods)
    domain = tuple(f"{package}.{d}" for d in DOMAIN_PACKAGES)
    web = WEB_PACKAGE.replace("squall", package, 1)
    found = []
    for name, (path, is_package) in mods.items():
        if not any(name == d or name.startswith(d + ".") for d in domain):
            continue
        for target in imports(name, path, is_package, known, runtime_only=False):
            if target == web or target.startswith(web + "."):
                found.append(f"{name} → {target}")
    return sorted(found)


def import_cycles(root: Path, package: str = "squall") -> list[list[str]]:
    """The strongly connected components (size > 1) of the runtime import graph."""
    mods = modules(root, package)
    known = set(mods)
    graph = {name: imports(name, path, is_pkg, known, runtime_only=True) for name, (path, is_pkg) in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred nodes, recursion is fine
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


# -- the project obeys them --------------------------------------------------------------------------


def test_the_tree_is_read():
    mods = modules(PDS_ROOT)
    assert {"squall.app", "squall.store.db", "squall.xrpc.dispatch", "squall.repo.writer"} <= set(mods)
    assert len(mods) > 80


def test_no_sql_outside_the_store_layer():
    assert sql_outside_store(PDS_ROOT) == []


def test_domain_packages_do_not_import_the_web_layer():
    assert domain_imports_of_web(PDS_ROOT) == []


def test_no_import_cycles():
    assert import_cycles(PDS_ROOT) == []


# -- and each check can fail ---------------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [p for p in (tmp_path / "pkg").rglob("*") if p.is_dir()] + [tmp_path / "pkg"]:
        (directory / "__init__.py").touch()
    return tmp_path


def test_sql_check_finds_a_statement_in_a_handler(tmp_path):
    root = _tree(tmp_path, {
        "xrpc/handler.py": 'def f(db, did):\n    return db.fetchone(f"SELECT handle FROM account WHERE did = ?", (did,))\n',
        "store/accounts.py": 'Q = "SELECT did FROM account"\n',  # allowed: the store layer
        "repo/actions.py": 'CREATE = "create"\nTEXT = "Update the profile, then delete it"\n',  # not SQL
    })
    found = sql_outside_store(root, "pkg")
    assert len(found) == 1 and found[0].startswith("pkg/xrpc/handler.py:2")


@pytest.mark.parametrize("statement", [
    "INSERT INTO blob (cid) VALUES (?)", "UPDATE account SET handle = ?", "DELETE FROM record WHERE uri = ?",
    "CREATE TABLE t (a)", "INSERT OR IGNORE INTO t VALUES (1)", "SELECT MAX(seq) AS s FROM repo_seq", "PRAGMA user_version",
])
def test_sql_pattern_knows_each_statement(statement):
    assert SQL_STATEMENT.search(statement)


def test_layering_check_finds_a_domain_module_importing_the_web_layer(tmp_path):
    root = _tree(tmp_path, {
        "xrpc/errors.py": "class E(Exception): pass\n",
        "repo/writer.py": "from ..xrpc.errors import E\n",
        "accounts/signup.py": "def f():\n    from pkg.xrpc import errors\n",  # function-local counts
        "blobs/service.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..xrpc.errors import E\n",
        "xrpc/handler.py": "from ..repo import writer\n",  # the web layer may import the domain
    })
    found = domain_imports_of_web(root, "pkg")
    assert found == ["pkg.accounts.signup → pkg.xrpc.errors", "pkg.blobs.service → pkg.xrpc.errors",
                     "pkg.repo.writer → pkg.xrpc.errors"]


def test_cycle_check_finds_a_cycle_and_ignores_type_only_imports(tmp_path):
    root = _tree(tmp_path, {
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .c import g\n",  # a lazy import still closes a cycle
        "c.py": "from .a import x\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import T\n",
        "e.py": "from .d import y\n",
        "sub/m.py": "from . import n\n",  # a package's own submodules: no edge to the package
        "sub/n.py": "from .. import sub\n",
    })
    assert import_cycles(root, "pkg") == [["pkg.a", "pkg.b", "pkg.c"]]
