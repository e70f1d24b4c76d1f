"""A learned optimizer that starts as its base rule: ``u = base(g, s) + f_theta(features)``.

Each step first applies the base rule (AdamW from the catalog by default) through the
same kernel backend that ``optdisco.Optimizer`` uses, ``w <- w - lr * base(w, g, s)``,
then, unless theta is all zeros, the learned residual::

    w <- w - lr * alpha * scale * f_theta(x),   f_theta(x) = tanh(x W1 + b1) w2

where ``scale = rms(m_hat / (sqrt(v_hat) + eps))`` is the base update's own size over
the tensor (so the residual is a fraction ``alpha`` of it) and ``x`` are per-element
features normalized the way learned-optimizer work does it: momenta at three timescales
divided by ``sqrt(v_hat)``, ``g / sqrt(v_hat)``, ``w / rms(w)``, ``log(|g| / rms(g))``,
each divided by its own rms over the tensor, plus the step as ``tanh(step / T)`` for
three ``T`` and the tensor-level ``tanh(log10(rms(w)))``. Every feature is invariant to
rescaling the gradient, so one theta works across parameter scales.

At theta = 0 the residual is skipped, so the trajectory is the base rule's bit for bit.
Weights save as ``.npz`` (no pickle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ...discovered.optimizer import resolve_rule
from ...discovered.param_steps import DeviceLists, due_parameters
from ...dsl import Program

MOMENTUM_BETAS = (0.5, 0.9, 0.99)
SECOND_MOMENT_BETA = 0.999
STEP_TIMESCALES = (10.0, 100.0, 1000.0)
FEATURE_NAMES = (*(f"m{b}_over_sqrt_v" for b in MOMENTUM_BETAS), "g_over_sqrt_v", "w_over_rms_w",
                 "log_abs_g_over_rms_g", *(f"tanh_step_over_{int(t)}" for t in STEP_TIMESCALES),
                 "tanh_log10_rms_w")
N_FEATURES = len(FEATURE_NAMES)
_EPS = 1e-8
_FEATURE_STATES = (*(f"feat_m{i}" for i in range(len(MOMENTUM_BETAS))), "feat_v")


def theta_size(hidden: int) -> int:
    """Length of the flat theta for ``hidden`` units: ``W1 (F x H) + b1 (H) + w2 (H)``."""
    return N_FEATURES * hidden + 2 * hidden


def batched_features(w: torch.Tensor, g: torch.Tensor, momenta: list[torch.Tensor], v: torch.Tensor,
                     step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of P independent copies of one tensor, each row ``(P, n)`` its own problem.

    Returns ``x`` of shape ``(P, n, F)`` and the base scale ``rms_n(m_hat / (sqrt(v_hat) + eps))``
    of shape ``(P, 1)``. Per row, with ``sv = sqrt(v / (1 - b_v^t)) + eps``: the columns
    ``m_k / (1 - b_k^t) / sv`` (k over MOMENTUM_BETAS), ``g / sv``, ``w / (rms(w) + eps)``,
    ``log(|g| + eps) - log(rms(g) + eps)``, each divided by ``rms`` of that column over the
    row plus eps; then ``tanh(t / T)`` for T in STEP_TIMESCALES and ``tanh(log10(rms(w) + eps))``.
    ``momenta`` and ``v`` are already updated with ``g``.
    """
    sqrt_v = torch.sqrt(v / (1.0 - SECOND_MOMENT_BETA ** step)) + _EPS
    per_element = [m / (1.0 - b ** step) / sqrt_v for m, b in zip(momenta, MOMENTUM_BETAS)]
    base_scale = per_element[1].square().mean(dim=1, keepdim=True).sqrt()
    rms_w = w.square().mean(dim=1, keepdim=True).sqrt()
    per_element.append(g / sqrt_v)
    per_element.append(w / (rms_w + _EPS))
    per_element.append(torch.log(g.abs() + _EPS) - torch.log(g.square().mean(dim=1, keepdim=True).sqrt() + _EPS))
    x = torch.stack(per_element, dim=2)
    x = x / (x.square().mean(dim=1, keepdim=True).sqrt() + _EPS)
    P, n = w.shape
    steps = torch.stack([torch.tanh(torch.tensor(step / t)) for t in STEP_TIMESCALES]).to(x.dtype)
    tensor_level = torch.cat([steps.expand(P, -1), torch.tanh(torch.log10(rms_w + _EPS))], dim=1)
    return torch.cat([x, tensor_level.unsqueeze(1).expand(P, n, -1)], dim=2), base_scale


