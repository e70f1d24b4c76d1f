"""Adaptive batch sizes by the norm test, as AdAdaGrad and AdAdaGradNorm use it.

Paper: H. Lau, H. Liu, M. Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive
Gradient Methods", 2024 (arXiv:2402.11215); the norm test is from R. Byrd, G. Chin,
J. Nocedal, Y. Wu, "Sample size selection in optimization methods for machine learning",
Math. Programming 2012.

With per-example gradients ``G_1..G_b`` of the current batch, ``g = mean_i G_i`` and the
sample variance ``V = 1/(b-1) * sum_i ||G_i - g||^2``, the **norm test** passes when

    V / b <= eta^2 * ||g||^2,

i.e. the batch gradient's estimated variance is small against its own size. When it fails
the next batch is ``b' = ceil(V / (eta^2 ||g||^2))``, the smallest batch that would have
passed. The **coordinate-wise test** (AdAdaGrad's variant for per-coordinate AdaGrad) asks
the same of every coordinate ``j``: ``V_j / b <= eta^2 g_j^2`` with
``V_j = 1/(b-1) * sum_i (G_ij - g_j)^2``, and grows to the largest per-coordinate need,
``b' = max_j ceil(V_j / (eta^2 g_j^2))``, over coordinates with ``g_j != 0``. The batch
never shrinks and is capped at ``max_batch``.

Checked against the authors' reference code (github.com/timlautk/AdAdaGrad, ``tests.py``,
``norm_test``; the paper's own text could not be read here): it computes ``V`` as the 1-norm
of the per-coordinate unbiased variances of the per-example gradients, takes
``max(b, V / (eta^2 ||g||^2))`` rounded up, caps it at the largest batch, and tests the
batch the step used, with per-example gradients at the parameters before the step: the
same as here. That code applies the norm test to AdaGrad and AdaGrad-Norm alike and has no
coordinate-wise test; the coordinate-wise variant here is the same test asked of each
coordinate, an extension that no reference checks.

:class:`BatchSizeSpec` is the setting that lets the evaluators train every run under the
controller (``[fitness] batch_size`` in a campaign).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

VARIANTS = ("norm", "coordinate")


def per_sample_gradients(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per-example gradients ``G_i = d loss(model(x_i), y_i) / d theta`` for each parameter.

    Returns one tensor per parameter (in ``model.parameters()`` order) of shape
    ``(batch, *p.shape)``. ``loss_fn(output, target)`` gets one example at a time (batch
    dimension 1) and returns a scalar. Uses ``torch.func`` (vmap over ``grad``).
    """
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    return [grads[n] for n in names]


class NormTestBatchSize:
    """The batch-size controller: ask :attr:`batch_size`, feed :meth:`update` the batch's
    per-example gradients, and it applies the norm test (module docstring) and grows.

    ``eta`` is the test's tolerance (smaller grows sooner); ``variant`` is "norm" or
    "coordinate"; ``every`` tests only every that many steps (the test costs per-example
    gradients). :attr:`history` keeps each step's batch size.
    """

    def __init__(self, initial: int = 32, *, eta: float = 0.1, variant: str = "norm", max_batch: int = 4096,
                 every: int = 1) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown norm-test variant '{variant}'; choose one of {', '.join(VARIANTS)}")
        if not (initial >= 2 and max_batch >= initial):
            raise ValueError(f"need 2 <= initial ({initial}) <= max_batch ({max_batch})")
        if not (eta > 0 and every >= 1):
            raise ValueError(f"need eta > 0 (got {eta}) and every >= 1 (got {every})")
        self.batch_size, self.eta, self.variant = int(initial), float(eta), variant
        self.max_batch, self.every = int(max_batch), int(every)
        self.steps = 0
        self.history: list[int] = []

    def required(self, grads: Sequence[torch.Tensor]) -> int:
        """The batch size the test asks for, from per-example gradients ``(b, *shape)`` per
        parameter: ``b`` itself when the test passes, else ``ceil(V / (eta^2 ||g||^2))``
        (per coordinate and maximized, for the coordinate variant)."""
        flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1).double()
        b = flat.shape[0]
        if b < 2:
            raise ValueError("the norm test needs at least 2 examples per batch")
        mean = flat.mean(dim=0)
        var = ((flat - mean) ** 2).sum(dim=0) / (b - 1)
        eta2 = self.eta ** 2
        if self.variant == "norm":
            total, size = float(var.sum()), float((mean ** 2).sum())
            if total / b <= eta2 * size:
                return b
            return math.ceil(total / (eta2 * size)) if size > 0 else self.max_batch
        nonzero = mean != 0
        if bool((var[~nonzero] > 0).any()):
            return self.max_batch
        if not bool(nonzero.any()) or bool((var[nonzero] / b <= eta2 * mean[nonzero] ** 2).all()):
            return b
        return math.ceil(float((var[nonzero] / (eta2 * mean[nonzero] ** 2)).max()))

    @property
    def tests_next(self) -> bool:
        """Whether the next :meth:`update` runs the test (and so needs per-example gradients)."""
        return (self.steps + 1) % self.every == 0

    def update(self, grads: Sequence[torch.Tensor] | None) -> int:
        """Record one step with this batch's per-example gradients; returns the next batch size
        ``min(max_batch, max(b, required))`` (tested every :attr:`every` steps; ``grads`` may
        be None on a step that is not tested, see :attr:`tests_next`)."""
        if self.tests_next and grads is None:
            raise ValueError("this step runs the norm test: it needs the per-example gradients")
        self.history.append(self.batch_size)
        self.steps += 1
        if self.steps % self.every == 0:
            assert grads is not None
            need = self.required(grads)
            self.batch_size = min(self.max_batch, max(self.batch_size, need))
        return self.batch_size


