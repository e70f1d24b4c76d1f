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
}
assert set(TORCH_IMPL) == set(BUILTINS), "every built-in needs an interpreter implementation"


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
    env_shapes = {n: shapes.SCALAR for n in env}
    env_shapes.update({"w": shapes.PARAM, "g": shapes.PARAM})
    env_shapes.update({n: shapes.STATE_VALUE_SHAPE[program.state_shape(n)] for n in program.state_names})

    memo: dict[Expr, str] = {}  # per statement: a name's shape changes only between statements

    def shape(e: Expr) -> str:
        if isinstance(e, Const):
            return shapes.SCALAR
        if isinstance(e, Name):
            return env_shapes[e.id]
        hit = memo.get(e)
        if hit is None:
            assert isinstance(e, Call)
            hit = memo[e] = shapes.result_shape(e.fn, [shape(a) for a in e.args])
        return hit

    def placed(x: torch.Tensor, x_shape: str, out_shape: str) -> torch.Tensor:
        if out_shape in shapes.FACTORS and x_shape == shapes.SCALAR:
            return _batch_scalar(ctx, x, 2)
        return x

    def ev(e: Expr) -> torch.Tensor:
        if isinstance(e, Name):
            return env[e.id]
        if isinstance(e, Const):
            return scalar(e.value)
        assert isinstance(e, Call)
        out_shape = shape(e)
        if e.fn == "every":  # only the branch taken is computed (an eigh costs)
            due = refresh_due(ctx.step, ev(e.args[0]))  # type: ignore[arg-type]
            if bool(due.all()):
                out = placed(ev(e.args[1]), shape(e.args[1]), out_shape)
            elif not bool(due.any()):
                out = placed(ev(e.args[2]), shape(e.args[2]), out_shape)
            else:
                out = torch.where(placed(due, shapes.SCALAR, out_shape),
                                  placed(ev(e.args[1]), shape(e.args[1]), out_shape),
                                  placed(ev(e.args[2]), shape(e.args[2]), out_shape))
        elif BUILTINS[e.fn].kind == "reduction" and e.fn != "numel" and shape(e.args[0]) in shapes.FACTORS:
            out = _factor_reduce(ctx, e.fn, ev(e.args[0]))
        else:
            arg_shapes = [shape(a) for a in e.args]
            elementwise = BUILTINS[e.fn].kind in ("operator", "elementwise")
            args = [placed(ev(a), s, out_shape) if elementwise else ev(a) for a, s in zip(e.args, arg_shapes)]
            out = TORCH_IMPL[e.fn](ctx, *args)
        if out_shape in shapes.FACTORS:
            out = torch.broadcast_to(out, _factor_shape(ctx, out_shape))
        return out

    for stmt in program.body:
        env[stmt.target] = ev(stmt.expr)
        env_shapes[stmt.target] = shape(stmt.expr)
        memo.clear()
    update = ctx.full(ev(program.update))
    nparam = len(ctx.reduce_dims)
    new_states = []
    for n in program.state_names:
        declared = program.state_shape(n)
        value = env[n]
        if declared in shapes.FACTORS:
            new_states.append(torch.broadcast_to(value, _factor_shape(ctx, declared)))
        else:
            new_states.append(ctx.full(value)[(Ellipsis,) + shapes.compact_index(declared, nparam)])
    return update, new_states


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
