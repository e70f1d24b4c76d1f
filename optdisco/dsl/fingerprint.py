"""A functional hash of a rule: equal for programs that compute the same sequence of updates.

The hash runs the reference interpreter in float64 on fixed pseudo-random problems and
hashes the updates it produces, rounded so that algebraically equal forms (``x + x`` and
``2 * x``, commuted operands, renamed names, dead statements) agree while any real
difference, including a different hyperparameter default, shows.

Each problem is a short trajectory from zero states, ``w <- w - lr * u``, at steps
1, 2, 3, 4, 5, 20, 200 and 5000 (states carried across the jumps), with fixed
gradients ``g_t = G_t + K * w`` (per-element scales of G from 1e-3 to 10, one exact zero;
K = 0 in half the problems, so that whole-tensor conditions such as a cosine against a
threshold take both values). Shapes: a 3x2 matrix (the matrix built-ins' tall case; few
elements, so reductions of constants stay small) and a 100-vector (a 6-vector for rules
with matrix states, whose factors are eigendecomposed each step: such a rule and a rule
without them never hash equal, a false "different"); 8 random problems
per shape, each at three learning rates, all batched (batch_dims=1) so a fingerprint
costs two interpreter runs per step; ``randn()`` draws from a fixed seed. Only updates
are hashed: states are internal, so programs that keep differently scaled or ordered
states but move the parameters the same way hash equal.

Noise: two programs that draw noise in a different order (``randn() - randn()`` written
the other way round) are equal in distribution but hash differently; a false
"different" costs the search one redundant evaluation, never a missed candidate.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from .interpreter import cpu_threads, run, zero_states
from .ir import Expr, Name, Program

#: Version of the recipe; bump it when anything below changes (cached hashes go stale).
VERSION = 1
#: The step counts of the updates hashed: five consecutive steps, then jumps (the states
#: carried on) so that rules that change behaviour late (warmups, step thresholds) differ.
STEP_VALUES = (1, 2, 3, 4, 5, 20, 200, 5000)
STEPS = len(STEP_VALUES)
LEARNING_RATES = (1e-3, 0.05, 0.7)
SHAPES = ((3, 2), (100,))
#: Shapes for rules with matrix states: a 100-vector's right factor is 100 x 100 and an eigh
#: of it per step would make such fingerprints cost seconds, so these rules use a 6-vector.
MATRIX_SHAPES = ((3, 2), (6,))
#: Independent random problems per shape, batched with the learning rates.
INSTANCES = 8
#: Significant bits of the mantissa kept (22 bits ~ 6.6 decimal digits).
MANTISSA_BITS = 22
#: Values smaller in magnitude than this are hashed as zero (cancellation noise).
FLUSH = 1e-13
_SEED = 20241128


def _names(e: Expr) -> set[str]:
    return {n.id for n in e.walk() if isinstance(n, Name)}


def eliminate_dead_code(p: Program) -> Program:
    """``p`` without the statements whose values reach neither the update nor a new state.

    Backward liveness over the straight-line body: a statement ``t = e`` is kept when
    ``t`` is live after it; then ``t`` dies and the names in ``e`` become live.
    """
    live = _names(p.update) | set(p.state_names)
    kept = []
    for stmt in reversed(p.body):
        if stmt.target in live:
            kept.append(stmt)
            live.discard(stmt.target)
            live |= _names(stmt.expr)
    if len(kept) == len(p.body):
        return p
    return replace(p, body=tuple(reversed(kept)))


def _problems(shapes: tuple[tuple[int, ...], ...]) -> list[dict]:
    gen = np.random.default_rng(_SEED)
    n_lr, n = len(LEARNING_RATES), INSTANCES
    out = []
    for shape in shapes:
        ones = (1,) * len(shape)

        def per_instance(x: np.ndarray) -> torch.Tensor:
            # instance i, learning rate j sits at batch index i * n_lr + j
            return torch.from_numpy(np.repeat(x, n_lr, axis=0))

        # each element has its own scale (1e-3..10) that its gradients keep over time, so
        # momentum-like sums often change sign and sign-like rules see their constants
        scale = 10.0 ** gen.uniform(-3, 1, (n, *shape))
        w0 = gen.standard_normal((n, *shape)) * 10.0 ** gen.uniform(-3, 1, (n, *shape))
        grads = [gen.standard_normal((n, *shape)) * scale for _ in range(STEPS)]
        grads[1].reshape(-1)[0] = 0.0  # one exact zero: sign(g) and g/|g| differ there, as they should
        # half the instances have gradients that follow w (a quadratic), half pure noise, so
        # that whole-tensor conditions (cosines, norms against thresholds) take both values
        curvature = gen.uniform(0.1, 2.0, (n, *shape)) * (np.arange(n) % 2).reshape(n, *ones)
        out.append({
            "shape": shape,
            "w": per_instance(w0),
            "grads": [per_instance(gr) for gr in grads],
            "curvature": per_instance(curvature),
            "lr": torch.tensor(LEARNING_RATES * n, dtype=torch.float64).reshape(n * n_lr, *ones),
        })
    return out


_PROBLEMS = _problems(SHAPES)
_MATRIX_PROBLEMS = _problems(MATRIX_SHAPES)


def single_threaded():
    """Run torch on one intra-op thread inside the block (a :func:`cpu_threads` block).

    On tensors this small, torch still splits some ops (sqrt among them) across its thread
    pool, and on a busy machine the synchronization costs ~0.5 ms per op instead of ~4 us."""
    return cpu_threads(1)


def updates(p: Program) -> list[np.ndarray]:
    """The updates at STEP_VALUES of ``p`` on each fingerprint problem, as float64 arrays
    of shape ``(INSTANCES * len(LEARNING_RATES), *shape)`` (the raw values the fingerprint rounds)."""
    with single_threaded():
        return _updates(eliminate_dead_code(p))


def _updates(p: Program) -> list[np.ndarray]:
    out = []
    for prob in _MATRIX_PROBLEMS if p.has_matrix_states else _PROBLEMS:
        gen = torch.Generator().manual_seed(_SEED)
        w = prob["w"]
        states = zero_states(p, w, batch_dims=1)
        for k, t in enumerate(STEP_VALUES):
            g = prob["grads"][k] + prob["curvature"] * w  # a noisy quadratic: g depends on w
            u, states = run(p, w, g, states, step=float(t), lr=prob["lr"],
                            batch_dims=1, generator=gen)
            out.append(u.numpy())
            w = w - prob["lr"] * u
    return out


def quantize(values: np.ndarray) -> bytes:
    """Bytes identifying ``values`` rounded to MANTISSA_BITS significant bits.

    |x| < FLUSH is 0 (and -0 is 0); nan, +inf and -inf are distinct tokens.
    """
    raw = np.asarray(values, dtype=np.float64).reshape(-1)
    v = raw
    finite = np.isfinite(v)
    v = np.where(finite & (np.abs(v) >= FLUSH), v, 0.0)
    m, e = np.frexp(v)
    q = np.rint(m * (1 << MANTISSA_BITS)).astype(np.int64)
    carry = np.abs(q) == (1 << MANTISSA_BITS)  # rounding 0.99999... up to 1.0: renormalize
    q = np.where(carry, q // 2, q)
    e = np.where(carry, e + 1, e).astype(np.int64)
    e = np.where(q == 0, 0, e)
    token = np.select([np.isnan(raw), np.isposinf(raw), np.isneginf(raw)], [1, 2, 3], 0)
    # one int64 per value: mantissa (23 bits with sign) | exponent (12 bits) | token (2 bits)
    key = (q << 14) | (((e + 2048) & 0xFFF) << 2) | token
    return key.astype("<i8").tobytes()


def fingerprint(p: Program) -> str:
    """Hex functional hash of ``p``: blake2b over the quantized updates of :func:`updates`."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"optdisco-fingerprint-v{VERSION}".encode())
    h.update(quantize(np.concatenate([u.reshape(-1) for u in updates(p)])))
    return h.hexdigest()
