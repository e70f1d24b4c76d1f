"""Per-parameter input features of the learned optimizer, and the state they need.

For a parameter ``w`` with gradient ``g`` (shape ``(P, *shape)``: P independent problems
when batched, P = 1 otherwise) the state holds

- momenta ``m_k <- b_k m_k + (1 - b_k) g`` at timescales ``b = MOMENTUM_BETAS``,
- a second moment ``v <- b_v v + (1 - b_v) g^2``,
- Adafactor row/column statistics of ``g^2`` for tensors with two or more dimensions
  (``r <- b_v r + (1 - b_v) mean_cols(g^2)``, ``c`` likewise over rows), whose factored
  estimate is ``V = r c^T / mean(r)``.

Features, one column each (``FEATURE_NAMES``):
``g, w, m_k`` divided by their root-mean-square over the tensor (so the MLP sees
scale-free inputs, as in learned_optimization); ``g rsqrt(v_hat)``, ``m_k rsqrt(v_hat)``
(Adam-like, bias-corrected); ``g rsqrt(V_hat)`` (Adafactor-like); ``rsqrt(v_hat)``
normalized by its tensor rms; and a step embedding ``tanh(t / s)`` for s in ``STEP_SCALES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MOMENTUM_BETAS: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
SECOND_MOMENT_BETA = 0.999
STEP_SCALES: tuple[float, ...] = (10.0, 100.0, 1000.0)
EPS = 1e-8

FEATURE_NAMES: tuple[str, ...] = (
    ("g", "w") + tuple(f"m{b}" for b in MOMENTUM_BETAS) + ("g_rsqrt_v",)
    + tuple(f"m{b}_rsqrt_v" for b in MOMENTUM_BETAS) + ("g_rsqrt_factored", "rsqrt_v")
    + tuple(f"step/{s:g}" for s in STEP_SCALES))
N_FEATURES = len(FEATURE_NAMES)
#: Index of m0.9 * rsqrt(v): the Adam direction the MLP's skip connection starts from.
ADAM_FEATURE = FEATURE_NAMES.index("m0.9_rsqrt_v")


@dataclass
class FeatureState:
    """The running statistics of one parameter (see the module doc)."""

    m: torch.Tensor          # (K, P, *shape) momenta
    v: torch.Tensor          # (P, *shape)
    row: torch.Tensor        # (P, rows)
    col: torch.Tensor        # (P, cols)

    @classmethod
    def zeros(cls, w: torch.Tensor) -> "FeatureState":
        """Zero statistics for ``w`` of shape ``(P, *shape)``."""
        P, rows, cols = _matrix_dims(w)
        f = dict(dtype=torch.float32, device=w.device)
        return cls(torch.zeros((len(MOMENTUM_BETAS),) + tuple(w.shape), **f), torch.zeros(w.shape, **f),
                   torch.zeros(P, rows, **f), torch.zeros(P, cols, **f))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"m": self.m, "v": self.v, "row": self.row, "col": self.col}


def _matrix_dims(w: torch.Tensor) -> tuple[int, int, int]:
    P = w.shape[0]
    param = w.shape[1:]
    rows = param[0] if len(param) >= 2 else 1
    cols = math.prod(param) // rows if rows else 0
    return P, rows, cols


def _rms_normalize(x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, x.dim()))
    if not dims:
        return x / (x.abs() + EPS)
    return x * torch.rsqrt(x.square().mean(dim=dims, keepdim=True) + EPS * EPS)


def update_and_features(w: torch.Tensor, g: torch.Tensor, st: FeatureState, step: int
                        ) -> tuple[torch.Tensor, FeatureState]:
    """Advance the statistics by one gradient and return ``(features (P, *shape, F), new state)``."""
    w32, g32 = w.float(), g.float()
    betas = torch.tensor(MOMENTUM_BETAS, dtype=torch.float32, device=w.device).view(-1, *([1] * w.dim()))
    m = betas * st.m + (1 - betas) * g32
    bv = SECOND_MOMENT_BETA
    v = bv * st.v + (1 - bv) * g32.square()
    P, rows, cols = _matrix_dims(w)
    g2 = g32.square().reshape(P, rows, cols)
    row = bv * st.row + (1 - bv) * g2.mean(dim=2)
    col = bv * st.col + (1 - bv) * g2.mean(dim=1)
    bc = 1.0 - bv ** step
    rs_v = torch.rsqrt(v / bc + EPS * EPS)
    if len(w.shape) >= 3:  # matrices: the factored estimate
        fact = row.unsqueeze(2) * col.unsqueeze(1) / (row.mean(dim=1, keepdim=True).unsqueeze(2) + EPS * EPS)
        rs_f = torch.rsqrt(fact / bc + EPS * EPS).reshape(w.shape)
    else:
        rs_f = rs_v
    bcm = (1.0 - betas ** step)
    cols_ = [_rms_normalize(g32), _rms_normalize(w32)]
    cols_ += [_rms_normalize(m[k]) for k in range(len(MOMENTUM_BETAS))]
    cols_ += [g32 * rs_v]
    cols_ += [m[k] / bcm[k] * rs_v for k in range(len(MOMENTUM_BETAS))]
    cols_ += [g32 * rs_f, _rms_normalize(rs_v)]
    cols_ += [torch.full_like(g32, math.tanh(step / s)) for s in STEP_SCALES]
    feats = torch.stack(cols_, dim=-1)
    return feats, FeatureState(m, v, row, col)
