"""The learned MLP optimizer as a ``torch.optim.Optimizer``: ``optdisco.LearnedOptimizer(params,
learned=PATH)``, also built by ``optdisco.Optimizer(params, learned=PATH)`` (through
:mod:`optdisco.discovered.hooks`).

Each parameter ``w`` (gradient ``g``) keeps the feature statistics of :mod:`.features`
as its state and is updated by ``w <- w - lr * u`` with ``u`` from the MLP
(:mod:`.mlp_optimizer`). Weights are read with ``numpy.load(allow_pickle=False)``; the
default ``lr`` is the one the weights were meta-trained with. The weights' SHA-256 is
stored in ``state_dict()`` so that a checkpoint cannot be resumed with other weights.

Residual weights (``optdisco learn --residual``, and ``learned="default"``, the shipped
ones) build a :class:`~.residual.ResidualLearnedOptimizer` instead: ``__new__`` returns it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Iterable

import torch

from ...discovered.optimizer import FORMAT_VERSION, Optimizer
from ...discovered.param_steps import due_parameters
from .features import FeatureState
from .mlp_optimizer import MLPOptimizer, load
from .residual import from_weights, is_residual_weights, resolve_weights

_STATS = ("m", "v", "row", "col")


class LearnedOptimizer(Optimizer):
    """A learned MLP optimizer: ``LearnedOptimizer(params, learned=PATH, lr=...)``."""

    def __new__(cls, *args: Any, learned: "str | os.PathLike", **kwargs: Any):
        path = resolve_weights(learned)
        if is_residual_weights(path):
            params, rule, lr = (list(args) + [None, None, None])[:3]
            if rule is not None:
                raise TypeError("a learned optimizer takes no rule; its base rule is in its weights")
            return from_weights(params if params is not None else kwargs.pop("params"), path,
                                kwargs.pop("lr", lr), **kwargs)
        return object.__new__(cls)

    def __init__(self, params: Iterable, rule: Any = None, lr: float | None = None, *,
                 learned: "str | os.PathLike", backend: str = "auto", seed: int | None = None,
                 **hyperparameters: float) -> None:
        if rule is not None or hyperparameters:
            raise TypeError("a learned optimizer takes no rule and no hyperparameters besides lr")
        learned = resolve_weights(learned)
        cfg, theta, provenance = load(learned)
        self.mlp = MLPOptimizer(cfg)
        self.theta = theta
        self.path = str(learned)
        self.provenance = provenance
        self.digest = hashlib.sha256(theta.numpy().tobytes()).hexdigest()
        self.program = None
        self.backend_name = "learned"
        if lr is None:
            lr = float(provenance.get("lr", 0.01))
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        torch.optim.Optimizer.__init__(self, params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One learned update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p, state, step in due_parameters(group["params"], self.state, "the learned optimizer",
                                                 lambda p: FeatureState.zeros(p.detach().unsqueeze(0)).tensors()):
                w = p.detach().unsqueeze(0)
                stats = FeatureState(*(state[k] for k in _STATS))
                u, new = self.mlp.updates(self.theta.to(p.device), w.float(), p.grad.unsqueeze(0).float(),
                                          stats, step)
                state.update(new.tensors())
                p.sub_((float(group["lr"]) * u[0]).to(p.dtype))
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus ``optdisco``: format version, weights path and digest."""
        sd = torch.optim.Optimizer.state_dict(self)
        sd["optdisco"] = {"format_version": FORMAT_VERSION, "learned": self.path, "learned_sha256": self.digest}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint made with the same learned weights."""
        meta = state_dict.get("optdisco") or {}
        if meta.get("learned_sha256") != self.digest:
            raise ValueError("this checkpoint was not made by this learned optimizer "
                             f"(weights {meta.get('learned', 'unknown')!r} differ from {self.path!r})")
        plain = {k: v for k, v in state_dict.items() if k != "optdisco"}
        torch.optim.Optimizer.load_state_dict(self, plain)
        for p in (q for g in self.param_groups for q in g["params"]):  # statistics stay float32
            st = self.state.get(p)
            if st:
                for k in _STATS:
                    st[k] = st[k].float()

    def __repr__(self) -> str:
        return f"optdisco.Optimizer(learned='{self.path}', groups={len(self.param_groups)})"
