"""Random rule texts for differential tests (until optdisco.dsl.generate lands; see issue 2).

Every built-in of the language can appear; reductions, matrix built-ins and randn() are
rarer. Programs are valid by construction and parsed by the real parser.
"""

from __future__ import annotations

import random

from optdisco.dsl.builtins import BUILTINS

_OPS = ["add", "sub", "mul", "div", "pow"]
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
_ELEM = [b.name for b in BUILTINS.values() if b.kind == "elementwise"]
_RED = [b.name for b in BUILTINS.values() if b.kind == "reduction"]
_MAT = [b.name for b in BUILTINS.values() if b.kind == "matrix"]
_CONSTS = ["0.5", "2.0", "0.1", "0.001", "3.0", "1.0", "0.9"]


def random_rule_text(seed: int, max_depth: int = 3) -> str:
    """A random valid rule with 0-2 states, 1-2 hyperparameters and 1-4 statements."""
    rng = random.Random(seed)
    states = [f"s{i}" for i in range(rng.randint(0, 2))]
    hypers = [(f"h{i}", round(rng.uniform(0.05, 0.95), 3)) for i in range(rng.randint(1, 2))]
    names = ["w", "g", *states, *[h for h, _ in hypers], "step", "lr"]

    def expr(depth: int) -> str:
        if depth == 0 or rng.random() < 0.25:
            return rng.choice(names + _CONSTS) if rng.random() < 0.85 else "randn()"
        r = rng.random()
        if r < 0.45:
            op = rng.choice(_OPS)
            rhs = rng.choice(["2.0", "0.5", "3.0", "h0"]) if op == "pow" else expr(depth - 1)
            return f"({expr(depth - 1)} {_INFIX[op]} {rhs})"
        if r < 0.85:
            fn = rng.choice(_ELEM)
            arity = BUILTINS[fn].arity
        elif r < 0.95:
            fn, arity = rng.choice(_RED), 1
        else:
            fn, arity = rng.choice(_MAT), 1
        return f"{fn}({', '.join(expr(depth - 1) for _ in range(arity))})"

    body = []
    for i in range(rng.randint(1, 4)):
        target = rng.choice(states + [f"t{i}"]) if states else f"t{i}"
        body.append(f"    {target} = {expr(max_depth)}")
        if target not in names:
            names.append(target)
    assigned = {line.split(" = ")[0].strip() for line in body}
    for s in states:
        if s not in assigned:
            body.append(f"    {s} = {expr(max_depth)}")
    sig = ", ".join(["w", "g", *states]) + ", *, " + ", ".join(f"{h}={v}" for h, v in hypers)
    ret = ", ".join([expr(max_depth)] + states)
    return f"def rnd{seed}({sig}):\n" + "\n".join(body) + f"\n    return {ret}\n"
