"""The update-rule language: parse, check, interpret, print, and reason about rules."""

from .builtins import BUILTINS
from .errors import DSLError
from .interpreter import run, trajectory
from .ir import Assign, Call, Const, Expr, Name, Program
from .parser import parse

__all__ = ["BUILTINS", "DSLError", "Program", "Expr", "Const", "Name", "Call", "Assign",
           "parse", "run", "trajectory"]