def features(w: torch.Tensor, g: torch.Tensor, momenta: list[torch.Tensor], v: torch.Tensor,
             step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(numel, F)`` feature matrix and the scalar base scale of one tensor: the one-row
    case of :func:`batched_features` (same formulas)."""
    x, scale = batched_features(w.reshape(1, -1), g.reshape(1, -1), [m.reshape(1, -1) for m in momenta],
                                v.reshape(1, -1), step)
    return x[0], scale.reshape(())


def batched_residual(thetas: torch.Tensor, x: torch.Tensor, hidden: int) -> torch.Tensor:
    """``f_theta_p(x_p) = tanh(x_p W1_p + b1_p) w2_p`` for every row p: thetas ``(P, D)``,
    x ``(P, n, F)``, result ``(P, n)``."""
    P = thetas.shape[0]
    w1 = thetas[:, : N_FEATURES * hidden].reshape(P, N_FEATURES, hidden)
    b1 = thetas[:, N_FEATURES * hidden: N_FEATURES * hidden + hidden].unsqueeze(1)
    w2 = thetas[:, N_FEATURES * hidden + hidden:].unsqueeze(2)
    return torch.bmm(torch.tanh(torch.baddbmm(b1, x, w1)), w2).squeeze(2)


def residual(theta: torch.Tensor, x: torch.Tensor, hidden: int) -> torch.Tensor:
    """``f_theta(x) = tanh(x W1 + b1) w2`` for the flat ``theta`` (see :func:`theta_size`)."""
    return batched_residual(theta.reshape(1, -1), x.unsqueeze(0), hidden)[0]


class ResidualLearnedOptimizer(torch.optim.Optimizer):
    """A base rule plus a learned residual; with ``theta=None`` (zeros) it is the base rule exactly.

    ``ResidualLearnedOptimizer(params, lr=1e-3, base="adamw", theta=None, hidden=8,
    alpha=0.1, backend="auto", **base_hyperparameters)``."""

    def __init__(self, params: Iterable, lr: float | None = None, *, base: "str | Program" = "adamw",
                 theta: "np.ndarray | torch.Tensor | None" = None, hidden: int = 8, alpha: float = 0.1,
                 backend: str = "auto", seed: int | None = None, **hyperparameters: float) -> None:
        from ...discovered.optimizer import default_lr
        program = resolve_rule(base)
        unknown = set(hyperparameters) - set(program.hyperparameter_names)
        if unknown:
            raise TypeError(f"unexpected hyperparameter(s) {sorted(unknown)} for base rule '{program.name}'")
        if theta is None:
            theta = torch.zeros(theta_size(hidden))
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float32)).reshape(-1)
        if theta.numel() != theta_size(hidden):
            raise ValueError(f"theta has {theta.numel()} values; hidden={hidden} needs {theta_size(hidden)}")
        lr = default_lr(program) if lr is None else lr
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        self.program = program
        self.theta = theta
        self.hidden = hidden
        self.alpha = float(alpha)
        self.backend_name = backend
        self._backends: dict[str, Any] = {}
        self._generator = torch.Generator()
        self._generator.manual_seed(seed if seed is not None else torch.initial_seed() % (2**63))
        defaults = {"lr": lr, **program.hyperparameter_defaults,
                    **{k: float(v) for k, v in hyperparameters.items()}}
        super().__init__(params, defaults)

    def _backend_for(self, device: torch.device):
        key = str(device)
        if key not in self._backends:
            from ...kernels import get_backend
            self._backends[key] = get_backend(self.program, self.backend_name, device)
        return self._backends[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One base update of every parameter with a gradient, then the learned residual."""
        from ...discovered.optimizer import state_dtype
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        names = self.program.state_names
        use_residual = bool(self.theta.abs().sum() > 0)
        for group in self.param_groups:
            hyper = {n: float(group[n]) for n in self.program.hyperparameter_names}
            lr = float(group["lr"])
            lists = DeviceLists()
            pending: list[tuple[torch.Tensor, torch.Tensor]] = []
            for p, state, step in due_parameters(
                    group["params"], self.state, "the residual learned optimizer",
                    lambda p: {n: torch.zeros_like(p, dtype=state_dtype(p)) for n in (*names, *_FEATURE_STATES)}):
                g = p.grad.to(state["feat_v"].dtype)
                for i, b in enumerate(MOMENTUM_BETAS):  # feature statistics, separate from the base's states
                    state[f"feat_m{i}"].mul_(b).add_(g, alpha=1.0 - b)
                state["feat_v"].mul_(SECOND_MOMENT_BETA).addcmul_(g, g, value=1.0 - SECOND_MOMENT_BETA)
                if use_residual:  # features read w before the base step moves it
                    momenta = [state[f"feat_m{i}"] for i in range(len(MOMENTUM_BETAS))]
                    x, scale = features(p.detach().to(g.dtype), g, momenta, state["feat_v"], step)
                    r = residual(self.theta.to(device=p.device, dtype=x.dtype), x, self.hidden)
                    pending.append((p, (self.alpha * scale * r).view_as(p)))
                lists.add(p, [state[n] for n in names], step)
            for params, grads, states, steps in lists.groups():
                self._backend_for(params[0].device).step(
                    params, grads, states, steps=steps, lr=lr, hyperparameters=hyper,
                    generator=self._generator)
            for p, r in pending:
                p.sub_((lr * r).to(p.dtype))
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus ``optdisco``: base rule source, theta, hidden and alpha."""
        sd = super().state_dict()
        sd["optdisco"] = {"base_source": self.program.source(), "theta": self.theta.clone(),
                          "hidden": self.hidden, "alpha": self.alpha}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint made with the same base rule and the same theta."""
        meta = state_dict.get("optdisco") or {}
        if meta.get("base_source") != self.program.source():
            raise ValueError("this checkpoint was made with another base rule")
        theta = meta.get("theta")
        if theta is None or meta.get("hidden") != self.hidden or not torch.equal(theta, self.theta):
            raise ValueError("this checkpoint was made with other learned weights (theta)")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "optdisco"})


