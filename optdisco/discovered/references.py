"""The reference programs every comparison is made against: AdamW, in one text.

The fitness of the evaluators (:mod:`optdisco.evaluators.baseline`) and the quadratic
fitness of the search (:mod:`optdisco.search.fitness`) both use :data:`ADAMW`, the
latter with ``wd=0.0`` passed explicitly (:func:`adamw`). It is a copy of the rule, not
the catalog's ``adamw.rule``, so that fitness never changes when the catalog does: the
catalog's text divides by ``sqrt(bc2)`` where this one forms ``vhat``, which rounds
differently, and the cached baselines were computed with this text. Lion has a single
text, the catalog's ``lion.rule`` (the funnel's reference).

    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
    u  = m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps) + wd w
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


def adamw(wd: float = 0.01) -> Program:
    """The reference AdamW with weight decay ``wd`` (the other defaults as in :data:`ADAMW`)."""
    return ADAMW if wd == 0.01 else ADAMW.with_hyperparameters({"wd": wd})
