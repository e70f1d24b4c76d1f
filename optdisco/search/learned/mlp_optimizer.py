"""The small per-parameter MLP optimizer (after learned_optimization's MLP optimizers).

For each scalar of a parameter, with features ``x`` (:mod:`.features`, F of them)::

    h = relu(x W1 + b1)                     (hidden width H)
    d = h W2[:, 0] + b2[0] + x . s          (direction; ``s`` is a linear skip)
    a = h W2[:, 1] + b2[1]                  (magnitude)
    u = d * exp(EXP_MULT * a)

and the optimizer applies ``w <- w - lr * u`` like every rule. All weights are one flat
vector ``theta`` (what evolution strategies perturb); :meth:`MLPOptimizer.updates`
takes a batch of such vectors, one per independent problem, so a whole ES population
trains as one computation. The skip starts at 1 on the Adam feature ``m rsqrt(v)``
and ``W2`` starts small, so an untrained learned optimizer behaves like Adam and ES
learns corrections to it.

Weights are saved without pickle: :func:`save` writes ``numpy.savez`` arrays (theta and
the config as JSON text) and :func:`load` reads them with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .features import ADAM_FEATURE, FEATURE_NAMES, FeatureState, update_and_features

#: Magnitude scale: u = d * exp(EXP_MULT * a) (learned_optimization uses 1e-3 on larger outputs).
EXP_MULT = 0.1
FORMAT = "optdisco-mlp-optimizer/1"


@dataclass(frozen=True)
class MLPConfig:
    """Shape of the MLP: ``hidden`` units; ``features`` names the inputs (for checking files)."""

    hidden: int = 16
    features: tuple[str, ...] = field(default=FEATURE_NAMES)
    exp_mult: float = EXP_MULT

    @property
    def sizes(self) -> list[tuple[str, tuple[int, ...]]]:
        F, H = len(self.features), self.hidden
        return [("W1", (F, H)), ("b1", (H,)), ("W2", (H, 2)), ("b2", (2,)), ("skip", (F,))]

    @property
    def dim(self) -> int:
        """Length of the flat weight vector theta."""
        return sum(int(np.prod(s)) for _, s in self.sizes)


def init_theta(cfg: MLPConfig, seed: int = 0) -> torch.Tensor:
    """Initial weights: W1 ~ N(0, 1/F), W2 ~ N(0, 1e-2^2/H), skip = one-hot on the Adam feature."""
    gen = torch.Generator().manual_seed(seed)
    F, H = len(cfg.features), cfg.hidden
    parts = {"W1": torch.randn(F, H, generator=gen) / F ** 0.5, "b1": torch.zeros(H),
             "W2": 1e-2 * torch.randn(H, 2, generator=gen) / H ** 0.5, "b2": torch.zeros(2),
             "skip": torch.zeros(F)}
    parts["skip"][ADAM_FEATURE] = 1.0
    return torch.cat([parts[n].reshape(-1) for n, _ in cfg.sizes])


def unpack(cfg: MLPConfig, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named weights ``(P, *shape)`` from a batch of flat vectors ``(P, dim)``."""
    out, o = {}, 0
    for name, shape in cfg.sizes:
        n = int(np.prod(shape))
        out[name] = theta[:, o:o + n].reshape(theta.shape[0], *shape)
        o += n
    return out


class MLPOptimizer:
    """The learned update rule: ``(u, new_state) = updates(theta, w, g, state, step)``."""

    def __init__(self, cfg: MLPConfig | None = None) -> None:
        self.cfg = cfg or MLPConfig()
        if tuple(self.cfg.features) != FEATURE_NAMES:
            raise ValueError("these weights were trained on other features: "
                             f"{list(self.cfg.features)} != {list(FEATURE_NAMES)}")

    def init_state(self, w: torch.Tensor) -> FeatureState:
        """Zero statistics for a parameter batch ``(P, *shape)``."""
        return FeatureState.zeros(w)

    def apply_mlp(self, theta: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """The update ``u`` for features ``(P, *shape, F)`` and weights ``(P, dim)`` (or ``(dim,)``)."""
        if theta.dim() == 1:
            theta = theta.expand(feats.shape[0], -1)
        p = unpack(self.cfg, theta.to(feats.dtype))
        P = feats.shape[0]
        x = feats.reshape(P, -1, feats.shape[-1])                       # (P, N, F)
        h = torch.relu(torch.baddbmm(p["b1"].unsqueeze(1), x, p["W1"]))  # (P, N, H)
        out = torch.baddbmm(p["b2"].unsqueeze(1), h, p["W2"])          # (P, N, 2)
        direction = out[..., 0] + torch.bmm(x, p["skip"].unsqueeze(2)).squeeze(2)
        magnitude = out[..., 1]
        u = direction * torch.exp(self.cfg.exp_mult * magnitude.clamp(-50, 50))
        return u.reshape(feats.shape[:-1])

    def updates(self, theta: torch.Tensor, w: torch.Tensor, g: torch.Tensor, state: FeatureState,
                step: int) -> tuple[torch.Tensor, FeatureState]:
        """One step for parameter batch ``w`` ``(P, *shape)``: the update and the new statistics."""
        feats, new = update_and_features(w, g, state, step)
        return self.apply_mlp(theta, feats).to(w.dtype), new


def save(path: "str | os.PathLike", cfg: MLPConfig, theta: torch.Tensor, *, provenance: dict | None = None) -> Path:
    """Write weights as plain arrays (``numpy.savez``; no pickle): theta and the JSON config."""
    path = Path(path)
    meta = {"format": FORMAT, "config": asdict(cfg), "provenance": provenance or {}}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, theta=theta.detach().cpu().double().numpy(), meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
    return path


def load(path: "str | os.PathLike") -> tuple[MLPConfig, torch.Tensor, dict]:
    """Read weights written by :func:`save` (``allow_pickle=False``): ``(config, theta, provenance)``."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        theta = torch.from_numpy(z["theta"].astype(np.float32))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an optdisco learned optimizer (format {meta.get('format')!r})")
    c = meta["config"]
    cfg = MLPConfig(hidden=int(c["hidden"]), features=tuple(c["features"]), exp_mult=float(c["exp_mult"]))
    if theta.shape != (cfg.dim,):
        raise ValueError(f"{path}: theta has shape {tuple(theta.shape)}, config needs ({cfg.dim},)")
    return cfg, theta, meta.get("provenance", {})
