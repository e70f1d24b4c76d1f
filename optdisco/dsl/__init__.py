"""The update-rule language: parse, check, interpret, print, and reason about rules."""

from .builtins import BUILTINS
from .errors import DSLError
from .interpreter import run, run_group, trajectory, zero_states
from .ir import Assign, Call, Const, Expr, Name, Program
from .parser import parse


def __getattr__(name: str):
    # sympy is slow to import: load the equivalence checker only when asked for
    if name in ("equivalent", "Equivalence"):
        from . import equivalence
        return getattr(equivalence, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BUILTINS", "DSLError", "Program", "Expr", "Const", "Name", "Call", "Assign",
           "parse", "run", "run_group", "trajectory", "zero_states", "equivalent", "Equivalence"]
