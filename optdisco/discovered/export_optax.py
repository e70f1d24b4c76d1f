"""The optax exporter: a rule as a standalone JAX file defining an ``optax.GradientTransformation``.

The file imports only ``math``, ``typing``, ``jax`` and ``optax``. The rule's statements are
printed as they are, with built-in calls routed to a small ``_Ops`` class whose methods
restate the interpreter's semantics (``optdisco.dsl.interpreter``) in ``jax.numpy``, one
method per built-in. The transformation follows optax's sign convention: it returns the
updates ``-lr * u`` that ``optax.apply_updates`` adds to the parameters, so one step is the
rule's ``w <- w - lr * u``. Its state is a NamedTuple: the step ``count``, one pytree per
state tensor, and a PRNG key ``rng`` for rules that draw noise.
"""

from __future__ import annotations

from ..dsl import BUILTINS, Program
from ..dsl.builtins import NEWTON_SCHULZ_COEFFS, NEWTON_SCHULZ_EPS, NEWTON_SCHULZ_STEPS
from ..errors import UserError
from .codegen import OPERATORS, calls, ops_expr
from .optimizer import default_lr

# One method per built-in, restating optdisco.dsl.interpreter for one parameter array.
# Test: every catalog rule's exported file reproduces the interpreter's float64 trajectory.
_JNP_METHODS = {
    "abs": "    def abs(self, x):\n        return jnp.abs(x)\n",
    "sign": "    def sign(self, x):\n        return jnp.sign(x)\n",
    "sqrt": "    def sqrt(self, x):\n        return jnp.sqrt(x)\n",
    "rsqrt": "    def rsqrt(self, x):\n        return jax.lax.rsqrt(x)\n",
    "exp": "    def exp(self, x):\n        return jnp.exp(x)\n",
    "log": "    def log(self, x):\n        return jnp.log(x)\n",
    "square": "    def square(self, x):\n        return x * x\n",
    "tanh": "    def tanh(self, x):\n        return jnp.tanh(x)\n",
    "relu": "    def relu(self, x):\n        return jnp.maximum(x, self.scalar(0.0))\n",
    "clip": "    def clip(self, x, c):\n        \"\"\"x clamped to [-c, c].\"\"\"\n"
            "        return jnp.minimum(jnp.maximum(x, -c), c)\n",
    "floor": "    def floor(self, x):\n        return jnp.floor(x)\n",
    "cosine": "    def cosine(self, x):\n        return jnp.cos(x)\n",
    "maximum": "    def maximum(self, a, b):\n        return jnp.maximum(a, b)\n",
    "minimum": "    def minimum(self, a, b):\n        return jnp.minimum(a, b)\n",
    "interp": "    def interp(self, a, b, beta):\n        \"\"\"(1 - beta) * a + beta * b.\"\"\"\n"
              "        return (1.0 - beta) * a + beta * b\n",
    "gt": "    def gt(self, a, b):\n        \"\"\"1.0 where a > b, else 0.0.\"\"\"\n"
          "        return (a > b).astype(self.dtype)\n",
    "where": "    def where(self, c, a, b):\n        \"\"\"a where c > 0, else b.\"\"\"\n"
             "        return jnp.where(c > 0, a, b)\n",
    "norm": "    def norm(self, x):\n        x = self.full(x)\n"
            "        return jnp.sqrt(jnp.sum(x * x))\n",
    "rms": "    def rms(self, x):\n        x = self.full(x)\n"
           "        return jnp.sqrt(jnp.mean(x * x))\n",
    "mean": "    def mean(self, x):\n        return jnp.mean(self.full(x))\n",
    "sum": "    def sum(self, x):\n        return jnp.sum(self.full(x))\n",
    "numel": "    def numel(self, x):\n        return self.scalar(float(math.prod(self.shape)))\n",
    "orthogonalize": (
        "    def orthogonalize(self, x):\n"
        "        \"\"\"Muon's Newton-Schulz orthogonalization of the matrix view.\"\"\"\n"
        "        m = self.matrix(x)\n"
        f"        a, b, c = {NEWTON_SCHULZ_COEFFS!r}\n"
        "        rows, cols = m.shape\n"
        f"        X = m / (jnp.sqrt(jnp.sum(m * m)) + {NEWTON_SCHULZ_EPS!r})\n"
        "        if rows > cols:\n            X = X.T\n"
        f"        for _ in range({NEWTON_SCHULZ_STEPS}):\n"
        "            A = X @ X.T\n            B = b * A + c * (A @ A)\n            X = a * X + B @ X\n"
        "        if rows > cols:\n            X = X.T\n"
        "        return (X * math.sqrt(max(1.0, rows / cols))).reshape(self.shape)\n"),
    "row_mean": "    def row_mean(self, x):\n        m = self.matrix(x)\n"
                "        return jnp.broadcast_to(m.mean(axis=-1, keepdims=True), m.shape).reshape(self.shape)\n",
    "col_mean": "    def col_mean(self, x):\n        m = self.matrix(x)\n"
                "        return jnp.broadcast_to(m.mean(axis=-2, keepdims=True), m.shape).reshape(self.shape)\n",
    "randn": "    def randn(self):\n"
             "        self.key, sub = jax.random.split(self.key)\n"
             "        return jax.random.normal(sub, self.shape, self.dtype)\n",
}
# The matrix-state ("factor") and group built-ins are not exported yet: to_optax refuses their rules.
assert set(_JNP_METHODS) | OPERATORS == {n for n, b in BUILTINS.items() if b.kind not in ("factor", "group")}, \
    "every built-in needs an optax method"