_SPEC_KEYS = {"eta": float, "variant": str, "start": float, "growth": float, "every": int}


@dataclass(frozen=True)
class BatchSizeSpec:
    """How the evaluators size training batches: "fixed" (the task's batch every step), or
    the norm test growing them, written ``"norm_test:eta=1,variant=norm,start=0.25,growth=16"``.

    Under the norm test a run of a task with batch ``B`` and ``T`` steps starts at
    ``max(2, round(start * B))`` examples, grows by :class:`NormTestBatchSize` (``eta``,
    ``variant``, testing every ``every`` steps) up to ``round(growth * B)``, and stops when it
    has seen the fixed run's ``T * B`` examples: the same data budget, fewer or more steps.
    """

    method: str = "fixed"
    eta: float = 1.0
    variant: str = "norm"
    start: float = 0.25
    growth: float = 16.0
    every: int = 1

    @classmethod
    def parse(cls, text: str) -> "BatchSizeSpec":
        """The spec written as text (class docstring); ValueError naming what is wrong."""
        method, _, rest = text.strip().partition(":")
        if method not in ("fixed", "norm_test"):
            raise ValueError(f"unknown batch-size control '{method}'; choose fixed or norm_test")
        values: dict[str, float | int | str] = {}
        for item in filter(None, (x.strip() for x in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in _SPEC_KEYS or method == "fixed":
                raise ValueError(f"bad batch-size setting '{item}' in '{text}'; {method} takes "
                                 f"{'nothing' if method == 'fixed' else ', '.join(k + '=' for k in _SPEC_KEYS)}")
            try:
                values[key] = _SPEC_KEYS[key](value)
            except ValueError:
                raise ValueError(f"bad value in batch-size setting '{item}'") from None
        spec = cls(method, **values)  # type: ignore[arg-type]
        if spec.variant not in VARIANTS:
            raise ValueError(f"unknown norm-test variant '{spec.variant}' in '{text}'; choose one of "
                             f"{', '.join(VARIANTS)}")
        if not (spec.eta > 0 and 0 < spec.start <= spec.growth and spec.every >= 1):
            raise ValueError(f"batch-size settings out of range in '{text}': need eta > 0, "
                             "0 < start <= growth, every >= 1")
        return spec

    def text(self) -> str:
        """The canonical text of this spec (what caches and stores key on)."""
        if self.method == "fixed":
            return "fixed"
        return (f"norm_test:eta={self.eta:g},variant={self.variant},start={self.start:g},"
                f"growth={self.growth:g},every={self.every}")

    def controller(self, batch_size: int) -> NormTestBatchSize:
        """A fresh controller for a task whose fixed batch is ``batch_size``."""
        initial = max(2, round(self.start * batch_size))
        return NormTestBatchSize(initial, eta=self.eta, variant=self.variant,
                                 max_batch=max(initial, round(self.growth * batch_size)), every=self.every)
