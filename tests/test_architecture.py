"""The package's imports point one way: down the layer order, with no cycle across packages.

Every module of ``optdisco`` is read with :mod:`ast` (nothing is imported), every ``import``
and ``from ... import`` that names an optdisco module is resolved to that module, and two
rules are checked against the layer order below (also written at the top of
``docs/architecture.md``):

- an import never points up the order (a module of layer *i* imports only layers <= *i*);
- no import cycle joins modules of different packages; and, inside a package, none but
  the few listed in ``KNOWN_WITHIN_PACKAGE_CYCLES``.

Function-local imports of optdisco modules count: they are still dependencies, only late.
A function-local import of a third-party package (an optional or slow dependency) needs a
comment saying why it is local; the standard library's need none.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "optdisco"

# Lowest first. A module belongs to the longest prefix listed here; what is not listed
# (optdisco/__init__.py, optdisco/cli/, optdisco/catalog.py) is the top layer.
LAYERS: list[tuple[str, ...]] = [
    ("optdisco.errors", "optdisco.userdata", "optdisco.training"),  # leaves: the user-error type, the data
    # directory, and the training-loop companions (batch sizes, zeroth-order gradients; torch only)
    ("optdisco.dsl",),
    ("optdisco.kernels",),
    ("optdisco.discovered",),
    ("optdisco.evaluators",),
    ("optdisco.search",),            # includes optdisco.search.learned
    ("optdisco.validation",),        # reads campaign stores, runs learned optimizers
]
TOP = len(LAYERS)



@dataclass(frozen=True)
class Edge:
    """One import of an optdisco module: ``src`` imports ``dst`` at ``path:line``."""

    src: str
    dst: str
    path: Path
    line: int
    text: str
    local: bool


def module_name(path: Path) -> str:
    """The dotted module name of ``path`` under ``ROOT`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index of ``module``'s layer in ``LAYERS`` (``TOP`` when it is in none)."""
    best, best_len = TOP, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def package_of(module: str, modules: dict[str, Path]) -> str:
    """The package that holds ``module`` (itself when it is a package's ``__init__``)."""
    if modules[module].name == "__init__.py":
        return module
    return module.rpartition(".")[0]


def _resolve(base: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``base`` that is an optdisco module."""
    parts = base.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def _is_local(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If):
            test = node.test
            name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
            if name == "TYPE_CHECKING":
                return True
    return False


def scan(modules: dict[str, Path]) -> tuple[list[Edge], list[str]]:
    """All optdisco-to-optdisco imports, and the function-local imports of third-party
    packages (optional or slow dependencies) that carry no comment saying why.

    ``from X import a`` yields ``X.a`` when that is a module, else ``X``; relative imports
    are resolved against the importing module's package. Imports under
    ``if TYPE_CHECKING:`` are skipped (they never run).
    """
    edges: list[Edge] = []
    uncommented: list[str] = []
    for src, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, filename=str(path))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if _under_type_checking(node, parents):
                continue
            local = _is_local(node, parents)
            text = lines[node.lineno - 1].strip()
            targets: list[str] = []
            external: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "optdisco":
                        targets.append(alias.name)
                    else:
                        external.append(alias.name)
            else:
                if node.level:
                    pkg = src if is_pkg else src.rpartition(".")[0]
                    base_parts = pkg.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != "optdisco":
                    external.append(base)
                else:
                    for alias in node.names:
                        sub = f"{base}.{alias.name}"
                        targets.append(sub if sub in modules else base)
            for target in targets:
                dst = _resolve(target, modules)
                if dst is not None and dst != src:
                    edges.append(Edge(src, dst, path, node.lineno, text, local))
            optional = [m for m in external if m.split(".")[0] not in sys.stdlib_module_names]
            if local and optional and not _commented(lines, node.lineno):
                rel = path.relative_to(ROOT.parent)
                uncommented.append(f"{rel}:{node.lineno}: {text}")
    return edges, uncommented


def _commented(lines: list[str], lineno: int) -> bool:
    """Whether the import at ``lineno`` (1-based) has a comment on its line or on a comment line
    just above its block of consecutive imports."""
    if "#" in lines[lineno - 1]:
        return True
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")) and "#" not in lines[i]:
        i -= 1
    return i >= 0 and (lines[i].strip().startswith("#") or ("#" in lines[i] and lines[i].strip().startswith(("import ", "from "))))


def _where(edge: Edge) -> str:
    rel = edge.path.relative_to(ROOT.parent)
    kind = " (function-local)" if edge.local else ""
    return f"{rel}:{edge.line}: {edge.text}{kind}"


def cycles(nodes: set[str], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        graph[e.src].append(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return found


def _cycle_report(comp: list[str], edges: list[Edge]) -> str:
    members = set(comp)
    inner = dict.fromkeys(_where(e) for e in edges if e.src in members and e.dst in members)
    return "cycle among " + ", ".join(comp) + ":\n    " + "\n    ".join(inner)


# Package __init__ modules re-export their children; an edge child -> parent package
# through ``__init__`` would make every package a cycle, so the cycle checks follow the
# import to the module it really needs only where we can tell; here, edges into a
# package's own __init__ from inside the package are left out of the cycle graph.
def _cycle_edges(edges: list[Edge], modules: dict[str, Path]) -> list[Edge]:
    out = []
    for e in edges:
        if modules[e.dst].name == "__init__.py" and (e.src.startswith(e.dst + ".")):
            continue
        out.append(e)
    return out


def test_layer_order_is_data_the_doc_repeats() -> None:
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    head = doc[:1500]
    names = [prefix.rpartition(".")[2] for prefixes in LAYERS for prefix in prefixes]
    positions = [head.find(n) for n in names]
    assert all(p >= 0 for p in positions), f"docs/architecture.md must name the layers {names} at the top"
    assert positions == sorted(positions), f"docs/architecture.md lists the layers out of order: {names}"


def test_scanner_resolves_relative_and_local_imports() -> None:
    modules = all_modules()
    edges, _ = scan(modules)
    pairs = {(e.src, e.dst) for e in edges}
    # a relative import two levels up, and a plain relative sibling import
    assert ("optdisco.dsl.parser", "optdisco.dsl.ir") in pairs
    assert any(e.src.startswith("optdisco.search.learned.") and e.dst.startswith("optdisco.evaluators")
               for e in edges)
    assert layer_of("optdisco.search.learned.es") == layer_of("optdisco.search")
    assert layer_of("optdisco.cli") == TOP and layer_of("optdisco.dsl.ir") == 1
    assert layer_of("optdisco.search") < layer_of("optdisco.validation.run") < TOP


def test_no_import_points_up_the_layers() -> None:
    modules = all_modules()
    edges, _ = scan(modules)
    upward = [e for e in edges if layer_of(e.dst) > layer_of(e.src)]
    assert not upward, "imports that point up the layer order:\n  " + "\n  ".join(
        f"{_where(e)}  [{e.src} -> {e.dst}]" for e in upward)


def test_no_import_cycle_across_packages() -> None:
    modules = all_modules()
    edges, _ = scan(modules)
    graph_edges = _cycle_edges(edges, modules)
    bad = [c for c in cycles(set(modules), graph_edges)
           if len({package_of(m, modules) for m in c}) > 1]
    assert not bad, "\n".join(_cycle_report(c, graph_edges) for c in bad)


# Cycles inside one package that remain (lazy, function-local on one side, so they cannot
# break an import; still dependencies). The test fails on any other, and on any of
# these that grows; remove an entry when its cycle is cut.
KNOWN_WITHIN_PACKAGE_CYCLES: list[frozenset[str]] = [
    # Program's convenience methods (source(), sympy(), latex(), fingerprint()).
    frozenset({"optdisco.dsl.fingerprint", "optdisco.dsl.interpreter", "optdisco.dsl.ir",
               "optdisco.dsl.printer", "optdisco.dsl.symbolic"}),
]


def test_no_import_cycle_within_a_package_but_the_known_ones() -> None:
    modules = all_modules()
    edges, _ = scan(modules)
    graph_edges = _cycle_edges(edges, modules)
    bad = [c for c in cycles(set(modules), graph_edges) if frozenset(c) not in KNOWN_WITHIN_PACKAGE_CYCLES]
    assert not bad, "\n".join(_cycle_report(c, graph_edges) for c in bad)


def test_local_imports_of_optional_dependencies_say_why() -> None:
    _, uncommented = scan(all_modules())
    assert not uncommented, ("function-local imports of third-party packages need a comment "
                             "saying why they are local:\n  " + "\n  ".join(uncommented))
