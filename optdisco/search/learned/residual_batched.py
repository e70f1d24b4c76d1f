"""The residual learned optimizer in batched functional form: P runs on one task as one computation.

Row p of a flat ``(P, N)`` buffer is one training run of ``task`` from the evaluators' own
initialization and minibatches for ``seeds[p]``, with its own residual weights
``thetas[p]`` and peak learning rate ``lrs[p]``. Each step, as in
:func:`optdisco.evaluators.train.train` (same leaves, same loss, same schedule
``lr_t = lr * schedule(t, T)``, same kill rule for non-finite or exploded losses), and as
:class:`~.residual.ResidualLearnedOptimizer` orders it:

1. the feature statistics advance with g: ``m_k <- b_k m_k + (1 - b_k) g``, ``v <- b_v v + (1 - b_v) g^2``;
2. per tensor and row, ``r = alpha * scale * f_theta(x)`` from the features of w before the step
   (:func:`~.residual.batched_features`, :func:`~.residual.batched_residual`);
3. the base rule (taped for the flat layout, as the evaluators run every rule):
   ``w <- w - lr_t * base(w, g, s)``, then ``w <- w - lr_t * r``.

Rows whose theta is all zeros skip step 3's residual, so they are the base rule bit for bit,
the same numbers :func:`~optdisco.evaluators.train.train` gives that rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...discovered.optimizer import resolve_rule
from ...dsl import Program
from ...dsl.interpreter import cpu_threads
from ...evaluators.tape import flat_layout, make_step
from ...evaluators.tasks import Task
from ...evaluators.train import diverged, schedule, seed_generator
from .residual import MOMENTUM_BETAS, SECOND_MOMENT_BETA, batched_features, batched_residual, theta_size


@dataclass
class BatchedResult:
    """Per row: final validation loss (inf if the run failed), failure reason, final flat weights."""

    val_loss: list[float]
    failure: list[str | None]
    params: torch.Tensor


def train_residual(task: Task, thetas: "np.ndarray | torch.Tensor", lrs: Sequence[float], seeds: Sequence[int],
                   *, steps: int, hidden: int, alpha: float, base: "str | Program" = "adamw",
                   dtype: torch.dtype = torch.float32) -> BatchedResult:
    """Train row p with residual weights ``thetas[p]`` at peak lr ``lrs[p]`` on seed ``seeds[p]``
    for ``steps`` updates (see the module doc); on one torch thread, like the evaluators."""
    with cpu_threads(1):
        return _train_residual(task, thetas, lrs, seeds, steps=steps, hidden=hidden, alpha=alpha,
                               base=base, dtype=dtype)


def _train_residual(task: Task, thetas: "np.ndarray | torch.Tensor", lrs: Sequence[float], seeds: Sequence[int],
                    *, steps: int, hidden: int, alpha: float, base: "str | Program",
                    dtype: torch.dtype) -> BatchedResult:
    program = resolve_rule(base)
    th = torch.as_tensor(np.asarray(thetas, dtype=np.float32)).to(dtype)
    if th.dim() != 2 or th.shape[1] != theta_size(hidden):
        raise ValueError(f"thetas must be (P, {theta_size(hidden)}) for hidden={hidden}, not {tuple(th.shape)}")
    P = th.shape[0]
    if len(lrs) != P or len(seeds) != P:
        raise ValueError(f"{P} thetas need {P} learning rates and {P} seeds")
    layout = flat_layout([shape for _, shape in task.shapes])
    uniq = sorted(set(seeds))
    seed_row = {s: i for i, s in enumerate(uniq)}
    inits = [torch.cat([p.reshape(-1) for p in task.init(seed_generator(task, s, "init"))]) for s in uniq]
    batches = torch.stack([task.sample(seed_generator(task, s, "data"), steps) for s in uniq])
    seed_idx = torch.tensor([seed_row[s] for s in seeds])
    init_flat = torch.stack(inits).to(dtype)[seed_idx]
    flat = init_flat.clone()
    N = flat.shape[1]
    lr_rows = torch.tensor([float(x) for x in lrs], dtype=dtype).unsqueeze(1)
    states = [torch.zeros(P, N, dtype=dtype) for _ in program.state_names]
    feat_m = [torch.zeros(P, N, dtype=dtype) for _ in MOMENTUM_BETAS]
    feat_v = torch.zeros(P, N, dtype=dtype)
    stepper = make_step(program, layout)
    generator = torch.Generator().manual_seed(1000 + 7919 * int(uniq[0]))
    active = (th != 0).any(dim=1, keepdim=True)
    any_residual = bool(active.any())
    alive = torch.ones(P, dtype=torch.bool)
    failure: list[str | None] = [None] * P
    first_loss = torch.full((P,), float("nan"))

    def kill(mask: torch.Tensor, reason: str) -> None:
        nonlocal flat, states, feat_m, feat_v
        for i in torch.nonzero(mask & alive).flatten().tolist():
            failure[i] = reason
        alive.logical_and_(~mask)
        keep = alive.unsqueeze(1)
        zero = torch.zeros((), dtype=dtype)
        flat = torch.where(keep, flat, init_flat)
        states = [torch.where(keep, s, zero) for s in states]
        feat_m = [torch.where(keep, s, zero) for s in feat_m]
        feat_v = torch.where(keep, feat_v, zero)

    for t in range(1, steps + 1):
        if not bool(alive.any()):
            break
        factor = schedule(t, steps)
        leaves = [flat[:, o:o + n].view(P, *shape).detach().requires_grad_(True) for o, n, shape in layout]
        losses = task.train_loss(leaves, batches[:, t - 1][seed_idx])
        ld = losses.detach()
        if t == 1:
            first_loss = ld.clone()
        live_before = alive.clone()
        for mask, reason in diverged(ld, first_loss, t):
            if bool((mask & alive).any()):
                kill(mask, reason)
        total = torch.where(live_before, losses, torch.zeros_like(losses)).sum()
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        g = torch.cat([torch.zeros(P, n, dtype=dtype) if gr is None else gr.reshape(P, n)
                       for gr, (_, n, _) in zip(grads, layout)], dim=1)
        if not bool(alive.all()):
            g = torch.where(alive.unsqueeze(1), g, torch.zeros((), dtype=dtype))
        step_t = torch.tensor(float(t), dtype=dtype)
        lr_t = lr_rows * factor
        with torch.no_grad():
            for m, b in zip(feat_m, MOMENTUM_BETAS):
                m.mul_(b).add_(g, alpha=1.0 - b)
            feat_v.mul_(SECOND_MOMENT_BETA).addcmul_(g, g, value=1.0 - SECOND_MOMENT_BETA)
            res = None
            if any_residual:  # features read w before the base step moves it
                parts = []
                for o, n, _ in layout:
                    x, scale = batched_features(flat[:, o:o + n], g[:, o:o + n], [m[:, o:o + n] for m in feat_m],
                                                feat_v[:, o:o + n], t)
                    parts.append(alpha * scale * batched_residual(th, x, hidden))
                res = torch.where(active, torch.cat(parts, dim=1), torch.zeros((), dtype=dtype))
            u, new_states = stepper(flat, g, states, step=step_t, lr=lr_t, generator=generator)
            # a state that is w itself must not change with the in-place update below
            states = [s.clone() if s.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr() else s
                      for s in new_states]
            flat.sub_(lr_t * u)
            if res is not None:
                flat.sub_(lr_t * res)
        nonfinite = ~torch.isfinite(flat).all(dim=1) & alive
        if bool(nonfinite.any()):
            kill(nonfinite, f"non-finite parameters after step {t}")
    with torch.no_grad():
        val = task.val_loss([flat[:, o:o + n].view(P, *shape) for o, n, shape in layout]).double().tolist()
    out = []
    for i in range(P):
        ok = bool(alive[i]) and math.isfinite(val[i])
        if bool(alive[i]) and not ok:
            failure[i] = "non-finite validation loss"
        out.append(val[i] if ok else math.inf)
    return BatchedResult(out, failure, flat)
