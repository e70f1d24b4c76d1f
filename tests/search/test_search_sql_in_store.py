"""The campaign store owns its SQL: no module of the package but ``search/store.py`` passes SQL
text to ``execute``/``executemany``/``executescript``, nor an SQL condition to ``Store.programs``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import optdisco

PACKAGE = Path(optdisco.__file__).parent
STORE = PACKAGE / "search" / "store.py"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK)\b"
                 r"|\b(phase|status|cache_of|seq|fitness)\s*(=|IS\b|IN\b)", re.IGNORECASE)
CALLS = {"execute", "executemany", "executescript", "programs"}


def _strings(node: ast.AST) -> list[str]:
    """Every string constant inside ``node`` (f-string parts included)."""
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def sql_lines(source: str) -> list[int]:
    """Line of each call ``X.execute(...)`` (or another name in CALLS) in ``source`` whose
    arguments hold a string with SQL in it."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CALLS
            and any(SQL.search(s) for a in node.args + [k.value for k in node.keywords] for s in _strings(a))]


def sql_call_sites(path: Path) -> list[str]:
    """``file:line`` of each SQL-carrying call in the module at ``path``."""
    return [f"{path.relative_to(PACKAGE)}:{line}" for line in sql_lines(path.read_text())]


def test_the_checker_sees_sql_in_a_call():
    src = ("def f(store, key):\n    store.db.execute('SELECT 1')\n"
           "    store.programs(\"phase = 'search'\")\n    store.get_meta(key)\n"
           "    store.db.execute(f'UPDATE t SET a = {key}')\n")
    assert sql_lines(src) == [2, 3, 5]


def test_no_sql_outside_the_store():
    sites = [site for path in sorted(PACKAGE.rglob("*.py")) if path != STORE for site in sql_call_sites(path)]
    assert sites == [], f"SQL outside search/store.py: {sites}"
    assert sql_call_sites(STORE), "the checker finds the store's own statements"
