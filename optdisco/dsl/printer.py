"""Program -> rule text, with the fewest parentheses that parse back to the same tree."""

from __future__ import annotations

from .builtins import INFIX
from .ir import Call, Const, Expr, Name, Program

# Binding strength, loosest first, as in Python's grammar.
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "pow": 4}
_ATOM = 5


def _prec(e: Expr) -> int:
    if isinstance(e, Call):
        return _PREC.get(e.fn, _ATOM)
    if isinstance(e, Const) and (e.value < 0 or (e.value == 0 and str(e.value).startswith("-"))):
        return _PREC["neg"]
    return _ATOM


def expr_source(e: Expr) -> str:
    """An expression as rule text."""
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Name):
        return e.id
    assert isinstance(e, Call)
    if e.fn == "neg":
        (x,) = e.args
        inner = expr_source(x)
        return f"-({inner})" if _prec(x) <= _PREC["neg"] else f"-{inner}"
    if e.fn in INFIX:
        a, b = e.args
        p = _PREC[e.fn]
        if e.fn == "pow":  # right-associative, and binds tighter than a unary minus on its left
            left_paren, right_paren = _prec(a) <= p, _prec(b) < p
        else:
            left_paren, right_paren = _prec(a) < p, _prec(b) <= p
        left = f"({expr_source(a)})" if left_paren else expr_source(a)
        right = f"({expr_source(b)})" if right_paren else expr_source(b)
        return f"{left} {INFIX[e.fn]} {right}"
    return f"{e.fn}({', '.join(expr_source(a) for a in e.args)})"


def _docstring_literal(doc: str) -> str:
    safe = ('"""' not in doc and "\\" not in doc and not doc.endswith('"')
            and all(c == "\n" or c.isprintable() for c in doc))
    return f'"""{doc}"""' if safe else repr(doc)


def to_source(p: Program) -> str:
    """The program as rule text that :func:`optdisco.dsl.parse` turns back into an equal program."""
    params = ["w", "g", *[n if p.state_shape(n) == "param" else f"{n}: {p.state_shape(n)}"
                          for n in p.state_names]]
    if p.hyperparameters:
        params.append("*")
        params.extend(f"{n}={v!r}" for n, v in p.hyperparameters)
    lines = [f"def {p.name}({', '.join(params)}):"]
    if p.docstring is not None:
        lines.append("    " + _docstring_literal(p.docstring))
    for stmt in p.body:
        lines.append(f"    {stmt.target} = {expr_source(stmt.expr)}")
    lines.append("    return " + ", ".join([expr_source(p.update), *p.state_names]))
    return "\n".join(lines) + "\n"
