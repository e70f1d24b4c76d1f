"""Properties of the solution a run reached: optimizers change what is learned, not only how fast.

For each run's final parameters (all tensors together unless said otherwise):

* ``weight_norm``: ||w||_2 over all parameters.
* ``frac_near_zero``: fraction of entries with |w_i| < 0.01 * rms(tensor of w_i).
* ``effective_rank``: mean over weights with >= 2 dims (matrix view: rows x rest) of
  exp(H(p)), p = sigma / sum(sigma) the normalized singular values (Roy and Vetterli, 2007).
* ``sharpness``: the top Hessian eigenvalue of the training loss on a fixed minibatch,
  by 10 steps of power iteration with Hessian-vector products (Rayleigh quotient).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .tasks import Task
from .train import _layout, _unflatten, seed_generator

POWER_STEPS = 10


def solution_properties(task: Task, flats: Sequence[torch.Tensor], seeds: Sequence[int]) -> list[dict[str, float]]:
    """Properties (see module doc) of each flat parameter vector, batched; ``seeds`` pick the minibatch."""
    if not flats:
        return []
    flat = torch.stack(list(flats)).float().to(task.device)
    P = flat.shape[0]
    layout = _layout(task)
    params = _unflatten(flat, layout)
    out = [dict() for _ in range(P)]
    norms = flat.norm(dim=1)
    near = torch.zeros(P, device=flat.device)
    ranks: list[list[float]] = [[] for _ in range(P)]
    norms = norms.cpu()
    for p, (_, _, shape) in zip(params, layout):
        rms = p.reshape(P, -1).square().mean(1).sqrt().clamp_min(1e-30)
        near += (p.reshape(P, -1).abs() < 0.01 * rms.unsqueeze(1)).float().sum(1)
        if len(shape) >= 2:
            s = torch.linalg.svdvals(p.reshape(P, shape[0], -1))
            q = s / s.sum(-1, keepdim=True).clamp_min(1e-30)
            ent = -(q * q.clamp_min(1e-30).log()).sum(-1).cpu()
            for i in range(P):
                ranks[i].append(float(ent[i].exp()))
    sharp = _sharpness(task, flat, layout, seeds)
    near = near.cpu()
    for i in range(P):
        out[i] = {"weight_norm": float(norms[i]), "frac_near_zero": float(near[i] / flat.shape[1]),
                  "effective_rank": sum(ranks[i]) / len(ranks[i]) if ranks[i] else math.nan,
                  "sharpness": float(sharp[i])}
    return out


def _sharpness(task: Task, flat: torch.Tensor, layout, seeds: Sequence[int]) -> torch.Tensor:
    try:
        batch = torch.stack([task.sample(seed_generator(task, s, "data"), 1)[0] for s in seeds]).to(flat.device)
        x = flat.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(task.train_loss(_unflatten(x, layout), batch).sum(), x, create_graph=True)
        v = torch.randn(flat.shape, generator=torch.Generator().manual_seed(0)).to(flat.device)
        v = v / v.norm(dim=1, keepdim=True)
        lam = torch.zeros(flat.shape[0], device=flat.device)
        for _ in range(POWER_STEPS):
            (hv,) = torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True)
            lam = (hv * v).sum(1)
            v = hv / hv.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return lam.detach().cpu()
    except RuntimeError:  # a model without second derivatives: report unknown, never fail
        return torch.full((flat.shape[0],), math.nan)
