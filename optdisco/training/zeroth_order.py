"""Zeroth-order gradients: ``p.grad`` filled from loss values only, as in DeepZero.

Paper: A. Chen, Y. Zhang, J. Jia, J. Diffenderfer, J. Liu, K. Parasyris, Y. Zhang, Z. Zhang,
B. Kailkhura, S. Liu, "DeepZero: Scaling up Zeroth-Order Optimization for Deep Model
Training", ICLR 2024 (arXiv:2310.02025).

Two estimators of ``grad f(x)`` for ``x`` in R^d, with smoothing ``mu``:

- **CGE**, coordinate-wise (forward differences): for each coordinate ``j`` in the support
  ``S`` of a sparsity mask, ``ghat_j = (f(x + mu e_j) - f(x)) / mu``, and ``ghat_j = 0``
  outside it. It costs ``1 + |S|`` evaluations of ``f``; its error is O(mu) per coordinate
  for a smooth ``f``.
- **RGE**, randomized vector-wise: ``ghat = 1/q sum_k (f(x + mu u_k) - f(x)) / mu * u_k``
  with ``u_k ~ N(0, I)``, restricted to the mask's support. It costs ``1 + q``
  evaluations; it is unbiased for the Gaussian-smoothed ``f`` and noisy for small ``q``.

DeepZero's sparsity: each step draws a random mask keeping a ``density`` share of each
parameter tensor's coordinates (its layer-wise ratios come from ZO-GraSP pruning at init;
here the density is a setting, one number or one per tensor). Feature reuse and forward
parallelization, DeepZero's speed-ups, are not implemented: every evaluation is a full
forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

METHODS = ("cge", "rge")


@dataclass(frozen=True)
class GradientSpec:
    """Where training gradients come from: "backprop", or a zeroth-order estimator with its
    settings, written ``"rge:queries=8,mu=0.001"`` or ``"cge:density=0.05,mu=0.001"``.

    ``queries`` is RGE's ``q`` (``1 + q`` loss evaluations per step); ``density`` is the share
    of coordinates CGE estimates each step (``1 + round(density * N)`` evaluations).
    """

    method: str = "backprop"
    mu: float = 1e-3
    queries: int = 8
    density: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "GradientSpec":
        """The spec written as text (see the class docstring); ValueError for a bad one."""
        method, _, rest = text.strip().partition(":")
        if method not in ("backprop", *METHODS):
            raise ValueError(f"unknown gradient source '{method}'; choose backprop, {', '.join(METHODS)}")
        values: dict[str, float | int] = {}
        for item in filter(None, (x.strip() for x in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in ("mu", "queries", "density") or method == "backprop":
                raise ValueError(f"bad gradient setting '{item}' in '{text}'; {method} takes "
                                 f"{'nothing' if method == 'backprop' else 'mu=, queries= (rge), density= (cge)'}")
            try:
                values[key] = int(value) if key == "queries" else float(value)
            except ValueError:
                raise ValueError(f"bad number in gradient setting '{item}'") from None
        spec = cls(method, **values)  # type: ignore[arg-type]
        if not (spec.mu > 0 and spec.queries >= 1 and 0 < spec.density <= 1):
            raise ValueError(f"gradient settings out of range in '{text}': need mu > 0, queries >= 1, "
                             "0 < density <= 1")
        return spec

    def text(self) -> str:
        """The canonical text of this spec (what caches and stores key on)."""
        if self.method == "backprop":
            return "backprop"
        extra = f"queries={self.queries}" if self.method == "rge" else f"density={self.density:g}"
        return f"{self.method}:mu={self.mu:g},{extra}"

    def evaluations(self, n: int) -> int:
        """Loss evaluations per step for a problem of ``n`` scalars (1 for a backprop step)."""
        if self.method == "rge":
            return 1 + self.queries
        if self.method == "cge":
            return 1 + max(1, round(self.density * n))
        return 1


def _loss(f: Callable[[], torch.Tensor | float]) -> float:
    with torch.no_grad():
        return float(f())


def cge_estimate(f: Callable[[], torch.Tensor | float], params: Sequence[torch.Tensor], *, mu: float = 1e-3,
                 masks: Sequence[torch.Tensor | None] | None = None) -> tuple[list[torch.Tensor], float, int]:
    """Coordinate-wise forward-difference estimate ``ghat_j = (f(x + mu e_j) - f(x)) / mu``
    over each mask's nonzero coordinates (every coordinate without a mask).

    ``f`` evaluates the loss at the parameters' current values; each coordinate is moved
    by ``mu`` in place and restored exactly. Returns ``(estimates, f(x), evaluations)``
    with ``evaluations = 1 + sum |S|``.
    """
    base = _loss(f)
    evaluations = 1
    out = []
    with torch.no_grad():
        for i, p in enumerate(params):
            est = torch.zeros_like(p)
            flat, est_flat = p.view(-1), est.view(-1)
            mask = masks[i] if masks is not None else None
            coords = torch.arange(p.numel()) if mask is None else torch.nonzero(mask.reshape(-1)).reshape(-1)
            for j in coords.tolist():
                saved = flat[j].clone()
                flat[j] = saved + mu
                est_flat[j] = (_loss(f) - base) / mu
                flat[j] = saved
                evaluations += 1
            out.append(est)
    return out, base, evaluations


def rge_estimate(f: Callable[[], torch.Tensor | float], params: Sequence[torch.Tensor], *, mu: float = 1e-3,
                 queries: int = 1, generator: torch.Generator | None = None,
                 masks: Sequence[torch.Tensor | None] | None = None) -> tuple[list[torch.Tensor], float, int]:
    """Randomized estimate ``ghat = 1/q sum_k (f(x + mu u_k) - f(x)) / mu * u_k``, ``u_k``
    standard normal on the masks' support (all coordinates without masks), all tensors
    perturbed together. Returns ``(estimates, f(x), 1 + queries)``."""
    if queries < 1:
        raise ValueError(f"RGE needs queries >= 1, got {queries}")
    base = _loss(f)
    out = [torch.zeros_like(p) for p in params]
    with torch.no_grad():
        saved = [p.clone() for p in params]
        for _ in range(queries):
            dirs = []
            for i, p in enumerate(params):
                u = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                if masks is not None and masks[i] is not None:
                    u = u * masks[i].to(p.dtype)
                dirs.append(u)
                p.add_(u, alpha=mu)
            scale = (_loss(f) - base) / mu / queries
            for p, s, u, o in zip(params, saved, dirs, out):
                p.copy_(s)
                o.add_(u, alpha=scale)
    return out, base, 1 + queries


class ZerothOrderGradients:
    """A gradient source for any optimizer: :meth:`fill` sets ``p.grad`` for every parameter
    from loss values only (CGE or RGE, module docstring) and counts the evaluations.

    ``density`` < 1 draws, each step, a random mask keeping ``round(density * numel)``
    coordinates of each tensor (one number, or one per tensor); ``queries`` is RGE's ``q``.
    """

    def __init__(self, params: Sequence[torch.Tensor] | torch.nn.Module, *, method: str = "cge",
                 mu: float = 1e-3, queries: int = 8, density: float | Sequence[float] = 1.0,
                 seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown zeroth-order method '{method}'; choose one of {', '.join(METHODS)}")
        self.params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
        densities = [float(density)] * len(self.params) if isinstance(density, (int, float)) else list(density)
        if len(densities) != len(self.params) or not all(0.0 < d <= 1.0 for d in densities):
            raise ValueError(f"density must be in (0, 1], one number or one per parameter tensor; got {density}")
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        self.method, self.mu, self.queries, self.densities = method, float(mu), int(queries), densities
        self.generator = torch.Generator().manual_seed(seed)
        self.evaluations = 0

    def masks(self) -> list[torch.Tensor | None]:
        """This step's random sparsity masks (None for a tensor at density 1)."""
        out: list[torch.Tensor | None] = []
        for p, d in zip(self.params, self.densities):
            if d >= 1.0:
                out.append(None)
                continue
            keep = max(1, round(d * p.numel()))
            idx = torch.randperm(p.numel(), generator=self.generator)[:keep]
            m = torch.zeros(p.numel(), dtype=torch.bool)
            m[idx] = True
            out.append(m.reshape(p.shape))
        return out

    def evaluations_per_step(self) -> int:
        """Loss evaluations one :meth:`fill` costs: ``1 + sum_i round(density_i * numel_i)``
        for CGE, ``1 + queries`` for RGE."""
        if self.method == "rge":
            return 1 + self.queries
        return 1 + sum(p.numel() if d >= 1.0 else max(1, round(d * p.numel()))
                       for p, d in zip(self.params, self.densities))

    def fill(self, loss: Callable[[], torch.Tensor | float]) -> float:
        """Set every parameter's ``.grad`` to the estimate at the current point; returns the loss there."""
        masks = self.masks()
        if self.method == "cge":
            est, base, n = cge_estimate(loss, self.params, mu=self.mu, masks=masks)
        else:
            est, base, n = rge_estimate(loss, self.params, mu=self.mu, queries=self.queries,
                                        generator=self.generator, masks=masks)
        for p, e in zip(self.params, est):
            p.grad = e
        self.evaluations += n
        return base


