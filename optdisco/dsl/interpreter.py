"""The reference interpreter: a Program run on torch tensors, optionally batched.

This defines what a rule means. Every other path (sympy, the CPU fast path, the Triton
kernels, exported code) is tested against it in float64.

Batching: the leading ``batch_dims`` dimensions of ``w`` index independent problems
(candidates x learning rates x seeds, say). Reductions and matrix built-ins act on the
remaining dimensions only, and hyperparameters, ``step`` and ``lr`` may be tensors that
broadcast against ``w`` (shape ``(B, 1, ..., 1)`` gives one value per problem).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch

from . import shapes
from .builtins import (BUILTINS, EIGENBASIS_JITTER, NEWTON_SCHULZ_COEFFS, NEWTON_SCHULZ_EPS,
                       NEWTON_SCHULZ_STEPS)
from .errors import DSLError
from .ir import Call, Const, Expr, Name, Program

Scalar = float | torch.Tensor


class _Context:
    """What built-ins need beyond their arguments: the parameter's shape and batching."""

    def __init__(self, shape: torch.Size, batch_dims: int, dtype: torch.dtype,
                 device: torch.device, generator: torch.Generator | None,
                 noise: Callable[[torch.Size], torch.Tensor] | None) -> None:
        self.shape = shape
        self.batch_dims = batch_dims
        self.dtype = dtype
        self.device = device
        self.generator = generator
        self.noise = noise
        self.reduce_dims = tuple(range(batch_dims, len(shape)))
        self.step: torch.Tensor | None = None  # set by run(); every() reads it

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` broadcast to the parameter's shape."""
        # fast paths first: torch.broadcast_shapes is pure Python and costs ~0.1-0.3 ms
        if x.shape == self.shape:
            return x
        if x.dim() <= len(self.shape):
            try:
                return torch.broadcast_to(x, self.shape)
            except RuntimeError:
                pass
        return torch.broadcast_to(x, torch.broadcast_shapes(x.shape, self.shape))

    def reduce(self, fn, x: torch.Tensor) -> torch.Tensor:
        x = self.full(x)
        if not self.reduce_dims:  # a 0-d parameter: reducing one element
            return fn(x.unsqueeze(-1), (-1,)).squeeze(-1)
        return fn(x, self.reduce_dims)

    def as_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The matrix view: (batch..., rows, cols), vectors and scalars as one row."""
        x = self.full(x)
        batch, param = x.shape[:self.batch_dims], x.shape[self.batch_dims:]
        rows = param[0] if len(param) >= 2 else 1
        cols = math.prod(param) // rows if rows else 0
        return x.reshape(*batch, rows, cols)

    def randn(self) -> torch.Tensor:
        if self.noise is not None:
            return self.noise(self.shape).to(dtype=self.dtype, device=self.device)
        return torch.randn(self.shape, generator=self.generator, dtype=self.dtype, device=self.device)


def newton_schulz(x: torch.Tensor) -> torch.Tensor:
    """Muon's orthogonalization of a batch of matrices ``(..., rows, cols)``.

    X = x / (||x||_F + eps); transpose when rows > cols; then X <- aX + (bA + cA^2)X with
    A = XX^T, five times; transpose back; scale by sqrt(max(1, rows/cols)).
    """
    a, b, c = NEWTON_SCHULZ_COEFFS
    rows, cols = x.shape[-2], x.shape[-1]
    X = x / (torch.linalg.matrix_norm(x, keepdim=True) + NEWTON_SCHULZ_EPS)
    tall = rows > cols
    if tall:
        X = X.mT
    for _ in range(NEWTON_SCHULZ_STEPS):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X * math.sqrt(max(1.0, rows / cols))


def _orthogonalize(ctx: _Context, x: torch.Tensor) -> torch.Tensor:
    m = ctx.as_matrix(x)
    return newton_schulz(m).reshape(ctx.full(x).shape)


def _row_mean(ctx: _Context, x: torch.Tensor) -> torch.Tensor:
    m = ctx.as_matrix(x)
    return m.mean(dim=-1, keepdim=True).expand(m.shape).reshape(ctx.full(x).shape)


def _col_mean(ctx: _Context, x: torch.Tensor) -> torch.Tensor:
    m = ctx.as_matrix(x)
    return m.mean(dim=-2, keepdim=True).expand(m.shape).reshape(ctx.full(x).shape)


def _numel(ctx: _Context, x: torch.Tensor) -> torch.Tensor:
    n = math.prod(ctx.shape[ctx.batch_dims:])
    return torch.full(ctx.shape[:ctx.batch_dims] + (1,) * len(ctx.reduce_dims), float(n),
                      dtype=ctx.dtype, device=ctx.device)


# -- matrix states (issue 13): factors, Gram matrices, inverse roots, eigenbases -----------

def _batch_scalar(ctx: _Context, x: torch.Tensor, trailing: int) -> torch.Tensor:
    """A scalar-shaped value (0-d, or one value per batch entry) as batch + (1,) * trailing."""
    if x.dim() == 0:
        return x
    return x.reshape(x.shape[:ctx.batch_dims] + (1,) * trailing)


def _factor_shape(ctx: _Context, shape: str) -> tuple[int, ...]:
    rows, cols = shapes.matrix_dims(ctx.shape[ctx.batch_dims:])
    n = rows if shape == shapes.LEFT else cols
    return tuple(ctx.shape[:ctx.batch_dims]) + (n, n)


def _eigh64(F: torch.Tensor, jitter: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(eigenvalues ascending, eigenvectors, finite) of symmetric matrices ``(..., n, n)`` in
    float64; matrices with a nan or inf are replaced by the identity (``finite`` is False there)."""
    F64 = F.to(torch.float64)
    eye = torch.eye(F.shape[-1], dtype=torch.float64, device=F.device)
    finite = torch.isfinite(F64).flatten(-2).all(-1)[..., None, None]
    safe = torch.where(finite, F64, eye)
    if jitter:
        safe = safe + jitter * eye
    lam, V = torch.linalg.eigh(safe)
    return lam, V, finite


def _inv_root(ctx: _Context, F: torch.Tensor, p: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    lam, V, finite = _eigh64(F)
    p64 = _batch_scalar(ctx, p, 1).to(torch.float64)
    eps64 = _batch_scalar(ctx, eps, 1).to(torch.float64)
    d = torch.pow(lam.clamp_min(0.0) + eps64, -1.0 / p64)
    out = (V * d.unsqueeze(-2)) @ V.mT
    return torch.where(finite, out, torch.full((), float("nan"), dtype=torch.float64)).to(F.dtype)


def _eigenbasis(ctx: _Context, F: torch.Tensor) -> torch.Tensor:
    _, V, finite = _eigh64(F, EIGENBASIS_JITTER)
    # descending eigenvalues, as SOAP orders them; contiguous, so that a product with Q rounds
    # the same whether Q was just computed or copied into a state buffer
    Q = torch.flip(V, dims=[-1]).contiguous()
    return torch.where(finite, Q, torch.full((), float("nan"), dtype=torch.float64)).to(F.dtype)


def _lmul(ctx: _Context, F: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (F @ ctx.as_matrix(x)).reshape(ctx.shape)


def _rmul(ctx: _Context, x: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    return (ctx.as_matrix(x) @ F).reshape(ctx.shape)


def _gram_left(ctx: _Context, x: torch.Tensor) -> torch.Tensor:
    m = ctx.as_matrix(x)
    return m @ m.mT


def _gram_right(ctx: _Context, x: torch.Tensor) -> torch.Tensor:
    m = ctx.as_matrix(x)
    return m.mT @ m


def _rotate(ctx: _Context, QL: torch.Tensor, x: torch.Tensor, QR: torch.Tensor) -> torch.Tensor:
    return (QL.mT @ ctx.as_matrix(x) @ QR).reshape(ctx.shape)


def _unrotate(ctx: _Context, QL: torch.Tensor, x: torch.Tensor, QR: torch.Tensor) -> torch.Tensor:
    return (QL @ ctx.as_matrix(x) @ QR.mT).reshape(ctx.shape)


def refresh_due(step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Whether every(k, ...) takes its new value: (step - 1) mod max(round(k), 1) == 0."""
    period = torch.clamp_min(torch.round(k), 1.0)
    return torch.remainder(step - 1.0, period) == 0


def _every(ctx: _Context, k: torch.Tensor, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    # both branches computed; the shaped evaluator in run() computes only the one taken
    assert ctx.step is not None
    return torch.where(refresh_due(ctx.step, k), x, prev)


def _factor_reduce(ctx: _Context, fn: str, x: torch.Tensor) -> torch.Tensor:
    """A reduction of a factor over its rows and columns, laid out as the scalars of w."""
    dims = (-2, -1)
    if fn == "norm":
        out = torch.sqrt(torch.sum(x * x, dim=dims))
    elif fn == "rms":
        out = torch.sqrt(torch.mean(x * x, dim=dims))
    elif fn == "mean":
        out = torch.mean(x, dim=dims)
    else:
        out = torch.sum(x, dim=dims)
    return out.reshape(tuple(out.shape) + (1,) * len(ctx.reduce_dims))


FACTOR_IMPL: dict[str, Callable[..., torch.Tensor]] = {
    "lmul": _lmul, "rmul": _rmul, "gram_left": _gram_left, "gram_right": _gram_right,
    "inv_root": _inv_root, "eigenbasis": _eigenbasis, "rotate": _rotate, "unrotate": _unrotate,
    "every": _every,
}


def zero_states(program: Program, w: torch.Tensor, batch_dims: int = 0,
                dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Zero states for ``program`` and parameter ``w`` (leading ``batch_dims`` batched), each at
    its declared storage shape (:func:`optdisco.dsl.shapes.storage_shape`)."""
    batch, param = tuple(w.shape[:batch_dims]), tuple(w.shape[batch_dims:])
    return [torch.zeros(batch + shapes.storage_shape(program.state_shape(n), param),
                        dtype=dtype or w.dtype, device=w.device) for n in program.state_names]


#: name -> f(ctx, *args) for every built-in; all operate on tensors of the compute dtype.
TORCH_IMPL: dict[str, Callable[..., torch.Tensor]] = {
    "add": lambda ctx, a, b: a + b,
    "sub": lambda ctx, a, b: a - b,
    "mul": lambda ctx, a, b: a * b,
    "div": lambda ctx, a, b: a / b,
    "pow": lambda ctx, a, b: torch.pow(a, b),
    "neg": lambda ctx, a: -a,
    "abs": lambda ctx, x: torch.abs(x),
    "sign": lambda ctx, x: torch.sign(x),
    "sqrt": lambda ctx, x: torch.sqrt(x),
    "rsqrt": lambda ctx, x: torch.rsqrt(x),
    "exp": lambda ctx, x: torch.exp(x),
    "log": lambda ctx, x: torch.log(x),
    "square": lambda ctx, x: x * x,
    "tanh": lambda ctx, x: torch.tanh(x),
    "relu": lambda ctx, x: torch.clamp_min(x, 0.0),
    "clip": lambda ctx, x, c: torch.minimum(torch.maximum(x, -c), c),
    "maximum": lambda ctx, a, b: torch.maximum(a, b),
    "minimum": lambda ctx, a, b: torch.minimum(a, b),
    "interp": lambda ctx, a, b, beta: (1.0 - beta) * a + beta * b,
    "gt": lambda ctx, a, b: (a > b).to(ctx.dtype),
    "where": lambda ctx, c, a, b: torch.where(c > 0, a, b),
    "floor": lambda ctx, x: torch.floor(x),
    "cosine": lambda ctx, x: torch.cos(x),
    "norm": lambda ctx, x: ctx.reduce(lambda t, d: torch.sqrt(torch.sum(t * t, dim=d, keepdim=True)), x),
    "rms": lambda ctx, x: ctx.reduce(lambda t, d: torch.sqrt(torch.mean(t * t, dim=d, keepdim=True)), x),
    "mean": lambda ctx, x: ctx.reduce(lambda t, d: torch.mean(t, dim=d, keepdim=True), x),
    "sum": lambda ctx, x: ctx.reduce(lambda t, d: torch.sum(t, dim=d, keepdim=True), x),
    "numel": _numel,
    "orthogonalize": _orthogonalize,
    "row_mean": _row_mean,
    "col_mean": _col_mean,
    "randn": lambda ctx: ctx.randn(),
    **FACTOR_IMPL,
    # a group of one tensor; run_group computes the group-wide values (these are never reached
    # from run(), which hands group rules to run_group)
    "group_sum": lambda ctx, x: ctx.reduce(lambda t, d: torch.sum(t, dim=d, keepdim=True), x),
    "group_max": lambda ctx, x: ctx.reduce(lambda t, d: torch.amax(t, dim=d, keepdim=True), x),
}
assert set(TORCH_IMPL) == set(BUILTINS), "every built-in needs an interpreter implementation"


def _setup(program: Program, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor],
           step: Scalar, lr: Scalar, hyperparameters: Mapping[str, Scalar] | None, batch_dims: int,
           generator: torch.Generator | None, noise: Callable[[torch.Size], torch.Tensor] | None,
           ) -> tuple[_Context, dict[str, torch.Tensor], Callable[[Scalar], torch.Tensor]]:
    """The context, the environment of inputs and the scalar maker for one run of ``program``."""
    if len(states) != len(program.state_names):
        raise DSLError(f"rule '{program.name}' has {len(program.state_names)} state(s) "
                       f"{list(program.state_names)}, got {len(states)}")
    hyper: dict[str, float | torch.Tensor] = dict(program.hyperparameter_defaults)
    if hyperparameters:
        unknown = set(hyperparameters) - set(hyper)
        if unknown:
            raise DSLError(f"unknown hyperparameter(s) {sorted(unknown)} for rule '{program.name}'",
                           hint=f"it takes {', '.join(hyper) or 'none'}")
        hyper.update(hyperparameters)
    dtype, device = w.dtype, w.device
    ctx = _Context(w.shape, batch_dims, dtype, device, generator, noise)

    def scalar(v: Scalar) -> torch.Tensor:
        return torch.as_tensor(v, dtype=dtype, device=device)

    env: dict[str, torch.Tensor] = {"w": w, "g": g.to(dtype), "step": scalar(step), "lr": scalar(lr)}
    env.update({n: s.to(dtype) for n, s in zip(program.state_names, states)})
    env.update({n: scalar(v) for n, v in hyper.items()})

    ctx.step = env["step"]
    return ctx, env, scalar


def _prepare(program: Program, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor], *,
             step: Scalar, lr: Scalar, hyperparameters: Mapping[str, Scalar] | None, batch_dims: int,
             generator: torch.Generator | None,
             noise: Callable[[torch.Size], torch.Tensor] | None) -> "_Shaped":
    """One parameter's shaped run, ready for its first statement."""
    ctx, env, scalar = _setup(program, w, g, states, step, lr, hyperparameters, batch_dims,
                              generator, noise)
    return _Shaped(program, ctx, env, scalar)


def run(program: Program, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor], *,
        step: Scalar, lr: Scalar, hyperparameters: Mapping[str, Scalar] | None = None,
        batch_dims: int = 0, generator: torch.Generator | None = None,
        noise: Callable[[torch.Size], torch.Tensor] | None = None,
        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One application of the rule: ``(u, new_states) = program(w, g, states; step, lr, hyper)``.

    Computes in the dtype of ``w`` (use float64 for reference results). Hyperparameters
    default to the program's defaults; unknown names are a DSLError. ``randn()`` draws from
    ``generator`` (or calls ``noise(shape)`` when given, for tests that share noise).
    Returns the update ``u`` (shaped like ``w``) and the new states, each at its declared
    storage shape (:func:`zero_states`; shaped like ``w`` unless annotated); the caller
    applies ``w <- w - lr * u``.
    """
    if program.has_group_reductions:  # a param group of one tensor
        us, new = run_group(program, [w], [g], [states], step=step, lr=lr,
                            hyperparameters=hyperparameters, batch_dims=batch_dims,
                            generator=generator, noise=noise)
        return us[0], new[0]
    ctx, env, scalar = _setup(program, w, g, states, step, lr, hyperparameters, batch_dims,
                              generator, noise)
    if program.has_matrix_states:
        return _run_shaped(program, ctx, env, scalar)

    def ev(e: Expr) -> torch.Tensor:
        if isinstance(e, Name):
            return env[e.id]
        if isinstance(e, Const):
            return scalar(e.value)
        assert isinstance(e, Call)
        return TORCH_IMPL[e.fn](ctx, *[ev(a) for a in e.args])

    for stmt in program.body:
        env[stmt.target] = ev(stmt.expr)
    update = ctx.full(ev(program.update))
    return update, [ctx.full(env[s]) for s in program.state_names]


def _run_shaped(program: Program, ctx: _Context, env: dict[str, torch.Tensor],
                scalar: Callable[[Scalar], torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """run() for rules with matrix states: every value carries its static shape
    (:mod:`optdisco.dsl.shapes`), which places scalars against factors, reduces factors over
    their own dimensions and stores each state at its declared size."""
    shaped = _Shaped(program, ctx, env, scalar)
    for stmt in program.body:
        shaped.assign(stmt.target, stmt.expr, {})
    return shaped.finish({})


class _Shaped:
    """One parameter's run of a rule on the shaped path, a statement at a time (so that
    :func:`run_group` can run every parameter of a group in lockstep). Group built-ins read
    their group-wide value from ``group_values`` (call -> one value per batch entry)."""

    def __init__(self, program: Program, ctx: _Context, env: dict[str, torch.Tensor],
                 scalar: Callable[[Scalar], torch.Tensor]) -> None:
        self.program, self.ctx, self.env, self.scalar = program, ctx, env, scalar
        self.env_shapes = {n: shapes.SCALAR for n in env}
        self.env_shapes.update({"w": shapes.PARAM, "g": shapes.PARAM})
        self.env_shapes.update({n: shapes.STATE_VALUE_SHAPE[program.state_shape(n)]
                                for n in program.state_names})
        self.memo: dict[Expr, str] = {}  # per statement: a name's shape changes only between statements

    def shape(self, e: Expr) -> str:
        if isinstance(e, Const):
            return shapes.SCALAR
        if isinstance(e, Name):
            return self.env_shapes[e.id]
        hit = self.memo.get(e)
        if hit is None:
            assert isinstance(e, Call)
            hit = self.memo[e] = shapes.result_shape(e.fn, [self.shape(a) for a in e.args])
        return hit

    def placed(self, x: torch.Tensor, x_shape: str, out_shape: str) -> torch.Tensor:
        if out_shape in shapes.FACTORS and x_shape == shapes.SCALAR:
            return _batch_scalar(self.ctx, x, 2)
        return x

    def ev(self, e: Expr, group_values: Mapping[Expr, torch.Tensor]) -> torch.Tensor:
        ctx, placed, shape = self.ctx, self.placed, self.shape
        if isinstance(e, Name):
            return self.env[e.id]
        if isinstance(e, Const):
            return self.scalar(e.value)
        assert isinstance(e, Call)
        out_shape = shape(e)
        if BUILTINS[e.fn].kind == "group":
            value = group_values[e].to(ctx.device)
            return value.reshape(tuple(ctx.shape[:ctx.batch_dims]) + (1,) * len(ctx.reduce_dims))
        if e.fn == "every":  # only the branch taken is computed (an eigh costs)
            due = refresh_due(ctx.step, self.ev(e.args[0], group_values))  # type: ignore[arg-type]
            if bool(due.all()):
                out = placed(self.ev(e.args[1], group_values), shape(e.args[1]), out_shape)
            elif not bool(due.any()):
                out = placed(self.ev(e.args[2], group_values), shape(e.args[2]), out_shape)
            else:
                out = torch.where(placed(due, shapes.SCALAR, out_shape),
                                  placed(self.ev(e.args[1], group_values), shape(e.args[1]), out_shape),
                                  placed(self.ev(e.args[2], group_values), shape(e.args[2]), out_shape))
        elif BUILTINS[e.fn].kind == "reduction" and e.fn != "numel" and shape(e.args[0]) in shapes.FACTORS:
            out = _factor_reduce(ctx, e.fn, self.ev(e.args[0], group_values))
        else:
            arg_shapes = [shape(a) for a in e.args]
            elementwise = BUILTINS[e.fn].kind in ("operator", "elementwise")
            args = [placed(self.ev(a, group_values), s, out_shape) if elementwise else self.ev(a, group_values)
                    for a, s in zip(e.args, arg_shapes)]
            out = TORCH_IMPL[e.fn](ctx, *args)
        if out_shape in shapes.FACTORS:
            out = torch.broadcast_to(out, _factor_shape(ctx, out_shape))
        return out

    def partial(self, call: Call, group_values: Mapping[Expr, torch.Tensor]) -> torch.Tensor:
        """This parameter's part of group built-in ``call``: its argument reduced (sum or max)
        over the parameter's entries, one value per batch entry (shape ``ctx.shape[:batch_dims]``)."""
        ctx = self.ctx
        x = self.ev(call.args[0], group_values)
        if self.shape(call.args[0]) in shapes.FACTORS:
            x = torch.broadcast_to(x, _factor_shape(ctx, self.shape(call.args[0])))
            flat = x.reshape(tuple(ctx.shape[:ctx.batch_dims]) + (-1,))
        else:
            flat = ctx.full(x).reshape(tuple(ctx.shape[:ctx.batch_dims]) + (-1,))
        return torch.amax(flat, dim=-1) if call.fn == "group_max" else torch.sum(flat, dim=-1)

    def assign(self, target: str, expr: Expr, group_values: Mapping[Expr, torch.Tensor]) -> None:
        self.env[target] = self.ev(expr, group_values)
        self.env_shapes[target] = self.shape(expr)
        self.memo.clear()

    def finish(self, group_values: Mapping[Expr, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The update and the new states, each at its declared storage shape."""
        ctx, program = self.ctx, self.program
        update = ctx.full(self.ev(program.update, group_values))
        nparam = len(ctx.reduce_dims)
        new_states = []
        for n in program.state_names:
            declared = program.state_shape(n)
            value = self.env[n]
            if declared in shapes.FACTORS:
                new_states.append(torch.broadcast_to(value, _factor_shape(ctx, declared)))
            else:
                new_states.append(ctx.full(value)[(Ellipsis,) + shapes.compact_index(declared, nparam)])
        return update, new_states


def group_calls(e: Expr) -> list[Call]:
    """The group built-in calls in ``e``, each once, inner before outer (the order
    :func:`run_group` computes them in)."""
    out: list[Call] = []

    def visit(x: Expr) -> None:
        if isinstance(x, Call):
            for a in x.args:
                visit(a)
            if BUILTINS[x.fn].kind == "group" and x not in out:
                out.append(x)

    visit(e)
    return out


def _combine(fn: str, partials: Sequence[torch.Tensor]) -> torch.Tensor:
    """The group value from each parameter's part: their sum (in parameter order, as a loop
    over the group adds them) or their maximum."""
    device = partials[0].device
    total = partials[0]
    for part in partials[1:]:
        part = part.to(device)
        total = torch.maximum(total, part) if fn == "group_max" else total + part
    return total


def run_group(program: Program, ws: Sequence[torch.Tensor], gs: Sequence[torch.Tensor],
              states: Sequence[Sequence[torch.Tensor]], *, step: Scalar | Sequence[Scalar],
              lr: Scalar | Sequence[Scalar], hyperparameters: Mapping[str, Scalar] | None = None,
              batch_dims: int = 0,
              generator: torch.Generator | None = None,
              noise: Callable[[torch.Size], torch.Tensor] | None = None,
              ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """One application of the rule to every parameter of a param group, in lockstep.

    For each statement in order, every group built-in in it is computed first (inner calls
    before outer ones): ``group_sum(x) = sum_i sum_j x_i[j]`` and ``group_max(x) = max_i max_j
    x_i[j]`` over the parameters i of the group and their entries j (the leading
    ``batch_dims`` dimensions stay separate problems); then the statement runs for every
    parameter. A ``per_group`` state is read from the first parameter's states (its value is
    one for the group), and every parameter gets the same new value. ``step`` and ``lr`` are
    one value for all or one per parameter (``lr`` per parameter only to shape one value per
    batch entry for each tensor's rank: it must be the same number for the whole group). Returns ``([u_i], [new states_i])`` as :func:`run` does for
    one parameter; the caller applies ``w_i <- w_i - lr * u_i``.
    """
    if not ws:
        return [], []
    if not (len(ws) == len(gs) == len(states)):
        raise DSLError(f"run_group needs one gradient and one state list per parameter, got "
                       f"{len(ws)} parameters, {len(gs)} gradients and {len(states)} state lists")
    steps = list(step) if isinstance(step, Sequence) else [step] * len(ws)
    lrs = list(lr) if isinstance(lr, Sequence) else [lr] * len(ws)
    group_states = [k for k, n in enumerate(program.state_names) if program.state_shape(n) == "per_group"]
    runs = []
    for w, g, s, t, lr_i in zip(ws, gs, states, steps, lrs):
        s = list(s)
        for k in group_states:  # the group's value, at this parameter's storage shape
            s[k] = states[0][k].to(w.device).reshape(tuple(w.shape[:batch_dims]) + (1,) * (w.dim() - batch_dims))
        runs.append(_prepare(program, w, g, s, step=t, lr=lr_i, hyperparameters=hyperparameters,
                             batch_dims=batch_dims, generator=generator, noise=noise))

    def group_values(e: Expr) -> dict[Expr, torch.Tensor]:
        values: dict[Expr, torch.Tensor] = {}
        for call in group_calls(e):
            values[call] = _combine(call.fn, [r.partial(call, values) for r in runs])
        return values

    for stmt in program.body:
        values = group_values(stmt.expr)
        for r in runs:
            r.assign(stmt.target, stmt.expr, values)
    values = group_values(program.update)
    outs = [r.finish(values) for r in runs]
    return [u for u, _ in outs], [new for _, new in outs]


def trajectory(program: Program, w: torch.Tensor, grads: Sequence[torch.Tensor] | Callable, *,
               steps: int, lr: Scalar | Callable[[int], Scalar],
               hyperparameters: Mapping[str, Scalar] | None = None,
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Parameters after each of ``steps`` updates ``w <- w - lr * u`` from zero states.

    ``grads`` is a list of gradients or a function ``grad(w, t) -> g`` (t from 1).
    ``lr`` is a number or a function of the step. Returns ``[w_1, ..., w_steps]``.
    """
    states = zero_states(program, w)
    out = []
    for t in range(1, steps + 1):
        g = grads(w, t) if callable(grads) else grads[t - 1]
        lr_t = lr(t) if callable(lr) else lr
        u, states = run(program, w, g, states, step=float(t), lr=lr_t,
                        hyperparameters=hyperparameters, generator=generator)
        w = w - lr_t * u
        out.append(w)
    return out


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block (unchanged if None).

    The setting is process-wide while the block runs (it is restored after)."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
