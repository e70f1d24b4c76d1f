"""The baseline every candidate is compared with: the reference AdamW of
:mod:`optdisco.discovered.references`, a copy (not the catalog's rule) so that fitness never
changes when the catalog does; :func:`baseline_program` also accepts any catalog name or Program.
"""

from __future__ import annotations

from ..discovered.optimizer import resolve_rule
from ..discovered.references import ADAMW, ADAMW_SOURCE
from ..dsl import Program

__all__ = ["ADAMW", "ADAMW_SOURCE", "baseline_program"]


def baseline_program(rule: "str | Program" = "adamw") -> Program:
    """The baseline as a Program: "adamw" (the reference copy), a Program, or a catalog name."""
    if isinstance(rule, Program):
        return rule
    if rule == "adamw":
        return ADAMW
    return resolve_rule(rule)