def rge_rows(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, mu: float, queries: int,
             generator: torch.Generator | None = None,
             draw: Callable[[], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """RGE for many independent problems at once: ``x`` is ``(P, N)`` (one row per problem),
    ``loss(x)`` returns the ``(P,)`` losses. Row ``i`` gets
    ``1/q sum_k (loss(x + mu u_k)_i - loss(x)_i) / mu * u_k[i]`` with ``u_k ~ N(0, I)``, drawn
    from ``generator``, or by ``draw()`` (a ``(P, N)`` tensor) when given.
    Returns ``(estimates (P, N), loss(x), 1 + queries)`` (evaluations per problem)."""
    if queries < 1:
        raise ValueError(f"RGE needs queries >= 1, got {queries}")
    with torch.no_grad():
        base = loss(x)
        est = torch.zeros_like(x)
        for _ in range(queries):
            u = draw() if draw is not None else torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                                            device=x.device)
            est.add_(u * ((loss(x + mu * u) - base) / (mu * queries)).unsqueeze(1))
    return est, base, 1 + queries


def cge_rows(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, mu: float,
             coords: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """CGE for many independent problems at once: ``x`` is ``(P, N)``, ``loss(x)`` the ``(P,)``
    losses; for each coordinate ``j`` in ``coords`` (all if None), one evaluation moves column
    ``j`` of every row: ``est[:, j] = (loss(x + mu e_j) - loss(x)) / mu``. Returns
    ``(estimates, loss(x), 1 + len(coords))`` (evaluations per problem)."""
    cols = range(x.shape[1]) if coords is None else coords.tolist()
    with torch.no_grad():
        base = loss(x)
        est = torch.zeros_like(x)
        y = x.clone()
        n = 1
        for j in cols:
            y[:, j] = x[:, j] + mu
            est[:, j] = (loss(y) - base) / mu
            y[:, j] = x[:, j]
            n += 1
    return est, base, n