#: Weights shipped with the package: ``learned="NAME"`` is ``WEIGHTS_DIR / "NAME.npz"``.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def resolve_weights(learned: "str | os.PathLike") -> Path:
    """The weights file of ``learned``: a path, or the name of a file in :data:`WEIGHTS_DIR`."""
    path = Path(learned)
    if path.exists() or isinstance(learned, os.PathLike) or path.suffix == ".npz" or len(path.parts) > 1:
        return path
    shipped = WEIGHTS_DIR / f"{learned}.npz"
    if not shipped.exists():
        names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))
        raise FileNotFoundError(f"no learned weights named {learned!r}; shipped: {', '.join(names) or 'none'} "
                                "(or give a path to an .npz file)")
    return shipped


def is_residual_weights(path: "str | os.PathLike") -> bool:
    """Whether the ``.npz`` at ``path`` holds residual weights (:func:`save_theta`), not MLP weights."""
    with np.load(path, allow_pickle=False) as z:
        return {"theta", "hidden", "alpha", "base"} <= set(z.files)


def from_weights(params: Iterable, learned: "str | os.PathLike", lr: float | None = None,
                 **kwargs: Any) -> "ResidualLearnedOptimizer":
    """``ResidualLearnedOptimizer`` with the weights, shape and base rule of a :func:`save_theta` file."""
    w = load_theta(resolve_weights(learned))
    return ResidualLearnedOptimizer(params, lr, base=w["base"], theta=w["theta"], hidden=w["hidden"],
                                    alpha=w["alpha"], **kwargs)


def save_theta(path: "str | os.PathLike", theta: np.ndarray, *, hidden: int, alpha: float,
               base: str = "adamw") -> None:
    """Write theta and its shape settings as an ``.npz`` (arrays only; loads without pickle)."""
    np.savez(path, theta=np.asarray(theta, dtype=np.float32), hidden=np.int64(hidden),
             alpha=np.float64(alpha), base=np.array(base))


def load_theta(path: "str | os.PathLike") -> dict[str, Any]:
    """Read a file of :func:`save_theta`: ``{"theta", "hidden", "alpha", "base"}``."""
    with np.load(path, allow_pickle=False) as z:
        return {"theta": z["theta"], "hidden": int(z["hidden"]), "alpha": float(z["alpha"]),
                "base": str(z["base"])}
