"""A rule's update as one line of mathematics, generated from its Program: the catalog's ``Formula:``.

:func:`formula` renders the statements in order, then the step, in the house notation::

    d = g + wd * w; m <- beta1 * m + (1 - beta1) * d; w <- w - lr * (m / (1 - beta1^t))

``s <- e`` sets a state's new value (later reads see it), ``x = e`` names a temporary,
``w <- w - lr * u`` is the step. A temporary read exactly once is written in place where that
keeps its meaning; one never read is left out. Hyperparameter and state names are kept;
``step`` is ``t`` (unless the rule uses ``t`` itself); ``a ** b`` and ``square(a)`` are
``a^b`` and ``a^2``; ``interp(a, b, beta)`` is ``beta * b + (1 - beta) * a``;
``rsqrt(x)`` is ``1 / sqrt(x)``; ``relu, maximum, minimum, clip`` are written with ``max``
and ``min``; ``gt(a, b)`` is the Iverson bracket ``[a > b]``; ``where(c, a, b)`` is
``a if c > 0 else b`` (``a if x > y else b`` when ``c`` is ``gt(x, y)``; in parentheses as
an operand). Every other built-in (``orthogonalize``, ``row_mean``, ``norm``,
``randn``, ...) keeps its name, so the line is exact for matrix built-ins too.

:func:`program_of_formula` reads such a line back into a Program (the tests check that it
computes what the rule computes). ``python -m optdisco.discovered.formula [--write]``
checks (or rewrites) the Formula field of every rule file of a source checkout.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Sequence

from ..dsl import Call, Const, DSLError, Expr, Name, Program, parse
from ..dsl.ir import neg
from .catalog import field_lines

_COND, _ADD, _MUL, _NEG, _POW, _ATOM = 0, 1, 2, 3, 4, 5
_BINARY = {"add": ("+", _ADD), "sub": ("-", _ADD), "mul": ("*", _MUL), "div": ("/", _MUL),
           "pow": ("^", _POW)}
#: Built-ins written under another (more common) name.
_RENAMED = {"maximum": "max", "minimum": "min"}


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2),
                  repr(value))


def _one_minus(beta: Expr) -> Expr:
    if isinstance(beta, Const):
        # exact decimal arithmetic, so 1 - 0.9 prints as 0.1, not 0.09999999999999998
        return Const(float(1 - Decimal(repr(beta.value))))
    return Call("sub", (Const(1.0), beta))


def _spelled_out(e: Call) -> Expr | None:
    """The built-ins the notation writes with other operations, as the equal expression."""
    a = e.args
    if e.fn == "interp":
        return Call("add", (Call("mul", (a[2], a[1])), Call("mul", (_one_minus(a[2]), a[0]))))
    if e.fn == "square":
        return Call("pow", (a[0], Const(2.0)))
    if e.fn == "rsqrt":
        return Call("div", (Const(1.0), Call("sqrt", a)))
    if e.fn == "relu":
        return Call("maximum", (a[0], Const(0.0)))
    if e.fn == "clip":
        return Call("minimum", (Call("maximum", (a[0], neg(a[1]))), a[1]))
    return None


class _Renderer:
    def __init__(self, step_name: str) -> None:
        self.step_name = step_name

    def render(self, e: Expr) -> tuple[str, int]:
        """(text, binding strength) of ``e``."""
        if isinstance(e, Const):
            return _number(e.value), (_NEG if e.value < 0 else _ATOM)
        if isinstance(e, Name):
            return (self.step_name if e.id == "step" else e.id), _ATOM
        assert isinstance(e, Call)
        spelled = _spelled_out(e)
        if spelled is not None:
            return self.render(spelled)
        if e.fn == "neg":
            text, prec = self.render(e.args[0])
            return (f"-({text})" if prec <= _NEG else f"-{text}"), _NEG
        if e.fn in _BINARY:
            op, prec = _BINARY[e.fn]
            (left, lp), (right, rp) = self.render(e.args[0]), self.render(e.args[1])
            if e.fn == "pow":  # right-associative; a negative base needs its parentheses
                left_paren, right_paren = lp <= prec, rp < prec or rp == _NEG
            else:
                left_paren, right_paren = lp < prec, rp <= prec or rp == _NEG
            left = f"({left})" if left_paren else left
            right = f"({right})" if right_paren else right
            return (f"{left}^{right}" if e.fn == "pow" else f"{left} {op} {right}"), prec
        if e.fn == "gt":
            return f"[{self.inner(e.args[0])} > {self.inner(e.args[1])}]", _ATOM
        if e.fn == "where":
            c, a, b = e.args
            if isinstance(c, Call) and c.fn == "gt":  # [x > y] > 0 is x > y
                test = f"{self.inner(c.args[0])} > {self.inner(c.args[1])}"
            else:
                test = f"{self.inner(c)} > 0"
            return f"{self.inner(a)} if {test} else {self.inner(b)}", _COND
        args = ", ".join(self.render(x)[0] for x in e.args)
        return f"{_RENAMED.get(e.fn, e.fn)}({args})", _ATOM

    def inner(self, e: Expr) -> str:
        """``e`` where arithmetic needs no parentheses (an operand of ``>`` or ``if``)."""
        text, prec = self.render(e)
        return f"({text})" if prec == _COND else text

    def step(self, u: Expr) -> str:
        text, prec = self.render(u)
        return f"w <- w - lr * ({text})" if prec <= _MUL or prec == _NEG else f"w <- w - lr * {text}"


def _substitute(e: Expr, env: dict[str, Expr]) -> Expr:
    if isinstance(e, Name):
        return env.get(e.id, e)
    if isinstance(e, Call):
        return Call(e.fn, tuple(_substitute(a, env) for a in e.args))
    return e


def _names(e: Expr) -> set[str]:
    return {n.id for n in e.walk() if isinstance(n, Name)}


def formula(p: Program) -> str:
    """The update of ``p`` as one line: each statement in order (``s <- e`` for a state,
    ``x = e`` for a temporary), then ``w <- w - lr * u``; see the module docstring."""
    body = list(p.body)
    exprs = [a.expr for a in body] + [p.update]
    # which definition each read refers to, to count the reads of every definition
    reads: dict[int, list[int]] = {i: [] for i in range(len(body))}
    current: dict[str, int] = {}
    for j, e in enumerate(exprs):
        for node in e.walk():
            if isinstance(node, Name) and node.id in current:
                reads[current[node.id]].append(j)
        if j < len(body):
            current[body[j].target] = j
    final_state_defs = {current[s] for s in p.state_names if s in current}

    used = {n for e in exprs for n in _names(e)} | {a.target for a in body}
    renderer = _Renderer("step" if "t" in used else "t")
    inlined: dict[str, Expr] = {}
    parts = []
    for i, stmt in enumerate(body):
        value = _substitute(stmt.expr, inlined)
        inlined.pop(stmt.target, None)
        is_state = stmt.target in p.state_names
        if not reads[i] and i not in final_state_defs:
            continue  # never read: it does not change the update
        if not is_state and len(reads[i]) == 1:
            j = reads[i][0]
            # in place only if nothing it reads is reassigned before the read
            rebound = {a.target for a in body[i + 1:j]}
            if not (_names(value) & rebound) and j > i:
                inlined[stmt.target] = value
                continue
        text = renderer.render(value)[0]
        parts.append(f"{stmt.target} <- {text}" if is_state else f"{stmt.target} = {text}")
    parts.append(renderer.step(_substitute(p.update, inlined)))
    return "; ".join(parts)


# -- reading a formula back ---------------------------------------------------------------

class _ToRule(ast.NodeTransformer):
    """Formula notation (after ``^ -> **``) back to rule-language calls."""

    def __init__(self, step_name: str) -> None:
        self.step_name = step_name

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id == self.step_name:
            return ast.copy_location(ast.Name("step", ast.Load()), node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name):
            back = {v: k for k, v in _RENAMED.items()}
            node.func.id = back.get(node.func.id, node.func.id)
        return node

    def _compare(self, node: ast.AST) -> tuple[ast.expr, ast.expr]:
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Gt)):
            raise DSLError(f"expected 'a > b', got {ast.unparse(node)!r}")
        return node.left, node.comparators[0]

    def visit_List(self, node: ast.List) -> ast.AST:
        self.generic_visit(node)
        if len(node.elts) != 1:
            raise DSLError(f"an Iverson bracket holds one comparison: {ast.unparse(node)!r}")
        a, b = self._compare(node.elts[0])
        return ast.Call(ast.Name("gt", ast.Load()), [a, b], [])

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        # where(gt(a, b), x, y) is where(a - b, x, y) is (x if a > b else y), nan included
        a, b = self._compare(node.test)
        test = ast.Call(ast.Name("gt", ast.Load()), [a, b], [])
        return ast.Call(ast.Name("where", ast.Load()), [test, node.body, node.orelse], [])


def program_of_formula(text: str, like: Program) -> Program:
    """The Program a formula line denotes, with the states, hyperparameters and name of ``like``.

    The inverse of :func:`formula` up to temporaries written in place: ``s <- e`` and
    ``x = e`` become assignments and the last statement ``w <- w - lr * u`` the update ``u``.
    Raises :class:`~optdisco.dsl.DSLError` on text that is not in the notation.
    """
    used = set(like.input_names) | {a.target for a in like.body}
    step_name = "step" if "t" in used else "t"
    statements = [s.strip() for s in text.split(";") if s.strip()]
    if not statements or not statements[-1].startswith("w <- w - lr * "):
        raise DSLError(f"a formula ends with 'w <- w - lr * u': {text!r}")
    lines = []
    for k, stmt in enumerate(statements):
        target, arrow, value = stmt.partition(" <- ") if " <- " in stmt else stmt.partition(" = ")
        if not arrow or not target.isidentifier():
            raise DSLError(f"not 'name <- expr' or 'name = expr': {stmt!r}")
        if k == len(statements) - 1:
            value = value[len("w - lr * "):]
        try:
            tree = ast.parse(value.replace("^", "**"), mode="eval")
        except SyntaxError as e:
            raise DSLError(f"cannot read {stmt!r}: {e.msg}") from None
        rule_expr = ast.unparse(_ToRule(step_name).visit(tree))
        lines.append(f"    u = {rule_expr}" if k == len(statements) - 1 else f"    {target} = {rule_expr}")
    shapes = dict(like.state_shapes)
    params = ", ".join(["w", "g", *[f"{n}: {shapes[n]}" if shapes.get(n, "param") != "param" else n
                                    for n in like.state_names]])
    if like.hyperparameters:
        params += ", *, " + ", ".join(f"{n}={v!r}" for n, v in like.hyperparameters)
    returns = ", ".join(["u", *like.state_names])
    return parse(f"def {like.name}({params}):\n" + "\n".join(lines) + f"\n    return {returns}\n")


# -- the Formula field of rule files -------------------------------------------------------

_FIELD = re.compile(r"^(?P<indent>[ \t]*)(?P<key>[A-Z][A-Za-z0-9_]*):")


def with_formula(text: str, formula_text: str) -> str:
    """Rule-file ``text`` with its docstring's ``Formula:`` field (and its continuation
    lines) replaced by ``formula_text``, wrapped; inserted before ``Defaults:`` if absent.
    Everything outside that field is kept byte for byte."""
    lines = text.split("\n")
    start = next((i for i, ln in enumerate(lines) if (m := _FIELD.match(ln)) and m["key"] == "Formula"),
                 None)
    if start is None:
        start = next((i for i, ln in enumerate(lines) if (m := _FIELD.match(ln)) and m["key"] == "Defaults"),
                     None)
        if start is None:
            raise DSLError("the docstring has neither a Formula: nor a Defaults: field")
        end = start
    else:
        depth = len(lines[start]) - len(lines[start].lstrip())
        end = start + 1
        while (end < len(lines) and lines[end].strip() and '"""' not in lines[end]
               and len(lines[end]) - len(lines[end].lstrip()) > depth):
            end += 1
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    return "\n".join(lines[:start] + field_lines("Formula", formula_text, indent, unit_separator="; ") + lines[end:])


def rule_paths(root: Path) -> list[Path]:
    """Every catalog rule file under the package folder ``root`` (optdisco/discovered)."""
    return sorted([*root.glob("known/*.rule"), *root.glob("found/*.rule")])


def main(argv: Sequence[str] | None = None) -> int:
    """Check (exit 1 on a stale Formula) or ``--write`` the Formula field of rule files."""
    ap = argparse.ArgumentParser(prog="python -m optdisco.discovered.formula",
                                 description="Check or rewrite the Formula field of catalog rule files.")
    ap.add_argument("files", nargs="*", type=Path,
                    help="rule files (default: every known/ and found/ rule beside this module)")
    ap.add_argument("--write", action="store_true", help="rewrite stale Formula fields in place")
    args = ap.parse_args(argv)
    paths = args.files or rule_paths(Path(__file__).resolve().parent)
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        new = with_formula(text, formula(parse(text)))
        if new != text:
            stale.append(path)
            if args.write:
                path.write_text(new, encoding="utf-8")
    verb = "rewrote" if args.write else "stale"
    for path in stale:
        print(f"{verb}: {path}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