_OPS_PRELUDE = '''class _Ops:
    """The rule language's built-ins for one parameter array ``w``."""

    def __init__(self, w, key=None):
        self.shape, self.dtype, self.key = tuple(w.shape), w.dtype, key

    def scalar(self, v):
        return jnp.asarray(v, dtype=self.dtype)

    def full(self, x):
        """x broadcast to the parameter's shape."""
        return jnp.broadcast_to(x, jnp.broadcast_shapes(jnp.shape(x), self.shape))

    def matrix(self, x):
        """The matrix view: rows = first dim, cols = the rest; a vector is one row."""
        rows = self.shape[0] if len(self.shape) >= 2 else 1
        return self.full(x).reshape(rows, -1)

'''


def to_optax(program: Program) -> str:
    """A standalone Python file defining the rule as an ``optax.GradientTransformation``.

    ``NAME(learning_rate=<default lr>, *, <hyperparameters>, seed=0)`` returns the
    transformation; ``learning_rate`` may be a number or an optax schedule (a function of
    the step count). ``update(grads, state, params)`` needs ``params`` (the rule reads ``w``)
    and returns ``-lr * u`` per leaf, where ``u`` is the rule's update at step
    ``count + 1``.
    """
    if program.has_group_reductions:
        raise UserError(f"cannot export rule '{program.name}' to optax yet: it reduces over the whole "
                        "param group (group_sum, group_max or a per_group state: Prodigy, D-Adaptation "
                        "style), which the optax exporter does not write; export it with --format torch")
    if program.has_matrix_states:
        raise UserError(f"cannot export rule '{program.name}' to optax yet: it has matrix-shaped states or "
                        "factor built-ins (Shampoo, SOAP, Adam-mini style), which the optax exporter does not "
                        "write; export it with --format torch")
    hyper = program.hyperparameters
    clash = ({"learning_rate", "seed"} & set(program.hyperparameter_names)) | \
        ({"count", "rng"} & set(program.state_names))
    if clash:
        raise UserError(f"cannot export rule '{program.name}' to optax: the name(s) {sorted(clash)} clash "
                        "with the transformation's own arguments or state fields; rename them")
    used = calls(program)
    taken = set(program.input_names) | {a.target for a in program.body} | {"_Ops", "jax", "jnp", "math"}

    def fresh(base: str) -> str:
        name = base
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    ops, key, upd = fresh("_ops"), fresh("key"), fresh("u")
    fn = f"{program.name}_rule"
    states = program.state_names
    sig = ", ".join(["w", "g", *states])
    kw = ", ".join(["step", "lr", *[f"{n}={v!r}" for n, v in hyper]])
    body = [f"def {fn}({sig}, *, {kw}, {key}=None):",
            '    """One application of the rule to one array: returns (u, new_states)."""',
            f"    {ops} = _Ops(w, {key})",
            "    g = jnp.asarray(g, w.dtype)"]
    for n in ("step", "lr", *[n for n, _ in hyper]):
        body.append(f"    {n} = {ops}.scalar({n})")
    for a in program.body:
        body.append(f"    {a.target} = {ops_expr(a.expr, ops)}")
    body.append(f"    {upd} = {ops}.full({ops_expr(program.update, ops)})")
    body.append(f"    return {upd}, ({''.join(f'{ops}.full({s}), ' for s in states)})")
    methods = "\n".join(_JNP_METHODS[n] for n in sorted(used) if n in _JNP_METHODS)
    doc = (program.docstring or program.name).strip().splitlines()
    summary = (doc[0] if doc else program.name).replace('"', "'").replace(chr(92), "/")
    rule_comment = "\n".join("#   " + line for line in program.source().rstrip().splitlines())
    hyper_kw = "".join(f", {n}={v!r}" for n, v in hyper)
    hyper_pass = "".join(f", {n}={n}" for n, _ in hyper)
    state_cls = "".join(p[:1].upper() + p[1:] for p in program.name.split("_") if p) + "State"
    fields = "".join(f"    {s}: optax.Updates\n" for s in states)
    noisy = "randn" in used
    leaf_keys = ("keys = jax.random.split(jax.random.fold_in(state.rng, count), len(leaves))"
                 if noisy else "keys = [None] * len(leaves)")
    return f'''"""{program.name}: {summary}

A standalone optax GradientTransformation generated by optdisco; it needs only jax and optax.
One step is w <- w - lr * u: ``update`` returns -lr * u for ``optax.apply_updates``.
"""

# The rule it implements:
{rule_comment}

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


{_OPS_PRELUDE}{methods}

{chr(10).join(body)}


class {state_cls}(NamedTuple):
    """The transformation's state: the step count, one pytree per state tensor, a PRNG key."""

    count: jax.Array
{fields}    rng: jax.Array


def {program.name}(learning_rate={default_lr(program)!r}, *{hyper_kw}, seed=0) -> optax.GradientTransformation:
    """The rule {program.name!r}; ``learning_rate`` is a number or a schedule of the step count."""

    def init_fn(params):
        def zeros():
            return jax.tree_util.tree_map(jnp.zeros_like, params)
        return {state_cls}(jnp.zeros([], jnp.int32), {"".join("zeros(), " for _ in states)}jax.random.PRNGKey(seed))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("{program.name} reads the parameters: call update(grads, state, params)")
        count = state.count + 1
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        leaves, treedef = jax.tree_util.tree_flatten(params)
        grads = treedef.flatten_up_to(updates)
        per_state = [treedef.flatten_up_to(s) for s in ({"".join(f"state.{s}, " for s in states)})]
        {leaf_keys}
        out_u, out_states = [], []
        for i, (w, g) in enumerate(zip(leaves, grads)):
            u, new = {fn}(w, g, *[s[i] for s in per_state], step=count.astype(w.dtype), lr=lr{hyper_pass},
                          {key}=keys[i])
            out_u.append(jnp.asarray(-lr * u, w.dtype))
            out_states.append(new)
        new_states = [treedef.unflatten([s[j] for s in out_states]) for j in range({len(states)})]
        return treedef.unflatten(out_u), {state_cls}(count, *new_states, state.rng)

    return optax.GradientTransformation(init_fn, update_fn)
'''
