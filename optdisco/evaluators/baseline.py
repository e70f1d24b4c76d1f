"""The baseline every candidate is compared with: AdamW, kept here as rule text.

A copy (not an import from the catalog) so that fitness never changes when the catalog
does; :func:`baseline_program` also accepts any catalog name or Program.
"""

from __future__ import annotations

from ..dsl import Program, parse

ADAMW_SOURCE = '''
def adamw(w, g, m, v, *, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01):
    """AdamW: Adam with decoupled weight decay (Loshchilov and Hutter, 2019)."""
    m = interp(g, m, beta1)
    v = interp(square(g), v, beta2)
    mhat = m / (1.0 - beta1 ** step)
    vhat = v / (1.0 - beta2 ** step)
    u = mhat / (sqrt(vhat) + eps) + wd * w
    return u, m, v
'''

ADAMW = parse(ADAMW_SOURCE)


def baseline_program(rule: "str | Program" = "adamw") -> Program:
    """The baseline as a Program: "adamw" (the copy above), a Program, or a catalog name."""
    if isinstance(rule, Program):
        return rule
    if rule == "adamw":
        return ADAMW
    from ..discovered.optimizer import resolve_rule
    return resolve_rule(rule)
